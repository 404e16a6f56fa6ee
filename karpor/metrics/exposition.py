"""``/metrics``: the Prometheus text format, the same whichever process answers.

:class:`Exposition` renders what every process of the gateway recorded: in
multiprocess mode it merges the files of the shared directory
(``MultiProcessCollector``: the workers', live and exited, and the
supervisor's), else it reads this process's own registry.  Series of gauges
about a cluster's current state (:data:`~karpor.metrics.gateway.CLUSTER_STATE_GAUGES`)
are left out for clusters no longer defined (where the renderer knows them:
the supervisor, which loads no clusters, shows every series); counters keep
them (totals).
The format follows the scraper's ``Accept`` header (OpenMetrics when asked,
else text 0.0.4).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from karpor.metrics.gateway import CLUSTER_STATE_GAUGES


class _CurrentView(Collector):
    """The source's metrics without state series of clusters gone."""

    def __init__(
        self,
        source: Callable[[], Iterable[Metric]],
        clusters: Callable[[], Collection[str]] | None,
    ) -> None:
        self._source = source
        self._clusters = clusters

    def collect(self) -> Iterable[Metric]:
        current: Collection[str] | None = None
        for metric in self._source():
            if metric.name in CLUSTER_STATE_GAUGES and self._clusters is not None:
                if current is None:
                    current = self._clusters()
                metric.samples = [s for s in metric.samples if s.labels.get("cluster") in current]
            yield metric


class Exposition:
    """Renders ``/metrics`` (see the module docstring).

    ``directory``: the multiprocess directory (``None``: read ``registry``,
    this process's metrics); ``clusters``: the names of the clusters defined
    now (``None``: unknown, every series shown); ``before``: called before
    each rendering (to sample the pools of the answering process).
    """

    def __init__(
        self,
        *,
        directory: str | None,
        registry: CollectorRegistry | None,
        clusters: Callable[[], Collection[str]] | None,
        before: Callable[[], None] | None = None,
    ) -> None:
        source: Callable[[], Iterable[Metric]]
        if directory is not None:
            source = MultiProcessCollector(None, path=directory).collect
        elif registry is not None:
            source = registry.collect
        else:
            raise ValueError("metrics need a multiprocess directory or a registry")
        self._view = _CurrentView(source, clusters)
        self._before = before

    def collect(self) -> list[Metric]:
        """The metric families ``/metrics`` renders (for the status page,
        :mod:`karpor.status.sample`)."""
        if self._before is not None:
            self._before()
        return list(self._view.collect())

    def render(self, accept: str = "") -> tuple[bytes, bytes]:
        """``(content type, body)`` for a scraper sending ``accept``."""
        if self._before is not None:
            self._before()
        encoder, content_type = choose_encoder(accept)
        return content_type.encode("ascii"), encoder(self._view)
