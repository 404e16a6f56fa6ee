"""The tunnel carrier: clusters reached through their agent's connection.

A cluster defined with ``spec.access.tunnel: true`` has no endpoint: its
agent (``karpor agent``) dials the gateway and, after the upgrade
(:mod:`karpor.http.tunnelwire`, accepted by :mod:`karpor.front.tunnel`),
the gateway is the HTTP/2 client on that connection.  This module is what
carries requests over it, behind the one upstream request model:

- an :class:`AgentLink` is one agent's connection on this worker: it owns
  an :class:`~karpor.upstream.h2.H2UpstreamConnection` (the same HTTP/2
  client the multiplexer uses for direct clusters, with its flow control,
  backpressure and stream resets) writing to the agent's TLS transport
  and fed what the agent sends;
- a :class:`TunnelMultiplexer` (one per tunnelled cluster name on this
  worker) is the :class:`~karpor.upstream.h2.Multiplexer` of that
  cluster whose connections are the agent links instead of connections
  it opens: the cluster's :class:`~karpor.upstream.pool.ClusterPool`
  submits every exchange there (plain requests, watches, ``logs -f``,
  upgrades, health probes), so the pipeline, policy, impersonation,
  identity exchange, audit, metrics and the prober are those of a direct
  cluster.  With no link connected, a request fails at once with a
  ``503`` naming the cluster and saying ``no agent connected``; the
  newest link takes new streams (an agent that reconnected serves at once
  even while its old connection has not been noticed dead yet);
- :class:`Tunnels` (one per worker) keeps the multiplexers and, every
  :data:`SWEEP_INTERVAL` seconds, sweeps the links: a link whose agent's
  certificate is no longer accepted (revoked, expired) is cut; a link that
  received nothing for :data:`PING_INTERVAL` seconds is sent an HTTP/2
  ``PING``, and one that received nothing for :data:`DEAD_AFTER` seconds
  is aborted (its streams end with a ``502`` or a broken stream, as when
  a cluster's connection drops).

No timer runs per request or per link: the sweep reads one counter per
link (bytes received since the last sweep).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from typing import Protocol as TypingProtocol

import h2.exceptions
import h2.settings
from twisted.internet.interfaces import IReactorTime, ITransport
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from karpor.kube.status import ApiError
from karpor.upstream.h2 import (
    H2UpstreamConnection,
    Multiplexer,
    PoolSide,
    StreamExchange,
)
from karpor.upstream.request import Credential

log = Logger()

#: Seconds between two sweeps of the links (revocation, liveness).
SWEEP_INTERVAL = 0.5
#: A link that received nothing for this many seconds is sent a ``PING``.
PING_INTERVAL = 5.0
#: A link that received nothing for this many seconds is dead: aborted.
DEAD_AFTER = 15.0


#: What a request to a tunnelled cluster carries: no prefix, no token
#: (the agent adds its own credential), ``:authority`` the cluster's name.
def tunnel_credential(name: str) -> Credential:
    """The gateway-side credential of tunnelled cluster ``name``: nothing
    secret; the agent puts its own in."""
    authority = name.encode("ascii")
    return Credential(
        b"", b"Host: " + authority + b"\r\n", ((b":scheme", b"https"), (b":authority", authority))
    )


def no_agent(name: str) -> ApiError:
    """The ``503`` of a tunnelled cluster with no agent connected."""
    return ApiError(
        503, f'cluster "{name}" is unreachable: no agent connected', "ServiceUnavailable"
    )


class _NoEndpoint:
    """The endpoint of a multiplexer that never opens a connection."""

    def connect(self, factory: Any) -> Any:  # pragma: no cover - never called
        raise AssertionError("a tunnel multiplexer opens no connection")


class _NoPool:
    """The pool side of a tunnel multiplexer: agents speak HTTP/2 only, and
    a ``401`` is about the agent's own credential (nothing to drop here)."""

    def fallback(self, exchange: StreamExchange) -> None:
        exchange.upstream_failed(ApiError(502, "the agent does not speak HTTP/2"))

    def unauthorized(self) -> None:
        return


class TunnelMultiplexer(Multiplexer):
    """The HTTP/2 connections of one tunnelled cluster: its agents' links
    (see the module docstring)."""

    def __init__(self, name: str, reactor: IReactorTime, tunnels: Tunnels) -> None:
        pool: PoolSide = _NoPool()
        super().__init__(
            name,
            pool,
            _NoEndpoint(),  # type: ignore[arg-type]
            reactor,
            connect_timeout=0.0,
            idle_timeout=0.0,
            max_connections=0,
        )
        self.tunnels = tunnels
        self.credential = tunnel_credential(name)
        #: the links of this cluster, oldest first
        self.links: list[AgentLink] = []

    def submit(self, exchange: StreamExchange) -> None:
        """Carry ``exchange`` on the newest link with room; with none
        connected, fail it at once (``503``).  Its credential is the
        tunnel's (nothing secret: the agent adds the cluster's)."""
        exchange.credential = self.credential
        for conn in reversed(self.connections):
            if conn.ready and conn.free > 0:
                conn.open_stream(exchange)
                return
        if not self.connections:
            exchange.upstream_failed(no_agent(self.name))
            return
        self._waiting.append(exchange)  # a link is starting, or all are full

    def _grow(self) -> None:
        """No connection to open: without links, the waiting exchanges fail."""
        if not self.connections:
            self._fail_waiting(no_agent(self.name))

    def _idle(self, conn: H2UpstreamConnection) -> None:
        """A link stays while its agent keeps it."""

    def drain(self) -> None:
        """The links stay (the pool of a replaced definition drains, not its agents)."""

    def add(self, link: AgentLink) -> None:
        """A link of this cluster's agent connected."""
        self.links.append(link)
        self.connections.append(link.connection)

    def remove(self, link: AgentLink) -> None:
        """A link closed."""
        if link in self.links:
            self.links.remove(link)


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """What ``get clusters`` shows of a tunnelled cluster on this worker."""

    #: links connected now
    connected: int
    #: seconds since the epoch the oldest link connected (``None``: none)
    since: float | None
    #: the newest link's agent version ("" when none)
    version: str


class TunnelMetrics(TypingProtocol):
    """Where tunnel events are counted (:class:`karpor.metrics.gateway.GatewayMetrics`)."""

    def tunnel_opened(self, cluster: str) -> None:
        """A link connected."""

    def tunnel_closed(self, cluster: str) -> None:
        """A link closed."""

    def tunnel_bytes_moved(self, cluster: str, received: int, sent: int) -> None:
        """Bytes moved on the cluster's links since the last report."""


class _NoMetrics:
    """Counts nothing."""

    def tunnel_opened(self, cluster: str) -> None:
        return

    def tunnel_closed(self, cluster: str) -> None:
        return

    def tunnel_bytes_moved(self, cluster: str, received: int, sent: int) -> None:
        return


class AgentLink:
    """One agent's connection on this worker (see the module docstring):
    what the front protocol hands the connection's bytes to after the
    ``101`` (in place of a splice)."""

    def __init__(
        self,
        tunnels: Tunnels,
        name: str,
        transport: ITransport,
        *,
        agent: str,
        address: str,
        version: str,
        authorized: Callable[[], bool],
    ) -> None:
        self.tunnels = tunnels
        self.name = name
        self.agent = agent
        self.address = address
        self.version = version
        self.since = tunnels.wall_clock()
        self._authorized = authorized
        self.mux = tunnels.multiplexer(name)
        self.connection = H2UpstreamConnection(self.mux, tls=False)
        self._transport = transport
        #: bytes received (the sweep compares it with :attr:`_seen`)
        self.received = 0
        self._seen = -1
        self._reported_in = 0
        self._reported_out = 0
        self._alive_at = tunnels.reactor.seconds()
        self._pinged = False
        self.closed = False

    def __repr__(self) -> str:
        return f"<AgentLink {self.name} from {self.address}>"

    def start(self, early: bytes) -> None:
        """Begin HTTP/2 (the gateway's preface) and take the bytes the
        agent sent after its request head."""
        self.mux.add(self)
        self.connection.makeConnection(self._transport)
        self.tunnels.opened(self)
        if early:
            self.client_data(early)

    # -- what the front protocol hands on (as to a splice) ------------------------

    def client_data(self, data: bytes) -> None:
        """Bytes from the agent: HTTP/2 frames."""
        self.received += len(data)
        self.connection.dataReceived(data)

    def client_eof(self) -> None:
        """The agent shut its sending side: the link is over."""
        self.cut("the agent closed the tunnel")

    def client_lost(self) -> None:
        """The agent's connection closed: its streams end with an error."""
        if self.closed:
            return
        self.closed = True
        self._report()
        self.mux.remove(self)
        self.connection.connectionLost(Failure(ConnectionError("the agent's tunnel closed")))
        self.tunnels.closed(self)

    def cut(self, message: str) -> None:
        """End the link (the gateway drains, the cluster was removed, the
        agent was revoked): ``GOAWAY``, then close."""
        if self.closed:
            return
        log.info(
            "tunnel of cluster {cluster} from {agent} at {address} cut: {message}",
            cluster=self.name,
            agent=self.agent,
            address=self.address,
            message=message,
        )
        self.connection.close()
        self._transport.loseConnection()

    def abort(self) -> None:
        """Drop the connection at once."""
        if not self.closed:
            self._transport.abortConnection()  # type: ignore[attr-defined]

    # -- the sweep ----------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Revocation and liveness (see the module docstring)."""
        if self.closed:
            return
        if not self._authorized():
            log.warn(
                "tunnel of cluster {cluster} from {agent} at {address}: "
                "the agent's certificate is no longer accepted; cut",
                cluster=self.name,
                agent=self.agent,
                address=self.address,
            )
            self.abort()
            return
        self._report()
        if self.received != self._seen:
            self._seen = self.received
            self._alive_at = now
            self._pinged = False
            return
        quiet = now - self._alive_at
        if quiet >= DEAD_AFTER:
            log.warn(
                "tunnel of cluster {cluster} from {agent} at {address}: "
                "nothing received for {quiet:.0f}s; dropped",
                cluster=self.name,
                agent=self.agent,
                address=self.address,
                quiet=quiet,
            )
            self.abort()
        elif quiet >= PING_INTERVAL and not self._pinged:
            self._pinged = True
            self.ping()

    def _report(self) -> None:
        """Count the bytes moved since the last sweep (the front's counting
        transport knows what was written)."""
        received = self.received
        sent = int(getattr(self._transport, "written", 0))
        moved_in, moved_out = received - self._reported_in, sent - self._reported_out
        if moved_in or moved_out:
            self._reported_in, self._reported_out = received, sent
            self.tunnels.metrics.tunnel_bytes_moved(self.name, moved_in, moved_out)

    def ping(self) -> None:
        """Send an HTTP/2 ``PING`` (its ``ACK`` counts as received bytes)."""
        try:
            self.connection.h2.ping(os.urandom(8))
        except h2.exceptions.ProtocolError:
            return
        self.connection.flush()


class Tunnels:
    """The agent links of one worker, by cluster (see the module docstring).

    ``worker`` and ``workers``: this worker's index and the gateway's
    worker count (told to each agent in the ``101``)."""

    def __init__(
        self,
        reactor: IReactorTime,
        *,
        worker: int = 0,
        workers: int = 1,
        metrics: TunnelMetrics | None = None,
        wall_clock: Callable[[], float] | None = None,
    ) -> None:
        import time  # noqa: PLC0415

        self.reactor = reactor
        self.worker = worker
        self.workers = workers
        self.metrics: TunnelMetrics = metrics or _NoMetrics()
        self.wall_clock = wall_clock or time.time
        self._muxes: dict[str, TunnelMultiplexer] = {}
        self._sweeper: LoopingCall | None = None
        #: told the name of a cluster whose agent connected (the prober probes it)
        self.on_connect: Callable[[str], None] | None = None

    def multiplexer(self, name: str) -> TunnelMultiplexer:
        """The multiplexer of tunnelled cluster ``name`` (made on first use)."""
        mux = self._muxes.get(name)
        if mux is None:
            mux = self._muxes[name] = TunnelMultiplexer(name, self.reactor, self)
        return mux

    def links(self) -> Iterator[AgentLink]:
        """Every link connected to this worker."""
        for mux in self._muxes.values():
            yield from mux.links

    def status(self, name: str) -> AgentStatus:
        """What ``get clusters`` shows of cluster ``name``'s agent here."""
        mux = self._muxes.get(name)
        links = [link for link in mux.links if not link.closed] if mux is not None else []
        if not links:
            return AgentStatus(0, None, "")
        return AgentStatus(len(links), links[0].since, links[-1].version)

    def streams(self, name: str) -> int:
        """Streams open on cluster ``name``'s links here."""
        mux = self._muxes.get(name)
        return mux.streams if mux is not None else 0

    def opened(self, link: AgentLink) -> None:
        """A link connected: log it, count it, sweep."""
        log.info(
            "tunnel of cluster {cluster} connected: agent {agent} at {address}, "
            "version {version}, worker {worker}/{workers}",
            cluster=link.name,
            agent=link.agent,
            address=link.address,
            version=link.version,
            worker=self.worker,
            workers=self.workers,
        )
        self.metrics.tunnel_opened(link.name)
        if self.on_connect is not None:
            self.on_connect(link.name)
        if self._sweeper is None:
            sweeper = self._sweeper = LoopingCall(self._sweep)
            sweeper.clock = self.reactor
            sweeper.start(SWEEP_INTERVAL, now=False)

    def closed(self, link: AgentLink) -> None:
        """A link closed: log it, count it."""
        log.info(
            "tunnel of cluster {cluster} disconnected: agent {agent} at {address}",
            cluster=link.name,
            agent=link.agent,
            address=link.address,
        )
        self.metrics.tunnel_closed(link.name)
        if not any(True for _ in self.links()) and self._sweeper is not None:
            sweeper, self._sweeper = self._sweeper, None
            if sweeper.running:
                sweeper.stop()

    def _sweep(self) -> None:
        now = self.reactor.seconds()
        for link in list(self.links()):
            link.sweep(now)

    def cut(self, names: frozenset[str], message: str) -> None:
        """Cut the links of clusters ``names`` (removed, or no longer tunnelled)."""
        for link in list(self.links()):
            if link.name in names:
                link.cut(message)

    def close(self) -> None:
        """Cut every link (the worker stops)."""
        for link in list(self.links()):
            link.cut("the gateway is shutting down")
        if self._sweeper is not None and self._sweeper.running:
            self._sweeper.stop()
        self._sweeper = None


__all__ = [
    "AgentLink",
    "AgentStatus",
    "TunnelMetrics",
    "TunnelMultiplexer",
    "Tunnels",
    "no_agent",
    "tunnel_credential",
]
