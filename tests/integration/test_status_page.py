"""The fleet status page (issue 22) of a real gateway: a supervisor with two
workers, the two simulated clusters and one on a port nothing listens on,
its operations listener at ``--metrics-address``.

A real browser (headless Chromium) loads the page and runs its script; the
DOM lists every cluster, marks the unreachable one unhealthy and holds a
chart; ``/status.json`` has the documented shape and no credential; after
a cluster file is added and another removed and the workers roll (SIGHUP),
the page shows the new set, answering all along.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.browser import dump_dom
from support.gateway import (
    GatewayRun,
    client_context,
    closed_port,
    cluster_document,
    request,
    start_gateway,
)
from support.procs import free_port
from support.sim import SimRun
from support.waits import wait_for

#: the token of the unreachable cluster: it must never show
SECRET = "s3cret-token-of-the-closed-cluster"
DEADLINE = 60.0


@dataclass
class Setup:
    """The module's gateway and its operations address."""

    gateway: GatewayRun
    metrics_port: int

    def url(self, path: str) -> str:
        """A URL of the operations listener."""
        return f"http://127.0.0.1:{self.metrics_port}{path}"

    def get(self, path: str) -> tuple[int, str, dict[str, str]]:
        """``(status, body, headers)`` of a GET on the operations listener."""
        try:
            with urllib.request.urlopen(self.url(path), timeout=30) as resp:
                return resp.status, resp.read().decode(), dict(resp.headers)
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(), dict(exc.headers)

    def status(self) -> dict[str, Any]:
        """``/status.json``."""
        code, body, _ = self.get("/status.json")
        assert code == 200, body
        doc: dict[str, Any] = json.loads(body)
        return doc


@pytest.fixture(scope="module")
def setup(sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The gateway: 2 workers, sim-1, sim-2 and ``closed`` (nothing listens)."""
    tmp = tmp_path_factory.mktemp("status-page")
    clusters = tmp / "clusters"
    clusters.mkdir()
    for cluster in sim_clusters.clusters:
        shutil.copy(cluster.cluster_file, clusters / cluster.cluster_file.name)
    closed = cluster_document("closed", f"https://127.0.0.1:{closed_port()}")
    closed["spec"]["access"]["credential"]["serviceAccountToken"] = SECRET
    closed["metadata"]["labels"] = {"env": "prod"}
    closed["spec"]["displayName"] = "<script>alert(1)</script>"
    (clusters / "closed.yaml").write_text(yaml.safe_dump(closed))
    metrics_port = free_port()
    gateway = start_gateway(
        clusters,
        tmp / "state",
        "--workers",
        "2",
        "--metrics-address",
        f"127.0.0.1:{metrics_port}",
        "--health-probe-interval",
        "2",
        "--health-probe-timeout",
        "1",
    )
    try:
        run = Setup(gateway, metrics_port)
        # a request without credentials: an authentication rejection to count
        answer = request(gateway.port, "/api", client_context(gateway.ca_pem))
        assert answer.status == 401

        def ready() -> bool:
            doc = run.status()
            by_name = {c["name"]: c for c in doc["clusters"]}
            return (
                set(by_name) == {"sim-1", "sim-2", "closed"}
                and by_name["closed"]["health"] == "unhealthy"
                and by_name["sim-1"]["health"] == "healthy"
                and len(by_name["sim-1"]["series"]["5m"]) >= 1
                and len(doc["gateway"]["workers"]) == 2
            )

        wait_for(
            ready,
            DEADLINE,
            "the status page with 3 clusters and a chart",
            detail=lambda: f"{run.get('/status.json')[1]}\n{gateway.process.output}",
            step=0.5,
        )
        yield run
    finally:
        gateway.stop()


def test_a_browser_shows_every_cluster_and_marks_the_unhealthy_one(
    setup: Setup, tmp_path: Path
) -> None:
    shot = tmp_path / "status-page.png"
    dom = dump_dom(setup.url("/"), tmp_path / "profile", screenshot=shot)
    # the script ran and rendered the page again from /status.json
    assert 'data-refreshed="' in dom
    assert 'data-cluster="sim-1" data-health="healthy"' in dom
    assert 'data-cluster="sim-2" data-health="healthy"' in dom
    assert 'data-cluster="closed" data-health="unhealthy"' in dom
    assert "✗ Unhealthy" in dom
    assert '<svg class="chart"' in dom and "<polyline" in dom
    # admin input shows as text, never as markup
    assert "<script>alert(1)</script>" not in dom
    assert SECRET not in dom
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    # the server renders the same: the cluster's own page, with its charts
    code, detail, _ = setup.get("/clusters/closed")
    assert code == 200 and 'data-health="unhealthy"' in detail
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in detail and "env=prod" in detail
    assert "<script>alert(1)</script>" not in detail
    assert detail.count('<svg class="chart"') == 6
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_status_json_has_the_documented_shape_and_no_credential(setup: Setup) -> None:
    code, body, headers = setup.get("/status.json")
    assert code == 200
    assert headers["Content-Type"] == "application/json"
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    assert SECRET not in body
    doc = json.loads(body)
    assert doc["kind"] == "KarporStatus" and doc["version"] == 1
    gateway = doc["gateway"]
    assert gateway["mode"] == "supervisor" and gateway["pid"] == setup.gateway.pid
    assert sorted(w["pid"] for w in gateway["workers"]) == setup.gateway.worker_pids()
    assert all(w["rssBytes"] > 0 for w in gateway["workers"])
    assert {c["name"] for c in gateway["certificates"]} == {"serving", "ca"}
    assert all(c["daysLeft"] > 300 for c in gateway["certificates"])
    rejected = {r["reason"]: r for r in gateway["rejected"]}
    assert rejected["authentication"]["total"] >= 1
    closed = next(c for c in doc["clusters"] if c["name"] == "closed")
    assert closed["reach"] == "direct" and closed["message"]
    assert closed["endpoint"].startswith("https://127.0.0.1:")
    assert any(p["kind"] == "probe-failure" and p["cluster"] == "closed" for p in doc["problems"])
    for path in ("/", "/clusters/closed"):
        code, html, _ = setup.get(path)
        assert code == 200 and SECRET not in html
    assert setup.get("/clusters/nope")[0] == 404
    assert setup.get("/metrics")[0] == 200
    assert setup.get("/nothing")[0] == 404


def test_the_page_follows_cluster_changes_and_rolling_workers(setup: Setup) -> None:
    clusters = setup.gateway.clusters_dir
    before = {w["pid"] for w in setup.status()["gateway"]["workers"]}
    added = cluster_document("added", f"https://127.0.0.1:{closed_port()}")
    (clusters / "added.yaml").write_text(yaml.safe_dump(added))
    (clusters / "closed.yaml").unlink()
    os.kill(setup.gateway.pid, signal.SIGHUP)
    answers = 0

    def rolled() -> bool:
        nonlocal answers
        doc = setup.status()  # answers all along (asserts 200)
        answers += 1
        names = {c["name"] for c in doc["clusters"]}
        pids = {w["pid"] for w in doc["gateway"]["workers"] if w["state"] == "ready"}
        return (
            names == {"sim-1", "sim-2", "added"}
            and len(pids) == 2
            and not pids & before
            and doc["gateway"]["rollingRestarts"] >= 1
        )

    wait_for(rolled, DEADLINE, "the new cluster set after the roll", step=0.3)
    assert answers >= 1
    code, body, _ = setup.get("/")
    assert code == 200 and 'data-cluster="added"' in body and 'data-cluster="closed"' not in body
