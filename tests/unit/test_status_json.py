"""The document ``/status.json`` serves (karpor.status.board), built from
samples, the workers' reports and the gateway's facts; the problems found
between observations; the bounds of what is kept; no credential."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.config.model import Cluster, TokenCredential, X509Credential
from karpor.health.probe import ClusterStatus
from karpor.status.board import VERSION, StatusBoard
from karpor.status.clusters import ClusterInfo, Fleet, WorkerReport, merge, worker_report
from karpor.status.gateway import (
    CertificateExpiry,
    GatewayFacts,
    WorkerFacts,
    rss_from_status,
    workers_from_state,
)
from karpor.status.history import COARSE_POINTS, FINE_POINTS, History
from karpor.status.problems import MAX_PROBLEMS
from karpor.status.sample import BOUNDS, ClusterCounts, Sample
from karpor.upstream.tunnel import AgentStatus

T0 = 1_800_000_000.0
FACTS = GatewayFacts(
    pid=10,
    mode="supervisor",
    workers=[WorkerFacts(0, 11, 3, "ready", 1, 50 * 1048576)],
    certificates=[
        CertificateExpiry("serving", T0 + 86400 * 10),
        CertificateExpiry("ca", None, "gone"),
    ],
)


def counts(requests: float, errors: float = 0.0) -> ClusterCounts:
    """``requests`` answered, each within 25 ms."""
    return ClusterCounts(requests, errors, tuple(requests if b >= 0.025 else 0.0 for b in BOUNDS))


def info(name: str, healthy: bool | None = True, **more: Any) -> ClusterInfo:
    return ClusterInfo(name=name, healthy=healthy, version="v1.31.0", **more)


def observe(board: StatusBoard, t: float, fleet: Fleet, **sample: Any) -> list[Any]:
    facts = sample.pop("facts", FACTS)
    return board.observe(Sample(time=t, **sample), fleet, facts)


def test_the_document_shape() -> None:
    board = StatusBoard()
    fleet = Fleet(
        clusters=[info("prod"), info("edge", reach="tunnel", agent_links=2)], generation=4
    )
    observe(board, T0, fleet, clusters={"prod": counts(100)})
    observe(board, T0 + 5, fleet, clusters={"prod": counts(150, 5)}, watches={"prod": 3.0})
    doc = board.document(T0 + 6)
    json.dumps(doc)  # plain JSON
    assert doc["kind"] == "KarporStatus" and doc["version"] == VERSION == 1
    assert doc["sampledAt"] == "2027-01-15T08:00:05Z"
    prod, edge = (next(c for c in doc["clusters"] if c["name"] == n) for n in ("prod", "edge"))
    assert prod["health"] == "healthy" and prod["reach"] == "direct" and prod["agent"] is None
    five = prod["windows"]["5m"]
    assert (five["requests"], five["rate"], five["errorRate"]) == (50, 10.0, 1.0)
    assert five["errorRatio"] == 0.1
    assert 0.01 < five["p50"] <= 0.025 and five["p99"] <= 0.025
    assert prod["watches"] == 3 and prod["sessions"] == 0
    assert [p["rate"] for p in prod["series"]["5m"]] == [10.0]
    assert edge["agent"] == {
        "connected": True,
        "links": 2,
        "workers": 0,
        "since": None,
        "version": "",
    }
    gateway = doc["gateway"]
    assert gateway["workers"] == [
        {
            "slot": 0,
            "pid": 11,
            "generation": 3,
            "state": "ready",
            "restarts": 1,
            "rssBytes": 50 * 1048576,
        }
    ]
    assert gateway["reload"]["generation"] == 4
    assert gateway["certificates"][0]["daysLeft"] == 10.0
    assert gateway["certificates"][1] == {
        "name": "ca",
        "notAfter": None,
        "daysLeft": None,
        "problem": "gone",
    }
    assert [r["reason"] for r in gateway["rejected"]] == ["authentication", "policy"]


def test_rejections_by_reason_over_the_last_five_minutes() -> None:
    board = StatusBoard()
    observe(board, T0, Fleet(), rejected={"authentication": 2.0, "user-qps": 10.0})
    observe(
        board, T0 + 60, Fleet(), rejected={"authentication": 3.0, "user-qps": 40.0, "policy": 1.0}
    )
    rejected = board.document(T0 + 60)["gateway"]["rejected"]
    assert rejected == [
        {"reason": "user-qps", "total": 40, "last5m": 30},
        {"reason": "authentication", "total": 3, "last5m": 1},
        {"reason": "policy", "total": 1, "last5m": 1},
    ]


def test_problems_from_transitions() -> None:
    board = StatusBoard()
    healthy = Fleet(clusters=[info("prod"), info("edge", reach="tunnel")])
    observe(board, T0, healthy, tunnels={"edge": 2.0})
    assert len(board.problems) == 0
    broken = Fleet(
        clusters=[info("prod", healthy=False, message="/readyz: connection refused"), info("edge")],
        problems=["c.yaml: document 2: spec: bad"],
    )
    facts = GatewayFacts(pid=1, crash_looping=frozenset({1}))
    found = observe(
        board,
        T0 + 5,
        broken,
        tunnels={"edge": 1.0},
        reload_errors=1.0,
        restarts=2.0,
        directory_readable=False,
        oidc={"https://idp": "failing"},
        facts=facts,
    )
    kinds = {(p.kind, p.cluster) for p in found}
    assert kinds == {
        ("probe-failure", "prod"),
        ("tunnel-disconnect", "edge"),
        ("reload-error", ""),
        ("directory-unreadable", ""),
        ("worker-restart", ""),
        ("crash-loop", ""),
        ("oidc-failing", ""),
    }
    messages = {p.kind: p.message for p in found}
    assert messages["probe-failure"] == "/readyz: connection refused"
    assert "c.yaml: document 2" in messages["reload-error"]
    # the same state again is no new problem
    assert (
        observe(
            board,
            T0 + 10,
            broken,
            tunnels={"edge": 1.0},
            reload_errors=1.0,
            restarts=2.0,
            directory_readable=False,
            oidc={"https://idp": "failing"},
            facts=facts,
        )
        == []
    )
    doc = board.document(T0 + 10)
    assert doc["problems"][0]["time"] == "2027-01-15T08:00:05Z"
    assert {p["kind"] for p in doc["problems"]} == {k for k, _ in kinds}


def test_a_cluster_first_seen_unhealthy_is_a_problem() -> None:
    board = StatusBoard()
    found = observe(board, T0, Fleet(clusters=[info("x", healthy=False, message="no")]))
    assert [(p.kind, p.cluster, p.message) for p in found] == [("probe-failure", "x", "no")]


def test_what_is_kept_is_bounded() -> None:
    board = StatusBoard()
    for i in range(1000):
        flip = Fleet(clusters=[info("x", healthy=i % 2 == 0, message=f"m{i}")])
        observe(board, T0 + i, flip)
    assert len(board.problems) == MAX_PROBLEMS
    assert board.document(T0 + 1000)["problems"][0]["message"] == "m999"
    history = History()
    for i in range(5000):
        history.add(Sample(time=T0 + i * 0.5))
    assert len(history) <= FINE_POINTS + COARSE_POINTS


def test_the_sixty_minute_window_uses_the_coarse_ring() -> None:
    board = StatusBoard()
    fleet = Fleet(clusters=[info("prod")])
    for minute in range(0, 121):
        # 5-second samples for two hours would be 1440: one a minute is enough here
        observe(board, T0 + minute * 60, fleet, clusters={"prod": counts(minute * 600.0)})
    prod = board.document(T0 + 7200)["clusters"][0]
    assert prod["windows"]["60m"]["rate"] == 10.0
    assert 55 <= len(prod["series"]["60m"]) <= 61
    assert prod["windows"]["5m"]["rate"] == 10.0


def test_workers_merge_latest_probe_wins_and_agents_add_up() -> None:
    a = WorkerReport(
        clusters=[
            info(
                "edge",
                healthy=False,
                message="old",
                probed_at=T0,
                reach="tunnel",
                agent_links=1,
                agent_since=T0 - 50,
                agent_workers=1,
            ),
        ],
        generation=3,
        problems=["p1"],
    )
    b = WorkerReport(
        clusters=[
            info(
                "edge",
                healthy=True,
                message="new",
                probed_at=T0 + 1,
                reach="tunnel",
                agent_links=1,
                agent_since=T0 - 10,
                agent_workers=1,
            ),
            info("only-b"),
        ],
        generation=4,
        problems=["p1", "p2"],
    )
    fleet = merge([WorkerReport.from_text(a.to_text()), WorkerReport.from_text(b.to_text())])
    edge = fleet.clusters[0]
    assert [c.name for c in fleet.clusters] == ["edge", "only-b"]
    assert (edge.healthy, edge.message, edge.agent_links, edge.agent_since) == (
        True,
        "new",
        2,
        T0 - 50,
    )
    assert (edge.agent_workers, edge.workers) == (2, 2)
    assert fleet.generation == 4 and fleet.problems == ["p1", "p2"]


def test_a_report_is_read_defensively() -> None:
    assert WorkerReport.from_text("not json").clusters == ()
    odd = WorkerReport.from_text('{"clusters":[{"name":"x","healthy":"yes","labels":[1]},{"n":1}]}')
    assert [(c.name, c.healthy, dict(c.labels)) for c in odd.clusters] == [("x", None, {})]


TOKEN = "sekret-bearer-token-123"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIBclientcertificatebody\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN PRIVATE KEY-----\nMIIEprivatekeybody\n-----END PRIVATE KEY-----\n"


def credential_clusters() -> dict[str, Cluster]:
    return {
        "tok": Cluster(
            name="tok",
            endpoint="https://user:pass-in-url@10.0.0.1:6443/base?token=query-secret#frag",
            credential=TokenCredential(token=TOKEN, token_file="/etc/karpor/tokens/tok-token"),
        ),
        "crt": Cluster(
            name="crt",
            endpoint="https://10.0.0.2:6443",
            credential=X509Credential(
                certificate=CERT,
                private_key=KEY,
                certificate_file="/etc/karpor/certs/crt-client.crt",
                private_key_file="/etc/karpor/certs/crt-client.key",
            ),
            ca_file="/etc/karpor/ca/crt-ca.pem",
        ),
    }


def test_no_credential_reaches_the_document_or_the_page() -> None:
    from karpor.status import page  # noqa: PLC0415

    status = ClusterStatus(True, "/readyz: ok", T0, "v1.30.0")
    report = worker_report(credential_clusters(), lambda n: status, None, 1, [])
    board = StatusBoard()
    observe(board, T0, merge([WorkerReport.from_text(report.to_text())]))
    doc = board.document(T0)
    texts = [
        json.dumps(doc),
        page.overview(doc),
        page.cluster_page(doc, "tok"),
        page.cluster_page(doc, "crt"),
    ]
    secrets = [
        TOKEN,
        "pass-in-url",
        "user:",
        "query-secret",
        "frag",
        "tok-token",
        "MIIBclientcertificatebody",
        "MIIEprivatekeybody",
        "crt-client",
        "crt-ca",
        "BEGIN",
    ]
    for text in texts:
        for secret in secrets:
            assert secret not in text, secret
    endpoints = {c["name"]: c["endpoint"] for c in doc["clusters"]}
    assert endpoints == {"tok": "https://10.0.0.1:6443/base", "crt": "https://10.0.0.2:6443"}


def test_a_tunnelled_cluster_reports_its_agent() -> None:
    clusters = {"edge": Cluster(name="edge", endpoint="", tunnel=True)}
    report = worker_report(clusters, lambda n: None, lambda n: AgentStatus(1, T0, "0.9"), 2, [])
    (edge,) = report.clusters
    assert (edge.reach, edge.agent_links, edge.agent_since, edge.agent_version) == (
        "tunnel",
        1,
        T0,
        "0.9",
    )
    assert edge.healthy is None and edge.endpoint == ""


@settings(max_examples=50)
@given(st.text(max_size=400), st.text(max_size=400))
def test_reported_text_is_bounded(message: str, display: str) -> None:
    status = ClusterStatus(False, message, T0)
    clusters = {"x": Cluster(name="x", endpoint="https://h:1", display_name=display)}
    (x,) = worker_report(clusters, lambda n: status, None, 0, [message] * 50).clusters
    assert len(x.message) <= 300 and len(x.display_name) <= 300
    assert (
        WorkerReport.from_text(
            worker_report(clusters, lambda n: status, None, 0, [message] * 50).to_text()
        )
        .clusters[0]
        .message
        == x.message
    )


def test_workers_from_the_supervisor_state() -> None:
    state = {
        "workers": [
            {"slot": 0, "pid": 11, "generation": 3, "state": "ready", "restarts": 2},
            {"slot": 1, "pid": 12, "generation": 2, "state": "exited"},
            {"slot": 1, "pid": None, "generation": 4, "state": "starting"},
        ]
    }
    workers = workers_from_state(state, rss=lambda pid: 4096 if pid else None)
    assert workers == [
        WorkerFacts(0, 11, 3, "ready", 2, 4096),
        WorkerFacts(1, None, 4, "starting", 0, None),
    ]
    assert rss_from_status("Name:\tx\nVmRSS:\t  2048 kB\n") == 2048 * 1024
    assert rss_from_status("Name:\tx\n") is None
