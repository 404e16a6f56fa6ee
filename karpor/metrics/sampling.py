"""Pool sizes (and the clusters' in-flight requests) sampled into gauges,
every few seconds.

Pool sizes change on every connection opened or closed; updating gauges
there would put a shared-file write on every change.  Instead each gateway
process samples its pools periodically (:data:`SAMPLE_INTERVAL`) and just
before it answers ``/metrics``: whichever worker answers, the merged view
holds every worker's sample, at most one interval old.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from twisted.internet.task import LoopingCall

from karpor.metrics.gateway import GatewayMetrics, PoolSizes

#: seconds between two samples of the pools
SAMPLE_INTERVAL = 5.0


class SampledPool(Protocol):
    """What a sample reads of a cluster pool (:class:`karpor.upstream.pool.ClusterPool`)."""

    @property
    def name(self) -> str:
        """The cluster's name."""

    @property
    def open_connections(self) -> int:
        """Pooled HTTP/1.1 connections open or being opened."""

    @property
    def idle_connections(self) -> int:
        """Of those, the idle ones."""

    @property
    def h2_connections(self) -> int:
        """HTTP/2 connections open or being opened."""

    @property
    def h2_streams(self) -> int:
        """Streams open on them."""

    @property
    def dedicated_connections(self) -> int:
        """Connections of upgraded requests."""


def sample(pools: Iterable[SampledPool]) -> list[PoolSizes]:
    """The sizes of ``pools`` (several pools of one cluster add up: a
    replaced definition's pool drains while the new one serves)."""
    by_name: dict[str, list[int]] = {}
    for pool in pools:
        sums = by_name.setdefault(pool.name, [0, 0, 0, 0, 0])
        sums[0] += pool.open_connections
        sums[1] += pool.idle_connections
        sums[2] += pool.h2_connections
        sums[3] += pool.h2_streams
        sums[4] += pool.dedicated_connections
    return [PoolSizes(name, s[0], s[1], s[2], s[3], s[4]) for name, s in by_name.items()]


class PoolSampler:
    """Samples ``pools()`` (and ``inflight()``: ``(cluster, requests in
    flight)`` pairs) into ``metrics`` every ``interval`` seconds (and on
    :meth:`sample_now`)."""

    def __init__(
        self,
        metrics: GatewayMetrics,
        pools: Callable[[], Iterable[SampledPool]],
        clock: Any,
        interval: float = SAMPLE_INTERVAL,
        inflight: Callable[[], Iterable[tuple[str, int]]] | None = None,
    ) -> None:
        self._metrics = metrics
        self._pools = pools
        self._inflight = inflight
        self._interval = interval
        self._loop = LoopingCall(self.sample_now)
        self._loop.clock = clock

    def start(self) -> None:
        """Sample now and every interval."""
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        """Stop sampling."""
        if self._loop.running:
            self._loop.stop()

    def sample_now(self) -> None:
        """Take a sample."""
        self._metrics.pool_sizes(sample(self._pools()))
        if self._inflight is not None:
            self._metrics.cluster_inflight_sample(self._inflight())
