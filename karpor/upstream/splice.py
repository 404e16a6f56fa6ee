"""Upgrade requests (exec, attach, port-forward): the ``101`` relayed, then
the client and cluster connections spliced.

An upgrade request (``Connection: Upgrade`` with ``Upgrade: SPDY/3.1`` or
``websocket``) travels like a plain one (same routing, same header rewriting
and credential) but on a connection of its own
(:meth:`karpor.upstream.pool.ClusterPool.submit` gives a request with an
``upgrade`` one), carried by an :class:`UpgradeForwarder`:

- a non-``101`` answer (400, 403, 404 ``Status``…) is relayed unchanged like
  any response (kubectl's WebSocket→SPDY fallback relies on it); the client
  connection then goes on as its headers say, the dedicated one is closed;
- a ``101 Switching Protocols`` head goes to the client (hop-by-hop headers
  out, ``Connection: Upgrade`` and ``Upgrade`` kept), then a :class:`Splice`
  joins the two connections.

A :class:`Splice` copies bytes both ways exactly as read, never parsing a
frame; it switches both TLS connections to bulk mode
(:meth:`karpor.net.tlstransport._TLSConnection.bulk`: large reads and
writes).  Each transport has the *other* side's reading registered as its
producer, so a slow reader pauses the other side and at most a transport
buffer's worth of bytes waits in the gateway whatever the amount streamed.
A half-close (a TCP EOF) is passed on where the other transport can
half-close (plain TCP); TLS cannot (its ``close_notify`` ends the
connection), so there an EOF closes both.  When either side is gone the
other is closed after it has written what it was given; a side that does
not finish closing within ``close_grace`` seconds is aborted.  No timeout
applies to a live splice.

When the gateway itself must end a session (:meth:`Splice.cut`: a drain
deadline, its cluster removed), the client must see a failure, never a
clean end with output missing: the splice keeps a
:class:`~karpor.http.sessionend.SessionEnd` for the protocol the ``101``
negotiated, which follows the frames both ways (frame heads and the SPDY
client's header blocks only), and writes its ending (a ``Failure`` on the
error stream or channel, a WebSocket close 1011) before closing; without a
clean ending the client connection is dropped.

An exec, attach or port-forward may have a
:class:`~karpor.upstream.sessiontap.SessionTap` (an audit log, or a
recorded cluster): it sees every byte both ways before it is relayed
(counts, the exit code, the recording), and may cut the session when its
recording can no longer be written; then nothing more is relayed.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableDescriptor,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from zope.interface import implementer

from karpor.http.headers import ResponseHeaders
from karpor.http.sessionend import SessionEnd, session_end
from karpor.upstream.forward import Channel, Forwarder
from karpor.upstream.request import UpstreamRequest
from karpor.upstream.sessiontap import SessionTap

#: Seconds a closing side of a splice may take to flush and close cleanly.
CLOSE_GRACE = 10.0

_CLIENT = 0
_UPSTREAM = 1


class Reading(TypingProtocol):
    """Pauses and resumes reading from one side of a splice."""

    def pause_reading(self) -> None:
        """Stop reading (the other side cannot take more now)."""

    def resume_reading(self) -> None:
        """Read again."""


class TunnelChannel(Channel, Reading, TypingProtocol):
    """The client side of an upgrade request, implemented by the front
    protocol."""

    @property
    def client(self) -> ITransport:
        """The client's transport (spliced to the cluster's after the ``101``)."""

    def relay_switch(self, reason: bytes, response: ResponseHeaders) -> None:
        """Pass the cluster's ``101`` head on."""

    def spliced(self, splice: Splice) -> bytes:
        """The request switched protocols: hand every byte the client sends
        from now on to ``splice``; return the bytes the client already sent
        after its request head (they go to the cluster after the ``101``)."""


@implementer(IPushProducer)
class _Pauser:
    """Registered on one side's transport: pauses reading the other side
    while that transport's buffer is full."""

    __slots__ = ("_other", "_side", "_splice")

    def __init__(self, splice: Splice, side: int, other: Reading) -> None:
        self._splice = splice
        self._side = side
        self._other = other

    def pauseProducing(self) -> None:
        """The transport is full: stop reading the other side."""
        self._other.pause_reading()

    def resumeProducing(self) -> None:
        """The transport drained: read the other side again."""
        self._other.resume_reading()

    def stopProducing(self) -> None:
        """The transport is gone."""
        self._splice._gone(self._side)


class Splice:
    """Two connections joined after a ``101`` (see the module docstring).

    The protocols on both sides feed it what they read
    (:meth:`client_data`, :meth:`upstream_data`) and tell it when their
    peer shuts down (``*_eof``) or their connection closes (``*_lost``).
    """

    def __init__(
        self,
        client: ITransport,
        client_reading: Reading,
        upstream: ITransport,
        upstream_reading: Reading,
        clock: IReactorTime,
        close_grace: float = CLOSE_GRACE,
        ending: SessionEnd | None = None,
        tap: SessionTap | None = None,
    ) -> None:
        self._transports = (client, upstream)
        #: sees every byte both ways (counts, exit code, recording)
        self._tap = tap
        #: follows the session's frames, for :meth:`cut`
        self._ending = ending
        self._readings = (client_reading, upstream_reading)
        self._to_client = client.write
        self._to_upstream = upstream.write
        self._clock = clock
        self._close_grace = close_grace
        self._client_gone = False
        self._upstream_gone = False
        self._client_eof = False
        self._upstream_eof = False
        self._closing = False
        #: the gateway ended the session (:meth:`cut`): nothing more is relayed
        self._cut = False
        self._timers: list[IDelayedCall | None] = [None, None]

    @property
    def closed(self) -> bool:
        """Whether both sides are gone."""
        return self._client_gone and self._upstream_gone

    def start(self, to_upstream: bytes = b"", to_client: bytes = b"") -> None:
        """Register the producers both ways, then write the bytes each side
        sent before the splice (the client's after its request head, the
        cluster's after the ``101`` head)."""
        client, upstream = self._transports
        client_reading, upstream_reading = self._readings
        for transport in (client, upstream):
            # TLS connections move spliced bytes in large pieces
            bulk = getattr(transport, "bulk", None)
            if bulk is not None:
                bulk()
        client.registerProducer(_Pauser(self, _CLIENT, upstream_reading), True)  # type: ignore[attr-defined]
        upstream.registerProducer(_Pauser(self, _UPSTREAM, client_reading), True)  # type: ignore[attr-defined]
        ending, tap = self._ending, self._tap
        if to_client:
            if ending is not None:
                ending.from_server(to_client)
            if tap is not None:
                tap.from_server(to_client)
            client.write(to_client)
        if to_upstream:
            if ending is not None:
                ending.from_client(to_upstream)
            if tap is not None:
                tap.from_client(to_upstream)
            upstream.write(to_upstream)

    # -- bytes -----------------------------------------------------------------

    def client_data(self, data: bytes) -> None:
        """Bytes from the client: to the cluster, as they are."""
        if not self._upstream_gone and not self._cut:
            if self._ending is not None:
                self._ending.from_client(data)
            tap = self._tap
            if tap is not None:
                tap.from_client(data)
                if self._cut:  # the recording failed: the session was cut
                    return
            self._to_upstream(data)

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the cluster: to the client, as they are."""
        if not self._client_gone and not self._cut:
            if self._ending is not None:
                self._ending.from_server(data)
            tap = self._tap
            if tap is not None:
                tap.from_server(data)
                if self._cut:  # the recording failed: the session was cut
                    return
            self._to_client(data)

    def cut(self, message: str) -> None:
        """End the session so that the client sees a failure carrying
        ``message`` (see the module docstring), then close both sides."""
        if self._closing:
            return
        self._cut = True
        ending = self._ending
        last = None if ending is None or self._client_gone else ending.ending(message)
        if last is not None:
            self._to_client(last)
        elif not self._client_gone:
            self._client_gone = True
            self._transports[_CLIENT].abortConnection()  # type: ignore[attr-defined]
        self.close()

    # -- half-close ------------------------------------------------------------

    def client_eof(self) -> None:
        """The client shut down its sending side."""
        self._client_eof = True
        self._half_close(_UPSTREAM, self._upstream_eof)

    def upstream_eof(self) -> None:
        """The cluster shut down its sending side."""
        self._upstream_eof = True
        self._half_close(_CLIENT, self._client_eof)

    def _half_close(self, side: int, other_eof: bool) -> None:
        transport = self._transports[side]
        if other_eof or not IHalfCloseableDescriptor.providedBy(transport):
            self.close()
        elif not self._closing and not self._is_gone(side):
            transport.loseWriteConnection()  # type: ignore[attr-defined]

    # -- closing ---------------------------------------------------------------

    def client_lost(self) -> None:
        """The client connection is closed."""
        self._gone(_CLIENT)

    def upstream_lost(self) -> None:
        """The cluster connection is closed."""
        self._gone(_UPSTREAM)

    def _is_gone(self, side: int) -> bool:
        return self._client_gone if side == _CLIENT else self._upstream_gone

    def _gone(self, side: int) -> None:
        if side == _CLIENT:
            self._client_gone = True
        else:
            self._upstream_gone = True
        timer, self._timers[side] = self._timers[side], None
        if timer is not None and timer.active():
            timer.cancel()
        self.close()

    def close(self) -> None:
        """Close both sides; each first writes what it was given."""
        if self._closing:
            return
        self._closing = True
        for side in (_CLIENT, _UPSTREAM):
            if not self._is_gone(side):
                self._shut(side)

    def _shut(self, side: int) -> None:
        transport = self._transports[side]
        # TLS waits for its producer to go before it sends close_notify, and
        # must read the peer's close_notify: unregister, read, then close.
        transport.unregisterProducer()  # type: ignore[attr-defined]
        self._readings[side].resume_reading()
        transport.loseConnection()
        if not self._is_gone(side):
            self._timers[side] = self._clock.callLater(self._close_grace, self._abort, side)

    def _abort(self, side: int) -> None:
        self._timers[side] = None
        if not self._is_gone(side):
            self._transports[side].abortConnection()  # type: ignore[attr-defined]


class UpgradeForwarder(Forwarder):
    """The exchange of one upgrade request (``request.upgrade`` set, no
    body): a :class:`Forwarder` (so a non-``101`` answer is relayed like
    any response) that splices the two connections on ``101``."""

    def __init__(
        self,
        channel: TunnelChannel,
        request: UpstreamRequest,
        *,
        clock: IReactorTime,
        close_grace: float = CLOSE_GRACE,
        tap: SessionTap | None = None,
    ) -> None:
        super().__init__(channel, request)
        #: the session's bytes, exit code and recording (``None``: not kept)
        self.tap = tap
        self.retriable = False
        self._tunnel_channel = channel
        self._clock = clock
        self._close_grace = close_grace
        #: the splice, once switched
        self.splice: Splice | None = None

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> Splice | None:
        """Relay the ``101`` head and splice the connections."""
        conn = self._conn
        if self._finished or conn is None or conn.transport is None:
            return None
        self._finished = True
        self._started = True
        self._conn = None
        channel = self._tunnel_channel
        channel.relay_switch(reason, response)
        splice = Splice(
            channel.client,
            channel,
            conn.transport,
            conn,
            self._clock,
            self._close_grace,
            ending=session_end(response.forward),
            tap=self.tap,
        )
        self.splice = splice
        recordable = True
        if self.tap is not None:
            recordable = self.tap.switched(response.forward, splice.cut)
        early = channel.spliced(splice)
        splice.start(to_upstream=early)
        if not recordable:
            splice.cut("the session must be recorded but its protocol cannot be")
        return splice
