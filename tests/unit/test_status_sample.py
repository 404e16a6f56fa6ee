"""One sample of the aggregated metrics, reduced (karpor.status.sample): read
from the very families a registry of the gateway's metrics collects."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from karpor.metrics.gateway import GatewayMetrics
from karpor.metrics.supervisor import SupervisorMetrics
from karpor.status.sample import BOUNDS, read_sample


def _gateway() -> tuple[CollectorRegistry, GatewayMetrics]:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    metrics.request_done("prod", "get", 200, 0.03, 10, 20)
    metrics.request_done("prod", "list", 503, 0.2, 10, 20)
    metrics.request_done("-", "get", 401, 0.001, 10, 20)
    metrics.request_done("prod", "get", 403, 0.001, 10, 20)
    metrics.tunnel_opened("edge")
    metrics.tunnel_opened("edge")
    metrics.reloaded(2)
    metrics.stream_started("watch")
    return registry, metrics


def test_requests_errors_and_latency_per_cluster() -> None:
    registry, _ = _gateway()
    sample = read_sample(registry.collect(), 100.0)
    prod = sample.clusters["prod"]
    assert sample.time == 100.0
    assert (prod.requests, prod.errors) == (3, 1)
    assert prod.buckets[-1] == 3  # cumulative: +Inf holds every observation
    assert prod.buckets[BOUNDS.index(0.05)] == 2  # 0.001 and 0.03
    assert sample.clusters["-"].requests == 1
    assert sample.tunnels == {"edge": 2}
    assert sample.streams["watch"] == 1
    assert (sample.reloads, sample.reload_errors) == (1, 1)
    assert sample.directory_readable is True


def test_rejections_by_reason_with_and_without_the_limits_counter() -> None:
    registry, metrics = _gateway()
    without = read_sample(registry.collect(), 1.0)
    assert without.rejected == {"authentication": 1, "policy": 1}
    for _ in range(4):
        metrics.rejected("user-qps", "prod", "3")
    metrics.rejected("user-qps", "dev", "7")
    metrics.rejected("cluster-inflight", "prod", "-")
    metrics.rejected("cluster-inflight", "prod", "-")
    found = read_sample(registry.collect(), 2.0).rejected
    assert found == {"authentication": 1, "policy": 1, "user-qps": 5, "cluster-inflight": 2}
    # a registry without the limits counter at all (another process's, say)
    bare = CollectorRegistry()
    other = Counter("karpor_requests", "Requests.", ["cluster", "verb", "code"], registry=bare)
    other.labels("-", "get", "401").inc()
    assert read_sample(bare.collect(), 3.0).rejected == {"authentication": 1}


def test_supervisor_counters() -> None:
    registry = CollectorRegistry()
    supervisor = SupervisorMetrics(registry=registry)
    supervisor.worker_restarted()
    supervisor.rolled()
    supervisor.rolled()
    sample = read_sample(registry.collect(), 0.0)
    assert (sample.restarts, sample.rolls) == (1, 2)
