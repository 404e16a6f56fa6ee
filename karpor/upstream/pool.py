"""Per-cluster pools of persistent upstream connections.

:class:`UpstreamPools` keeps one :class:`ClusterPool` per cluster name.  A
pool is built for one cluster *definition*: its TLS options and header
block are made once (:class:`~karpor.upstream.credentials.ClusterCredentials`);
when the definition changes (a different, unequal ``Cluster``), the next
request gets a fresh pool while the old one drains (its connections close
when their exchanges end).

A pool hands an exchange an idle connection (most recently used first),
opens a new one (connect and TLS handshake bounded by ``connect_timeout``:
503 when the cluster cannot be reached, 502 naming the TLS failure), or
queues the exchange when ``max_connections`` are open.  Idle connections
expire after ``idle_timeout``; at most ``max_idle`` are kept once a burst is
over (those beyond it close after :data:`EXCESS_IDLE_GRACE` seconds idle,
not at once: a busy gateway would otherwise close and reopen connections
from one reactor turn to the next).

Long-running requests (watches, ``logs -f``: the policy is
:func:`karpor.upstream.h2.multiplexed`) go through
:meth:`ClusterPool.submit_stream` to the pool's
:class:`~karpor.upstream.h2.Multiplexer`: HTTP/2 streams, many per
connection.  A cluster that answers ALPN ``http/1.1`` (remembered per
definition: per pool) or a plain-HTTP endpoint gets them on the HTTP/1.1
connections like any request.

An upgrade request gets a connection of its own
(:meth:`ClusterPool.connect_dedicated`): opened the same way (same TLS
options, same timeouts and errors), never pooled, not counted against
``max_connections`` (an exec session may last for hours).

A request that is not long-running waits at most
``response_header_timeout`` seconds for the cluster's response head
(:meth:`ClusterPool.head_timeout`; ``504`` after that, the connection
closed: :mod:`karpor.upstream.deadline`).

Connections that cannot be opened and TLS handshakes that fail are reported
to the pools' :class:`UpstreamErrors` (the metrics), HTTP/2 ones included;
:meth:`UpstreamPools.pools` lists every pool still holding connections, for
the periodic sampling of their sizes (:mod:`karpor.metrics.sampling`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from karpor.config.model import Cluster
from karpor.kube.requestinfo import long_running_target
from karpor.kube.status import ApiError
from karpor.net.tlstransport import TLSClientEndpoint
from karpor.upstream.credentials import ClusterCredentials, CredentialError
from karpor.upstream.deadline import DEFAULT_RESPONSE_HEADER_TIMEOUT
from karpor.upstream.h2 import Multiplexer, StreamExchange, connect
from karpor.upstream.http1 import (
    DedicatedConnection,
    Exchange,
    UpstreamConnection,
    describe_failure,
)

log = Logger()

DEFAULT_CONNECT_TIMEOUT = 3.0
DEFAULT_IDLE_TIMEOUT = 90.0
DEFAULT_MAX_IDLE = 64
#: seconds an idle connection beyond ``max_idle`` is kept before it closes:
#: under load more than ``max_idle`` responses may end in one reactor turn,
#: and closing the surplus there would open as many connections (and TLS
#: handshakes) for the requests of the next turn
EXCESS_IDLE_GRACE = 2.0
DEFAULT_MAX_CONNECTIONS = 1024

#: Builds the endpoint a pool connects with (tests pass their own).
EndpointFactory = Callable[[ClusterCredentials], IStreamClientEndpoint]
#: Builds the endpoint of a pool's HTTP/2 connections (ALPN ``h2`` offered).
H2EndpointFactory = Callable[[ClusterCredentials], IStreamClientEndpoint | None]


class UpstreamErrors(Protocol):
    """Where failed connection attempts are reported (the metrics)."""

    def connect_error(self, cluster: str) -> None:
        """A connection to ``cluster`` could not be opened (refused, timed out)."""

    def tls_error(self, cluster: str) -> None:
        """A TLS handshake with ``cluster`` failed."""


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Limits shared by every cluster pool."""

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_idle: int = DEFAULT_MAX_IDLE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: seconds a cluster may take to send a response head (not long-running requests)
    response_header_timeout: float = DEFAULT_RESPONSE_HEADER_TIMEOUT


class _Attempt:
    """A connection being opened for an exchange."""

    __slots__ = ("deferred", "exchange", "timed_out", "timer")

    def __init__(self, exchange: Exchange) -> None:
        self.exchange = exchange
        self.deferred: Deferred[UpstreamConnection] | None = None
        self.timer: IDelayedCall | None = None
        self.timed_out = False


class ClusterPool:
    """Persistent connections to one cluster definition."""

    def __init__(
        self,
        cluster: Cluster,
        reactor: IReactorTime,
        settings: PoolSettings,
        endpoint_factory: EndpointFactory | None = None,
        h2_endpoint_factory: H2EndpointFactory | None = None,
        errors: UpstreamErrors | None = None,
    ) -> None:
        self.cluster = cluster
        self._reactor = reactor
        self._settings = settings
        self._errors = errors
        self.error: ApiError | None = None
        self.credentials: ClusterCredentials | None = None
        self._endpoint: IStreamClientEndpoint | None = None
        try:
            self.credentials = ClusterCredentials(cluster, reactor)
        except CredentialError as e:
            self.error = ApiError(502, f"cluster {cluster.name!r}: {e}")
        #: the HTTP/2 connections (``None``: HTTP/1.1 only)
        self.multiplexer: Multiplexer | None = None
        if self.credentials is not None:
            factory = endpoint_factory or self._default_endpoint
            self._endpoint = factory(self.credentials)
            if h2_endpoint_factory is None and endpoint_factory is None:
                h2_endpoint_factory = self._default_h2_endpoint
            h2_endpoint = h2_endpoint_factory(self.credentials) if h2_endpoint_factory else None
            if h2_endpoint is not None:
                self.multiplexer = Multiplexer(
                    cluster.name,
                    self,
                    h2_endpoint,
                    reactor,
                    connect_timeout=settings.connect_timeout,
                    idle_timeout=settings.idle_timeout,
                    max_connections=settings.max_connections,
                    tls=self.credentials.tls is not None,
                    on_failure=self._failed_attempt if errors is not None else None,
                )
        self._idle: list[UpstreamConnection] = []
        self._open = 0
        self._dedicated = 0
        self._waiting: deque[Exchange] = deque()
        self._connecting: dict[UpstreamConnection, _Attempt] = {}
        self._sweeper: IDelayedCall | None = None
        self._trimmer: IDelayedCall | None = None
        self.draining = False

    def __repr__(self) -> str:
        return f"<ClusterPool {self.cluster.name} open={self._open} idle={len(self._idle)}>"

    def _default_endpoint(self, credentials: ClusterCredentials) -> IStreamClientEndpoint:
        ep = credentials.endpoint
        if credentials.tls is not None:
            return TLSClientEndpoint(
                self._reactor, ep.host, ep.port, credentials.tls, self._settings.connect_timeout
            )
        return HostnameEndpoint(
            self._reactor, ep.host, ep.port, timeout=self._settings.connect_timeout
        )

    def _default_h2_endpoint(self, credentials: ClusterCredentials) -> IStreamClientEndpoint | None:
        if credentials.tls_h2 is None:
            return None  # plain HTTP: no ALPN, HTTP/1.1 only
        ep = credentials.endpoint
        return TLSClientEndpoint(
            self._reactor, ep.host, ep.port, credentials.tls_h2, self._settings.connect_timeout
        )

    @property
    def multiplexes(self) -> bool:
        """Whether long-running requests may go as HTTP/2 streams (the
        cluster speaks h2, or has not said yet)."""
        mux = self.multiplexer
        return mux is not None and mux.speaks_h2 is not False and not self.draining

    @property
    def name(self) -> str:
        """The cluster's name."""
        return self.cluster.name

    def head_timeout(self, method: bytes, target: bytes) -> float | None:
        """The response-head limit of a plain request for ``target`` (the
        cluster's path and query, raw): ``None`` for a long-running one
        (:func:`karpor.kube.requestinfo.long_running_target`)."""
        if long_running_target(method, target):
            return None
        return self._settings.response_header_timeout

    @property
    def h2_connections(self) -> int:
        """HTTP/2 connections open or being opened."""
        return len(self.multiplexer.connections) if self.multiplexer is not None else 0

    @property
    def h2_streams(self) -> int:
        """Streams open on the HTTP/2 connections."""
        return self.multiplexer.streams if self.multiplexer is not None else 0

    @property
    def empty(self) -> bool:
        """Whether no connection of any kind is open (or being opened)."""
        return not (self._open or self._dedicated or self.h2_connections)

    @property
    def reactor(self) -> IReactorTime:
        """The clock the pool (and the connections it opens) runs on."""
        return self._reactor

    @property
    def open_connections(self) -> int:
        """Pooled connections open or being opened."""
        return self._open

    @property
    def dedicated_connections(self) -> int:
        """Connections of upgrade requests open or being opened."""
        return self._dedicated

    @property
    def idle_connections(self) -> int:
        """Connections waiting in the pool for an exchange."""
        return sum(1 for c in self._idle if not c.closed)

    # -- exchanges -------------------------------------------------------------

    def submit(self, exchange: Exchange) -> None:
        """Carry ``exchange`` on a pooled, new or (when full) the next free
        connection; failures reach ``exchange.upstream_failed``."""
        if self.error is not None:
            exchange.upstream_failed(self.error)
            return
        idle = self._idle
        if idle:
            horizon = self._reactor.seconds() - self._settings.idle_timeout
            while idle:
                conn = idle.pop()
                if conn.closed:
                    continue
                if conn.idle_since < horizon:
                    conn.close()
                    continue
                self._give(conn, exchange)
                return
        if self._open < self._settings.max_connections:
            self._connect(exchange)
        else:
            self._waiting.append(exchange)

    def submit_stream(self, exchange: StreamExchange) -> None:
        """Carry ``exchange`` (built with ``h2_headers``) as an HTTP/2
        stream, or as any request when the cluster speaks HTTP/1.1 only."""
        if self.error is not None:
            exchange.upstream_failed(self.error)
            return
        if self.multiplexer is None or self.draining or exchange.h2_headers is None:
            self.submit(exchange)
            return
        self.multiplexer.submit(exchange)

    def fallback(self, exchange: StreamExchange) -> None:
        """The cluster answered ALPN ``http/1.1``: HTTP/1.1 it is."""
        exchange.h2_headers = None
        self.submit(exchange)

    def connect_dedicated(self, exchange: Exchange) -> None:
        """Carry ``exchange`` (an upgrade request) on a new connection of its
        own, closed when the exchange ends; failures reach
        ``exchange.upstream_failed`` as for pooled ones."""
        if self.error is not None:
            exchange.upstream_failed(self.error)
            return
        self._connect(exchange, dedicated=True)

    def retry(self, exchange: Exchange) -> None:
        """Carry ``exchange`` again, on a fresh connection (its pooled one
        was stale)."""
        self._connect(exchange)

    def _give(self, conn: UpstreamConnection, exchange: Exchange) -> None:
        conn.start(exchange)
        exchange.attach(conn)

    def _next_waiting(self) -> Exchange | None:
        while self._waiting:
            exchange = self._waiting.popleft()
            if not exchange.cancelled:
                return exchange
        return None

    # -- connections -------------------------------------------------------------

    def _connect(self, exchange: Exchange, dedicated: bool = False) -> None:
        assert self._endpoint is not None and self.credentials is not None
        kind = DedicatedConnection if dedicated else UpstreamConnection
        if dedicated:
            self._dedicated += 1
        else:
            self._open += 1
        conn = kind(self, tls=self.credentials.tls is not None)
        attempt = _Attempt(exchange)
        self._connecting[conn] = attempt
        attempt.timer = self._reactor.callLater(
            self._settings.connect_timeout, self._timed_out, conn, attempt
        )
        d = connect(self._endpoint, conn)
        attempt.deferred = d
        d.addCallbacks(self._connected, self._connect_failed, errbackArgs=(conn, attempt))

    def _connected(self, conn: UpstreamConnection) -> None:
        attempt = self._connecting.get(conn)
        if attempt is not None:
            attempt.deferred = None

    def _timed_out(self, conn: UpstreamConnection, attempt: _Attempt) -> None:
        attempt.timer = None
        attempt.timed_out = True
        if attempt.deferred is not None:
            attempt.deferred.cancel()
        elif not conn.closed and conn.transport is not None:
            conn.transport.abortConnection()  # type: ignore[attr-defined]

    def _unreachable(self, attempt: _Attempt, reason: str) -> ApiError:
        if attempt.timed_out:
            reason = f"connection timed out after {self._settings.connect_timeout:g}s"
        return ApiError(503, f"cluster {self.cluster.name!r} is unreachable: {reason}")

    def _failed_attempt(self, tls: bool) -> None:
        """A connection attempt failed: connecting (``tls`` false) or in the
        TLS handshake."""
        errors = self._errors
        if errors is not None:
            if tls:
                errors.tls_error(self.cluster.name)
            else:
                errors.connect_error(self.cluster.name)

    def _closed(self, conn: UpstreamConnection) -> None:
        if conn.dedicated:
            self._dedicated -= 1
        else:
            self._open -= 1

    def _connect_failed(
        self, failure: Failure, conn: UpstreamConnection, attempt: _Attempt
    ) -> None:
        self._connecting.pop(conn, None)
        if attempt.timer is not None:
            attempt.timer.cancel()
        self._closed(conn)
        reason = (
            "connection timed out" if failure.check(CancelledError) else describe_failure(failure)
        )
        self._failed_attempt(tls=False)
        if not attempt.exchange.cancelled:
            attempt.exchange.upstream_failed(self._unreachable(attempt, reason))
        self._fill()

    def connection_ready(self, conn: UpstreamConnection) -> None:
        """``conn`` is connected (and its TLS handshake verified)."""
        attempt = self._connecting.pop(conn, None)
        if attempt is None:
            return
        if attempt.timer is not None:
            attempt.timer.cancel()
        exchange = attempt.exchange
        if exchange.cancelled:
            self.release(conn)
        else:
            self._give(conn, exchange)

    def connection_lost(self, conn: UpstreamConnection, reason: Failure, was_ready: bool) -> None:
        """``conn`` closed (the connection itself then settles its exchange)."""
        attempt = self._connecting.pop(conn, None)
        self._closed(conn)
        if attempt is not None:
            if attempt.timer is not None:
                attempt.timer.cancel()
            self._failed_attempt(tls=not attempt.timed_out)
            if not attempt.exchange.cancelled:
                if attempt.timed_out:
                    error = self._unreachable(attempt, "")
                else:
                    error = ApiError(
                        502,
                        f"cluster {self.cluster.name!r}: TLS handshake failed: "
                        f"{describe_failure(reason)}",
                    )
                attempt.exchange.upstream_failed(error)
        self._fill()

    def _fill(self) -> None:
        """Open connections for queued exchanges while there is room."""
        while self._waiting and self._open < self._settings.max_connections:
            exchange = self._next_waiting()
            if exchange is None:
                return
            self._connect(exchange)

    def release(self, conn: UpstreamConnection) -> None:
        """``conn`` finished an exchange and may carry another (a dedicated
        connection closes)."""
        if conn.closed:
            return
        if conn.dedicated:
            conn.close()
            return
        exchange = self._next_waiting()
        if exchange is not None:
            self._give(conn, exchange)
            return
        if self.draining:
            conn.close()
            return
        conn.idle_since = self._reactor.seconds()
        self._idle.append(conn)
        if self._sweeper is None:
            self._sweeper = self._reactor.callLater(self._settings.idle_timeout, self._sweep)
        if len(self._idle) > self._settings.max_idle and self._trimmer is None:
            self._trimmer = self._reactor.callLater(EXCESS_IDLE_GRACE, self._trim)

    def _trim(self) -> None:
        """Close the idle connections beyond ``max_idle`` that stayed idle
        for :data:`EXCESS_IDLE_GRACE` (least recently used first)."""
        self._trimmer = None
        idle = self._idle = [conn for conn in self._idle if not conn.closed]
        excess = len(idle) - self._settings.max_idle
        if excess <= 0:
            return
        horizon = self._reactor.seconds() - EXCESS_IDLE_GRACE
        stale = [conn for conn in idle[:excess] if conn.idle_since <= horizon]
        self._idle = idle[len(stale) :]
        for conn in stale:
            conn.close()
        if len(self._idle) > self._settings.max_idle:
            self._trimmer = self._reactor.callLater(EXCESS_IDLE_GRACE, self._trim)

    def _sweep(self) -> None:
        self._sweeper = None
        horizon = self._reactor.seconds() - self._settings.idle_timeout
        keep: list[UpstreamConnection] = []
        for conn in self._idle:
            if conn.closed:
                continue
            if conn.idle_since <= horizon:
                conn.close()
            else:
                keep.append(conn)
        self._idle = keep
        if keep:
            delay = keep[0].idle_since + self._settings.idle_timeout - self._reactor.seconds()
            self._sweeper = self._reactor.callLater(max(delay, 1.0), self._sweep)

    def drain(self) -> None:
        """Stop pooling: close idle connections now, busy ones when done."""
        self.draining = True
        if self.multiplexer is not None:
            self.multiplexer.drain()
        idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        if self._trimmer is not None:
            self._trimmer.cancel()
            self._trimmer = None


class UpstreamPools:
    """The connection pools of every cluster, one per definition in use.

    Built once per worker; :meth:`get` is called once per proxied request
    with the ``Cluster`` of the registry snapshot the request started with.
    """

    def __init__(
        self,
        reactor: IReactorTime,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_idle: int = DEFAULT_MAX_IDLE,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        endpoint_factory: EndpointFactory | None = None,
        h2_endpoint_factory: H2EndpointFactory | None = None,
        errors: UpstreamErrors | None = None,
        response_header_timeout: float = DEFAULT_RESPONSE_HEADER_TIMEOUT,
    ) -> None:
        self._reactor = reactor
        self.settings = PoolSettings(
            connect_timeout, idle_timeout, max_idle, max_connections, response_header_timeout
        )
        self._endpoint_factory = endpoint_factory
        self._h2_endpoint_factory = h2_endpoint_factory
        self._errors = errors
        self._pools: dict[str, ClusterPool] = {}
        #: replaced or forgotten pools whose connections have not all closed
        self._draining: list[ClusterPool] = []

    def get(self, cluster: Cluster) -> ClusterPool:
        """The pool for ``cluster``'s current definition (made on first use;
        a changed definition replaces the pool, the old one draining)."""
        pool = self._pools.get(cluster.name)
        if pool is not None:
            if pool.cluster is cluster:
                return pool
            if pool.cluster == cluster:
                pool.cluster = cluster  # the next lookup takes the fast path
                return pool
            self._retire(pool)
        pool = ClusterPool(
            cluster,
            self._reactor,
            self.settings,
            self._endpoint_factory,
            self._h2_endpoint_factory,
            self._errors,
        )
        if pool.error is not None:
            log.warn("{pool}: {error}", pool=pool, error=pool.error.message)
        self._pools[cluster.name] = pool
        return pool

    def _retire(self, pool: ClusterPool) -> None:
        pool.drain()
        if not pool.empty:
            self._draining.append(pool)

    def forget(self, names: set[str]) -> None:
        """Drain the pools of clusters no longer defined."""
        for name in names:
            pool = self._pools.pop(name, None)
            if pool is not None:
                self._retire(pool)

    def pools(self) -> list[ClusterPool]:
        """Every pool holding connections: the current definitions' and the
        draining ones (forgotten once empty)."""
        self._draining = [p for p in self._draining if not p.empty]
        return [*self._pools.values(), *self._draining]

    def close(self) -> None:
        """Drain every pool (on shutdown)."""
        for pool in self._pools.values():
            pool.drain()
        self._pools.clear()
