"""The metrics of one gateway process, assembled: what the service builds.

:class:`ProcessMetrics` holds the process's :class:`~karpor.metrics.gateway.GatewayMetrics`
(recorded by the front, the pools, the prober and the reloads), the
:class:`~karpor.metrics.exposition.Exposition` of ``/metrics`` and the
:class:`~karpor.metrics.sampling.PoolSampler` of its pools.  In a worker
(``PROMETHEUS_MULTIPROC_DIR`` set by the supervisor) values go to the shared
directory and ``/metrics`` merges every process's; otherwise they stay in a
registry of this process's own.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry

from karpor.metrics import multiprocess
from karpor.metrics.exposition import Exposition
from karpor.metrics.gateway import GatewayMetrics
from karpor.metrics.sampling import PoolSampler, SampledPool


class _Verdict(Protocol):
    """A health probe's verdict (:class:`karpor.health.probe.ClusterStatus`)."""

    @property
    def healthy(self) -> bool:
        """Whether the probe passed."""


class ProcessMetrics:
    """The metrics of this process (see the module docstring).

    ``clusters()``: the names of the clusters defined now; ``directory``:
    the multiprocess directory (by default the one the supervisor named in
    the environment, if any).
    """

    def __init__(
        self,
        reactor: Any,
        clusters: Callable[[], Collection[str]],
        directory: str | None = None,
    ) -> None:
        self.directory = directory if directory is not None else multiprocess.directory()
        if self.directory is not None:
            # the value class of this process (prometheus_client chose one
            # at import; this one knows the pid without a system call)
            multiprocess.use(self.directory)
        self.registry = None if self.directory is not None else CollectorRegistry()
        #: what the request path, the pools and the reloads record into
        after_turn = getattr(reactor, "after_turn", None)
        self.recorder = GatewayMetrics(
            self.registry,
            later=after_turn
            if after_turn is not None
            else (lambda flush: reactor.callLater(0, flush)),
        )
        self._reactor = reactor
        self._sampler: PoolSampler | None = None
        self._port: Any = None
        self._exposition = Exposition(
            directory=self.directory,
            registry=self.registry,
            clusters=clusters,
            before=self._sample,
        )

    def render(self, accept: str = "") -> tuple[bytes, bytes]:
        """``/metrics``: ``(content type, body)``."""
        self.recorder.flush()
        return self._exposition.render(accept)

    def collect(self) -> list[Any]:
        """The metric families ``/metrics`` renders (for the status page)."""
        self.recorder.flush()
        return self._exposition.collect()

    def watch_pools(
        self,
        pools: Callable[[], Iterable[SampledPool]],
        inflight: Callable[[], Iterable[tuple[str, int]]] | None = None,
    ) -> None:
        """Sample ``pools()`` (and ``inflight()``, the clusters' requests in
        flight) periodically and before each rendering."""
        self._sampler = PoolSampler(self.recorder, pools, self._reactor, inflight=inflight)
        self._sampler.start()

    def serve(self, address: str | None, pages: Any = None) -> None:
        """Serve ``/metrics`` in plain HTTP at ``address`` too (``metricsAddress``
        with ``workers: 0``; ``None``: not), and ``pages`` (a ``twisted.web``
        resource: the status page) at its other paths."""
        if address is not None:
            from karpor.metrics import listener  # noqa: PLC0415 - twisted.web, only when asked

            self._port = listener.listen(self._reactor, address, self.render, pages)

    def _sample(self) -> None:
        if self._sampler is not None:
            self._sampler.sample_now()

    def health_listener(self, then: Callable[[str, Any], object]) -> Callable[[str, Any], None]:
        """A probe listener recording each verdict (``None``: the cluster is
        gone), then passing it to ``then``."""

        def listener(name: str, verdict: Any) -> None:
            if verdict is not None:
                status: _Verdict = verdict
                self.recorder.cluster_health(name, status.healthy)
            then(name, verdict)

        return listener

    def stop(self) -> None:
        """Record what is pending; stop sampling (and serving ``metricsAddress``)."""
        self.recorder.flush()
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()
