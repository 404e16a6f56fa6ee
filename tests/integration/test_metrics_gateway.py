"""Metrics, Audit-Id and their logs end to end (issue 8): a gateway with two
worker processes, an access policy and an audit log in front of two
simulated clusters (their own ``karpor sim``, with its access log on).

- ``/metrics`` needs a caller the policy grants ``get`` on it (401, 403);
- after traffic from the official Python client to both clusters, every
  worker answers ``/metrics`` with the same request counters and latency
  histograms labelled with each cluster (the worker answering a keep-alive
  connection is named by its ``/readyz?verbose``), and so does the
  supervisor's plain-HTTP ``metricsAddress``; an open watch shows on every
  worker;
- every response carries an ``Audit-Id``, the one of its audit log record;
  a caller's own is kept and reaches the cluster (the simulator logs the
  ``audit-ID`` it received, as kube-apiserver's httplog does);
- a killed worker is counted as a restart and its in-flight gauges go, its
  counts stay;
- with ``--workers 0`` the gateway serves its own metrics (and its status page).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from prometheus_client.parser import text_string_to_metric_families
from support.access import issue, write_tokens, write_yaml
from support.gateway import (
    GatewayRun,
    Response,
    client_context,
    request,
    start_gateway,
    write_kubeconfig,
)
from support.procs import free_port
from support.sim import SimRun, start_sim
from support.waits import wait_for

from karpor.auth.ca import CertificateAuthority

PROMETHEUS_TOKEN = "prometheus-token-0123456789"
READER_TOKEN = "reader-token-0123456789"
POLICY = {
    "rules": [
        {"groups": ["system:masters"], "clusters": ["*"], "verbs": ["*"]},
        {"users": ["reader"], "clusters": ["*"], "verbs": ["get", "list", "watch"]},
        {"users": ["prometheus"], "nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ]
}
#: bounded attempts to reach both workers with fresh connections (SO_REUSEPORT spreads them)
CONNECT_ATTEMPTS = 200
#: a safety net for what the processes write asynchronously (audit log, sim access log)
DEADLINE = 20.0
_WORKER = re.compile(r"\[\+\]worker ok: pid (\d+) ")
_CLUSTERS = ("sim-1", "sim-2")

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass
class Setup:
    """The module's gateway, its simulated clusters and what it was given."""

    gateway: GatewayRun
    sim: SimRun
    kubeconfig: Path
    audit: Path
    ca: CertificateAuthority
    #: the supervisor's plain-HTTP metrics port (``metricsAddress``)
    metrics_port: int

    def context(self) -> ssl.SSLContext:
        return client_context(self.gateway.ca_pem)

    def get(self, path: str, token: str | None = None, **headers: str) -> Response:
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return request(self.gateway.port, path, self.context(), headers=headers)

    @contextlib.contextmanager
    def core(self, cluster: str) -> Iterator[Any]:
        """The Python client's ``CoreV1Api`` for ``cluster``; its connections
        are closed after (an idle pooled TLS connection would hold up the
        gateway's drain until its deadline: it never answers close_notify)."""
        api_client = config.new_client_from_config(str(self.kubeconfig), context=cluster)
        try:
            yield client.CoreV1Api(api_client)
        finally:
            api_client.close()

    def scrape_each_worker(self) -> dict[int, Samples]:
        """``/metrics`` as each worker answers it (pid -> samples)."""
        answers: dict[int, Samples] = {}
        headers = {"Authorization": f"Bearer {PROMETHEUS_TOKEN}"}
        for _ in range(CONNECT_ATTEMPTS):
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.gateway.port, context=self.context(), timeout=30
            )
            try:
                conn.request("GET", "/readyz?verbose", headers=headers)
                ready = conn.getresponse()
                found = _WORKER.search(ready.read().decode())
                assert ready.status == 200 and found is not None
                pid = int(found[1])
                if pid not in answers:
                    conn.request("GET", "/metrics", headers=headers)
                    scraped = conn.getresponse()
                    assert scraped.status == 200
                    assert scraped.getheader("Content-Type", "").startswith("text/plain")
                    answers[pid] = parse(scraped.read().decode())
            finally:
                conn.close()
            if len(answers) == 2:
                return answers
        raise AssertionError(f"only workers {sorted(answers)} answered {CONNECT_ATTEMPTS} times")

    def audit_records(self, ids: set[str]) -> dict[str, dict[str, Any]]:
        """The audit records of ``ids`` (waiting for the writers, bounded)."""

        def found() -> dict[str, dict[str, Any]]:
            records = {}
            if self.audit.exists():
                for line in self.audit.read_text().splitlines():
                    record = json.loads(line)
                    if record.get("requestID") in ids:
                        records[record["requestID"]] = record
            return records if set(records) == ids else {}

        return wait_for(found, DEADLINE, f"the audit records of {sorted(ids)}")


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out


def of_clusters(samples: Samples, *names: str) -> Samples:
    """The request series (counters, histograms) of clusters ``names``."""
    return {
        key: value
        for key, value in samples.items()
        if key[0].startswith(("karpor_request", "karpor_response_bytes"))
        and dict(key[1]).get("cluster") in names
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("metrics")
    sim = start_sim(tmp / "sim", 2, "--access-log")
    try:
        clusters = tmp / "clusters"
        clusters.mkdir()
        for cluster in sim.clusters:
            shutil.copy(cluster.cluster_file, clusters / cluster.cluster_file.name)
        write_yaml(tmp / "policy.yaml", POLICY)
        write_tokens(
            tmp / "tokens.csv",
            {PROMETHEUS_TOKEN: ("prometheus", ()), READER_TOKEN: ("reader", ())},
        )
        audit = tmp / "audit.jsonl"
        settings = {
            "auditLog": str(audit),
            "authentication": {"tokenFile": str(tmp / "tokens.csv")},
            "authorization": {"policyFile": str(tmp / "policy.yaml")},
        }
        write_yaml(tmp / "config.yaml", settings)
        state_dir = tmp / "state"
        metrics_port = free_port()
        gateway = start_gateway(
            clusters,
            state_dir,
            "--workers",
            "2",
            "--config",
            str(tmp / "config.yaml"),
            "--metrics-address",
            f"127.0.0.1:{metrics_port}",
        )
        try:
            kubeconfig = write_kubeconfig(state_dir, tmp / "admin.kubeconfig", gateway.url)
            ca = CertificateAuthority.load(state_dir)
            yield Setup(gateway, sim, kubeconfig, audit, ca, metrics_port)
        finally:
            gateway.stop()
    finally:
        sim.stop()


def test_metrics_need_a_caller_the_policy_grants(setup: Setup) -> None:
    nobody = setup.get("/metrics")
    assert nobody.status == 401 and nobody.headers["audit-id"]
    reader = setup.get("/metrics", token=READER_TOKEN)
    assert reader.status == 403
    assert (
        json.loads(reader.body)["message"] == 'forbidden: User "reader" cannot get path "/metrics"'
    )
    scraper = setup.get("/metrics", token=PROMETHEUS_TOKEN)
    assert scraper.status == 200
    assert b"# TYPE karpor_requests_total counter" in scraper.body
    # the grant is about the gateway's path only: no cluster for the scraper
    assert (
        setup.get(
            "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api", token=PROMETHEUS_TOKEN
        ).status
        == 403
    )


def test_every_worker_shows_the_same_totals_per_cluster(setup: Setup) -> None:
    admin = issue(setup.ca, "admin", ("system:masters",))
    admin_ctx = client_context(setup.gateway.ca_pem, admin.cert_pem, admin.key_pem)
    for name, lists in (("sim-1", 3), ("sim-2", 2)):
        with setup.core(name) as core:
            for _ in range(lists):
                assert core.list_namespace().items
        # raw: the Python client keeps the connection of an error response open
        path = f"/apis/cluster.karpor.io/v1beta1/clusters/{name}/proxy/api/v1/pods/none"
        assert request(setup.gateway.port, path, admin_ctx).status == 404
    answers = list(setup.scrape_each_worker().values())
    first, second = (of_clusters(a, *_CLUSTERS) for a in answers)
    assert first == second
    for name, lists in (("sim-1", 3), ("sim-2", 2)):
        assert value(first, "karpor_requests_total", cluster=name, verb="list", code="200") >= lists
        assert value(first, "karpor_requests_total", cluster=name, verb="get", code="404") >= 1
        count = value(first, "karpor_request_duration_seconds_count", cluster=name, verb="list")
        assert count >= lists
        inf = value(
            first, "karpor_request_duration_seconds_bucket", cluster=name, verb="list", le="+Inf"
        )
        assert inf == count
        assert value(first, "karpor_request_bytes_total", cluster=name) > 0
        assert value(first, "karpor_response_bytes_total", cluster=name) > 0
    # the gateway's own answers (readyz, metrics) count under "-"
    assert value(answers[0], "karpor_requests_total", cluster="-", verb="get", code="200") > 0
    # the supervisor's plain-HTTP scrape address shows the same, without credentials
    plain = http.client.HTTPConnection("127.0.0.1", setup.metrics_port, timeout=30)
    try:
        plain.request("GET", "/metrics")
        scraped = plain.getresponse()
        assert scraped.status == 200
        assert of_clusters(parse(scraped.read().decode()), *_CLUSTERS) == first
        plain.request("GET", "/other")
        other = plain.getresponse()
        assert other.status == 404 and other.read()
    finally:
        plain.close()


def test_a_watch_in_flight_shows_whichever_worker_answers(setup: Setup) -> None:
    with setup.core("sim-1") as core:
        # the call returns with the response head: the watch is open
        watch = core.list_namespace(watch=True, timeout_seconds=60, _preload_content=False)
        try:
            assert watch.status == 200
            for samples in setup.scrape_each_worker().values():
                assert value(samples, "karpor_long_running_requests", kind="watch") == 1
        finally:
            watch.close()

    def uncounted() -> bool:
        return not any(
            value(samples, "karpor_long_running_requests", kind="watch")
            for samples in setup.scrape_each_worker().values()
        )

    wait_for(uncounted, DEADLINE, "the closed watch no longer counted")


def test_every_response_carries_the_audit_id_of_its_audit_record(setup: Setup) -> None:
    admin = issue(setup.ca, "admin", ("system:masters",))
    admin_ctx = client_context(setup.gateway.ca_pem, admin.cert_pem, admin.key_pem)
    prefix = "/apis/cluster.karpor.io/v1beta1/clusters"
    answers = {
        "ok": request(setup.gateway.port, f"{prefix}/sim-1/proxy/api/v1/namespaces", admin_ctx),
        "unknown": request(setup.gateway.port, f"{prefix}/nope/proxy/api", admin_ctx),
        "forbidden": setup.get(
            f"{prefix}/sim-2/proxy/api/v1/namespaces/default/pods/x/exec", token=READER_TOKEN
        ),
        "unauthorized": setup.get(f"{prefix}/sim-1/proxy/api/v1/namespaces"),
        "own": request(setup.gateway.port, "/version", admin_ctx),
    }
    codes = {name: r.status for name, r in answers.items()}
    assert codes == {"ok": 200, "unknown": 404, "forbidden": 403, "unauthorized": 401, "own": 200}
    ids = {name: r.headers["audit-id"] for name, r in answers.items()}
    assert len(set(ids.values())) == len(ids)
    for audit_id in ids.values():
        assert re.fullmatch(
            r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", audit_id
        )
    records = setup.audit_records(set(ids.values()))
    assert {name: records[i]["code"] for name, i in ids.items()} == codes
    assert records[ids["ok"]]["cluster"] == "sim-1"
    assert records[ids["ok"]]["user"] == "admin"
    assert records[ids["forbidden"]]["user"] == "reader"


def test_a_callers_audit_id_is_kept_and_reaches_the_cluster(setup: Setup) -> None:
    mine = f"karpor-test-{uuid.uuid4().hex}"
    path = "/apis/cluster.karpor.io/v1beta1/clusters/sim-2/proxy/api/v1/namespaces/default/pods"
    listed = setup.get(path, token=READER_TOKEN, **{"Audit-Id": mine})
    assert listed.status == 200 and listed.headers["audit-id"] == mine
    # a watch goes upstream as an HTTP/2 stream: the id goes there too
    watched = setup.get(
        f"{path}?watch=true&timeoutSeconds=1", token=READER_TOKEN, **{"Audit-Id": mine + "-watch"}
    )
    assert watched.status == 200 and watched.headers["audit-id"] == mine + "-watch"
    setup.sim.process.wait_for_line(
        rf'"GET /api/v1/namespaces/default/pods HTTP/.*audit-ID="{mine}"', DEADLINE
    )
    setup.sim.process.wait_for_line(rf'watch=true.*audit-ID="{mine}-watch"', DEADLINE)
    records = setup.audit_records({mine, mine + "-watch"})
    assert records[mine]["code"] == 200 and records[mine + "-watch"]["code"] == 200
    # an id that is not a sane token is replaced, never forwarded
    odd = setup.get(path, token=READER_TOKEN, **{"Audit-Id": "two words"})
    assert odd.status == 200 and odd.headers["audit-id"] != "two words"
    assert "two words" not in setup.sim.process.output


def test_a_killed_worker_is_a_restart_and_its_live_gauges_go(setup: Setup) -> None:
    before = of_clusters(next(iter(setup.scrape_each_worker().values())), *_CLUSTERS)
    # a watch on a known worker: a keep-alive connection stays with the worker it reached
    conn = http.client.HTTPSConnection(
        "127.0.0.1", setup.gateway.port, context=setup.context(), timeout=30
    )
    try:
        headers = {"Authorization": f"Bearer {READER_TOKEN}"}
        conn.request("GET", "/readyz?verbose", headers=headers)
        found = _WORKER.search(conn.getresponse().read().decode())
        assert found is not None
        victim = int(found[1])
        watch = "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api/v1/namespaces?watch=1"
        conn.request("GET", watch, headers=headers)
        assert conn.getresponse().status == 200
        for samples in setup.scrape_each_worker().values():
            assert value(samples, "karpor_long_running_requests", kind="watch") == 1
        os.kill(victim, signal.SIGKILL)

        def replaced() -> bool:
            workers = setup.gateway.worker_pids()
            if victim in workers or len(workers) != 2:
                return False
            ready = setup.get("/readyz?verbose", READER_TOKEN).body.decode()
            return "restarts 1" in ready and ready.count(" ready") == 2

        wait_for(
            replaced,
            DEADLINE * 3,
            "the killed worker replaced",
            detail=lambda: setup.gateway.process.output,
            step=0.2,
        )
    finally:
        conn.close()
    answers = setup.scrape_each_worker()
    assert victim not in answers
    for samples in answers.values():
        assert value(samples, "karpor_worker_restarts_total") == 1
        # the dead worker never ended its watch: the supervisor dropped its live gauges
        assert value(samples, "karpor_long_running_requests", kind="watch") == 0
        # its counts stay in the totals
        assert of_clusters(samples, *_CLUSTERS) == before
    # one line each for the death and the replacement, naming the pid
    lines = setup.gateway.process.lines
    assert sum(f"pid {victim} " in line and "worker exited" in line for line in lines) == 1
    assert sum("worker started: slot" in line and "generation 3" in line for line in lines) == 1


def test_in_process_mode_serves_its_own_metrics(setup: Setup, tmp_path: Path) -> None:
    metrics_port = free_port()
    gateway = start_gateway(
        setup.gateway.clusters_dir,
        tmp_path / "state",
        "--workers",
        "0",
        "--metrics-address",
        f"127.0.0.1:{metrics_port}",
    )
    try:
        kubeconfig = write_kubeconfig(gateway.state_dir, tmp_path / "admin.kubeconfig", gateway.url)
        api_client = config.new_client_from_config(str(kubeconfig), context="sim-2")
        try:
            client.CoreV1Api(api_client).list_namespace()
        finally:
            api_client.close()
        gateway.process.wait_for_line(r"cluster sim-2 is healthy", DEADLINE)
        plain = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=30)
        try:
            plain.request("GET", "/metrics")
            samples = parse(plain.getresponse().read().decode())
        finally:
            plain.close()
        assert (
            value(samples, "karpor_requests_total", cluster="sim-2", verb="list", code="200") == 1
        )
        assert value(samples, "karpor_cluster_healthy", cluster="sim-2") == 1
        assert not any(name == "karpor_worker_restarts_total" for name, _ in samples)

        # the status page of the gateway in this process (issue 22)
        def status() -> dict[str, Any] | None:
            plain = http.client.HTTPConnection("127.0.0.1", metrics_port, timeout=30)
            try:
                plain.request("GET", "/status.json")
                doc: dict[str, Any] = json.loads(plain.getresponse().read())
            finally:
                plain.close()
            healthy = {c["name"] for c in doc["clusters"] if c["health"] == "healthy"}
            return doc if "sim-2" in healthy else None

        doc = wait_for(status, DEADLINE, "sim-2 healthy on the status page", step=0.5)
        assert doc is not None
        assert doc["gateway"]["mode"] == "single"
        assert [w["pid"] for w in doc["gateway"]["workers"]] == [gateway.pid]
    finally:
        gateway.stop()
