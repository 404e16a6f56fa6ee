"""One stream of an agent's tunnel: a gateway request forwarded to the cluster.

An :class:`AgentStream` is the :class:`~karpor.upstream.http1.Exchange`
the agent submits to its own cluster's
:class:`~karpor.upstream.pool.ClusterPool` for one HTTP/2 stream the gateway
opened on the tunnel (:mod:`karpor.agent.tunnel`): the pool adds the
agent's own credential and picks the carrier (pooled HTTP/1.1, an HTTP/2
stream for watches and ``logs -f``, a dedicated connection for an
upgrade), exactly as the gateway does for a direct cluster.  Nothing is
buffered beyond what the flow-control windows allow:

- the response goes back as the stream's HEADERS and DATA, each piece the
  moment it arrives; when the stream's send window is closed the rest of
  the piece waits here and the carrier's reading pauses (its
  :meth:`~karpor.upstream.http1.Carrier.valve`) until the gateway grants
  more window;
- the request body (and, once switched, what the client sends into an
  exec or port-forward session) goes to the carrier as it arrives; the
  bytes are handed back to the gateway's send window only while the
  carrier's transport takes them (the stream is registered as its
  producer), so a slow cluster stops the gateway after one window;
- an upgrade request answered ``101`` is answered ``200`` with
  :data:`~karpor.http.tunnelwire.SWITCHED_HEADER`, then the session's
  bytes travel as DATA both ways (the stream is the carrier's
  :class:`~karpor.upstream.http1.Tunnel`).

A failure before the response head is answered with its ``Status``; one
after it resets the stream (the gateway's client sees a broken stream,
never a clean end with output missing).
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from karpor.http.headers import Header, ResponseHeaders
from karpor.http.tunnelwire import SWITCHED_HEADER, UPGRADE_HEADER
from karpor.kube.status import ApiError
from karpor.upstream.forward import chunk
from karpor.upstream.http1 import Carrier
from karpor.upstream.request import CHUNKED, NO_BODY, UNRESOLVED, UpstreamRequest

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
_LAST_CHUNK = b"0\r\n\r\n"
#: response headers HTTP/2 does not carry (connection-specific)
_H2_DROP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)


class StreamSide(TypingProtocol):
    """What a stream needs from the tunnel's HTTP/2 connection."""

    def send_head(self, stream_id: int, headers: list[Header], end: bool) -> None:
        """Send the response HEADERS."""

    def send_data(self, stream_id: int, data: bytes) -> int:
        """Send as much of ``data`` as the windows allow; how much went."""

    def end_stream(self, stream_id: int) -> None:
        """End our sending side."""

    def reset(self, stream_id: int) -> None:
        """Reset the stream (the response broke off)."""

    def acknowledge(self, stream_id: int, size: int) -> None:
        """Hand ``size`` received bytes back to the gateway's send windows."""

    def forget(self, stream_id: int) -> None:
        """The stream is over on our side."""


def response_headers(code: int, forward: list[Header]) -> list[Header]:
    """A response head as an HTTP/2 header list (names lower-cased,
    connection-specific headers out)."""
    out: list[Header] = [(b":status", b"%d" % code)]
    for name, value in forward:
        lname = name.lower()
        if lname not in _H2_DROP:
            out.append((lname, value))
    return out


@implementer(IPushProducer)
class _ConnectionReading:
    """Pauses a switched connection's reading."""

    def __init__(self, carrier: Carrier) -> None:
        self._carrier = carrier

    def pauseProducing(self) -> None:
        """Stop reading from the cluster."""
        self._carrier.pause_reading()

    def resumeProducing(self) -> None:
        """Read from the cluster again."""
        self._carrier.resume_reading()

    def stopProducing(self) -> None:
        """Not used."""


@implementer(IPushProducer)
class AgentStream:
    """The exchange of one tunnel stream (see the module docstring)."""

    def __init__(
        self,
        side: StreamSide,
        stream_id: int,
        request: UpstreamRequest,
        head_timeout: float | None = None,
    ) -> None:
        self._side = side
        self.stream_id = stream_id
        self.request = request
        self.credential = UNRESOLVED
        self.head_timeout = head_timeout
        self.head_only = request.method == b"HEAD"
        has_body = request.body != NO_BODY or request.upgrade is not None
        self.retriable = not has_body and request.method in _IDEMPOTENT
        self.cancelled = False
        self._carrier: Carrier | None = None
        #: request body bytes that came before the carrier (one window at most)
        self._early: list[bytes] = []
        self._body_done = request.body == NO_BODY and request.upgrade is None
        self._chunked = request.body == CHUNKED
        self._headed = False
        self._switched = False
        self._finished = False
        #: response bytes waiting for the send window, and whether the end waits too
        self._pending = b""
        self._end_pending = False
        self._reading_paused = False
        self._valve: IPushProducer | None = None
        #: received bytes not yet acknowledged (the carrier's transport is full)
        self._unacked = 0
        self._paused = False

    # -- the request (from the gateway) ---------------------------------------------

    def attach(self, connection: Carrier) -> None:
        """The pool gave the request a carrier (its head is written)."""
        if self._finished:
            connection.abort()
            return
        self._carrier = connection
        early, self._early = self._early, []
        for data in early:
            self._write_body(connection, data)
        unacked, self._unacked = self._unacked, 0
        if unacked:  # what came before the carrier is written now
            self._side.acknowledge(self.stream_id, unacked)
        if self.request.upgrade is not None:
            connection.finish_request()
            return
        if self._body_done:
            self._end_body(connection)
        else:
            connection.register_body_producer(self)

    def _write_body(self, carrier: Carrier, data: bytes) -> None:
        if self._switched:
            transport = carrier.transport
            if transport is not None:
                transport.write(data)
            return
        if self._chunked and carrier.transport is not None:
            data = chunk(data)
        carrier.write(data)

    def _end_body(self, carrier: Carrier) -> None:
        if self._chunked and carrier.transport is not None:
            carrier.write(_LAST_CHUNK)
        carrier.finish_request()

    def gateway_data(self, data: bytes, flow_controlled: int) -> None:
        """DATA from the gateway: request body (or session bytes)."""
        carrier = self._carrier
        if self._finished and not self._switched:
            self._side.acknowledge(self.stream_id, flow_controlled)
            return
        if carrier is None:
            self._early.append(data)
        else:
            self._write_body(carrier, data)
        if self._paused or carrier is None:
            self._unacked += flow_controlled
        else:
            self._side.acknowledge(self.stream_id, flow_controlled)

    def gateway_end(self) -> None:
        """The gateway ended its side (the body is complete, or the client
        half-closed its session)."""
        if self._body_done and not self._switched:
            return
        self._body_done = True
        carrier = self._carrier
        if carrier is None:
            return
        if self._switched:
            # the gateway's splice closed (TLS has no half-close): so does the session
            transport = carrier.transport
            if transport is not None:
                transport.loseConnection()
            return
        carrier.unregister_body_producer()
        self._end_body(carrier)

    def gateway_reset(self) -> None:
        """The gateway reset the stream (its client went away)."""
        self._finished = True
        self.cancelled = True
        carrier, self._carrier = self._carrier, None
        if carrier is not None:
            if self._switched and carrier.transport is not None:
                carrier.transport.loseConnection()
            else:
                carrier.abort()

    # -- IPushProducer (registered on the carrier's transport) ---------------------

    def pauseProducing(self) -> None:
        """The cluster side is full: stop acknowledging the gateway's bytes."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The cluster side drained: acknowledge what it took."""
        self._paused = False
        unacked, self._unacked = self._unacked, 0
        if unacked:
            self._side.acknowledge(self.stream_id, unacked)

    def stopProducing(self) -> None:
        """The carrier's transport is gone."""
        self.resumeProducing()

    # -- the response (from the cluster) ---------------------------------------------

    def upstream_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        """An interim response: not relayed (the gateway sent the whole request)."""

    def upstream_head(self, code: int, reason: bytes, response: ResponseHeaders) -> None:
        """Send the response HEADERS."""
        if self._finished:
            return
        self._headed = True
        empty = self.head_only or code in (204, 304)
        self._side.send_head(self.stream_id, response_headers(code, response.forward), empty)
        if empty:
            self._done()

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> AgentStream | None:
        """The cluster switched protocols: answer ``200`` marked switched,
        then carry the session's bytes (this stream is the carrier's tunnel)."""
        upgrade = self.request.upgrade
        if self._finished or upgrade is None or self._carrier is None:
            return None
        self._headed = True
        self._switched = True
        headers = response_headers(200, response.forward)
        upgraded = next((v for n, v in response.forward if n.lower() == b"upgrade"), upgrade)
        headers += [(SWITCHED_HEADER, b"101"), (UPGRADE_HEADER, upgraded)]
        self._side.send_head(self.stream_id, headers, False)
        transport = self._carrier.transport
        if transport is not None:
            transport.registerProducer(self, True)  # type: ignore[attr-defined]
            # large reads and writes (as a gateway's splice does): a session's
            # bytes go on as DATA frames of up to the gateway's frame size
            bulk = getattr(transport, "bulk", None)
            if bulk is not None:
                bulk()
        return self

    def upstream_body(self, data: bytes) -> None:
        """A piece of the response: to the gateway within the send window."""
        if self._finished or not data:
            return
        if self._pending:
            self._pending += data
            return
        sent = self._side.send_data(self.stream_id, data)
        if sent < len(data):
            self._pending = data[sent:]
            self._pause_reading()

    def upstream_end(self) -> None:
        """The response is complete: end the stream (after what waits)."""
        if self._finished:
            return
        if self._pending:
            self._end_pending = True
            return
        self._side.end_stream(self.stream_id)
        self._done()

    def upstream_failed(self, error: ApiError) -> None:
        """Answer the error's ``Status``, or reset a response that began."""
        if self._finished:
            return
        if self._headed:
            self._side.reset(self.stream_id)
            self._done()
            return
        body = error.body()
        self._headed = True
        self._side.send_head(
            self.stream_id,
            [
                (b":status", b"%d" % error.code),
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ],
            False,
        )
        self.upstream_body(body)
        self.upstream_end()

    # -- Tunnel (the carrier's bytes once switched) -----------------------------------

    def upstream_data(self, data: bytes) -> None:
        """Session bytes from the cluster."""
        self.upstream_body(data)

    def upstream_eof(self) -> None:
        """The cluster half-closed its side of the session."""
        self.upstream_end()

    def upstream_lost(self) -> None:
        """The cluster's connection closed: the session is over."""
        self.upstream_end()

    # -- flow control ----------------------------------------------------------------

    def window_opened(self) -> None:
        """The gateway granted send window: send what waits."""
        pending = self._pending
        if not pending:
            return
        sent = self._side.send_data(self.stream_id, pending)
        self._pending = pending[sent:]
        if self._pending:
            return
        self._resume_reading()
        if self._end_pending:
            self._end_pending = False
            self._side.end_stream(self.stream_id)
            self._done()

    def _reading(self) -> IPushProducer | None:
        """What pauses the cluster side: the carrier's valve for this
        exchange (inert once the carrier moved on), or, once switched, the
        dedicated connection itself."""
        carrier = self._carrier
        if carrier is None:
            return None
        if self._switched:
            return _ConnectionReading(carrier)
        return carrier.valve(self)

    def _pause_reading(self) -> None:
        reading = self._reading()
        if reading is not None and not self._reading_paused:
            self._reading_paused = True
            self._valve = reading
            reading.pauseProducing()

    def _resume_reading(self) -> None:
        if self._reading_paused:
            self._reading_paused = False
            valve, self._valve = self._valve, None
            if valve is not None:
                valve.resumeProducing()

    def _done(self) -> None:
        self._finished = True
        self._pending = b""
        carrier, self._carrier = self._carrier, None
        if carrier is not None and self._switched and carrier.transport is not None:
            carrier.transport.loseConnection()
        self._side.forget(self.stream_id)

    def connection_lost(self) -> None:
        """The tunnel closed: drop what carries the request."""
        if not self._finished:
            self.gateway_reset()
