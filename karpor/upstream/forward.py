"""One proxied request: the request body up, the response back, streamed.

A :class:`Forwarder` is the :class:`~karpor.upstream.http1.Exchange` of one
client request.  The front protocol (its :class:`Channel`) feeds it the
request body as it is parsed; the pool attaches it to an upstream
connection; the connection feeds it the response, which it hands to the
channel as it arrives.  Nothing is accumulated:

- while the response streams, the upstream connection's :class:`Valve` is
  the producer of the client side (a slow client pauses the cluster);
  for a request carried as an HTTP/2 stream
  (:mod:`karpor.upstream.h2`) the stream is, and a slow client stops
  the stream's flow-control credit instead of the whole connection;
- while the request body streams, the channel's read producer is the
  producer of the upstream transport (a slow cluster pauses the client);
- before a connection is attached, client reads are paused, so at most the
  bytes of one read wait here.

The forwarder decides what happens (relay, retry, fail, cut); the channel
frames it for its client (``relay_*``: for HTTP/1.1,
:meth:`karpor.http.connection.FrontConnection.relay_head` and its
neighbours: ``Content-Length`` passes through, any other body is chunked,
or delimited by closing for an HTTP/1.0 client), and the carrier
(:class:`~karpor.upstream.http1.Carrier`) frames the request for the
cluster.
"""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IPushProducer

from karpor.http.headers import Header, ResponseHeaders
from karpor.kube.status import ApiError
from karpor.upstream.http1 import Carrier, Tunnel
from karpor.upstream.request import CHUNKED, NO_BODY, UNRESOLVED, UpstreamRequest

_IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE"})
_LAST_CHUNK = b"0\r\n\r\n"
#: What a forwarder's ``request`` becomes once the response began (nothing
#: is retried then; a long response need not keep the request's headers).
_ANSWERED = UpstreamRequest(b"", b"")


class Channel(TypingProtocol):
    """The client side of a forwarded request, implemented by the front
    protocol: it frames the relayed response for its client."""

    def reading(self) -> IPushProducer:
        """A producer that pauses reading the request body from the client."""

    def pause_for_upstream(self) -> None:
        """Stop reading from the client until an upstream connection is attached."""

    def resume_for_upstream(self) -> None:
        """Undo :meth:`pause_for_upstream`."""

    def send_error(self, error: ApiError) -> None:
        """Answer the request with a ``Status`` (no response started yet)."""

    def relay_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        """Pass a ``1xx`` (``100 Continue``) on, where the client expects one."""

    def relay_head(self, code: int, reason: bytes, response: ResponseHeaders) -> bool:
        """Pass the cluster's response head on; whether a body follows."""

    def stream_from(self, producer: IPushProducer) -> None:
        """Register ``producer`` (the upstream side of the body) to be paused
        while the client cannot take more."""

    def relay_body(self, data: bytes) -> None:
        """Pass a piece of the response body on."""

    def relay_chunked(self) -> bool:
        """Whether the relayed response can be ended cleanly at any point
        (its body is chunked)."""

    def relay_end(self, close: bool = False) -> None:
        """The response is complete (``close``: close the connection after
        it); the producer from :meth:`stream_from` is unregistered."""

    def abort(self) -> None:
        """Drop the client connection (a response broke off mid-way)."""


def chunk(data: bytes) -> bytes:
    """``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


class Forwarder:
    """The exchange of one proxied request (see the module docstring).

    ``request`` is what to ask the cluster (the pool adds the credential,
    the carrier writes it: an
    :class:`~karpor.upstream.http1.UpstreamConnection` or an HTTP/2 stream,
    :mod:`karpor.upstream.h2`); ``head_timeout`` the seconds the cluster
    may take to send its response head once the request is written
    (``None``: no limit; :mod:`karpor.upstream.deadline`), a ``504`` after
    that.
    """

    __slots__ = (
        "_body_done",
        "_body_producer",
        "_channel",
        "_chunked_up",
        "_conn",
        "_finished",
        "_pending",
        "_started",
        "cancelled",
        "credential",
        "has_body",
        "head_only",
        "head_timeout",
        "request",
        "retriable",
    )

    def __init__(
        self,
        channel: Channel,
        request: UpstreamRequest,
        *,
        head_timeout: float | None = None,
    ) -> None:
        self._channel = channel
        self.request = request
        self.credential = UNRESOLVED
        self.head_timeout = head_timeout
        method = request.method
        body = request.body != NO_BODY
        self.head_only = method == b"HEAD"
        self.retriable = not body and method in _IDEMPOTENT
        self.cancelled = False
        self.has_body = body
        self._chunked_up = request.body == CHUNKED
        self._conn: Carrier | None = None
        self._pending: list[bytes] = []
        self._body_done = not body
        self._body_producer: IPushProducer | None = None
        self._started = False
        self._finished = False
        if body:
            channel.pause_for_upstream()

    # -- the request, from the client -------------------------------------------

    def attach(self, connection: Carrier) -> None:
        """Write the request body (so far) to ``connection`` (its head is written)."""
        self._conn = connection
        if not self.has_body:
            connection.finish_request()
            return
        pending, self._pending = self._pending, []
        for data in pending:
            self._send_body(connection, data)
        if self._body_done:
            self._send_body_end(connection)
        else:
            reading = self._channel.reading()
            connection.register_body_producer(reading)
            self._body_producer = reading
        self._channel.resume_for_upstream()

    def _send_body(self, connection: Carrier, data: bytes) -> None:
        # HTTP/2 frames the body itself; HTTP/1.1 re-chunks a chunked one
        if self._chunked_up and connection.transport is not None:
            data = chunk(data)
        connection.write(data)

    def _send_body_end(self, connection: Carrier) -> None:
        if self._chunked_up and connection.transport is not None:
            connection.write(_LAST_CHUNK)
        connection.finish_request()

    def body(self, data: bytes) -> None:
        """A piece of the request body arrived from the client."""
        if self._body_done or self._finished:
            return
        if self._conn is None:
            self._pending.append(data)
        else:
            self._send_body(self._conn, data)

    def body_end(self) -> None:
        """The request body is complete."""
        if self._body_done:
            return
        self._body_done = True
        if self._finished or self._conn is None:
            return
        self._stop_body_producer()
        self._send_body_end(self._conn)

    def _stop_body_producer(self) -> None:
        reading, self._body_producer = self._body_producer, None
        if reading is not None:
            conn = self._conn
            if conn is not None:
                conn.unregister_body_producer()
            # unregistering never resumes: a pause the upstream transport
            # asked for must not outlive the body (the client's next request)
            reading.resumeProducing()

    def client_lost(self) -> None:
        """The client went away: close the upstream connection (never pooled)."""
        if self._finished:
            return
        self._finished = True
        self.cancelled = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()

    # -- the response, from the cluster -------------------------------------------

    def upstream_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        """Relay a 1xx (``100 Continue``)."""
        if not self._started and not self._finished:
            self._channel.relay_interim(code, reason, headers)

    def upstream_head(self, code: int, reason: bytes, response: ResponseHeaders) -> None:
        """Relay the response head and start streaming."""
        if self._finished:
            return
        self._started = True
        self.request = _ANSWERED  # never sent again: not kept while the response lasts
        channel = self._channel
        if channel.relay_head(code, reason, response) and self._conn is not None:
            channel.stream_from(self._conn.valve(self))

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> Tunnel | None:
        """A plain request never switches protocols (see
        :class:`karpor.upstream.splice.UpgradeForwarder` for those that do)."""
        return None

    def upstream_body(self, data: bytes) -> None:
        """Pass a piece of the response body on."""
        if not self._finished and data:
            self._channel.relay_body(data)

    def upstream_end(self) -> None:
        """The response is complete."""
        if self._finished:
            return
        self._finished = True
        self._stop_body_producer()
        self._conn = None
        channel = self._channel
        channel.resume_for_upstream()
        channel.relay_end()

    def end_stream(self) -> None:
        """End the response now (a drain deadline): cleanly where the framing
        allows — a chunked response gets its last chunk, so a watching client
        sees the stream end — else the client connection is dropped.  The
        upstream connection is closed, never pooled."""
        if self._finished:
            return
        if not (self._started and self._channel.relay_chunked()):
            self._channel.abort()
            self.client_lost()
            return
        self._finished = True
        self.cancelled = True
        self._stop_body_producer()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        self._channel.relay_end(close=True)

    def upstream_failed(self, error: ApiError) -> None:
        """Answer the error, or break the client connection if the response
        had started."""
        if self._finished:
            return
        self._finished = True
        self._stop_body_producer()
        self._conn = None
        self._pending = []
        if self._started:
            self._channel.abort()
            return
        self._channel.resume_for_upstream()
        self._channel.send_error(error)
