"""The limits through a real 2-worker gateway (issue 20): a user over each
limit gets ``429`` + ``Retry-After`` while another user is served,
counted gateway-wide (a refusal on a worker holding fewer than the limit
itself), kubectl backs off and succeeds once the user's requests end, the
metrics count the refusals, and a SIGHUP changes the limits (the counts of
the draining workers still count)."""

from __future__ import annotations

import os
import re
import signal
import socket
import ssl
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.access import issue
from support.gateway import GatewayRun, client_context, start_gateway, write_kubeconfig
from support.procs import free_port
from support.sim import SimRun
from support.waits import wait_for

from karpor.auth.ca import CertificateAuthority

pytest_plugins = ("support.gateway",)

PROXY = "/apis/cluster.karpor.io/v1beta1/clusters"
WATCH = PROXY + "/sim-1/proxy/api/v1/namespaces/default/configmaps?watch=true"
LIST = PROXY + "/{cluster}/proxy/api/v1/namespaces/default/configmaps"
#: a safety net for the shared CI machine, not a timing assertion
PATIENCE = 30.0


def _config(metrics_port: int, **extra: object) -> str:
    limits: dict[str, object] = {
        "user": {"inflight": 2, "watches": 2, "qps": 5, "burst": 30},
        "exempt": {"groups": ["system:masters"]},
    }
    limits.update(extra)
    return yaml.safe_dump({"metricsAddress": f"127.0.0.1:{metrics_port}", "limits": limits})


@dataclass
class Setup:
    gateway: GatewayRun
    config: Path
    metrics_port: int
    contexts: dict[str, ssl.SSLContext]
    kubeconfigs: dict[str, Path]


@pytest.fixture(scope="module")
def setup(
    gateway_clusters_dir: Path, sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("limits")
    metrics_port = free_port()
    config = base / "karpor.yaml"
    config.write_text(_config(metrics_port))
    run = start_gateway(
        gateway_clusters_dir, base / "state", "--workers", "2", "--config", str(config)
    )
    try:
        # alice's kubeconfig for kubectl; certificates of the CA for the rest
        kubeconfig = write_kubeconfig(
            run.state_dir, base / "alice.kubeconfig", run.url, "alice", ()
        )
        authority = CertificateAuthority.load(run.state_dir)
        contexts = {}
        for user in ("alice", "bob", "carol"):
            cert = issue(authority, user)
            contexts[user] = client_context(run.ca_pem, cert.cert_pem, cert.key_pem)
        yield Setup(run, config, metrics_port, contexts, {"alice": kubeconfig})
    finally:
        run.stop()


class Conn:
    """One raw HTTP/1.1 connection to the gateway."""

    def __init__(self, setup: Setup, user: str) -> None:
        raw = socket.create_connection(("127.0.0.1", setup.gateway.port), timeout=PATIENCE)
        self.sock = setup.contexts[user].wrap_socket(raw, server_hostname="127.0.0.1")
        self.port = self.sock.getsockname()[1]
        self._buffer = b""

    def send(self, method: str, target: str, extra: str = "") -> None:
        self.sock.sendall(f"{method} {target} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())

    def head(self) -> tuple[int, dict[str, str]]:
        while b"\r\n\r\n" not in self._buffer:
            data = self.sock.recv(65536)
            assert data, "connection closed"
            self._buffer += data
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        return int(lines[0].split()[1]), headers

    def response(self) -> tuple[int, dict[str, str], bytes]:
        code, headers = self.head()
        length = int(headers.get("content-length", "0"))
        while len(self._buffer) < length:
            self._buffer += self.sock.recv(65536)
        body, self._buffer = self._buffer[:length], self._buffer[length:]
        return code, headers, body

    def close(self) -> None:
        self.sock.close()


def _get(setup: Setup, user: str, cluster: str = "sim-2") -> tuple[int, dict[str, str], bytes]:
    conn = Conn(setup, user)
    try:
        conn.send("GET", LIST.format(cluster=cluster))
        return conn.response()
    finally:
        conn.close()


def _worker_of(conn: Conn, workers: list[int], port: int) -> int:
    """The worker process holding the server side of ``conn``."""
    wanted = f":{port:04X} 0100007F:{conn.port:04X} "
    inode = ""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        if wanted in line:
            inode = line.split()[9]
    assert inode, "the server side of the connection is not in /proc/net/tcp"
    for pid in workers:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except OSError:
                continue
    raise AssertionError("no worker holds the connection")


def _is_429(response: tuple[int, dict[str, str], bytes], reason: str) -> None:
    code, headers, body = response
    assert code == 429, (code, body)
    assert headers["retry-after"].isdigit() and int(headers["retry-after"]) >= 1
    status = yaml.safe_load(body)
    assert status["reason"] == "TooManyRequests"
    assert status["details"]["retryAfterSeconds"] == int(headers["retry-after"])
    assert f"limits.{reason}" in status["message"]


def _rejected(setup: Setup) -> dict[str, float]:
    url = f"http://127.0.0.1:{setup.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=PATIENCE) as response:
        text = response.read().decode()
    counts: dict[str, float] = {}
    for match in re.finditer(
        r"^karpor_rejected_requests_total\{([^}]*)\} (\S+)$", text, re.MULTILINE
    ):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match[1]))
        assert set(labels) == {"reason", "cluster", "user_bucket"}
        assert labels["user_bucket"].isdigit() and int(labels["user_bucket"]) < 16
        counts[labels["reason"]] = counts.get(labels["reason"], 0) + float(match[2])
    inflight = re.search(r'^karpor_cluster_inflight\{cluster="sim-1"\} (\S+)$', text, re.M)
    counts["sim-1 inflight"] = float(inflight[1]) if inflight else -1
    return counts


def test_limits_are_gateway_wide_and_follow_sighup(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    gateway = setup.gateway
    workers = gateway.worker_pids()
    assert len(workers) == 2
    held: list[Conn] = []
    try:
        # -- watches: alice's two, then refusals on whichever worker -------------
        mine: dict[int, int] = dict.fromkeys(workers, 0)
        for _ in range(2):
            conn = Conn(setup, "alice")
            conn.send("GET", WATCH)
            assert conn.head()[0] == 200
            held.append(conn)
            mine[_worker_of(conn, workers, gateway.port)] += 1
        across = False
        for _ in range(24):  # until a worker holding fewer than 2 of them refuses
            conn = Conn(setup, "alice")
            try:
                conn.send("GET", WATCH)
                response = conn.response()
                _is_429(response, "user.watches: 2")
                across = mine[_worker_of(conn, workers, gateway.port)] < 2
            finally:
                conn.close()
            if across:
                break
        assert across, f"every refusal came from the worker holding both watches: {mine}"
        bob = Conn(setup, "bob")  # another user watches meanwhile
        bob.send("GET", WATCH)
        assert bob.head()[0] == 200
        bob.close()

        # -- in flight: two of alice's requests wait for their bodies -------------
        posts = []
        for _ in range(2):
            conn = Conn(setup, "alice")
            conn.send(
                "POST",
                LIST.format(cluster="sim-2"),
                "Content-Type: application/json\r\nContent-Length: 1000\r\n",
            )
            posts.append(conn)

        def third() -> tuple[int, dict[str, str], bytes] | None:
            response = _get(setup, "alice")
            return response if response[0] == 429 else None

        refused = wait_for(third, PATIENCE, "alice's third request refused")
        assert refused is not None
        _is_429(refused, "user.inflight: 2")
        assert _get(setup, "bob")[0] == 200

        # -- kubectl backs off on the 429 and succeeds once alice's requests end --
        binary = kubectl_bins.get("1.33") or kubectl_bins.get("path")
        if binary is not None:
            before = _rejected(setup).get("user-inflight", 0)
            kubectl = subprocess.Popen(
                [
                    *(str(binary), "--kubeconfig", str(setup.kubeconfigs["alice"])),
                    *("--context", "sim-2", "get", "configmaps", "-n", "default", "-v=6"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            wait_for(
                lambda: _rejected(setup).get("user-inflight", 0) >= before + 2,
                PATIENCE,
                "kubectl's retries refused",
            )
            for conn in posts:
                conn.close()
            _, err = kubectl.communicate(timeout=PATIENCE)
            assert kubectl.returncode == 0, err
            assert "429 Too Many Requests" in err
        else:
            for conn in posts:
                conn.close()
        wait_for(lambda: _get(setup, "alice")[0] == 200, PATIENCE, "alice served again")

        # -- qps: carol's burst of 30, then the bucket says when to come back ----
        conn = Conn(setup, "carol")
        codes = []
        try:
            for _ in range(300):  # faster than 5/s however slow the machine: the bucket empties
                conn.send("GET", LIST.format(cluster="sim-2"))
                response = conn.response()
                codes.append(response[0])
                if response[0] == 429:
                    _is_429(response, "user.qps: 5")
                    break
        finally:
            conn.close()
        assert codes[-1] == 429 and codes.count(200) >= 30, codes

        def sampled() -> dict[str, float] | None:
            counts = _rejected(setup)
            return counts if counts["sim-1 inflight"] >= 2 else None

        counts = wait_for(sampled, PATIENCE, "the in-flight gauge sampled")
        assert counts is not None
        assert counts["user-watches"] >= 1
        assert counts["user-inflight"] >= 1
        assert counts["user-qps"] >= 1

        # -- SIGHUP: 3 watches per user, 3 requests in flight per cluster ---------
        setup.config.write_text(
            _config(setup.metrics_port, cluster={"inflight": 3}).replace("watches: 2", "watches: 3")
        )
        ready = gateway.process.output.count("worker ready")
        os.kill(gateway.pid, signal.SIGHUP)
        wait_for(
            lambda: gateway.process.output.count("worker ready") >= ready + 2,
            PATIENCE,
            "the workers rolled",
            detail=lambda: gateway.process.output,
        )
        conn = Conn(setup, "alice")  # the old workers still hold alice's two watches
        conn.send("GET", WATCH)
        assert conn.head()[0] == 200
        held.append(conn)
        _is_429(_get(setup, "bob", "sim-1"), "cluster.inflight: 3")  # sim-1 is full
        assert _get(setup, "bob", "sim-2")[0] == 200
        conn = Conn(setup, "alice")
        try:
            conn.send("GET", WATCH)
            _is_429(conn.response(), "user.watches: 3")
        finally:
            conn.close()
    finally:
        for conn in held:
            conn.close()
