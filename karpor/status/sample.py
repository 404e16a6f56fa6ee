"""One sample of the gateway's aggregated metrics, reduced to what the
status page shows (sans-IO).

:func:`read_sample` takes the metric families ``/metrics`` renders (the
merged view of every process, :class:`karpor.metrics.exposition.Exposition`)
and keeps, per cluster, the request count, the 5xx count and the latency
histogram's cumulative bucket counts (summed over verbs), and for the
gateway the totals and gauges the page derives rates and problems from.
Nothing here reads a clock or a file: the time is passed in.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from karpor.metrics.gateway import LATENCY_BUCKETS

#: the latency histogram's upper bounds, ``+Inf`` last
BOUNDS: tuple[float, ...] = (*LATENCY_BUCKETS, math.inf)

#: the metric family of limit rejections (per-user and per-cluster limits;
#: absent from gateways without limits)
REJECTED = "karpor_rejected_requests"
#: rejection reasons the page names from ``karpor_requests`` codes
AUTHENTICATION = "authentication"
POLICY = "policy"
_CODE_REASONS = {"401": AUTHENTICATION, "403": POLICY}


class MetricSample(Protocol):
    """One sample of a metric family (``prometheus_client``'s ``Sample``)."""

    @property
    def name(self) -> str:
        """The sample's name (``_total``, ``_bucket``… suffixes included)."""

    @property
    def labels(self) -> Mapping[str, str]:
        """Its labels."""

    @property
    def value(self) -> float:
        """Its value."""


class MetricFamily(Protocol):
    """A metric family (``prometheus_client``'s ``Metric``)."""

    @property
    def name(self) -> str:
        """The family's name (no ``_total`` suffix)."""

    @property
    def samples(self) -> Sequence[MetricSample]:
        """Its samples."""


@dataclass(frozen=True, slots=True)
class ClusterCounts:
    """The cumulative request counts of one cluster label."""

    #: requests answered
    requests: float = 0.0
    #: of those, answered 5xx
    errors: float = 0.0
    #: latency observations per bound of :data:`BOUNDS`, cumulative
    buckets: tuple[float, ...] = (0.0,) * len(BOUNDS)


@dataclass(frozen=True)
class Sample:
    """What the page keeps of one reading of the metrics, at ``time``."""

    time: float
    #: per ``cluster`` label (``-``: answered by the gateway itself)
    clusters: Mapping[str, ClusterCounts] = field(default_factory=dict)
    #: agent tunnels connected, per cluster (summed over workers)
    tunnels: Mapping[str, float] = field(default_factory=dict)
    #: HTTP/2 streams open to each cluster (watches, ``logs -f``)
    watches: Mapping[str, float] = field(default_factory=dict)
    #: upgraded sessions open to each cluster (exec, attach, port-forward)
    sessions: Mapping[str, float] = field(default_factory=dict)
    #: long-running requests in flight, by kind
    streams: Mapping[str, float] = field(default_factory=dict)
    #: requests rejected, by reason (limits, ``authentication``, ``policy``)
    rejected: Mapping[str, float] = field(default_factory=dict)
    #: reloads of the clusters directory, and those that found bad documents
    reloads: float = 0.0
    reload_errors: float = 0.0
    #: whether every worker could read the clusters directory (``None``: unknown)
    directory_readable: bool | None = None
    #: workers replaced after dying, rolling restarts
    restarts: float = 0.0
    rolls: float = 0.0
    #: each OpenID provider's key state
    oidc: Mapping[str, str] = field(default_factory=dict)


def _bucket_index(le: str) -> int | None:
    try:
        bound = float(le)
    except ValueError:
        return None
    for i, known in enumerate(BOUNDS):
        if math.isclose(bound, known) or bound == known:
            return i
    return None


class _Counts:
    __slots__ = ("buckets", "errors", "requests")

    def __init__(self) -> None:
        self.requests = 0.0
        self.errors = 0.0
        self.buckets = [0.0] * len(BOUNDS)


def _total(sample: MetricSample, family: str) -> bool:
    """Whether ``sample`` is a counter's value (not its ``_created`` time)."""
    return sample.name in (family, f"{family}_total")


def read_sample(families: Iterable[MetricFamily], now: float) -> Sample:
    """Reduce ``families`` to a :class:`Sample` taken at ``now``."""
    counts: dict[str, _Counts] = {}
    tunnels: dict[str, float] = {}
    watches: dict[str, float] = {}
    sessions: dict[str, float] = {}
    streams: dict[str, float] = {}
    rejected: dict[str, float] = {}
    oidc: dict[str, str] = {}
    scalars = {"reloads": 0.0, "reload_errors": 0.0, "restarts": 0.0, "rolls": 0.0}
    readable: bool | None = None

    def of(cluster: str) -> _Counts:
        found = counts.get(cluster)
        if found is None:
            found = counts[cluster] = _Counts()
        return found

    for family in families:
        name = family.name
        for s in family.samples:
            labels = s.labels
            if name == "karpor_requests" and _total(s, name):
                cluster = labels.get("cluster", "-")
                of(cluster).requests += s.value
                code = labels.get("code", "")
                if code.startswith("5"):
                    of(cluster).errors += s.value
                reason = _CODE_REASONS.get(code)
                if reason is not None:
                    rejected[reason] = rejected.get(reason, 0.0) + s.value
            elif name == "karpor_request_duration_seconds" and s.name.endswith("_bucket"):
                index = _bucket_index(labels.get("le", ""))
                if index is not None:
                    of(labels.get("cluster", "-")).buckets[index] += s.value
            elif name == REJECTED and _total(s, name):
                reason = labels.get("reason", "")
                rejected[reason] = rejected.get(reason, 0.0) + s.value
            elif name == "karpor_tunnels":
                _add(tunnels, labels.get("cluster", ""), s.value)
            elif name == "karpor_upstream_h2_streams":
                _add(watches, labels.get("cluster", ""), s.value)
            elif name == "karpor_upstream_connections" and labels.get("protocol") == "upgrade":
                _add(sessions, labels.get("cluster", ""), s.value)
            elif name == "karpor_long_running_requests":
                _add(streams, labels.get("kind", ""), s.value)
            elif name == "karpor_config_reloads" and _total(s, name):
                scalars["reloads"] += s.value
            elif name == "karpor_config_reload_errors" and _total(s, name):
                scalars["reload_errors"] += s.value
            elif name == "karpor_worker_restarts" and _total(s, name):
                scalars["restarts"] += s.value
            elif name == "karpor_worker_rolling_restarts" and _total(s, name):
                scalars["rolls"] += s.value
            elif name == "karpor_config_directory_readable":
                value = s.value >= 1
                readable = value if readable is None else readable and value
            elif name == "karpor_oidc_issuer_state" and s.value >= 1:
                oidc[labels.get("issuer", "")] = labels.get("state", "")
    return Sample(
        time=now,
        clusters={
            name: ClusterCounts(c.requests, c.errors, tuple(c.buckets))
            for name, c in counts.items()
        },
        tunnels=tunnels,
        watches=watches,
        sessions=sessions,
        streams=streams,
        rejected=rejected,
        reloads=scalars["reloads"],
        reload_errors=scalars["reload_errors"],
        directory_readable=readable,
        restarts=scalars["restarts"],
        rolls=scalars["rolls"],
        oidc=oidc,
    )


def _add(into: dict[str, float], key: str, value: float) -> None:
    into[key] = into.get(key, 0.0) + value
