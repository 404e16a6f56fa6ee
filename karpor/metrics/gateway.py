"""The metrics of a gateway process, and the calls that record them.

:class:`GatewayMetrics` defines every metric a gateway process (a worker,
or the twistd process with ``workers: 0``) records.  Names start with
``karpor_``; a ``cluster`` label holds a cluster name or
:data:`~karpor.metrics.labels.GATEWAY` (``-``) for what the gateway
answered itself.

The request path calls :meth:`GatewayMetrics.request_done` once per request
(where its audit record is made) and :meth:`~GatewayMetrics.stream_started`
/ :meth:`~GatewayMetrics.stream_ended` around long-running ones.  Labelled
children are made once per label tuple and kept in plain dicts; bytes are
counted once per request, when it ends.  A value update is a write into
this process's memory-mapped file in multiprocess mode (how
``prometheus_client`` shares values between processes), a dozen
microseconds per request, so the gateway's processes batch them per reactor
turn: the requests that end while the reactor handles one round of events
are noted in plain Python (a count, latency bucket counts and a sum, byte
totals per label tuple) and recorded together before the reactor waits
again, and before this process renders ``/metrics``: one update of each
value touched per turn, written straight to the values behind the labelled
children (what ``Counter.inc`` and ``Histogram.observe`` end in, without
their per-call checks).

Gauges of the current state (pool sizes, cluster health) are *set*, not
counted: multiprocess mode sums (pool sizes) or takes the most recent value
(health) over the live processes; the supervisor removes a dead worker's
live gauges (:func:`karpor.metrics.multiprocess.mark_dead`).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from karpor.metrics.labels import STREAM_KINDS

#: the request latency histogram's buckets (seconds)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

#: metric names of gauges about a cluster's current state: at scrape time,
#: series of clusters that are no longer defined are left out
CLUSTER_STATE_GAUGES = frozenset(
    {
        "karpor_upstream_connections",
        "karpor_upstream_idle_connections",
        "karpor_upstream_h2_streams",
        "karpor_cluster_healthy",
        "karpor_cluster_inflight",
    }
)


#: the states of an OpenID provider's keys (:mod:`karpor.auth.oidc`)
OIDC_ISSUER_STATES = ("pending", "ready", "failing")


@dataclass(frozen=True, slots=True)
class PoolSizes:
    """The connections a worker holds to one cluster (sampled periodically)."""

    cluster: str
    #: pooled HTTP/1.1 connections, open or being opened
    http1: int = 0
    #: of those, the idle ones
    idle: int = 0
    #: HTTP/2 connections (watches, ``logs -f``)
    h2: int = 0
    #: streams open on them
    h2_streams: int = 0
    #: connections of upgraded requests (exec, attach, port-forward)
    upgrade: int = 0


class _Children:
    """What one request's label tuple updates, resolved once: the values
    behind the labelled children (see :func:`_counter_value` and
    :func:`_histogram_values`)."""

    __slots__ = ("bytes_in", "bytes_out", "latency_buckets", "latency_sum", "requests")

    def __init__(self, requests: Any, latency: Any, bytes_in: Any, bytes_out: Any) -> None:
        self.requests = _counter_value(requests)
        self.latency_sum, self.latency_buckets = _histogram_values(latency)
        self.bytes_in = _counter_value(bytes_in)
        self.bytes_out = _counter_value(bytes_out)


def _counter_value(child: Any) -> Any:
    """The value a labelled counter child adds to (``prometheus_client``'s
    ``Counter.inc`` checks its argument and the metric's state on every call;
    the batches recorded here are counts and byte totals, never negative)."""
    return child._value


def _histogram_values(child: Any) -> tuple[Any, list[Any]]:
    """A labelled histogram child's sum and its per-bucket values (not
    cumulative: an observation adds 1 to the first bucket whose bound
    holds it, as ``Histogram.observe`` does; the exposition sums them up).
    A batch of observations then costs one update per bucket touched and
    one of the sum instead of two per observation."""
    return child._sum, child._buckets


class _Pending:
    """Requests of one label tuple that ended since the last flush."""

    __slots__ = ("buckets", "bytes_in", "bytes_out", "count", "seconds")

    def __init__(self) -> None:
        self.count = 0
        #: observations per latency bucket (:data:`_BOUNDS`)
        self.buckets = [0] * len(_BOUNDS)
        self.seconds = 0.0
        self.bytes_in = 0
        self.bytes_out = 0


#: the latency histogram's upper bounds, ``+Inf`` included
_BOUNDS = (*LATENCY_BUCKETS, math.inf)


class GatewayMetrics:
    """Every metric of a gateway process (see the module docstring).

    ``registry``: where the metrics are registered (``None``: nowhere, as in
    multiprocess mode, where the exposition reads every process's files
    instead, :mod:`karpor.metrics.exposition`).  ``later``: when given,
    :meth:`request_done` keeps what it is told and has ``later`` call
    :meth:`flush` (at the end of the reactor turn,
    :meth:`karpor.net.reactor.GatewayReactor.after_turn`); otherwise it
    records at once.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        later: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self.registry = registry
        self._later = later
        self._pending: dict[tuple[str, str, int], _Pending] = {}
        self.requests = Counter(
            "karpor_requests",
            "Requests answered, by cluster (- for what the gateway answered itself: "
            "its own API, unknown clusters, malformed requests), Kubernetes verb "
            "(as the access policy names it) and HTTP status code.",
            ["cluster", "verb", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            "karpor_request_duration_seconds",
            "Seconds from a request's head to its response head (the status line; for "
            "watches, logs and exec sessions, until they start streaming), by cluster "
            "and verb.",
            ["cluster", "verb"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.rejected_requests = Counter(
            "karpor_rejected_requests",
            "Requests refused 429 by the limits, by reason (user-inflight, user-watches, "
            "user-qps, cluster-inflight), cluster (* for a fan-out refused for its user) "
            "and user_bucket (a stable hash bucket 0-15 of the user: users are never labels).",
            ["reason", "cluster", "user_bucket"],
            registry=registry,
        )
        self.cluster_inflight = Gauge(
            "karpor_cluster_inflight",
            "Requests in flight on each cluster across the gateway, long-running ones "
            "included (sampled every few seconds).",
            ["cluster"],
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.streams = Gauge(
            "karpor_long_running_requests",
            "Long-running requests in flight (watch, logs -f, exec, attach, portforward, "
            "proxy for other upgrades), by kind.",
            ["kind"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.bytes_in = Counter(
            "karpor_request_bytes",
            "Bytes received from callers (request heads and bodies, and what they send "
            "into exec, attach and port-forward sessions), by cluster; counted when a "
            "request ends.",
            ["cluster"],
            registry=registry,
        )
        self.bytes_out = Counter(
            "karpor_response_bytes",
            "Bytes sent to callers (responses, streams and sessions), by cluster; "
            "counted when a request ends.",
            ["cluster"],
            registry=registry,
        )
        self.connect_errors = Counter(
            "karpor_upstream_connect_errors",
            "Connections to a cluster that could not be opened (refused, unreachable, "
            "timed out), by cluster.",
            ["cluster"],
            registry=registry,
        )
        self.fanout_failures = Counter(
            "karpor_fanout_cluster_failures",
            "Clusters that failed their part of a request to many clusters, by cluster and "
            "reason (forbidden, unavailable, error, broken).",
            ["cluster", "reason"],
            registry=registry,
        )
        self.tls_errors = Counter(
            "karpor_upstream_tls_errors",
            "TLS handshakes with a cluster that failed (certificate not verified, "
            "handshake refused), by cluster.",
            ["cluster"],
            registry=registry,
        )
        self.tunnels = Gauge(
            "karpor_tunnels",
            "Agent tunnels connected (karpor agent), by cluster; an agent keeps one "
            "per gateway worker.",
            ["cluster"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.tunnel_connects = Counter(
            "karpor_tunnel_connects",
            "Agent tunnels opened (first connections and reconnects), by cluster.",
            ["cluster"],
            registry=registry,
        )
        self.tunnel_bytes = Counter(
            "karpor_tunnel_bytes",
            "Bytes moved on agent tunnels, by cluster and direction (in: from the "
            "agent, out: to it), counted every half second.",
            ["cluster", "direction"],
            registry=registry,
        )
        self.connections = Gauge(
            "karpor_upstream_connections",
            "Connections open to a cluster, by protocol: http1 (the pooled HTTP/1.1 "
            "connections), h2 (HTTP/2 connections carrying watches and logs), upgrade "
            "(one per exec, attach or port-forward session); sampled every few seconds.",
            ["cluster", "protocol"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.idle = Gauge(
            "karpor_upstream_idle_connections",
            "Pooled HTTP/1.1 connections to a cluster waiting for a request; sampled "
            "every few seconds.",
            ["cluster"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.h2_streams = Gauge(
            "karpor_upstream_h2_streams",
            "HTTP/2 streams open to a cluster; sampled every few seconds.",
            ["cluster"],
            multiprocess_mode="livesum",
            registry=registry,
        )
        self.healthy = Gauge(
            "karpor_cluster_healthy",
            "Whether the cluster's health probe passes (1) or fails (0), as last probed.",
            ["cluster"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.oidc_issuer_state = Gauge(
            "karpor_oidc_issuer_state",
            "The state of an OpenID provider's signing keys (authentication.jwt): 1 for "
            "the current state (pending: none yet; ready; failing: the last fetch failed, "
            "keys in hand still serve), 0 for the others.",
            ["issuer", "state"],
            multiprocess_mode="livemostrecent",
            registry=registry,
        )
        self.reloads = Counter(
            "karpor_config_reloads",
            "Reloads of the clusters directory (each worker process reloads it itself: "
            "one change counts once per worker).",
            registry=registry,
        )
        self.reload_errors = Counter(
            "karpor_config_reload_errors",
            "Reloads of the clusters directory that found bad documents (skipped; the "
            "last good definition of a cluster stays).",
            registry=registry,
        )
        self.directory_readable = Gauge(
            "karpor_config_directory_readable",
            "Whether the last reload could list the clusters directory and read every "
            "cluster file in it (1), or kept the last good definitions of what it could "
            "not read (0; retried at every poll); the lowest over the worker processes.",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.directory_readable.set(1)
        self.recording_failures = Counter(
            "karpor_recording_failures",
            "Exec and attach sessions on recorded clusters (sessionRecording) refused, or "
            "cut, because their recording could not be written, by cluster.",
            ["cluster"],
            registry=registry,
        )
        self.recording_dir_writable = Gauge(
            "karpor_recording_directory_writable",
            "Whether the last recording the worker opened or wrote succeeded (1) or failed "
            "(0: the directory is not writable or full; sessions on recorded clusters are "
            "refused); the lowest over the worker processes.",
            multiprocess_mode="livemin",
            registry=registry,
        )
        self.recording_dir_writable.set(1)
        self._children: dict[tuple[str, str, int], _Children] = {}
        self._latency: dict[tuple[str, str], Any] = {}
        self._bytes: dict[str, tuple[Any, Any]] = {}
        self._kinds = {kind: self.streams.labels(kind) for kind in STREAM_KINDS}
        self._pools: dict[tuple[str, str], Any] = {}
        self._pool_values: dict[tuple[str, str], int] = {}
        self._rejected: dict[tuple[str, str, str], Any] = {}
        self._inflight: dict[str, tuple[Any, int]] = {}

    # -- the request path ------------------------------------------------------------

    def _make_children(self, key: tuple[str, str, int]) -> _Children:
        cluster, verb, code = key
        latency = self._latency.get((cluster, verb))
        if latency is None:
            latency = self._latency[cluster, verb] = self.latency.labels(cluster, verb)
        pair = self._bytes.get(cluster)
        if pair is None:
            pair = self._bytes[cluster] = (
                self.bytes_in.labels(cluster),
                self.bytes_out.labels(cluster),
            )
        children = _Children(self.requests.labels(cluster, verb, str(code)), latency, *pair)
        self._children[key] = children
        return children

    def request_done(
        self,
        cluster: str,
        verb: str,
        code: int,
        seconds: float,
        bytes_in: int,
        bytes_out: int,
    ) -> None:
        """One request ended: answered ``code`` after ``seconds`` (to its
        response head), having read ``bytes_in`` and written ``bytes_out``."""
        key = (cluster, verb, code)
        pending = self._pending.get(key)
        if pending is None:
            if not self._pending and self._later is not None:
                self._later(self.flush)
            pending = self._pending[key] = _Pending()
        pending.count += 1
        pending.buckets[bisect_left(_BOUNDS, seconds)] += 1
        pending.seconds += seconds
        pending.bytes_in += bytes_in
        pending.bytes_out += bytes_out
        if self._later is None:
            self.flush()

    def flush(self) -> None:
        """Record the requests that ended since the last flush: per label
        tuple, one update of the request count, of the latency sum, of each
        latency bucket touched and of each byte count."""
        pending, self._pending = self._pending, {}
        for key, done in pending.items():
            children = self._children.get(key)
            if children is None:
                children = self._make_children(key)
            children.requests.inc(done.count)
            children.latency_sum.inc(done.seconds)
            buckets = children.latency_buckets
            for i, count in enumerate(done.buckets):
                if count:
                    buckets[i].inc(count)
            if done.bytes_in > 0:
                children.bytes_in.inc(done.bytes_in)
            if done.bytes_out > 0:
                children.bytes_out.inc(done.bytes_out)

    def stream_started(self, kind: str) -> None:
        """A long-running request of ``kind`` began (one of
        :data:`~karpor.metrics.labels.STREAM_KINDS`)."""
        self._kinds[kind].inc()

    def stream_ended(self, kind: str) -> None:
        """A long-running request of ``kind`` ended."""
        self._kinds[kind].dec()

    def rejected(self, reason: str, cluster: str, bucket: str) -> None:
        """A request was refused by the limits (:mod:`karpor.front.limits`)."""
        key = (reason, cluster, bucket)
        child = self._rejected.get(key)
        if child is None:
            child = self._rejected[key] = self.rejected_requests.labels(*key)
        child.inc()

    def cluster_inflight_sample(self, counts: Iterable[tuple[str, int]]) -> None:
        """Set ``karpor_cluster_inflight`` from a sample (values written only
        when they change; clusters missing from ``counts`` go to 0)."""
        seen = dict(counts)
        for name in self._inflight.keys() - seen.keys():
            seen[name] = 0
        for name, value in seen.items():
            entry = self._inflight.get(name)
            if entry is not None and entry[1] == value:
                continue
            child = entry[0] if entry is not None else self.cluster_inflight.labels(name)
            child.set(value)
            self._inflight[name] = (child, value)

    # -- upstream connections (karpor.upstream.connector.UpstreamErrors) --------------------

    def connect_error(self, cluster: str) -> None:
        """A connection to ``cluster`` could not be opened."""
        self.connect_errors.labels(cluster).inc()

    def fanout_cluster_failed(self, cluster: str, reason: str) -> None:
        """``cluster`` failed its part of a fan-out (``reason``: forbidden,
        unavailable, error, broken); rare: counted at once."""
        self.fanout_failures.labels(cluster, reason).inc()

    def tls_error(self, cluster: str) -> None:
        """A TLS handshake with ``cluster`` failed."""
        self.tls_errors.labels(cluster).inc()

    # -- agent tunnels (karpor.upstream.tunnel.TunnelMetrics) ---------------------------

    def tunnel_opened(self, cluster: str) -> None:
        """An agent's tunnel to ``cluster`` connected."""
        self.tunnels.labels(cluster).inc()
        self.tunnel_connects.labels(cluster).inc()

    def tunnel_closed(self, cluster: str) -> None:
        """An agent's tunnel to ``cluster`` closed."""
        self.tunnels.labels(cluster).dec()

    def tunnel_bytes_moved(self, cluster: str, received: int, sent: int) -> None:
        """Bytes moved on ``cluster``'s tunnels since the last report."""
        if received:
            self.tunnel_bytes.labels(cluster, "in").inc(received)
        if sent:
            self.tunnel_bytes.labels(cluster, "out").inc(sent)

    def pool_sizes(self, sizes: Iterable[PoolSizes]) -> None:
        """Set the connection gauges from a sample of every pool; clusters
        missing from ``sizes`` go to 0 (values are written only when they
        change)."""
        seen: dict[tuple[str, str], int] = {}
        for s in sizes:
            seen[s.cluster, "http1"] = s.http1
            seen[s.cluster, "h2"] = s.h2
            seen[s.cluster, "upgrade"] = s.upgrade
            seen[s.cluster, "idle"] = s.idle
            seen[s.cluster, "h2_streams"] = s.h2_streams
        for key in self._pool_values.keys() - seen.keys():
            seen[key] = 0
        for key, value in seen.items():
            if self._pool_values.get(key) == value:
                continue
            self._pool_values[key] = value
            child = self._pools.get(key)
            if child is None:
                cluster, what = key
                if what == "idle":
                    child = self.idle.labels(cluster)
                elif what == "h2_streams":
                    child = self.h2_streams.labels(cluster)
                else:
                    child = self.connections.labels(cluster, what)
                self._pools[key] = child
            child.set(value)

    # -- cluster health and configuration -------------------------------------------

    def cluster_health(self, cluster: str, healthy: bool) -> None:
        """The health probe of ``cluster`` passed (``True``) or failed (each
        verdict: :meth:`karpor.metrics.process.ProcessMetrics.health_listener`)."""
        self.healthy.labels(cluster).set(1 if healthy else 0)

    def oidc_issuer(self, issuer: str, state: str) -> None:
        """An OpenID provider's key state is now ``state`` (``pending``,
        ``ready`` or ``failing``; called on every change)."""
        for name in OIDC_ISSUER_STATES:
            self.oidc_issuer_state.labels(issuer, name).set(1 if name == state else 0)

    def reloaded(self, problems: int) -> None:
        """The clusters directory was reloaded, with ``problems`` bad documents."""
        self.reloads.inc()
        if problems:
            self.reload_errors.inc()

    def recording_failed(self, cluster: str) -> None:
        """A session on ``cluster`` was refused or cut for want of a recording."""
        self.recording_failures.labels(cluster).inc()

    def recording_writable(self, writable: bool) -> None:
        """Whether the last recording written could be."""
        self.recording_dir_writable.set(1 if writable else 0)

    def directory_read(self, readable: bool) -> None:
        """A load of the clusters directory could read it all (``True``), or not."""
        self.directory_readable.set(1 if readable else 0)
