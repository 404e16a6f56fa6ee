"""The front over HTTP/2: a thin Twisted adapter over the sans-IO
:class:`~karpor.http.h2server.H2FrontConnection`.

A TLS connection whose ALPN chose ``h2`` (the serving context offers ``h2``
and ``http/1.1`` unless ``clientConnections.http2`` is off) starts as a
:class:`~karpor.front.protocol.GatewayProtocol`; at the end of the handshake
it hands its transport to an :class:`H2FrontProtocol` (:func:`serve_h2`),
so an HTTP/1.1 connection pays nothing for HTTP/2.

Each stream is one :class:`H2Request`: the pipeline's
:class:`~karpor.front.front.Front` (the same
:class:`~karpor.front.pipeline.RequestPipeline` as HTTP/1.1:
authentication with the connection's client certificate, policy, health
gate, audit, metrics, the own API, routing) and the forwarder's
:class:`~karpor.upstream.forward.Channel`: ``relay_*`` write HEADERS and
DATA.  Flow control is the backpressure: a stream whose send window is
exhausted pauses its own upstream producer (a watch, ``logs -f``, a large
list: the cluster's side of that request only) until the client grants
window, so a slow reader never blocks the other streams; a full client
transport pauses every stream's producer.  A request body is acknowledged
(``WINDOW_UPDATE``) only as it is handed on, so a request paused for its
upstream holds at most one stream window.

Upgrades stay on HTTP/1.1: a request for exec, attach or port-forward over
HTTP/2 is answered ``400`` (:func:`~karpor.http.h2server.upgrade_refusal`).

Bounds: ``clientConnections.maxConcurrentStreams`` streams per connection
(one more is refused, ``REFUSED_STREAM``), ``maxHeaderBytes`` per header
list (a larger one is a ``431`` on its stream; see
:mod:`karpor.http.h2server`), the idle timeout of a connection with
no stream (the worker's sweep, :mod:`karpor.http.bounds`), the own API's
body limit.  Draining sends ``GOAWAY`` (race-free, see
:mod:`karpor.http.h2server`): streams already started finish, new ones go
to another worker; at the drain deadline streams end cleanly (a watch sees
its stream end) and the connection closes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.auth.access import Peer
from karpor.front.front import ClientExchange
from karpor.front.record import RequestRecord, record_request
from karpor.front.responder import ResponderBase
from karpor.http.bounds import CLOSING, IDLE
from karpor.http.connection import RequestHead
from karpor.http.h2server import (
    ConnectionDone,
    H2FrontConnection,
    StreamBody,
    StreamEnd,
    StreamRequest,
    StreamWritable,
)
from karpor.http.headers import (
    AUDIT_ID,
    Header,
    ResponseHeaders,
    caller_audit_id,
    new_audit_id,
)
from karpor.kube.status import ApiError

if TYPE_CHECKING:
    from karpor.front.protocol import GatewayFactory, GatewayProtocol

_JSON: list[Header] = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-cache")]
_NO_BODY_CODES = frozenset({204, 304})
#: how long a draining connection waits for the ``PING`` answer before its
#: final ``GOAWAY`` (Go's server waits a second too)
DRAIN_PING_TIMEOUT = 1.0
_INTERNAL_ERROR = 2
_NO_PEER: Any = object()


def serve_h2(
    old: GatewayProtocol, factory: GatewayFactory, transport: Any, client_address: bytes
) -> H2FrontProtocol:
    """Serve the TLS connection of ``old`` (its handshake chose ``h2``) with
    an :class:`H2FrontProtocol`: it takes the transport (Twisted's TLS
    protocol wraps its protocol, karpor's socket transport holds it) and
    ``old``'s place among the factory's connections."""
    new = H2FrontProtocol(factory, client_address)
    new.server_route = old.server_route  # the SNI, classified for host routing
    if hasattr(transport, "wrappedProtocol"):
        transport.wrappedProtocol = new  # Twisted's TLSMemoryBIOProtocol
    else:
        transport.protocol = new
    new.makeConnection(transport)
    factory.protocols.discard(old)
    return new


@implementer(IPushProducer)
class H2FrontProtocol(Protocol):
    """One client's HTTP/2 connection (see the module docstring); the push
    producer of its transport (a full transport pauses every stream)."""

    def __init__(self, factory: GatewayFactory, client_address: bytes) -> None:
        self._factory = factory
        connections = factory.connections
        #: the connection's HTTP/2, sans-IO (its phase is what the sweep times out)
        self.conn = H2FrontConnection(connections.max_concurrent_streams, factory.max_header_bytes)
        self.client_address = client_address
        #: the cluster the TLS server name routes to (host routing), as classified at the handshake
        self.server_route: str | ApiError | None = None
        self.streams: dict[int, H2Request] = {}
        self.disconnected = False
        #: the transport cannot take more: every stream's producer is paused
        self.choked = False
        self._reading = False
        self._peer: Peer = _NO_PEER
        self._drain_timer: IDelayedCall | None = None
        #: no ``forwarder`` of its own: the factory's drain looks at streams
        self.cluster_name: str | None = None

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """Send the server preface; take the place of a connection."""
        factory = self._factory
        self.conn.since = self.conn.now = factory.now
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self.conn.initiate()
        self.flush()
        factory.connection_opened(self)

    @property
    def factory(self) -> GatewayFactory:
        """The factory serving the connection."""
        return self._factory

    @property
    def now(self) -> float:
        """The sweep's clock."""
        return self._factory.now

    def peer(self) -> Peer:
        """What the connection's client certificate proves (decided once)."""
        if self._peer is _NO_PEER:
            get_peer = getattr(self.transport, "getPeerCertificate", None)
            cert = get_peer() if get_peer is not None else None
            self._peer = self._factory.access.peer(cert)
        return self._peer

    def flush(self) -> None:
        """Write the frames queued (not while a read is handled: once after it)."""
        if self._reading or self.disconnected:
            return
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        """Feed the connection; act on its events; one write after."""
        conn = self.conn
        self._reading = True
        try:
            events = conn.receive_data(data, self._factory.now)
            streams = self.streams
            for event in events:
                if isinstance(event, StreamBody):
                    stream = streams.get(event.stream_id)
                    if stream is None:
                        conn.acknowledge(event.stream_id, event.flow)
                    else:
                        stream.body(event.data, event.flow)
                elif isinstance(event, StreamRequest):
                    self._request(event)
                elif isinstance(event, ConnectionDone):
                    self._reading = False
                    self.flush()
                    self._end_all()
                    self.transport.loseConnection()  # type: ignore[union-attr]
                    return
                else:
                    stream = streams.get(event.stream_id)
                    if stream is None:
                        continue
                    if isinstance(event, StreamEnd):
                        stream.end()
                    elif isinstance(event, StreamWritable):
                        stream.writable()
                    else:
                        stream.lost()
        finally:
            self._reading = False
        self.flush()
        if conn.finished:
            self._close()

    def _request(self, event: StreamRequest) -> None:
        stream = H2Request(self, event.stream_id, event.head)
        self.streams[event.stream_id] = stream
        if event.error is not None:
            stream.send_error(event.error)
        else:
            self._factory.pipeline.handle(stream, event.head)

    def stream_done(self, stream: H2Request) -> None:
        """``stream``'s response is over (or it was reset)."""
        self.streams.pop(stream.stream_id, None)
        if self.conn.finished and not self._reading:
            self.flush()
            self._close()

    def _close(self) -> None:
        if not self.disconnected and self.transport is not None:
            self.transport.loseConnection()

    def _end_all(self) -> None:
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.lost()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """End every stream (their upstream requests are cancelled)."""
        self.disconnected = True
        timer, self._drain_timer = self._drain_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._factory.connection_closed(self)
        self._end_all()

    # -- IPushProducer (the client transport) ----------------------------------------

    def pauseProducing(self) -> None:
        """The client's transport is full: pause every stream's producer."""
        self.choked = True
        for stream in list(self.streams.values()):
            stream.pause_producer()

    def resumeProducing(self) -> None:
        """The transport drained: resume the streams not waiting for window."""
        self.choked = False
        for stream in list(self.streams.values()):
            stream.maybe_resume_producer()

    def stopProducing(self) -> None:
        """The transport is gone (``connectionLost`` follows)."""

    # -- bounds and draining (the factory's) ---------------------------------------------

    def timed_out(self) -> None:
        """Idle past ``idleTimeout``: the final ``GOAWAY``, then close; a
        connection that does not take its last bytes is aborted."""
        conn = self.conn
        if conn.phase == CLOSING:
            self.transport.abortConnection()  # type: ignore[union-attr]
            return
        if conn.phase == IDLE:
            conn.go_away()
            self.flush()
            conn.phase = CLOSING
            conn.since = self._factory.now
            self._close()

    def drain(self) -> None:
        """Stop taking streams without failing one (race-free ``GOAWAY``)."""
        self.conn.drain()
        self.flush()
        if self._drain_timer is None and not self.disconnected:
            clock: Any = self._factory.clock()
            self._drain_timer = clock.callLater(DRAIN_PING_TIMEOUT, self._drain_ping_timeout)

    def _drain_ping_timeout(self) -> None:
        self._drain_timer = None
        self.conn.go_away()
        self.flush()
        if self.conn.finished:
            self._close()

    def cluster_removed(self, names: frozenset[str]) -> None:
        """End the streams to the removed clusters ``names``."""
        for stream in list(self.streams.values()):
            if stream.cluster_name in names:
                stream.end_stream()

    def end_streams(self, reason: str | None = "the gateway is shutting down") -> None:
        """The drain deadline: end every stream (cleanly where the framing
        allows: a watch sees its stream end), then close."""
        self.conn.go_away()
        for stream in list(self.streams.values()):
            stream.end_stream()
        self.flush()
        self._close()

    def end_session(self, reason: str) -> None:
        """No upgraded session runs over HTTP/2."""


@implementer(IPushProducer)
class _BodyValve:
    """Pauses acknowledging a stream's request body (registered as the
    producer of an upstream transport)."""

    __slots__ = ("_stream",)

    def __init__(self, stream: H2Request) -> None:
        self._stream = stream

    def pauseProducing(self) -> None:
        """The cluster is slow: withhold the client's window."""
        self._stream.pause_reading()

    def resumeProducing(self) -> None:
        """Grant the client's window again."""
        self._stream.resume_reading()

    def stopProducing(self) -> None:
        """The upstream transport is gone."""
        self._stream.resume_reading()


class H2Request:
    """One request stream: the pipeline's front and the forwarder's channel
    (see the module docstring)."""

    __slots__ = (
        "_bytes_in",
        "_bytes_out",
        "_chunked",
        "_done",
        "_ended",
        "_holding",
        "_unacked",
        "audit",
        "client_address",
        "cluster_name",
        "forwarder",
        "head",
        "on_body",
        "on_end",
        "producer",
        "protocol",
        "responder",
        "server_route",
        "status",
        "stream_id",
    )

    def __init__(self, protocol: H2FrontProtocol, stream_id: int, head: RequestHead) -> None:
        self.protocol = protocol
        self.stream_id = stream_id
        self.head = head
        self.client_address = protocol.client_address
        self.server_route = protocol.server_route
        self.status = 0
        self.cluster_name: str | None = None
        self.forwarder: ClientExchange | None = None
        self.responder: H2Responder | None = None
        self.on_body: Callable[[bytes], None] | None = None
        self.on_end: Callable[[], None] | None = None
        #: the upstream side of the response body (paused while the stream is blocked)
        self.producer: IPushProducer | None = None
        self._holding = 0  # reasons the request body is not acknowledged
        self._unacked = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._chunked = True
        self._ended = False  # our response is over
        self._done = False  # recorded and forgotten
        self.audit: RequestRecord | None = RequestRecord(
            time.time(), 0, 0, caller_audit_id(head.headers) or new_audit_id()
        )
        self.audit.target = head.target

    # -- from the connection -------------------------------------------------------

    def body(self, data: bytes, flow: int) -> None:
        """A piece of the request body: handed on, acknowledged unless held."""
        self._bytes_in += len(data)
        if self._holding:
            self._unacked += flow
        else:
            self.protocol.conn.acknowledge(self.stream_id, flow)
        on_body = self.on_body
        if on_body is not None and data:
            on_body(data)

    def end(self) -> None:
        """The request body is complete."""
        on_end, self.on_end = self.on_end, None
        self.on_body = None
        if on_end is not None:
            on_end()

    def writable(self) -> None:
        """What waited for the client's window went out."""
        if self._ended:
            self._finish()
        else:
            self.maybe_resume_producer()

    def lost(self) -> None:
        """The client reset the stream, or the connection is gone."""
        if self._done:
            return
        self._ended = True
        self.producer = None
        forwarder, self.forwarder = self.forwarder, None
        if forwarder is not None:
            forwarder.client_lost()
        responder, self.responder = self.responder, None
        if responder is not None:
            responder.connection_lost()
        self._finish()

    def end_stream(self) -> None:
        """End the response now (the drain deadline, a removed cluster)."""
        forwarder = self.forwarder
        if forwarder is not None:
            forwarder.end_stream()
        responder = self.responder
        if responder is not None:
            responder.finish()
        if not self._ended:
            self.abort()

    # -- producers ---------------------------------------------------------------

    def pause_producer(self) -> None:
        """Pause the upstream side of the response."""
        producer = self.producer
        if producer is not None:
            producer.pauseProducing()

    def maybe_resume_producer(self) -> None:
        """Resume it unless the stream or the transport is blocked."""
        producer = self.producer
        protocol = self.protocol
        if (
            producer is not None
            and not protocol.choked
            and not protocol.conn.blocked(self.stream_id)
        ):
            producer.resumeProducing()

    def pause_reading(self) -> None:
        """Withhold the request body's window."""
        self._holding |= 1

    def resume_reading(self) -> None:
        """Grant the request body's window again."""
        self._holding &= ~1
        self._release()

    def _release(self) -> None:
        if not self._holding and self._unacked:
            unacked, self._unacked = self._unacked, 0
            self.protocol.conn.acknowledge(self.stream_id, unacked)
            self.protocol.flush()

    # -- Front (for the pipeline) ----------------------------------------------------

    def peer(self) -> Peer:
        """What the connection's client certificate proves."""
        return self.protocol.peer()

    def audit_id(self) -> str:
        """The request's ``Audit-Id`` (for log lines)."""
        audit = self.audit
        return audit.audit_id.decode("ascii") if audit is not None else ""

    def upgradable(self) -> GatewayProtocol:
        """HTTP/2 carries no upgrade: the ``400`` saying so."""
        raise ApiError(
            400,
            "an upgrade needs HTTP/1.1 (ALPN http/1.1); this request came over HTTP/2",
            "BadRequest",
        )

    def api_responder(self, head: RequestHead) -> H2Responder:
        """The own API's responder for this stream."""
        responder = self.responder = H2Responder(self)
        return responder

    def abort(self) -> None:
        """Reset the stream (a response broke off)."""
        self.forwarder = None
        if self._done:
            return
        self._ended = True
        self.producer = None
        protocol = self.protocol
        protocol.conn.reset(self.stream_id, _INTERNAL_ERROR, protocol.now)
        protocol.flush()
        self._finish()

    # -- Channel (for the forwarder) -------------------------------------------------

    def reading(self) -> IPushProducer:
        """A producer withholding the request body's window."""
        return _BodyValve(self)

    def pause_for_upstream(self) -> None:
        """Hold the request body until the request has an upstream connection."""
        self._holding |= 2

    def resume_for_upstream(self) -> None:
        """Undo :meth:`pause_for_upstream`."""
        self._holding &= ~2
        self._release()

    def send_error(self, error: ApiError) -> None:
        """Answer the request with a ``Status``."""
        if self._ended:
            return
        self.status = error.code
        audit = self.audit
        if audit is not None and error.code in (401, 403):
            audit.reason = error.message
        headers = _JSON if audit is None else [*_JSON, (AUDIT_ID, audit.audit_id)]
        if error.headers:
            headers = [*headers, *error.headers]
        self._respond(error.code, headers, error.body())

    def _respond(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        conn = self.protocol.conn
        sid = self.stream_id
        no_body = not body or self.head.method == b"HEAD"
        conn.send_head(sid, code, [*headers, (b"content-length", b"%d" % len(body))], no_body)
        if not no_body:
            self._bytes_out += len(body)
            conn.send_body(sid, body)
            conn.end(sid, self.protocol.now)
        self._ended = True
        self.protocol.flush()
        if not conn.blocked(sid):
            self._finish()

    def relay_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        """Pass a ``1xx`` on."""
        self.protocol.conn.send_interim(self.stream_id, code, headers)
        self.protocol.flush()

    def upstream_status(self, code: int, response: ResponseHeaders) -> None:
        """Note the cluster's status; the caller sees the request's ``Audit-Id``."""
        self.status = code
        audit = self.audit
        if audit is not None:
            audit.head_at = time.monotonic()
            response.forward.insert(0, (AUDIT_ID, audit.audit_id))

    def relay_head(self, code: int, reason: bytes, response: ResponseHeaders) -> bool:
        """Pass the cluster's head on (HEADERS); whether a body follows."""
        if self._ended:
            return False
        self.upstream_status(code, response)
        length = response.content_length
        no_body = self.head.method == b"HEAD" or code in _NO_BODY_CODES or length == 0
        self._chunked = length is None
        self.protocol.conn.send_head(self.stream_id, code, response.forward, no_body)
        if no_body:
            self._ended = True
        self.protocol.flush()
        return not no_body

    def stream_from(self, producer: IPushProducer) -> None:
        """Pause ``producer`` while the stream (or the transport) is blocked."""
        self.producer = producer
        if self.protocol.choked or self.protocol.conn.blocked(self.stream_id):
            producer.pauseProducing()

    def relay_body(self, data: bytes) -> None:
        """Pass a piece of the body on (DATA within the window)."""
        if self._ended:
            return
        self._bytes_out += len(data)
        protocol = self.protocol
        if not protocol.conn.send_body(self.stream_id, data):
            self.pause_producer()
        protocol.flush()

    def relay_chunked(self) -> bool:
        """Whether the response can end cleanly now (no ``Content-Length``)."""
        return self._chunked

    def relay_end(self, close: bool = False) -> None:
        """The response is complete: end the stream (after what waits)."""
        self.producer = None
        protocol = self.protocol
        if not self._ended:
            self._ended = True
            protocol.conn.end(self.stream_id, protocol.now)
            protocol.flush()
        if not protocol.conn.blocked(self.stream_id):
            self._finish()

    def _finish(self) -> None:
        """Record the request (metrics, audit) and forget the stream."""
        if self._done:
            return
        self._done = True
        self.forwarder = None
        self.responder = None
        audit, self.audit = self.audit, None
        protocol = self.protocol
        factory = protocol.factory
        if audit is not None and audit.admission is not None:
            audit.admission.release()
        if audit is not None and (factory.metrics is not None or factory.audit is not None):
            record_request(
                audit,
                metrics=factory.metrics,
                writer=factory.audit,
                head=self.head,
                cluster=self.cluster_name,
                status=self.status,
                bytes_in=self._bytes_in,
                bytes_out=self._bytes_out,
                source=self.client_address,
            )
        protocol.stream_done(self)


class H2Responder(ResponderBase):
    """How the own API answers on one stream (:class:`karpor.gatewayapi.request.Responder`)."""

    def __init__(self, stream: H2Request) -> None:
        super().__init__()
        self._stream = stream

    def _record(self) -> H2Request:
        return self._stream

    def _send(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        self._stream._respond(code, list(headers), body)

    def _send_head(self, code: int, headers: Sequence[Header]) -> None:
        stream = self._stream
        stream.protocol.conn.send_head(stream.stream_id, code, list(headers), False)
        stream.protocol.flush()

    def _send_data(self, data: bytes) -> None:
        stream = self._stream
        stream._bytes_out += len(data)
        stream.protocol.conn.send_body(stream.stream_id, data)
        stream.protocol.flush()

    def _send_end(self) -> None:
        self._stream.relay_end()
