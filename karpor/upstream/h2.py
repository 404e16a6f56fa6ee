"""Long-running requests as HTTP/2 streams multiplexed over a few connections.

A watch or a ``logs -f`` holds its response open for minutes or hours.  One
upstream TLS connection per such request costs more memory than the whole
per-watch budget and floods the cluster with connections; client-go instead
multiplexes everything over HTTP/2 to the apiserver.  This module does the
same with the sans-IO ``h2`` library under a thin Twisted protocol:

- :func:`multiplexed` is the policy (one function deciding per request):
  long-running requests (:func:`is_long_running`) go as HTTP/2 streams, the
  rest keeps the pooled HTTP/1.1 path (faster in Python for short requests).
  Returning ``True`` there moves every plain request to HTTP/2.
- a :class:`Multiplexer` (one per cluster pool, so per cluster definition)
  keeps the cluster's :class:`H2UpstreamConnection` objects, each carrying up to the
  server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` streams, and opens another
  when all are full (through its
  :class:`~karpor.upstream.connector.Connector`: the HTTP/1.1 pool's bounds
  and errors).  Its connections offer ALPN ``h2`` and ``http/1.1``;
  a cluster that answers ``http/1.1`` is remembered as such and its
  requests go to the HTTP/1.1 pool from then on.
- an :class:`H2Stream` is the carrier of one request (a
  :class:`~karpor.upstream.forward.Forwarder`): the request goes out as
  one HEADERS frame (:func:`~karpor.upstream.request.h2_header_list`, from
  the exchange's :class:`~karpor.upstream.request.UpstreamRequest` and
  credential; a ``401`` tells the pool, which drops an exec-plugin token;
  the body, rare for watches, in DATA frames within the
  stream's send window), the response head and each DATA frame's bytes go to
  the forwarder the moment they are parsed.

Flow control is the backpressure: the stream is the push producer of the
client's transport; received bytes are acknowledged (``WINDOW_UPDATE``)
only while the client transport takes them, handed to ``h2`` in batches of
:data:`ACK_BATCH` bytes (``h2`` itself sends an update per half window), and
our frames go out in one write per read.  When it pauses, the stream
stops acknowledging, so the cluster's send window for that stream closes
after at most one window (:data:`STREAM_WINDOW`, 64 KiB; an upgrade
session through an agent's tunnel :data:`SESSION_WINDOW`, 1 MiB) while the
other streams on the connection go on (the connection window is HTTP/2's
largest: only the stream windows bound what the gateway holds).  A client
that goes away resets its stream (``RST_STREAM`` ``CANCEL``) and no other.
Header blocks are plain HPACK (:mod:`karpor.net.hpackplain`: no Huffman,
no dynamic table), cheap in Python at both ends.

A lost connection ends every stream on it for its client (a watch client
re-watches, as after a kube-apiserver restart).  After a ``GOAWAY`` no new
stream opens on that connection; streams the server never processed (above
``last_stream_id``) are submitted again.  The ``h2`` library cannot go on
receiving after a ``GOAWAY`` (python-hyper/h2#1181): the streams the server
still carries end when it sends anything more or closes the connection.

Per stream the gateway keeps one :class:`H2Stream` (slotted, no buffer: a
request body waiting for the send window is the only thing ever held) and
the ``h2`` library's own stream state.

A stream whose exchange has a ``head_timeout`` (only requests that are not
long-running have one, and today none of those is multiplexed) is reset
(``CANCEL``) when the response head does not come in time, its caller
answered ``504`` (:mod:`karpor.upstream.deadline`).
"""

from __future__ import annotations

import contextlib
from collections import deque
from typing import Protocol as TypingProtocol
from typing import cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    IStreamClientEndpoint,
    ITransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.http.connection import reason_phrase
from karpor.http.headers import (
    Header,
    ResponseHeaders,
    split_response,
    valid_header,
)
from karpor.http.tunnelwire import SWITCHED_HEADER, UPGRADE_HEADER
from karpor.kube.status import ApiError
from karpor.net.h2window import send_within_window
from karpor.net.hpackplain import use_plain_hpack
from karpor.upstream.connector import Connector, UpstreamErrors, describe_failure
from karpor.upstream.deadline import HeadDeadline, timeout_error
from karpor.upstream.http1 import Exchange, Tunnel, no_delay
from karpor.upstream.request import NO_BODY, h2_header_list

#: Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE, the default):
#: the most a paused client lets the cluster send ahead.
STREAM_WINDOW = 65_535
#: The receive window of an upgrade session's stream through an agent's
#: tunnel (:class:`SessionStream`: exec, attach, cp, port-forward): the most
#: a paused client lets the agent send ahead on it, so the most the gateway
#: holds per session.  With 64 KiB the agent sent one window per round trip
#: through two Python processes (the stream ran at a sixth of a direct one).
SESSION_WINDOW = 1024 * 1024
#: The connection's receive window: the most HTTP/2 allows, so that paused
#: streams (each holding up to its own window, which alone bounds what the
#: gateway holds) never stall the others.
CONNECTION_WINDOW = 2**31 - 1
#: The largest DATA frame the gateway takes (SETTINGS_MAX_FRAME_SIZE; the
#: default is 16 KiB): an agent sends a session's bytes in a quarter as many
#: frames, each parsed by ``h2`` in Python.  ``h2`` holds at most one frame
#: per connection while it is incomplete.
MAX_FRAME_SIZE = 64 * 1024
#: Received bytes a streaming (unpaused) stream gathers before handing them
#: to ``h2`` (``acknowledge_received_data``): one call per this many bytes
#: rather than one per DATA frame.  Well under half the stream window, where
#: ``h2`` emits its ``WINDOW_UPDATE``, so the cluster's send window never
#: closes on a client that keeps up.
ACK_BATCH = 8192
#: What a connection is assumed to carry before its SETTINGS arrive
#: (kube-apiserver announces 250, Go's default).
ASSUMED_MAX_STREAMS = 100

_TRUE = frozenset({b"true", b"1", b"t", b"True", b"TRUE", b"T"})
_CANCEL = h2.errors.ErrorCodes.CANCEL
_REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM


# -- policy -------------------------------------------------------------------


def is_long_running(target: bytes) -> bool:
    """Whether the raw request ``target`` asks for a long-running response:
    a watch (``watch=true``/``watch=1`` or a ``/watch/`` path) or a followed
    log (``follow=true`` on ``pods/{name}/log``)."""
    path, _, query = target.partition(b"?")
    if b"/watch/" in path:
        return True
    if not query or (b"watch=" not in query and b"follow=" not in query):
        return False
    follow_allowed = path.endswith(b"/log")
    for pair in query.split(b"&"):
        name, _, value = pair.partition(b"=")
        if (name == b"watch" or (follow_allowed and name == b"follow")) and value in _TRUE:
            return True
    return False


def multiplexed(method: bytes, target: bytes) -> bool:
    """The policy: whether a plain (non-upgrade) request to a cluster goes
    as an HTTP/2 stream rather than on a pooled HTTP/1.1 connection.

    Only long-running requests do today; ``return True`` moves every plain
    request to HTTP/2 (where a cluster speaks it).
    """
    return is_long_running(target)


class StreamExchange(Exchange, TypingProtocol):
    """An :class:`~karpor.upstream.http1.Exchange` travelling as an HTTP/2
    stream: its request goes out as one HEADERS frame
    (:func:`~karpor.upstream.request.h2_header_list`)."""


class PoolSide(TypingProtocol):
    """What a :class:`Multiplexer` needs from its cluster pool."""

    def fallback(self, exchange: StreamExchange) -> None:
        """Carry ``exchange`` over HTTP/1.1 (the cluster does not speak h2)."""

    def unauthorized(self) -> None:
        """The cluster answered ``401``: its credential was refused."""


# -- one stream ---------------------------------------------------------------


@implementer(IPushProducer)
class H2Stream:
    """One request on an :class:`H2UpstreamConnection`: the carrier the
    forwarder writes its body to, and the push producer of the client's
    transport (pausing it withholds flow-control credit)."""

    __slots__ = (
        "_body_producer",
        "_deadline",
        "_end_pending",
        "_ended",
        "_paused",
        "_pending",
        "_unacked",
        "closed",
        "connection",
        "exchange",
        "received",
        "stream_id",
    )

    #: an HTTP/2 stream has no transport of its own (only upgrades use one)
    transport: ITransport | None = None

    def __init__(
        self, connection: H2UpstreamConnection, stream_id: int, exchange: StreamExchange
    ) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.exchange: StreamExchange | None = exchange
        self.received = False
        self.closed = False
        self._paused = False
        self._unacked = 0
        self._pending: bytes = b""
        self._end_pending = False
        #: our sending side is over (headers with END_STREAM, or the body's end)
        self._ended = exchange.request.body == NO_BODY
        self._body_producer: IPushProducer | None = None
        self._deadline: HeadDeadline | None = None

    def __repr__(self) -> str:
        return f"<H2Stream {self.stream_id} closed={self.closed}>"

    # -- the request body (Carrier, for the forwarder) ------------------------

    def write(self, data: bytes) -> None:
        """Send request body bytes, within the stream's send window; what
        does not fit waits here and pauses the client's body reading."""
        if self.closed or not data:
            return
        if self._pending:
            self._pending += data
        else:
            self._pending = data
        self._send_pending()

    def finish_request(self) -> None:
        """The request body is complete: end the stream's sending side; the
        wait for the response head starts (when the exchange has a limit)."""
        exchange = self.exchange
        if exchange is not None and not self.received and exchange.head_timeout is not None:
            deadline = self._deadline
            if deadline is None:
                clock = self.connection.multiplexer.reactor
                deadline = self._deadline = HeadDeadline(clock, self._head_timed_out)
            deadline.start(exchange.head_timeout)
        if self.closed or self._ended:
            return
        self._end_pending = True
        self._send_pending()

    def _send_pending(self) -> None:
        conn = self.connection
        pending = self._pending
        if pending:
            sent = conn.send_data(self.stream_id, pending)
            self._pending = pending[sent:]
        if self._pending:
            if self._body_producer is not None:
                self._body_producer.pauseProducing()
            return
        if self._body_producer is not None:
            self._body_producer.resumeProducing()
        if self._end_pending:
            self._end_pending = False
            self._ended = True
            conn.end_stream(self.stream_id)

    def _head_timed_out(self, timeout: float) -> None:
        """No response head within ``timeout``: reset the stream, answer ``504``."""
        exchange = self.exchange
        if exchange is None or self.received or self.closed:
            return
        self.abort()
        exchange.upstream_failed(timeout_error(self.connection.multiplexer.name, timeout))

    def headed(self) -> None:
        """The response head arrived."""
        self.received = True
        if self._deadline is not None:
            self._deadline.stop()

    def window_opened(self) -> None:
        """The cluster granted send window: send what waits."""
        if self._pending or self._end_pending:
            self._send_pending()

    def register_body_producer(self, producer: IPushProducer) -> None:
        """Pause ``producer`` (the client's reading) while the body waits for
        the send window."""
        self._body_producer = producer

    def unregister_body_producer(self) -> None:
        """Undo :meth:`register_body_producer`."""
        self._body_producer = None

    def valve(self, exchange: Exchange) -> IPushProducer:
        """The producer to register on the client's transport: the stream."""
        return self

    def abort(self) -> None:
        """The client went away: reset this stream only (``CANCEL``)."""
        self.exchange = None
        if not self.closed:
            self.connection.reset(self, _CANCEL)

    def close(self) -> None:
        """Same as :meth:`abort` (the forwarder's ``close`` on a carrier)."""
        self.abort()

    # Reading (for the typing of upgrade splices, which never use a stream)
    def pause_reading(self) -> None:
        """Same as :meth:`pauseProducing`."""
        self.pauseProducing()

    def resume_reading(self) -> None:
        """Same as :meth:`resumeProducing`."""
        self.resumeProducing()

    # -- IPushProducer (registered on the client's transport) -----------------

    def pauseProducing(self) -> None:
        """The client transport is full: stop acknowledging received data."""
        self._paused = True

    def resumeProducing(self) -> None:
        """The client transport drained: acknowledge what it took (and any
        bytes gathered towards a batch)."""
        self._paused = False
        unacked, self._unacked = self._unacked, 0
        if unacked and not self.closed:
            self.connection.acknowledge(self.stream_id, unacked, flush=True)

    def stopProducing(self) -> None:
        """The client transport is gone."""
        self.abort()

    # -- the response (from the connection) -------------------------------------

    def data(self, data: bytes, flow_controlled: int) -> None:
        """Relay a DATA frame's bytes to the client at once and count them
        as received; while the client transport is not paused (checked after
        the write, which may pause it), acknowledge what was counted once it
        reaches :data:`ACK_BATCH` (the connection flushes after the read)."""
        exchange = self.exchange
        if exchange is not None and data:
            exchange.upstream_body(data)
        if flow_controlled:
            unacked = self._unacked + flow_controlled
            if self._paused or unacked < ACK_BATCH:
                self._unacked = unacked
            else:
                self._unacked = 0
                self.connection.acknowledge(self.stream_id, unacked)

    def closed_by_connection(self) -> int:
        """Forget the stream; the unacknowledged byte count (held while
        paused or gathered towards a batch, still owed to the connection
        window)."""
        self.closed = True
        self._pending = b""
        self._body_producer = None
        if self._deadline is not None:
            self._deadline.cancel()
        unacked, self._unacked = self._unacked, 0
        return unacked


class _StreamTransport:
    """A :class:`SessionStream` seen as the upstream transport of a
    :class:`~karpor.upstream.splice.Splice`: writes go out as DATA within
    the send window (a producer registered here is paused while bytes
    wait), closing ends our side of the stream, aborting resets it."""

    __slots__ = ("_stream",)

    def __init__(self, stream: SessionStream) -> None:
        self._stream = stream

    def write(self, data: bytes) -> None:
        """Session bytes to the cluster."""
        self._stream.write(data)

    def writeSequence(self, data: list[bytes]) -> None:
        """Same as :meth:`write`, joined."""
        self._stream.write(b"".join(data))

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Pause ``producer`` while bytes wait for the send window."""
        self._stream.register_body_producer(producer)

    def unregisterProducer(self) -> None:
        """Undo :meth:`registerProducer`."""
        self._stream.unregister_body_producer()

    def loseConnection(self) -> None:
        """End our side of the stream once what waits is sent."""
        self._stream.end_session()

    def abortConnection(self) -> None:
        """Reset the stream; the splice hears it is gone."""
        self._stream.reset_session()

    def getPeer(self) -> None:
        """No address of its own."""
        return None

    def getHost(self) -> None:
        """No address of its own."""
        return None


class SessionStream(H2Stream):
    """The stream of an upgrade request carried through an agent's tunnel
    (:mod:`karpor.http.tunnelwire`): it goes out with
    :data:`~karpor.http.tunnelwire.UPGRADE_HEADER` and stays open after the
    request; when the answer says
    :data:`~karpor.http.tunnelwire.SWITCHED_HEADER`, the exchange splices
    it (:attr:`transport` is the stream seen as a transport) and DATA both
    ways carry the session's bytes."""

    __slots__ = ("transport", "tunnel")

    def __init__(
        self, connection: H2UpstreamConnection, stream_id: int, exchange: StreamExchange
    ) -> None:
        super().__init__(connection, stream_id, exchange)
        self._ended = False
        #: the stream as the splice's upstream transport
        self.transport = cast(ITransport, _StreamTransport(self))
        #: where the session's bytes go once switched
        self.tunnel: Tunnel | None = None

    def finish_request(self) -> None:
        """The request head is all: the stream stays open for the session."""

    def switch(self, headers: list[Header]) -> None:
        """The cluster switched protocols: hand the exchange the ``101``
        (``Upgrade`` restored from the header the agent sent)."""
        exchange, self.exchange = self.exchange, None
        if exchange is None:
            return
        upgrade = b""
        forward: list[Header] = []
        for name, value in headers:
            if name == UPGRADE_HEADER:
                upgrade = value
            elif name != SWITCHED_HEADER:
                forward.append((name, value))
        forward += [
            (b"Upgrade", upgrade or exchange.request.upgrade or b""),
            (b"Connection", b"Upgrade"),
        ]
        response = ResponseHeaders(forward, None, False, False)
        tunnel = exchange.upstream_switch(b"Switching Protocols", response)
        if tunnel is None:
            self.abort()
            exchange.upstream_failed(ApiError(502, "the agent switched protocols unasked"))
            return
        self.tunnel = tunnel

    def data(self, data: bytes, flow_controlled: int) -> None:
        """Session bytes from the cluster (or, before the switch, the body of
        a refusal)."""
        tunnel = self.tunnel
        if tunnel is None:
            super().data(data, flow_controlled)
            return
        if data:
            tunnel.upstream_data(data)
        if flow_controlled:
            unacked = self._unacked + flow_controlled
            if self._paused or unacked < ACK_BATCH:
                self._unacked = unacked
            else:
                self._unacked = 0
                self.connection.acknowledge(self.stream_id, unacked)

    def end_session(self) -> None:
        """End our side once what waits is sent."""
        if self.closed or self._ended:
            return
        self._end_pending = True
        self._send_pending()

    def reset_session(self) -> None:
        """Reset the stream and tell the splice."""
        tunnel, self.tunnel = self.tunnel, None
        self.exchange = None
        if not self.closed:
            self.connection.reset(self, _CANCEL)
        if tunnel is not None:
            tunnel.upstream_lost()


# -- one connection -------------------------------------------------------------


@implementer(IHandshakeListener)
class H2UpstreamConnection(Protocol):
    """An HTTP/2 client connection to one cluster carrying many streams.

    ``h2`` neither re-validates nor normalizes the header lists we send
    (built from a request llhttp parsed, names lower-cased, the gateway's
    own headers checked with :func:`~karpor.http.headers.valid_header`)
    nor normalizes those we receive (:meth:`_response` checks each); on an
    agent's tunnel, where every request is a HEADERS frame, that work was
    a tenth of the ``h2`` cost of a small request."""

    def __init__(self, multiplexer: Multiplexer, tls: bool = True) -> None:
        self.multiplexer = multiplexer
        self._tls = tls
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        use_plain_hpack(self.h2)
        self.streams: dict[int, H2Stream] = {}
        #: the TLS handshake is done (and ALPN said ``h2``)
        self.negotiated = False
        #: the server's SETTINGS arrived: streams may open
        self.ready = False
        self.closed = False
        #: a GOAWAY arrived: no new streams
        self.goaway = False
        self.max_streams = multiplexer.expected_streams
        self.idle_timer: IDelayedCall | None = None

    def __repr__(self) -> str:
        return f"<H2UpstreamConnection streams={len(self.streams)} ready={self.ready}>"

    @property
    def free(self) -> int:
        """How many more streams this connection may open now."""
        if self.closed or self.goaway:
            return 0
        if self.ready:  # what h2 applied (several SETTINGS may come in one read)
            self.max_streams = self.h2.remote_settings.max_concurrent_streams
        return self.max_streams - len(self.streams)

    # -- connection events ------------------------------------------------------

    def connectionMade(self) -> None:
        """Plain TCP (tests only: h2 needs ALPN): start now; TLS: after the
        handshake."""
        no_delay(self.transport)
        if not self._tls:
            self._start()

    def handshakeCompleted(self) -> None:
        """The TLS handshake succeeded: HTTP/2 if ALPN chose it, else the
        cluster is remembered as HTTP/1.1-only."""
        if self.transport.disconnecting:  # type: ignore[union-attr]
            return
        protocol = getattr(self.transport, "negotiatedProtocol", None)
        if protocol != b"h2":
            self.multiplexer.refused(self)
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        self._start()

    def _start(self) -> None:
        self.negotiated = True
        conn = self.h2
        conn.initiate_connection()
        conn.update_settings(
            {
                h2.settings.SettingCodes.ENABLE_PUSH: 0,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
            }
        )
        conn.increment_flow_control_window(CONNECTION_WINDOW - 65_535)
        self.flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """End every stream for its client; leave the multiplexer."""
        self.closed = True
        self.ready = False
        if self.idle_timer is not None and self.idle_timer.active():
            self.idle_timer.cancel()
        self.idle_timer = None
        streams, self.streams = self.streams, {}
        self.multiplexer.connection_lost(self, reason)
        name = self.multiplexer.name
        for stream in streams.values():
            stream.closed_by_connection()
            if isinstance(stream, SessionStream) and stream.tunnel is not None:
                tunnel, stream.tunnel = stream.tunnel, None
                tunnel.upstream_lost()
                continue
            exchange, stream.exchange = stream.exchange, None
            if exchange is None or exchange.cancelled:
                continue
            if stream.received:
                message = f"cluster {name!r} closed the connection mid-response"
            else:
                message = f"cluster {name!r} closed the connection: {describe_failure(reason)}"
            exchange.upstream_failed(ApiError(502, message))

    def flush(self) -> None:
        """Write what the ``h2`` state machine has for the cluster."""
        data = self.h2.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)

    # -- streams ------------------------------------------------------------------

    def open_stream(self, exchange: StreamExchange) -> None:
        """Send ``exchange``'s request headers on a new stream and attach it."""
        request = exchange.request
        headers = h2_header_list(request, exchange.credential)
        if self.idle_timer is not None:
            if self.idle_timer.active():
                self.idle_timer.cancel()
            self.idle_timer = None
        conn = self.h2
        stream_id = conn.get_next_available_stream_id()
        stream: H2Stream
        if request.upgrade is not None:  # only through an agent's tunnel
            # the session's bytes follow, not a body (SPDY's POST says Content-Length: 0)
            headers = [h for h in headers if h[0] != b"content-length"]
            headers.append((UPGRADE_HEADER, request.upgrade))
            stream = SessionStream(self, stream_id, exchange)
        else:
            stream = H2Stream(self, stream_id, exchange)
        self.streams[stream_id] = stream
        conn.send_headers(
            stream_id, headers, end_stream=request.body == NO_BODY and request.upgrade is None
        )
        if request.upgrade is not None:
            conn.increment_flow_control_window(SESSION_WINDOW - STREAM_WINDOW, stream_id)
        exchange.attach(stream)
        self.flush()

    def send_data(self, stream_id: int, data: bytes) -> int:
        """Send as much of ``data`` as the send windows allow; how much went."""
        sent = send_within_window(self.h2, stream_id, data)
        self.flush()
        return sent

    def end_stream(self, stream_id: int) -> None:
        """End our sending side of a stream."""
        try:
            self.h2.end_stream(stream_id)
        except h2.exceptions.ProtocolError:
            return
        self.flush()

    def acknowledge(self, stream_id: int, size: int, flush: bool = False) -> None:
        """Hand ``size`` received bytes back to the cluster's send windows."""
        try:
            self.h2.acknowledge_received_data(size, stream_id)
        except h2.exceptions.ProtocolError:
            return
        if flush:
            self.flush()

    def reset(self, stream: H2Stream, code: int) -> None:
        """Reset ``stream`` (the client went away)."""
        # after a GOAWAY h2 sends nothing more: just forget the stream
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.reset_stream(stream.stream_id, code)
        self._forget(stream)
        self.flush()

    def _forget(self, stream: H2Stream) -> None:
        if self.streams.pop(stream.stream_id, None) is None:
            return
        unacked = stream.closed_by_connection()
        if unacked:
            # the connection window still counts those bytes
            with contextlib.suppress(h2.exceptions.ProtocolError):
                self.h2.acknowledge_received_data(unacked, stream.stream_id)
        self.multiplexer.stream_closed(self)

    def close(self) -> None:
        """Close the connection (idle, or its pool drains)."""
        if not self.closed and self.transport is not None:
            try:
                self.h2.close_connection()
                self.flush()
            except h2.exceptions.ProtocolError:
                pass
            self.transport.loseConnection()

    # -- frames from the cluster ---------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Feed ``h2`` and act on its events (one write of our frames after)."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.flush()
            if self.transport is not None:
                self.transport.abortConnection()  # type: ignore[attr-defined]
            return
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.data(event.data or b"", event.flow_controlled_length or 0)
                elif event.flow_controlled_length:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.ResponseReceived):
                self._response(event.stream_id, event.headers or [])
            elif isinstance(event, h2.events.StreamEnded):
                self._ended(event.stream_id)
            elif isinstance(event, h2.events.StreamReset):
                self._reset_by_server(event.stream_id, event.error_code)
            elif isinstance(event, h2.events.WindowUpdated):
                self._window_updated(event.stream_id)
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                self._settings(event)
            elif isinstance(event, h2.events.InformationalResponseReceived):
                self._interim(event.stream_id, event.headers or [])
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._goaway(event)
        self.flush()

    def _response(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        stream.headed()
        exchange = stream.exchange
        if exchange is None:
            return
        if isinstance(stream, SessionStream) and any(n == SWITCHED_HEADER for n, _ in headers):
            stream.switch([(n, v) for n, v in headers if not n.startswith(b":")])
            return
        code = 502
        plain: list[Header] = []
        for name, value in headers:
            if name == b":status":
                code = int(value)
            elif not name.startswith(b":") and valid_header(name, value):
                plain.append((name, value))
        if code == 401:
            self.multiplexer.unauthorized()
        response: ResponseHeaders = split_response(plain)
        exchange.upstream_head(code, reason_phrase(code), response)

    def _interim(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.exchange is None:
            return
        status = dict(headers).get(b":status", b"100")
        code = int(status)
        plain = [(n, v) for n, v in headers if not n.startswith(b":")]
        stream.exchange.upstream_interim(code, reason_phrase(code), plain)

    def _ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if isinstance(stream, SessionStream) and stream.tunnel is not None:
            tunnel = stream.tunnel
            tunnel.upstream_eof()  # the splice closes: our side ends too
            stream.tunnel = None
            self._forget(stream)
            tunnel.upstream_lost()
            return
        exchange, stream.exchange = stream.exchange, None
        self._forget(stream)
        if exchange is not None:
            if not stream.received:
                exchange.upstream_failed(
                    ApiError(502, f"cluster {self.multiplexer.name!r} sent no response head")
                )
            else:
                exchange.upstream_end()

    def _reset_by_server(self, stream_id: int, code: int | None) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        if isinstance(stream, SessionStream) and stream.tunnel is not None:
            tunnel, stream.tunnel = stream.tunnel, None
            self._forget(stream)
            tunnel.upstream_lost()
            return
        exchange, stream.exchange = stream.exchange, None
        self._forget(stream)
        if exchange is None or exchange.cancelled:
            return
        if code == _REFUSED and not stream.received:
            self.multiplexer.submit(exchange)  # never processed: safe to retry
            return
        name = self.multiplexer.name
        exchange.upstream_failed(
            ApiError(502, f"cluster {name!r} reset the stream ({_code_name(code)})")
        )

    def _window_updated(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None:
                stream.window_opened()
            return
        for stream in list(self.streams.values()):
            stream.window_opened()

    def _settings(self, event: h2.events.RemoteSettingsChanged) -> None:
        changed = event.changed_settings.get(h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS)
        if changed is not None:
            self.multiplexer.expected_streams = self.h2.remote_settings.max_concurrent_streams
        if not self.ready:
            self.ready = True
            self.multiplexer.connection_ready(self)
        elif changed is not None:
            self.multiplexer.stream_closed(self)  # maybe room for waiting ones

    def _goaway(self, event: h2.events.ConnectionTerminated) -> None:
        self.goaway = True
        last = event.last_stream_id or 0
        if event.error_code not in (None, h2.errors.ErrorCodes.NO_ERROR):
            last = min(last, max(self.streams, default=0))
        for stream_id in sorted(self.streams):
            if stream_id <= last:
                continue
            stream = self.streams[stream_id]
            exchange, stream.exchange = stream.exchange, None
            self._forget(stream)
            if exchange is not None and not exchange.cancelled:
                self.multiplexer.submit(exchange)  # the server never saw it
        self.multiplexer.went_away(self)
        failed = event.error_code not in (None, h2.errors.ErrorCodes.NO_ERROR)
        if (not self.streams or failed) and self.transport is not None:
            self.transport.loseConnection()


def _code_name(code: int | None) -> str:
    if code is None:
        return "no code"
    try:
        return h2.errors.ErrorCodes(code).name
    except ValueError:
        return str(code)


# -- the connections of one cluster -------------------------------------------------


class Multiplexer:
    """The HTTP/2 connections of one cluster pool (see the module docstring).

    ``speaks_h2`` is ``None`` until a connection negotiated ALPN, then
    whether the cluster answered ``h2``; once ``False``, :meth:`submit`
    hands every exchange to ``pool.fallback`` (HTTP/1.1).
    """

    def __init__(
        self,
        name: str,
        pool: PoolSide,
        endpoint: IStreamClientEndpoint,
        reactor: IReactorTime,
        *,
        connect_timeout: float,
        idle_timeout: float,
        max_connections: int,
        tls: bool = True,
        errors: UpstreamErrors | None = None,
    ) -> None:
        self.name = name
        self._pool = pool
        self._reactor = reactor
        self._connector: Connector[H2UpstreamConnection] = Connector(
            name, endpoint, reactor, connect_timeout, self._connect_failed, errors
        )
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._tls = tls
        self.speaks_h2: bool | None = None
        self.expected_streams = ASSUMED_MAX_STREAMS
        self.connections: list[H2UpstreamConnection] = []
        self._waiting: deque[StreamExchange] = deque()
        self.draining = False

    def __repr__(self) -> str:
        return f"<Multiplexer {self.name} connections={len(self.connections)}>"

    @property
    def reactor(self) -> IReactorTime:
        """The clock the connections run on."""
        return self._reactor

    @property
    def streams(self) -> int:
        """Streams open on every connection."""
        return sum(len(c.streams) for c in self.connections)

    # -- exchanges ------------------------------------------------------------------

    def submit(self, exchange: StreamExchange) -> None:
        """Carry ``exchange`` as a stream on a connection with room, opening
        one when all are full."""
        if self.speaks_h2 is False:
            self._pool.fallback(exchange)
            return
        for conn in self.connections:
            if conn.ready and conn.free > 0:
                conn.open_stream(exchange)
                return
        self._waiting.append(exchange)
        self._grow()

    def _grow(self) -> None:
        """Open connections until those being opened can take every waiting
        exchange (each assumed to carry ``expected_streams``)."""
        coming = sum(c.free for c in self.connections if not c.ready and not c.closed)
        while len(self._waiting) > coming and len(self.connections) < self._max_connections:
            coming += self._connect().free

    def _drain_waiting(self, conn: H2UpstreamConnection) -> None:
        waiting = self._waiting
        while waiting and conn.ready and conn.free > 0:
            exchange = waiting.popleft()
            if not exchange.cancelled:
                conn.open_stream(exchange)

    # -- connections ----------------------------------------------------------------

    def _connect(self) -> H2UpstreamConnection:
        conn = H2UpstreamConnection(self, tls=self._tls)
        self.connections.append(conn)
        self._connector.open(conn)
        return conn

    def _connect_failed(self, conn: H2UpstreamConnection, error: ApiError) -> None:
        if conn in self.connections:
            self.connections.remove(conn)
        self._fail_waiting(error)

    def _fail_waiting(self, error: ApiError) -> None:
        """A connection could not be opened: fail the exchanges no other
        connection being opened will take."""
        coming = sum(c.free for c in self.connections if not c.ready and not c.closed)
        while len(self._waiting) > coming:
            exchange = self._waiting.pop()
            if not exchange.cancelled:
                exchange.upstream_failed(error)

    def connection_ready(self, conn: H2UpstreamConnection) -> None:
        """``conn`` speaks HTTP/2 and has the server's SETTINGS."""
        self._connector.opened(conn)
        self.speaks_h2 = True
        self._drain_waiting(conn)
        if not conn.streams:
            self._idle(conn)
        if self._waiting:
            self._grow()

    def refused(self, conn: H2UpstreamConnection) -> None:
        """ALPN chose HTTP/1.1: remember it and hand every waiting exchange
        to the HTTP/1.1 pool."""
        self._connector.opened(conn)
        self.speaks_h2 = False
        waiting, self._waiting = self._waiting, deque()
        for exchange in waiting:
            if not exchange.cancelled:
                self._pool.fallback(exchange)

    def stream_closed(self, conn: H2UpstreamConnection) -> None:
        """A stream on ``conn`` ended: room for a waiting exchange."""
        if conn.closed:
            return
        self._drain_waiting(conn)
        if not conn.streams:
            if conn.goaway or self.draining:
                conn.close()
            else:
                self._idle(conn)

    def went_away(self, conn: H2UpstreamConnection) -> None:
        """``conn`` received a GOAWAY: open another if exchanges wait."""
        if self._waiting:
            self._grow()

    def _idle(self, conn: H2UpstreamConnection) -> None:
        if conn.idle_timer is None and not conn.closed:
            conn.idle_timer = self._reactor.callLater(self._idle_timeout, self._expire, conn)

    def _expire(self, conn: H2UpstreamConnection) -> None:
        conn.idle_timer = None
        if not conn.streams:
            conn.close()

    def connection_lost(self, conn: H2UpstreamConnection, reason: Failure) -> None:
        """``conn`` closed (it then ends its streams itself)."""
        error = self._connector.lost(conn, reason)
        if conn in self.connections:
            self.connections.remove(conn)
        if error is not None and self.speaks_h2 is not False:
            self._fail_waiting(error)
        elif self._waiting and not self.draining:
            self._grow()

    def unauthorized(self) -> None:
        """A stream was answered ``401``: the pool drops an exec-plugin token."""
        self._pool.unauthorized()

    def drain(self) -> None:
        """Stop opening streams: close idle connections now, the others when
        their last stream ends."""
        self.draining = True
        for conn in list(self.connections):
            if not conn.streams:
                conn.close()
