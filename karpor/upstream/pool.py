"""Per-cluster pools of persistent upstream connections.

:class:`UpstreamPools` keeps one :class:`ClusterPool` per cluster name.  A
pool is built for one cluster *definition*: its TLS options and credential
are made once (:class:`~karpor.upstream.credentials.ClusterCredentials`);
when the definition changes (a different, unequal ``Cluster``), the next
request gets a fresh pool while the old one drains (its connections close
when their exchanges end).

Every request reaches a cluster the same way, through
:meth:`ClusterPool.submit`: an exchange holding one
:class:`~karpor.upstream.request.UpstreamRequest` (a proxied request, an
upgrade, a health probe).  The pool resolves the credential: the
definition's (a ``token_file`` re-read when it changed), or an exec
plugin's token from the
:class:`~karpor.upstream.execcredential.ExecCredentialCache` (waited for
when not cached; ``502`` naming the cluster when the plugin fails; a
``401`` from the cluster, on any carrier, drops the cached token:
:meth:`ClusterPool.unauthorized`).  Then it picks the carrier, which
writes the request in its own framing:

- a tunnelled cluster (``spec.access.tunnel``) has no connection of its
  own: every exchange (upgrades included) goes to its agent's links, the
  worker's :class:`~karpor.upstream.tunnel.TunnelMultiplexer`
  (:mod:`karpor.upstream.tunnel`), with a credential holding nothing
  secret (the agent adds its own);
- an upgrade request gets a connection of its own (a
  :class:`~karpor.upstream.http1.DedicatedConnection`): opened the same
  way (same TLS options, same timeouts and errors), never pooled, not
  counted against ``max_connections`` (an exec session may last for hours);
- a long-running request (watches, ``logs -f``: the policy is
  :func:`karpor.upstream.h2.multiplexed`) goes to the pool's
  :class:`~karpor.upstream.h2.Multiplexer` as an HTTP/2 stream, many per
  connection.  A cluster that answers ALPN ``http/1.1`` (remembered per
  definition: per pool) or a plain-HTTP endpoint gets them on the HTTP/1.1
  connections like any request;
- any other request gets an idle connection (most recently used first), a
  new one, or waits in a queue while ``max_connections`` are open.

Connections are opened by a :class:`~karpor.upstream.connector.Connector`
(one per pool, one per multiplexer: the same bounds and errors): connect
and TLS handshake bounded by ``connect_timeout``, 503 when the cluster
cannot be reached, 502 naming the TLS failure; each failure is reported to
the pools' :class:`~karpor.upstream.connector.UpstreamErrors` (the
metrics).  Idle connections expire after ``idle_timeout``; at most
``max_idle`` are kept once a burst is over (those beyond it close after
:data:`EXCESS_IDLE_GRACE` seconds idle, not at once: a busy gateway would
otherwise close and reopen connections from one reactor turn to the next).

A request that is not long-running waits at most
``response_header_timeout`` seconds for the cluster's response head
(:meth:`ClusterPool.head_timeout`; ``504`` after that, the connection
closed: :mod:`karpor.upstream.deadline`), and, before that, as long again
in the queue for a free connection (``504``, nothing sent: one timer per
pool, armed for the oldest waiting request while any waits).

:meth:`UpstreamPools.pools` lists every pool still holding connections, for
the periodic sampling of their sizes (:mod:`karpor.metrics.sampling`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from karpor.config.model import Cluster
from karpor.kube.requestinfo import long_running_target
from karpor.kube.status import ApiError
from karpor.net.tlstransport import TLSClientEndpoint
from karpor.upstream.connector import Connector, UpstreamErrors
from karpor.upstream.credentials import ClusterCredentials, CredentialError
from karpor.upstream.deadline import DEFAULT_RESPONSE_HEADER_TIMEOUT
from karpor.upstream.execcredential import ExecCredentialCache, ExecPluginError, ExecResult
from karpor.upstream.h2 import Multiplexer, StreamExchange, multiplexed
from karpor.upstream.http1 import DedicatedConnection, Exchange, UpstreamConnection
from karpor.upstream.tunnel import TunnelMultiplexer, Tunnels

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


__all__ = ["ClusterPool", "PoolSettings", "UpstreamErrors", "UpstreamPools"]


@dataclass(frozen=True, slots=True)
class PoolSettings:
    """Limits shared by every cluster pool."""

    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    max_idle: int = DEFAULT_MAX_IDLE
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: seconds a cluster may take to send a response head (not long-running requests)
    response_header_timeout: float = DEFAULT_RESPONSE_HEADER_TIMEOUT


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
        exec_credentials: ExecCredentialCache | None = None,
        tunnels: Tunnels | None = None,
    ) -> None:
        self.cluster = cluster
        self._reactor = reactor
        self._settings = settings
        #: exec-plugin tokens (clusters with an exec credential need it)
        self.exec_credentials = exec_credentials
        self.error: ApiError | None = None
        self.credentials: ClusterCredentials | None = None
        self._connector: Connector[UpstreamConnection] | None = None
        #: the agents' links of a tunnelled cluster (``None``: a direct one)
        self.tunnel: TunnelMultiplexer | None = None
        if cluster.tunnel:
            if tunnels is None:
                self.error = ApiError(502, f"cluster {cluster.name!r}: tunnels are not enabled")
            else:
                self.tunnel = tunnels.multiplexer(cluster.name)
        else:
            try:
                self.credentials = ClusterCredentials(cluster, reactor)
            except CredentialError as e:
                self.error = ApiError(502, f"cluster {cluster.name!r}: {e}")
        #: the HTTP/2 connections (``None``: HTTP/1.1 only)
        self.multiplexer: Multiplexer | None = None
        if self.credentials is not None:
            factory = endpoint_factory or self._default_endpoint
            self._connector = Connector(
                cluster.name,
                factory(self.credentials),
                reactor,
                settings.connect_timeout,
                self._connect_failed,
                errors,
            )
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
                    errors=errors,
                )
        self._idle: list[UpstreamConnection] = []
        self._open = 0
        self._dedicated = 0
        #: exchanges waiting for a free connection, and since when
        self._waiting: deque[tuple[float, Exchange]] = deque()
        self._queue_timer: IDelayedCall | None = None
        #: the exchange each connection being opened is for
        self._connecting: dict[UpstreamConnection, Exchange] = {}
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
        """Streams open on the HTTP/2 connections (a tunnelled cluster's: on
        its agents' links, counted by the current definition's pool only)."""
        if self.tunnel is not None:
            return 0 if self.draining else self.tunnel.streams
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
        """Carry ``exchange.request`` to the cluster; failures (and the
        answer) reach the exchange.

        The pool resolves the credential first (``exchange.credential``:
        the definition's, or an exec plugin's token, waited for when it is
        not cached: a client sending a body meanwhile is paused by its
        exchange), then picks the carrier: a dedicated HTTP/1.1 connection
        for an upgrade, an HTTP/2 stream for a multiplexed request
        (:func:`~karpor.upstream.h2.multiplexed`) where the cluster speaks
        h2, else a pooled HTTP/1.1 connection (an idle one, a new one, or
        the next free one when ``max_connections`` are open); a
        tunnelled cluster's exchanges all go to its agents' links."""
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.submit(exchange)
            return
        credentials = self.credentials
        if credentials is None:
            exchange.upstream_failed(
                self.error or ApiError(502, "the cluster definition cannot be used")
            )
            return
        if credentials.exec_credential is None:
            exchange.credential = credentials.current()
            self._carry(exchange)
        else:
            self._await_token(exchange)

    def _carry(self, exchange: Exchange) -> None:
        """Hand ``exchange`` (its credential resolved) to its carrier."""
        request = exchange.request
        if request.upgrade is not None:
            self._connect(exchange, dedicated=True)
            return
        mux = self.multiplexer
        if (
            mux is not None
            and mux.speaks_h2 is not False
            and not self.draining
            and multiplexed(request.method, request.target)
        ):
            mux.submit(exchange)
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
            self._waiting.append((self._reactor.seconds(), exchange))
            if self._queue_timer is None and exchange.head_timeout is not None:
                self._queue_timer = self._reactor.callLater(exchange.head_timeout, self._expire)

    def _expire(self) -> None:
        """Fail the queued exchanges that waited their head timeout for a
        connection; re-arm for the next one due."""
        self._queue_timer = None
        now = self._reactor.seconds()
        kept: deque[tuple[float, Exchange]] = deque()
        due: float | None = None
        for since, exchange in self._waiting:
            if exchange.cancelled:
                continue
            limit = exchange.head_timeout
            if limit is not None and now - since >= limit:
                name = self.cluster.name
                exchange.upstream_failed(
                    ApiError(
                        504,
                        f'Timeout: no connection to cluster "{name}" became free within '
                        f"{limit:g}s (all {self._settings.max_connections} busy)",
                        "Timeout",
                        details={"name": name, "group": "cluster.karpor.io", "kind": "clusters"},
                    )
                )
                continue
            kept.append((since, exchange))
            if limit is not None:
                due = since + limit if due is None else min(due, since + limit)
        self._waiting = kept
        if due is not None:
            self._queue_timer = self._reactor.callLater(max(due - now, 0.0), self._expire)

    # -- credentials -------------------------------------------------------------

    def _await_token(self, exchange: Exchange) -> None:
        cache = self.exec_credentials
        if cache is None:
            exchange.upstream_failed(
                ApiError(502, f'cluster "{self.cluster.name}": exec credentials are not enabled')
            )
            return
        cache.get(self.cluster).addCallbacks(
            self._got_token, self._no_token, callbackArgs=(exchange,), errbackArgs=(exchange,)
        )

    def _got_token(self, result: ExecResult, exchange: Exchange) -> None:
        if exchange.cancelled:
            return  # the client went away (or the probe timed out) meanwhile
        name = self.cluster.name
        credentials = self.credentials
        assert credentials is not None
        if result.token is None:
            exchange.upstream_failed(
                ApiError(
                    502,
                    f'cluster "{name}": the exec plugin gave a client certificate; '
                    "the gateway supports exec plugins giving tokens only",
                    "BadGateway",
                )
            )
            return
        try:
            exchange.credential = credentials.with_token(result.token)
        except CredentialError as exc:
            exchange.upstream_failed(ApiError(502, f'cluster "{name}": {exc}', "BadGateway"))
            return
        try:
            self._carry(exchange)
        except Exception:
            log.failure(
                "forwarding after the exec credential failed (Audit-Id {auditID})",
                auditID=exchange.request.audit_id.decode("ascii", "replace"),
            )
            exchange.upstream_failed(ApiError(500, "internal error"))

    def _no_token(self, failure: Failure, exchange: Exchange) -> None:
        if exchange.cancelled:
            return
        exc = failure.value
        audit_id = exchange.request.audit_id
        if isinstance(exc, ExecPluginError):
            if audit_id:  # a client's request; a probe says it in its verdict
                log.warn(
                    "{error} {detail} (Audit-Id {auditID})",
                    error=str(exc),
                    detail=exc.detail,
                    auditID=audit_id.decode("ascii", "replace"),
                )
            exchange.upstream_failed(exc.api_error())
            return
        log.failure(
            "exec credential failed (Audit-Id {auditID})",
            failure,
            auditID=audit_id.decode("ascii", "replace"),
        )
        exchange.upstream_failed(
            ApiError(502, f'cluster "{self.cluster.name}": exec plugin failed')
        )

    def unauthorized(self) -> None:
        """The cluster answered ``401``: an exec plugin's cached token is
        dropped (the next request runs the plugin again)."""
        cache = self.exec_credentials
        credentials = self.credentials
        if cache is not None and credentials is not None and credentials.exec_credential:
            cache.invalidate(self.cluster.name)

    def fallback(self, exchange: StreamExchange) -> None:
        """The cluster answered ALPN ``http/1.1``: HTTP/1.1 it is (the
        multiplexer no longer takes requests)."""
        self._carry(exchange)

    def retry(self, exchange: Exchange) -> None:
        """Carry ``exchange`` again, on a fresh connection (its pooled one
        was stale)."""
        self._connect(exchange)

    def _give(self, conn: UpstreamConnection, exchange: Exchange) -> None:
        conn.start(exchange)
        exchange.attach(conn)

    def _next_waiting(self) -> Exchange | None:
        while self._waiting:
            _, exchange = self._waiting.popleft()
            if not exchange.cancelled:
                return exchange
        timer, self._queue_timer = self._queue_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        return None

    # -- connections -------------------------------------------------------------

    def _connect(self, exchange: Exchange, dedicated: bool = False) -> None:
        connector = self._connector
        assert connector is not None and self.credentials is not None
        kind = DedicatedConnection if dedicated else UpstreamConnection
        if dedicated:
            self._dedicated += 1
        else:
            self._open += 1
        conn = kind(self, tls=self.credentials.tls is not None)
        self._connecting[conn] = exchange
        connector.open(conn)

    def _closed(self, conn: UpstreamConnection) -> None:
        if conn.dedicated:
            self._dedicated -= 1
        else:
            self._open -= 1

    def _connect_failed(self, conn: UpstreamConnection, error: ApiError) -> None:
        exchange = self._connecting.pop(conn, None)
        self._closed(conn)
        if exchange is not None and not exchange.cancelled:
            exchange.upstream_failed(error)
        self._fill()

    def connection_ready(self, conn: UpstreamConnection) -> None:
        """``conn`` is connected (and its TLS handshake verified)."""
        exchange = self._connecting.pop(conn, None)
        if exchange is None:
            return
        if self._connector is not None:
            self._connector.opened(conn)
        if exchange.cancelled:
            self.release(conn)
        else:
            self._give(conn, exchange)

    def connection_lost(self, conn: UpstreamConnection, reason: Failure, was_ready: bool) -> None:
        """``conn`` closed (the connection itself then settles its exchange)."""
        exchange = self._connecting.pop(conn, None)
        self._closed(conn)
        if exchange is not None and self._connector is not None:
            error = self._connector.lost(conn, reason)
            if error is not None and not exchange.cancelled:
                exchange.upstream_failed(error)
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
        exec_credentials: ExecCredentialCache | None = None,
        tunnels: Tunnels | None = None,
    ) -> None:
        self._reactor = reactor
        #: the agents' links of this worker (``None``: no tunnelled cluster is served)
        self.tunnels = tunnels
        #: exec-plugin tokens, for the clusters whose credential is an exec plugin
        self.exec_credentials = exec_credentials
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
            self.exec_credentials,
            self.tunnels,
        )
        if pool.error is not None:
            log.warn("{pool}: {error}", pool=pool, error=pool.error.message)
        self._pools[cluster.name] = pool
        return pool

    def use_exec_credentials(self, cache: ExecCredentialCache) -> None:
        """Resolve exec-plugin credentials with ``cache`` from now on."""
        self.exec_credentials = cache
        for pool in self._pools.values():
            pool.exec_credentials = cache

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
