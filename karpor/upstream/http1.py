"""The upstream side: one persistent HTTP/1.1 connection to a cluster.

An :class:`UpstreamConnection` carries one :class:`Exchange` at a time: it
writes the head of the exchange's request
(:func:`~karpor.upstream.request.http1_head`, with the credential its pool
resolved) and the body the exchange gives it, tells its pool of a ``401``
(:meth:`~karpor.upstream.pool.ClusterPool.unauthorized`), parses the response
with llhttp (``httptools.HttpResponseParser``) and hands the pieces to the
exchange as they arrive (never accumulating a body).  When a response ends
and both sides allow it, the connection goes back to its pool
(:mod:`karpor.upstream.pool`).

Reading can be paused per exchange (:meth:`UpstreamConnection.valve`): the
client side registers the valve as the producer of its transport, so a slow
client stops reads from the cluster.

An upgrade request (exec, attach, port-forward) travels on a
:class:`DedicatedConnection` of its own.  When the cluster answers ``101
Switching Protocols`` the exchange returns a :class:`Tunnel`
(:meth:`Exchange.upstream_switch`); from then on the connection parses
nothing: every byte read (starting with those that followed the ``101`` head
in the same read) goes to the tunnel as it is.

An exchange with a ``head_timeout`` (a request that is not long-running,
:mod:`karpor.upstream.deadline`) waits that long for the response head once
its whole request is written; then it fails with a ``504`` and the
connection, which still owes a response, is aborted.  The connection's one
:class:`~karpor.upstream.deadline.HeadDeadline` serves every request it carries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from typing import Protocol as TypingProtocol

import httptools
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.http.headers import Header, ResponseHeaders, split_response
from karpor.kube.status import ApiError
from karpor.upstream.connector import describe_failure
from karpor.upstream.deadline import HeadDeadline, timeout_error
from karpor.upstream.request import Credential, UpstreamRequest, http1_head

if TYPE_CHECKING:
    from karpor.upstream.pool import ClusterPool


class Tunnel(TypingProtocol):
    """Where a switched (``101``) upstream connection sends what it reads."""

    def upstream_data(self, data: bytes) -> None:
        """Bytes from the cluster, exactly as read."""

    def upstream_eof(self) -> None:
        """The cluster will send no more (TCP half-close; the connection stays
        open for writing)."""

    def upstream_lost(self) -> None:
        """The connection to the cluster is closed."""


class Carrier(TypingProtocol):
    """What carries one exchange's request to the cluster: an
    :class:`UpstreamConnection` (HTTP/1.1) or an HTTP/2 stream
    (:class:`karpor.upstream.h2.H2Stream`)."""

    #: whether the carrier is gone
    closed: bool

    @property
    def transport(self) -> ITransport | None:
        """The connection's own transport (``None`` for an HTTP/2 stream)."""

    def write(self, data: bytes) -> None:
        """Write request body bytes (already framed for HTTP/1.1)."""

    def finish_request(self) -> None:
        """The whole request is written."""

    def valve(self, exchange: Exchange) -> IPushProducer:
        """A producer (for the client's transport) pausing the response."""

    def abort(self) -> None:
        """The client went away: drop what carries the exchange."""

    def register_body_producer(self, producer: IPushProducer) -> None:
        """Pause ``producer`` (the client's body reading) while the cluster
        side cannot take more."""

    def unregister_body_producer(self) -> None:
        """Undo :meth:`register_body_producer`."""

    def pause_reading(self) -> None:
        """Stop reading the response."""

    def resume_reading(self) -> None:
        """Read the response again."""


class Exchange(TypingProtocol):
    """One request travelling to a cluster, as the upstream side sees it."""

    #: what to ask the cluster (its carrier writes it)
    request: UpstreamRequest
    #: how the request presents itself to the cluster (set by the pool,
    #: :data:`~karpor.upstream.request.UNRESOLVED` until then)
    credential: Credential
    #: whether the request is ``HEAD`` (its response has no body)
    head_only: bool
    #: whether a stale pooled connection may be retried (idempotent, no body)
    retriable: bool
    #: whether the client went away (the pool then skips the exchange)
    cancelled: bool
    #: seconds the cluster may take to send the response head once the
    #: request is written (``None``: no limit, a long-running request)
    head_timeout: float | None

    def attach(self, connection: Carrier) -> None:
        """The pool hands the exchange a connection (or an HTTP/2 stream); it
        writes its request."""

    def upstream_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        """An interim (1xx, not 101) response arrived."""

    def upstream_head(self, code: int, reason: bytes, response: ResponseHeaders) -> None:
        """The final response head arrived."""

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> Tunnel | None:
        """A ``101 Switching Protocols`` head arrived (``response`` keeps
        ``Connection: Upgrade`` and ``Upgrade``): the tunnel that takes the
        connection's bytes from now on, or ``None`` when the exchange did
        not ask for an upgrade (the response is then invalid)."""

    def upstream_body(self, data: bytes) -> None:
        """A piece of the response body arrived."""

    def upstream_end(self) -> None:
        """The response is complete."""

    def upstream_failed(self, error: ApiError) -> None:
        """The request failed before or during the response."""


def no_delay(transport: object) -> None:
    """Turn Nagle's algorithm off on a TCP (or TLS-over-TCP) transport: a
    request head and its body, or the small frames of an interactive
    stream, must not wait for the peer's delayed ACK."""
    set_no_delay = getattr(transport, "setTcpNoDelay", None)
    if set_no_delay is not None:
        set_no_delay(True)


class _Stop(Exception):
    """Raised inside a parser callback to stop parsing (HEAD responses)."""


@implementer(IPushProducer)
class Valve:
    """Pauses and resumes reading from one upstream connection on behalf of
    one exchange; inert once that exchange is over."""

    def __init__(self, connection: UpstreamConnection, exchange: Exchange) -> None:
        self._connection = connection
        self._exchange = exchange

    def pauseProducing(self) -> None:
        """Stop reading from the cluster."""
        if self._connection.exchange is self._exchange:
            self._connection.pause_reading()

    def resumeProducing(self) -> None:
        """Read from the cluster again."""
        if self._connection.exchange is self._exchange:
            self._connection.resume_reading()

    def stopProducing(self) -> None:
        """The client went away: close the upstream connection."""
        if self._connection.exchange is self._exchange:
            self._connection.abort()


@implementer(IHandshakeListener)
class UpstreamConnection(Protocol):
    """An HTTP/1.1 client connection to one cluster, used by one exchange at
    a time and returned to its pool between exchanges."""

    #: whether the connection carries one exchange and is never pooled
    dedicated = False

    def __init__(self, pool: ClusterPool, tls: bool) -> None:
        self.pool = pool
        self._tls = tls
        self.exchange: Exchange | None = None
        #: whether this connection already carried an exchange
        self.reused = False
        self.ready = False
        self.closed = False
        #: reactor time the connection became idle
        self.idle_since = 0.0
        self._paused = False
        self._request_done = False
        self._tunnel: Tunnel | None = None
        self._parser = httptools.HttpResponseParser(self)
        #: the response-head timer, made on the first timed request
        self._deadline: HeadDeadline | None = None
        self._reset_response()

    def _reset_response(self) -> None:
        self._headed = False
        self._received = False
        self._reason = b""
        self._headers: list[Header] = []
        self._interim = False
        self._eof_body = False
        self._keep_alive = True

    # -- connection events -------------------------------------------------

    def connectionMade(self) -> None:
        """Plain TCP: ready now.  TLS: ready after the handshake."""
        no_delay(self.transport)
        if not self._tls:
            self._become_ready()

    def handshakeCompleted(self) -> None:
        """The TLS handshake (and hostname check) succeeded."""
        if not self.transport.disconnecting:  # type: ignore[union-attr]
            self._become_ready()

    def _become_ready(self) -> None:
        self.ready = True
        self.pool.connection_ready(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Fail, finish or retry the exchange in flight (or end the tunnel);
        leave the pool."""
        self.closed = True
        if self._deadline is not None:
            self._deadline.cancel()
        tunnel, self._tunnel = self._tunnel, None
        if tunnel is not None:
            self.ready = False
            self.pool.connection_lost(self, reason, True)
            tunnel.upstream_lost()
            return
        exchange, self.exchange = self.exchange, None
        was_ready = self.ready
        self.ready = False
        self.pool.connection_lost(self, reason, was_ready)
        if exchange is None:
            return
        if self._eof_body:
            exchange.upstream_end()
            return
        if not self._received and self.reused and exchange.retriable:
            self.pool.retry(exchange)
            return
        name = self.pool.cluster.name
        if self._received:
            message = f"cluster {name!r} closed the connection mid-response"
        else:
            message = f"cluster {name!r} closed the connection: {describe_failure(reason)}"
        exchange.upstream_failed(ApiError(502, message))

    # -- request side --------------------------------------------------------

    def start(self, exchange: Exchange) -> None:
        """Carry ``exchange``: write its head (the exchange then writes its body)."""
        self.exchange = exchange
        self._request_done = False
        self._reset_response()
        self.transport.write(http1_head(exchange.request, exchange.credential))  # type: ignore[union-attr]

    def finish_request(self) -> None:
        """The exchange wrote its whole request (head and body): the wait
        for the response head starts (when the exchange has a limit)."""
        self._request_done = True
        exchange = self.exchange
        if exchange is None or self._headed:
            return
        timeout = exchange.head_timeout
        if timeout is not None:
            deadline = self._deadline
            if deadline is None:
                deadline = self._deadline = HeadDeadline(self.pool.reactor, self._head_timed_out)
            deadline.start(timeout)

    def _head_timed_out(self, timeout: float) -> None:
        """No response head within ``timeout``: fail the exchange with a
        ``504`` and drop the connection (it still owes a response)."""
        exchange = self.exchange
        if exchange is None or self._headed:
            return
        self.abort()
        exchange.upstream_failed(timeout_error(self.pool.cluster.name, timeout))

    def write(self, data: bytes) -> None:
        """Write request body bytes (already framed by the caller)."""
        if not self.closed:
            self.transport.write(data)  # type: ignore[union-attr]

    def valve(self, exchange: Exchange) -> Valve:
        """A producer that pauses reads on behalf of ``exchange``."""
        return Valve(self, exchange)

    def register_body_producer(self, producer: IPushProducer) -> None:
        """Pause ``producer`` (the client's body reading) while the
        connection's transport is full."""
        if not self.closed and self.transport is not None:
            self.transport.registerProducer(producer, True)  # type: ignore[attr-defined]

    def unregister_body_producer(self) -> None:
        """Undo :meth:`register_body_producer`."""
        if not self.closed and self.transport is not None:
            self.transport.unregisterProducer()  # type: ignore[attr-defined]

    def pause_reading(self) -> None:
        """Stop reading from the cluster (the client is slow)."""
        if not self._paused and not self.closed:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[union-attr]

    def resume_reading(self) -> None:
        """Read from the cluster again."""
        if self._paused and not self.closed:
            self._paused = False
            self.transport.resumeProducing()  # type: ignore[union-attr]

    def abort(self) -> None:
        """Drop the connection at once, forgetting the exchange (the client
        went away)."""
        self.exchange = None
        self._eof_body = False
        if self._deadline is not None:
            self._deadline.stop()
        if not self.closed:
            self.transport.abortConnection()  # type: ignore[union-attr]

    def close(self) -> None:
        """Close an idle connection."""
        if not self.closed:
            self.transport.loseConnection()  # type: ignore[union-attr]

    # -- response side -------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Parse response bytes (or pass them to the tunnel, once switched)."""
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.upstream_data(data)
            return
        if self.exchange is None:
            # bytes nobody asked for: the connection is unusable
            self.abort()
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as e:
            if not isinstance(e.__context__, _Stop):
                self._protocol_error(e)
        except httptools.HttpParserUpgrade as e:
            tunnel = self._tunnel
            if tunnel is None:
                self._protocol_error(ValueError("unexpected upgrade"))
                return
            # the 101 head ended inside this read: the rest is tunnel bytes
            rest = data[e.args[0] :]
            if rest:
                tunnel.upstream_data(rest)
        except httptools.HttpParserError as e:
            self._protocol_error(e)

    def _protocol_error(self, error: Exception) -> None:
        exchange = self.exchange
        self.abort()
        if exchange is not None:
            exchange.upstream_failed(
                ApiError(
                    502, f"cluster {self.pool.cluster.name!r} sent an invalid response: {error}"
                )
            )

    def on_status(self, reason: bytes) -> None:
        """Parser callback: the reason phrase (maybe in pieces)."""
        self._reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser callback: one header."""
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Parser callback: the head is complete."""
        exchange = self.exchange
        assert exchange is not None
        code = self._parser.get_status_code()
        if code == 101 or not 100 <= code < 200:  # the final head, or a 101: the wait is over
            self._headed = True
            if self._deadline is not None:
                self._deadline.stop()
        if code == 101:
            self._switch(exchange)
            return
        if 100 <= code < 200:
            self._interim = True
            headers, self._headers = self._headers, []
            reason, self._reason = self._reason, b""
            exchange.upstream_interim(code, reason, headers)
            return
        if code == 401:
            self.pool.unauthorized()
        response = split_response(self._headers)
        self._keep_alive = self._parser.should_keep_alive() and not response.close
        body_possible = not exchange.head_only and code not in (204, 304)
        if body_possible and response.content_length is None and not response.chunked:
            self._eof_body = True
            self._keep_alive = False
        exchange.upstream_head(code, self._reason, response)
        if exchange.head_only:
            # llhttp cannot be told a HEAD response has no body: finish here.
            self._parser = httptools.HttpResponseParser(self)
            self._complete()
            raise _Stop

    def _switch(self, exchange: Exchange) -> None:
        if not self._parser.should_upgrade():
            raise ValueError("101 Switching Protocols without Connection: Upgrade and Upgrade")
        response = split_response(self._headers, upgrade=True)
        tunnel = exchange.upstream_switch(self._reason, response)
        if tunnel is None:
            raise ValueError("unexpected 101 Switching Protocols")
        # llhttp now completes the message and stops at the upgrade: with no
        # exchange, the completion is a no-op; dataReceived hands on the rest.
        self.exchange = None
        self._tunnel = tunnel

    def on_body(self, data: bytes) -> None:
        """Parser callback: response body bytes."""
        if self.exchange is not None:
            self.exchange.upstream_body(data)

    def on_message_complete(self) -> None:
        """Parser callback: the response is complete."""
        if self._interim:
            self._interim = False
            return
        self._complete()

    def _complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        self.exchange = None
        self._eof_body = False
        self.reused = True
        if self._paused:
            self.resume_reading()
        if self._keep_alive and self._request_done:
            self.pool.release(self)
        else:
            self.transport.loseConnection()  # type: ignore[union-attr]
        exchange.upstream_end()


@implementer(IHalfCloseableProtocol)
class DedicatedConnection(UpstreamConnection):
    """The connection of one upgrade request (exec, attach, port-forward):
    never pooled, closed after a non-``101`` answer.  Once switched, a
    half-close by the cluster (plain TCP only: TLS has none) goes to the
    tunnel."""

    dedicated = True

    def readConnectionLost(self) -> None:
        """The cluster shut its side of the connection down."""
        tunnel = self._tunnel
        if tunnel is not None:
            tunnel.upstream_eof()
        elif not self.closed:
            self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Our side is shut down for writing (after the client's half-close)."""
