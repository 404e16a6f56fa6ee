"""The metrics of a gateway process: children cached per label tuple, pool
sizes written only when they change, health, reloads, supervisor counters,
and the assembly a process renders without a shared directory."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram
from twisted.internet.task import Clock

from karpor.metrics import multiprocess
from karpor.metrics.gateway import LATENCY_BUCKETS, GatewayMetrics, PoolSizes
from karpor.metrics.labels import STREAM_KINDS
from karpor.metrics.process import ProcessMetrics
from karpor.metrics.sampling import sample
from karpor.metrics.supervisor import SupervisorMetrics


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_children_are_made_once_per_label_tuple(monkeypatch: pytest.MonkeyPatch) -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    made: list[tuple[Any, ...]] = []
    for cls in (Counter, Histogram):
        original = cls.labels

        def counting(self: Any, *values: Any, _original: Any = original) -> Any:
            made.append((self._name, *values))
            return _original(self, *values)

        monkeypatch.setattr(cls, "labels", counting)
    for _ in range(100):
        metrics.request_done("sim-1", "list", 200, 0.003, 120, 800)
    first = list(made)
    assert sorted(first) == sorted(
        [
            ("karpor_request_duration_seconds", "sim-1", "list"),
            ("karpor_request_bytes", "sim-1"),
            ("karpor_response_bytes", "sim-1"),
            ("karpor_requests", "sim-1", "list", "200"),
        ]
    )
    # another code shares the latency and byte children: one new child
    for _ in range(10):
        metrics.request_done("sim-1", "list", 500, 0.2, 10, 0)
    assert made[len(first) :] == [("karpor_requests", "sim-1", "list", "500")]
    assert value(registry, "karpor_requests_total", cluster="sim-1", verb="list", code="200") == 100
    assert value(registry, "karpor_requests_total", cluster="sim-1", verb="list", code="500") == 10
    assert (
        value(registry, "karpor_request_duration_seconds_count", cluster="sim-1", verb="list")
        == 110
    )
    assert (
        value(
            registry,
            "karpor_request_duration_seconds_bucket",
            cluster="sim-1",
            verb="list",
            le="0.005",
        )
        == 100
    )
    assert value(registry, "karpor_request_bytes_total", cluster="sim-1") == 100 * 120 + 10 * 10
    assert value(registry, "karpor_response_bytes_total", cluster="sim-1") == 100 * 800


def test_stream_kinds_start_at_zero_and_go_up_and_down() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    for kind in STREAM_KINDS:
        assert value(registry, "karpor_long_running_requests", kind=kind) == 0
    metrics.stream_started("watch")
    metrics.stream_started("watch")
    metrics.stream_started("exec")
    metrics.stream_ended("watch")
    assert value(registry, "karpor_long_running_requests", kind="watch") == 1
    assert value(registry, "karpor_long_running_requests", kind="exec") == 1


class _Pool:
    def __init__(self, name: str, open_: int, idle: int, h2: int, streams: int, up: int) -> None:
        self.name = name
        self.open_connections = open_
        self.idle_connections = idle
        self.h2_connections = h2
        self.h2_streams = streams
        self.dedicated_connections = up


def test_pool_samples_add_up_per_cluster_and_vanished_clusters_go_to_zero() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    sizes = sample(
        [_Pool("a", 3, 1, 1, 7, 2), _Pool("a", 1, 0, 0, 0, 0), _Pool("b", 1, 1, 0, 0, 0)]
    )
    assert sorted(sizes, key=lambda s: s.cluster) == [
        PoolSizes("a", http1=4, idle=1, h2=1, h2_streams=7, upgrade=2),
        PoolSizes("b", http1=1, idle=1),
    ]
    metrics.pool_sizes(sizes)
    assert value(registry, "karpor_upstream_connections", cluster="a", protocol="http1") == 4
    assert value(registry, "karpor_upstream_connections", cluster="a", protocol="h2") == 1
    assert value(registry, "karpor_upstream_connections", cluster="a", protocol="upgrade") == 2
    assert value(registry, "karpor_upstream_idle_connections", cluster="b") == 1
    assert value(registry, "karpor_upstream_h2_streams", cluster="a") == 7
    metrics.pool_sizes([PoolSizes("b", http1=2)])
    assert value(registry, "karpor_upstream_connections", cluster="a", protocol="http1") == 0
    assert value(registry, "karpor_upstream_h2_streams", cluster="a") == 0
    assert value(registry, "karpor_upstream_connections", cluster="b", protocol="http1") == 2
    assert value(registry, "karpor_upstream_idle_connections", cluster="b") == 0


def test_pool_gauges_are_written_only_when_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    metrics.pool_sizes([PoolSizes("a", http1=1)])
    writes: list[float] = []
    for child in metrics._pools.values():
        monkeypatch.setattr(child, "set", writes.append)
    for _ in range(5):
        metrics.pool_sizes([PoolSizes("a", http1=1)])
    assert writes == []
    metrics.pool_sizes([PoolSizes("a", http1=2)])
    assert writes == [2]


def test_health_reloads_and_upstream_errors() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.cluster_health("a", True)
    metrics.cluster_health("b", False)
    assert value(registry, "karpor_cluster_healthy", cluster="a") == 1
    assert value(registry, "karpor_cluster_healthy", cluster="b") == 0
    metrics.reloaded(0)
    metrics.reloaded(2)
    assert value(registry, "karpor_config_reloads_total") == 2
    assert value(registry, "karpor_config_reload_errors_total") == 1
    assert value(registry, "karpor_config_directory_readable") == 1
    metrics.directory_read(False)
    assert value(registry, "karpor_config_directory_readable") == 0
    metrics.directory_read(True)
    assert value(registry, "karpor_config_directory_readable") == 1
    metrics.connect_error("a")
    metrics.tls_error("a")
    metrics.tls_error("a")
    assert value(registry, "karpor_upstream_connect_errors_total", cluster="a") == 1
    assert value(registry, "karpor_upstream_tls_errors_total", cluster="a") == 2


def test_oidc_issuer_state_is_one_of_three() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    url = "https://idp.example.com"
    metrics.oidc_issuer(url, "pending")
    assert value(registry, "karpor_oidc_issuer_state", issuer=url, state="pending") == 1
    metrics.oidc_issuer(url, "ready")
    states = {
        s: value(registry, "karpor_oidc_issuer_state", issuer=url, state=s)
        for s in ("pending", "ready", "failing")
    }
    assert states == {"pending": 0, "ready": 1, "failing": 0}


def test_every_name_is_prefixed() -> None:
    registry = CollectorRegistry()
    GatewayMetrics(registry)
    SupervisorMetrics(registry=registry)
    names = [m.name for m in registry.collect()]
    assert names and all(n.startswith("karpor_") for n in names)


def test_supervisor_counts_restarts_and_rolls() -> None:
    registry = CollectorRegistry()
    metrics = SupervisorMetrics(registry=registry)
    metrics.worker_restarted()
    metrics.rolled()
    metrics.worker_restarted()
    metrics.worker_gone(12345)  # no directory: nothing to mark
    assert value(registry, "karpor_worker_restarts_total") == 2
    assert value(registry, "karpor_worker_rolling_restarts_total") == 1


def test_a_process_without_a_shared_directory_renders_its_own_metrics(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(multiprocess.ENV, raising=False)
    clock = Clock()
    clusters = ["a"]
    metrics = ProcessMetrics(clock, lambda: clusters)
    assert metrics.directory is None
    seen: list[tuple[str, object]] = []
    listener = metrics.health_listener(lambda name, status: seen.append((name, status)))
    verdict = SimpleNamespace(healthy=True)
    listener("a", verdict)
    listener("b", SimpleNamespace(healthy=False))
    listener("gone", None)
    # every verdict (and a cluster gone: None) is passed on
    assert [name for name, _ in seen] == ["a", "b", "gone"]
    assert seen[0][1] is verdict and seen[2][1] is None
    pools = [_Pool("a", 2, 1, 0, 0, 0)]
    metrics.watch_pools(lambda: pools)
    content_type, body = metrics.render()
    assert content_type.startswith(b"text/plain")
    assert b'karpor_cluster_healthy{cluster="a"} 1.0' in body
    assert b'cluster="b"' not in body  # not defined: its state is left out
    assert b'karpor_upstream_connections{cluster="a",protocol="http1"} 2.0' in body
    pools[0] = _Pool("a", 5, 0, 0, 0, 0)
    _, body = metrics.render()  # sampled before each rendering
    assert b'karpor_upstream_connections{cluster="a",protocol="http1"} 5.0' in body
    metrics.stop()
    assert not clock.getDelayedCalls()


def test_requests_of_one_reactor_turn_are_recorded_together() -> None:
    registry = CollectorRegistry()
    scheduled: list[Any] = []
    metrics = GatewayMetrics(registry, later=scheduled.append)
    for seconds in (0.001, 0.02, 0.3):
        metrics.request_done("sim-1", "get", 200, seconds, 100, 1000)
    metrics.request_done("sim-2", "list", 403, 0.002, 50, 0)
    # one flush asked for, nothing recorded yet
    assert scheduled == [metrics.flush]
    assert value(registry, "karpor_requests_total", cluster="sim-1", verb="get", code="200") is None
    scheduled.pop()()
    assert value(registry, "karpor_requests_total", cluster="sim-1", verb="get", code="200") == 3
    assert value(registry, "karpor_requests_total", cluster="sim-2", verb="list", code="403") == 1
    count = value(registry, "karpor_request_duration_seconds_count", cluster="sim-1", verb="get")
    assert count == 3
    total = value(registry, "karpor_request_duration_seconds_sum", cluster="sim-1", verb="get")
    assert total == pytest.approx(0.321)
    bucket = value(
        registry, "karpor_request_duration_seconds_bucket", cluster="sim-1", verb="get", le="0.025"
    )
    assert bucket == 2
    assert value(registry, "karpor_request_bytes_total", cluster="sim-1") == 300
    assert value(registry, "karpor_response_bytes_total", cluster="sim-1") == 3000
    assert value(registry, "karpor_response_bytes_total", cluster="sim-2") == 0
    # the next turn's first request asks for the next flush
    metrics.request_done("sim-1", "get", 200, 0.001, 1, 1)
    assert scheduled == [metrics.flush]


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


_REQUEST = st.tuples(
    st.sampled_from(["sim-1", "sim-2"]),
    st.sampled_from(["get", "watch"]),
    st.sampled_from([200, 404]),
    # the bounds themselves, around them, and beyond the last
    st.one_of(st.sampled_from(LATENCY_BUCKETS), st.floats(0, 100, allow_nan=False)),
    st.integers(0, 10_000),
    st.integers(0, 10_000),
)


@given(turns=st.lists(st.lists(_REQUEST, max_size=8), max_size=6))
def test_batched_recording_matches_the_public_api(
    turns: list[list[tuple[str, str, int, float, int, int]]],
) -> None:
    """Requests noted per turn and written in one batch leave every sample
    (counts, every bucket, sums, byte totals) as ``Counter.inc`` and
    ``Histogram.observe`` per request would."""
    batched_registry, public_registry = CollectorRegistry(), CollectorRegistry()
    scheduled: list[Any] = []
    batched = GatewayMetrics(batched_registry, later=scheduled.append)
    public = GatewayMetrics(public_registry)
    for turn in turns:
        for cluster, verb, code, seconds, bytes_in, bytes_out in turn:
            batched.request_done(cluster, verb, code, seconds, bytes_in, bytes_out)
            public.requests.labels(cluster, verb, str(code)).inc()
            public.latency.labels(cluster, verb).observe(seconds)
            public.bytes_in.labels(cluster).inc(bytes_in)
            public.bytes_out.labels(cluster).inc(bytes_out)
        while scheduled:
            scheduled.pop()()
    got, want = _samples(batched_registry), _samples(public_registry)
    assert got.keys() == want.keys()
    for key, expected in want.items():
        assert got[key] == pytest.approx(expected), key


def test_a_process_renders_and_stops_with_nothing_pending(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(multiprocess.ENV, raising=False)  # a registry of its own
    clock = Clock()
    process = ProcessMetrics(clock, lambda: ["sim-1"], directory=None)
    process.recorder.request_done("sim-1", "get", 200, 0.01, 1, 1)
    _, body = process.render()
    assert b'karpor_requests_total{cluster="sim-1",code="200",verb="get"} 1.0' in body
    process.recorder.request_done("sim-1", "get", 200, 0.01, 1, 1)
    process.stop()
    assert process.registry is not None
    assert (
        value(process.registry, "karpor_requests_total", cluster="sim-1", verb="get", code="200")
        == 2
    )
    clock.advance(0)  # the scheduled flushes find nothing left
    assert (
        value(process.registry, "karpor_requests_total", cluster="sim-1", verb="get", code="200")
        == 2
    )
