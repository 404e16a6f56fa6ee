"""Cluster health probes end to end (issue 8's acceptance), at the default
settings (a probe every 10 s, 4 s timeout, fail fast).

Two simulated clusters behind a gateway (a supervisor and one worker):
``steady`` (the session's ``sim-1``, verified against its CA) and ``flaky``
(a ``karpor sim`` of its own on a fixed port and token, so it can be
stopped and started again on the same port).  Stopping ``flaky`` turns it
unhealthy in ``kubectl get clusters`` (table, ``-o yaml``) within 15 s, with
a message; a request to it is then answered at once with a 503 ``Status``
naming the cluster and the failure: with a listener on its port that never
answers a TLS handshake, any connection attempt would hold the request
past the 1 s the client waits.  Started again, ``flaky`` is healthy within
15 s and serves requests; ``steady`` is healthy throughout; the server
version shows as ``status.version`` and in the Version column; a watch of
the clusters sees both turns as MODIFIED events.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.gateway import (
    GatewayRun,
    client_context,
    cluster_document,
    credentials_of,
    request,
    start_gateway,
    write_kubeconfig,
)
from support.kubectl import Kubectl
from support.procs import free_port
from support.sim import SimRun, start_sim
from support.tables import printed_columns, printed_row, printed_rows
from support.waits import wait_for

pytestmark = pytest.mark.kubectl

#: the issue's bounds: unhealthy, and healthy again, within this many seconds
BOUND = 15.0
#: how long a request to an unhealthy cluster may take (the gateway must not connect)
FAIL_FAST_WAIT = 1.0
TOKEN = "flaky-cluster-token-not-for-logs"
VERSION = "v1.31.0"  # what the simulator's /version says


class Watch:
    """``kubectl get clusters -w --output-watch-events``, read in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def stop(self) -> list[str]:
        self.proc.terminate()
        self.proc.wait(10)
        self._reader.join(10)
        return self.lines


class Setup:
    """The gateway, kubectl, and the ``flaky`` cluster's simulator (when running)."""

    gateway: GatewayRun
    kubectl: Kubectl
    kubeconfig: Path

    def __init__(self, port: int, out: Path) -> None:
        self.flaky_port = port
        self.flaky_out = out
        self.flaky: SimRun | None = None

    def start_flaky(self) -> None:
        self.flaky = start_sim(self.flaky_out, 1, "--base-port", str(self.flaky_port), token=TOKEN)

    def stop_flaky(self) -> None:
        if self.flaky is not None:
            self.flaky.stop()
            self.flaky = None

    def statuses(self) -> dict[str, dict[str, Any]]:
        """Each cluster's ``status``, as ``kubectl get clusters -o json`` shows it."""
        out = self.kubectl.out("--context", "karpor", "get", "clusters", "-o", "json")
        return {item["metadata"]["name"]: item["status"] for item in json.loads(out)["items"]}

    def wait_for(
        self, what: str, check: Callable[[dict[str, dict[str, Any]]], bool], within: float
    ) -> dict[str, dict[str, Any]]:
        """Poll the statuses until ``check`` holds (``steady`` must be healthy
        at every look); fail after ``within`` seconds."""
        last: dict[str, dict[str, Any]] = {}

        def holds() -> dict[str, dict[str, Any]]:
            last.clear()
            last.update(self.statuses())
            if "healthy" in last["steady"]:  # probed (it is, from the first look on)
                assert last["steady"]["healthy"] is True, last
            return dict(last) if check(last) else {}

        return wait_for(holds, within, what, detail=lambda: last, step=0.2)


@pytest.fixture
def setup(sim_clusters: SimRun, kubectl_bins: dict[str, Path], tmp_path: Path) -> Iterator[Setup]:
    if not kubectl_bins:
        pytest.skip("no kubectl on this machine")
    binary = next(iter(kubectl_bins.values()))
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    steady = yaml.safe_load(sim_clusters["sim-1"].cluster_file.read_text())
    steady["metadata"]["name"] = "steady"
    (clusters / "steady.yaml").write_text(yaml.safe_dump(steady))
    port = free_port()
    flaky = cluster_document("flaky", f"https://127.0.0.1:{port}")
    flaky["spec"]["access"]["credential"]["serviceAccountToken"] = TOKEN
    (clusters / "flaky.yaml").write_text(yaml.safe_dump(flaky))
    run = Setup(port, tmp_path / "flaky-sim")
    gateway: GatewayRun | None = None
    try:
        run.start_flaky()  # before the gateway: both clusters are up from its start
        gateway = run.gateway = start_gateway(clusters, tmp_path / "state", "--workers", "1")
        run.kubeconfig = write_kubeconfig(
            gateway.state_dir, tmp_path / "admin.kubeconfig", gateway.url
        )
        run.kubectl = Kubectl(binary, run.kubeconfig, "health")
        yield run
    finally:
        run.stop_flaky()
        if gateway is not None:
            gateway.stop()


def blackhole(port: int) -> socket.socket:
    """A listener on ``port`` that accepts nothing: a TLS handshake to it never completes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


def test_a_stopped_cluster_turns_unhealthy_fails_fast_and_recovers(setup: Setup) -> None:
    kubectl = setup.kubectl
    # both clusters probed and healthy (the first probe runs at start)
    statuses = setup.wait_for(
        "both healthy",
        lambda s: all(s[name].get("healthy") is True for name in ("steady", "flaky")),
        within=BOUND,
    )
    assert statuses["flaky"]["version"] == VERSION
    assert statuses["flaky"]["message"] == "/readyz: ok"
    assert statuses["flaky"]["lastProbeTime"].endswith("Z")
    rows = printed_rows(kubectl.out("--context", "karpor", "get", "clusters"))
    assert [rows["flaky"]["READY"], rows["flaky"]["VERSION"]] == ["True", VERSION]
    assert [rows["steady"]["READY"], rows["steady"]["VERSION"]] == ["True", VERSION]
    watch = Watch(
        kubectl.popen("--context", "karpor", "get", "clusters", "-w", "--output-watch-events")
    )

    # stop flaky: unhealthy within 15 s, with a message
    stopped = time.monotonic()
    setup.stop_flaky()
    statuses = setup.wait_for(
        "flaky unhealthy", lambda s: s["flaky"].get("healthy") is False, within=BOUND
    )
    assert time.monotonic() - stopped <= BOUND
    message = statuses["flaky"]["message"]
    assert message.startswith("GET /readyz: ") and "unreachable" in message
    assert statuses["flaky"]["version"] == VERSION  # the last known version stays
    shown = yaml.safe_load(
        kubectl.out("--context", "karpor", "get", "cluster", "flaky", "-o", "yaml")
    )
    assert shown["status"]["healthy"] is False and shown["status"]["message"]
    shown_row = printed_rows(kubectl.out("--context", "karpor", "get", "cluster", "flaky"))
    assert shown_row["flaky"]["READY"] == "False"

    # requests fail fast: a 503 Status naming the cluster and the probe's failure, at
    # once, though a connection attempt would now hang (nothing completes a handshake)
    hole = blackhole(setup.flaky_port)
    try:
        ca, cert, key = credentials_of(setup.kubeconfig, "flaky")
        context = client_context(ca, cert, key)
        path = "/apis/cluster.karpor.io/v1beta1/clusters/flaky/proxy/api/v1/namespaces"
        response = request(setup.gateway.port, path, context, timeout=FAIL_FAST_WAIT)
        assert response.status == 503
        status = response.json()
        assert status["kind"] == "Status" and status["reason"] == "ServiceUnavailable"
        assert status["message"].startswith('cluster "flaky" is unhealthy: GET /readyz: ')
        assert TOKEN not in response.body.decode()
        # --raw: kubectl's discovery would word a 503 its own way
        refused = kubectl.run("--context", "karpor", "get", "--raw", path, check=False)
        assert refused.returncode != 0
        assert "(ServiceUnavailable)" in refused.stderr
        assert 'cluster "flaky" is unhealthy' in refused.stderr
    finally:
        hole.close()

    # start flaky again on the same port: healthy within 15 s, and serving
    setup.start_flaky()
    started = time.monotonic()
    statuses = setup.wait_for(
        "flaky healthy again", lambda s: s["flaky"].get("healthy") is True, within=BOUND
    )
    assert time.monotonic() - started <= BOUND
    assert statuses["flaky"]["version"] == VERSION
    assert "default" in kubectl.out("--context", "flaky", "get", "namespaces")

    # the watch saw both turns; the gateway logged one line per turn, no secret
    lines = watch.stop()
    header, events = lines[0], [printed_row(lines[0], line) for line in lines[1:]]
    assert printed_columns(header)[:2] == ["EVENT", "NAME"]
    turns = [[e["EVENT"], e["NAME"], e["READY"]] for e in events if e["NAME"] == "flaky"]
    assert ["MODIFIED", "flaky", "False"] in turns
    assert turns[-1] == ["MODIFIED", "flaky", "True"]
    output = setup.gateway.process.output
    assert output.count("cluster flaky is unhealthy: GET /readyz: ") == 1
    assert output.count(f"cluster flaky is healthy ({VERSION}): /readyz: ok") == 2
    assert TOKEN not in output
