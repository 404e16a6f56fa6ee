"""The front protocol: HTTP/1.1 from callers (inside TLS), the top of the
request path.  A connection whose TLS handshake chose ALPN ``h2`` is handed,
at the end of the handshake, to the HTTP/2 adapter
(:mod:`karpor.front.h2protocol`), which serves each stream through the same
pipeline.

One :class:`GatewayProtocol` per client connection, a Twisted adapter over
the sans-IO :class:`~karpor.http.connection.FrontConnection` (which parses
requests with llhttp, bounds their heads, keeps pipelined requests in
order and holds the connection's state).  It hands each request to the
factory's :class:`~karpor.front.pipeline.RequestPipeline`, which routes it
by host or path (:func:`karpor.http.route.route_request`; the client's TLS
server name is read once, at the handshake) and either forwards it to its cluster
(:class:`karpor.upstream.forward.Forwarder`; long-running requests as
HTTP/2 streams, :mod:`karpor.upstream.h2`) or hands it to the gateway's own
API (:class:`karpor.gatewayapi.request.ApiHandler`) with a
:class:`~karpor.front.responder.Responder`; the adapter keeps the
transport, backpressure, timeouts, draining, the audit record and metrics
of each request, and writes error answers.

Access (:class:`karpor.auth.access.Access`): the TLS peer certificate is
checked once per connection (:meth:`~karpor.auth.access.Access.peer`); each
request is authenticated from that and its headers (client certificate,
front-proxy headers, bearer token: a 401 ``Status`` otherwise, but on the
public paths), a cluster request is authorized by the policy (403), and the
identity the cluster must see goes upstream as ``Impersonate-*`` headers
while the caller's own credential and identity headers never do.  The
request goes to the cluster's pool as one
:class:`~karpor.upstream.request.UpstreamRequest`; the pool adds the
cluster's credential (an exec plugin's token included: 502 naming the
cluster when the plugin fails, a 401 from the cluster drops the cached
token) and picks the carrier.  With an audit log, one
:class:`~karpor.auth.audit.AuditRecord` is written per request when it
ends (a splice when it closes), where its metrics are recorded too
(:class:`~karpor.metrics.gateway.GatewayMetrics`).
Every response carries the request's ``Audit-Id`` (the caller's when sane,
else a fresh UUID: :mod:`karpor.http.headers`), which also goes upstream.

Health (:mod:`karpor.health`): an authorized request to a cluster its last
health probe found unhealthy is answered at once with the probe's failure
(``health_gate``, a 503 ``Status`` naming the cluster; no connection is
attempted) unless the settings say to try anyway.

Requests on a connection are answered in order, one at a time: when a
request begins while the previous response is still going (pipelining),
reading pauses and the connection holds the parsed pieces of what was
already read until that response is done.  A connection that is not
pipelining keeps reading, so a client that goes away is noticed at once and
its upstream connection closed.

An upgrade request (``Connection: Upgrade``) stops the parser: what the
client sends after its head is not HTTP until the request is answered, so
those bytes are held (and reading paused).  A cluster's ``101`` hands them,
and the connection, to a :class:`~karpor.upstream.splice.Splice`
(:class:`~karpor.upstream.splice.UpgradeForwarder`); any other answer (the
cluster's, an error of the gateway's, the own API's) is an ordinary
response, after which a fresh parser reads the held bytes as HTTP again.

Bounds (:mod:`karpor.http.bounds`, the ``clientConnections``
settings): a request head is read up to ``maxHeaderBytes`` (then a 431 or
414 ``Status``); the handshake, a request head and an idle keep-alive
connection have timeouts kept by one sweep per worker (a request in
progress, a stream or a splice has none); past ``maxConnections`` a
worker closes new connections at accept.  What the parser refuses is
answered with a ``Status`` before the close: a transfer coding other than
``chunked`` 501, an HTTP version other than 1.0 and 1.1 400 or 505, a
broken head or chunked body 400 (a body broken after its response began
drops the connection).  The close after a refused head lingers
(:class:`~karpor.http.bounds.Linger`): write side shut down, what the
client still sends read and dropped (up to ``maxHeaderBytes``, at least
256 KiB) for up to half a second, so that its
answer is not lost to a reset.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IHandshakeListener,
    IPushProducer,
    IReactorTime,
    ISSLTransport,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.auth.access import Access, Peer
from karpor.auth.audit import AuditWriter
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.config.model import Cluster
from karpor.front.front import ClientExchange
from karpor.front.h2protocol import H2FrontProtocol, serve_h2
from karpor.front.pipeline import RequestPipeline
from karpor.front.record import CountingTransport, RequestRecord, record_request
from karpor.front.responder import Responder
from karpor.gatewayapi.request import ApiHandler
from karpor.http.bounds import (
    BUSY,
    CLOSING,
    HANDSHAKE,
    HEAD,
    LINGER_SECONDS,
    ClientConnectionSettings,
    ConnectionCap,
    Linger,
    head_timed_out,
    phase_limits,
    sweep_interval,
)
from karpor.http.connection import END, FrontConnection, ProtocolError, RequestHead
from karpor.http.headers import (
    AUDIT_ID,
    Header,
    ResponseHeaders,
    caller_audit_id,
    new_audit_id,
    request_drops,
)
from karpor.http.route import NO_HOST_ROUTING, HostRouting
from karpor.kube.status import ApiError
from karpor.net.tlstransport import server_name
from karpor.upstream.execcredential import ExecCredentialCache
from karpor.upstream.http1 import no_delay
from karpor.upstream.pool import UpstreamPools
from karpor.upstream.recordings import Recordings
from karpor.upstream.splice import Splice
from karpor.upstream.tunnel import AgentLink

if TYPE_CHECKING:
    from karpor.front.limits import Limiter
    from karpor.metrics.gateway import GatewayMetrics

log = Logger()

#: Largest request body the gateway's own API reads (kube-apiserver's limit).
MAX_API_BODY = 3 * 1024 * 1024
#: After the drain deadline, how long ended streams get to flush before the
#: remaining connections are aborted.
DRAIN_GRACE = 2.0
#: While draining, how long a keep-alive connection must stay idle before it
#: is closed: a request already on its way is received and answered (with
#: ``Connection: close``) rather than the connection closed under it.
DRAIN_IDLE_GRACE = 1.0

_JSON: list[Header] = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-cache")]

# why reading from the client is paused
_HELD = 1  # the connection holds bytes (pipelined requests, after an upgrade request)
_UPSTREAM = 2
_BODY = 3
_SPLICE = 5  # the cluster side of a splice is slow

_NO_PEER: Any = object()


@implementer(IPushProducer)
class _ReadValve:
    """Pauses reading the request body from the client (registered as the
    producer of an upstream transport)."""

    def __init__(self, protocol: GatewayProtocol) -> None:
        self._protocol = protocol

    def pauseProducing(self) -> None:
        """The cluster is slow: stop reading from the client."""
        self._protocol._pause(_BODY)

    def resumeProducing(self) -> None:
        """Read from the client again."""
        self._protocol._resume(_BODY)

    def stopProducing(self) -> None:
        """The upstream transport is gone; the forwarder settles the request."""
        self._protocol._resume(_BODY)


@implementer(IHalfCloseableProtocol, IHandshakeListener)
class GatewayProtocol(Protocol):
    """One client connection (see the module docstring).

    Bounds (:mod:`karpor.http.bounds`): a request head (request line
    and headers) over ``maxHeaderBytes`` is answered ``431`` (``414`` for
    the URL alone) and the connection closed; the parsing, the head bound,
    the order of pipelined requests and the connection's state are the
    sans-IO :class:`~karpor.http.connection.FrontConnection`'s
    (:attr:`conn`), whose phase (with the sweep clock at its start) is
    what the factory's sweep times out.
    """

    def __init__(self, factory: GatewayFactory) -> None:
        self._factory = factory
        #: the connection's HTTP/1.1, sans-IO
        self.conn = FrontConnection(factory.max_header_bytes)
        self._peer: Peer = _NO_PEER
        self.client_address = b""
        self.status = 0
        self.audit: RequestRecord | None = None
        self._counting: CountingTransport | None = None
        self._pauses: set[int] = set()
        self._pumping = False
        self.disconnected = False
        self._head: RequestHead | None = None
        self.on_body: Callable[[bytes], None] | None = None
        self.on_end: Callable[[], None] | None = None
        self.forwarder: ClientExchange | None = None
        #: a relayed response's producer is registered on the transport
        self._relaying = False
        #: the splice of an upgraded request (or an agent's tunnel)
        self._splice: Splice | AgentLink | None = None
        self.responder: Responder | None = None
        self._idle_timer: IDelayedCall | None = None
        #: what the close after a refused request head may still drop
        self._linger: Linger | None = None
        #: the cluster the request in progress goes to (its streams end if it is removed)
        self.cluster_name: str | None = None
        #: the cluster the connection's TLS server name names (host routing;
        #: classified once, at the handshake: :meth:`HostRouting.server_name`)
        self.server_route: str | ApiError | None = None

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """Note the caller's address (for ``X-Forwarded-For``); no Nagle
        delays (streams and interactive sessions write small pieces)."""
        no_delay(self.transport)
        conn = self.conn
        if not ISSLTransport.providedBy(self.transport):
            conn.phase = HEAD  # no handshake to wait for
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self.client_address = str(getattr(peer, "host", "")).encode()
        if self._factory.audit is not None or self._factory.metrics is not None:
            self._counting = CountingTransport(self.transport)
            self.transport = self._counting  # type: ignore[assignment]
        self._factory.connection_opened(self)
        conn.since = self._factory.now

    def handshakeCompleted(self) -> None:
        """TLS is up: the first request head is read from now on; the
        client's server name (SNI) is classified for host routing (or, when
        ALPN chose ``h2``, an :class:`~karpor.front.h2protocol.H2FrontProtocol`
        serves the connection from now on)."""
        factory = self._factory
        hosts = factory.host_routing
        if hosts.enabled:
            self.server_route = hosts.server_name(server_name(self.transport))
        if factory.http2 and getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            counting = self._counting
            transport = counting.wrapped if counting is not None else self.transport
            serve_h2(self, factory, transport, self.client_address)
            return
        self.conn.handshake_completed(factory.now)

    def timed_out(self) -> None:
        """The current phase outlived its timeout (the factory's sweep):
        a handshake is aborted; a request head that began gets a ``408``
        and the connection closes; an idle connection (or one that sent
        nothing) closes silently, as Go closes it; one that was closing is
        aborted (its client does not take the last bytes), once a lingering
        close (:meth:`_close_lingering`) ended."""
        conn = self.conn
        phase = conn.phase
        if self._linger is not None and self._idle_timer is not None:
            return  # a lingering close: its own timer ends it first
        if phase in (HANDSHAKE, CLOSING):
            conn.phase = BUSY  # aborted: never again
            self.transport.abortConnection()  # type: ignore[union-attr]
        elif phase == HEAD and conn.in_message and not conn.busy:
            conn.failed = True
            self._head = None
            self._send_error(head_timed_out(self._factory.connections.header_read_timeout))
        else:
            self._close()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Close what the current request (or the splice) holds upstream."""
        self.disconnected = True
        timer, self._idle_timer = self._idle_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._factory.connection_closed(self)
        if self.audit is not None:
            self._request_done()
        splice, self._splice = self._splice, None
        if splice is not None:
            splice.client_lost()
            return
        self.conn.take_events()
        forwarder, self.forwarder = self.forwarder, None
        if forwarder is not None:
            forwarder.client_lost()
        responder, self.responder = self.responder, None
        if responder is not None:
            responder.connection_lost()

    def peer(self) -> Peer:
        """What the connection's client certificate proves (decided once)."""
        if self._peer is _NO_PEER:
            get_peer = getattr(self.transport, "getPeerCertificate", None)
            cert = get_peer() if get_peer is not None else None
            self._peer = self._factory.access.peer(cert)
        return self._peer

    def _pause(self, reason: int) -> None:
        if not self._pauses and not self.disconnected:
            self.transport.pauseProducing()  # type: ignore[union-attr]
        self._pauses.add(reason)

    def _resume(self, reason: int) -> None:
        if reason in self._pauses:
            self._pauses.discard(reason)
            if not self._pauses and not self.disconnected:
                self.transport.resumeProducing()  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        """The client shut down its sending side (plain TCP only: over TLS
        the connection just closes): passed on by a splice; otherwise the
        client is gone, as if it had closed."""
        if self._splice is not None:
            self._splice.client_eof()
        elif self._linger is not None:
            self.transport.loseConnection()  # type: ignore[union-attr]  # the answer goes first
        elif not self.disconnected:
            self.transport.abortConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Our sending side is shut down (a splice passed on a half-close)."""

    def dataReceived(self, data: bytes) -> None:
        """Parse request bytes (or pass them to the splice)."""
        splice = self._splice
        conn = self.conn
        if splice is not None:
            conn.received += len(data)
            splice.client_data(data)
            return
        conn.receive_data(data, self._factory.now)
        if conn.closing:
            self._discarded(len(data))
            return
        if conn.holding:
            self._pause(_HELD)
        if conn.events:
            self._pump()

    def _pump(self) -> None:
        """Handle the connection's events, in order (not re-entered: an
        event handled meanwhile, e.g. a response that ended at once and
        released the next pipelined request, is handled by the loop)."""
        if self._pumping:
            return
        self._pumping = True
        conn = self.conn
        try:
            while conn.events:
                for event in conn.take_events():
                    if self.disconnected or conn.closing:
                        return
                    if type(event) is bytes:
                        on_body = self.on_body
                        if on_body is not None:
                            on_body(event)
                    elif event is END:
                        on_end, self.on_end = self.on_end, None
                        self.on_body = None
                        if on_end is not None:
                            on_end()
                    elif type(event) is RequestHead:
                        self._dispatch(event)
                    else:
                        assert isinstance(event, ProtocolError)
                        self._protocol_error(event)
        finally:
            self._pumping = False

    def _protocol_error(self, event: ProtocolError) -> None:
        """Answer a request the connection cannot read on from: a broken
        body of a request already answered, or whose response began, closes
        (or drops) the connection."""
        if event.in_body:
            # the body of a dispatched request is broken: nothing sane can follow
            if not self.conn.busy:
                self._close()
            elif self.status == 0 and self._splice is None:
                self._drop_request()  # no response yet: the client hears why
                self._send_error(event.error)
            else:
                self.transport.abortConnection()  # type: ignore[union-attr]
        else:
            self._head = RequestHead(b"GET", event.target, [], True, False, False)
            self._start_audit()
            self._send_error(event.error)

    def _drop_request(self) -> None:
        """Forget the request in progress upstream (its body is broken)."""
        self.on_body = None
        self.on_end = None
        forwarder, self.forwarder = self.forwarder, None
        if forwarder is not None:
            forwarder.client_lost()

    def _close(self) -> None:
        # aborted if its last bytes are not taken within a handshake timeout
        if self.conn.close(self._factory.now):
            self.transport.loseConnection()  # type: ignore[union-attr]

    def _close_lingering(self) -> None:
        """Close after a refused request head as Go's ``closeWriteAndWait``
        does (:class:`~karpor.http.bounds.Linger`): the sending side shut
        down once the answer is out (``close_notify`` over TLS; the fallback
        TLS of Twisted cannot half-close and only lingers), then what the
        client still sends is dropped until it stops, the budget is spent or
        :data:`~karpor.http.bounds.LINGER_SECONDS` passed."""
        if not self.conn.close(self._factory.now):
            return
        self._linger = Linger(self.conn.max_header_bytes)
        transport: Any = self.transport
        if self._pauses:
            self._pauses.clear()
            transport.resumeProducing()
        half_close = getattr(transport, "loseWriteConnection", None)
        if half_close is not None:
            half_close()
        timer = self._idle_timer
        if timer is not None and timer.active():
            timer.cancel()
        clock: Any = self._factory.clock()
        self._idle_timer = clock.callLater(LINGER_SECONDS, self._linger_ended)

    def _discarded(self, size: int) -> None:
        """``size`` bytes arrived after the close began: dropped, and the
        lingering close (if it is one) ends once its budget is spent."""
        linger = self._linger
        if linger is not None and not linger.discard(size):
            self._linger_ended()

    def _linger_ended(self) -> None:
        self._idle_timer = None
        if not self.disconnected:
            self.transport.loseConnection()  # type: ignore[union-attr]

    # -- requests -----------------------------------------------------------------

    def _start_audit(self) -> None:
        self.status = 0
        counting = self._counting
        head = self._head
        assert head is not None
        self.audit = audit = RequestRecord(
            time.time(),
            head.in_mark,
            counting.written if counting is not None else 0,
            caller_audit_id(head.headers) or new_audit_id(),
        )
        audit.target = head.target

    def _request_done(self) -> None:
        """Record the metrics and write the audit record of the request that just ended."""
        audit, self.audit = self.audit, None
        factory = self._factory
        if audit is not None and audit.admission is not None:
            audit.admission.release()
        if audit is not None and audit.session is not None:
            audit.session.finish()  # the recording closes, whatever else is kept
        if audit is None or (factory.metrics is None and factory.audit is None):
            return
        counting = self._counting
        record_request(
            audit,
            metrics=factory.metrics,
            writer=factory.audit,
            head=self._head,
            cluster=self.cluster_name,
            status=self.status,
            bytes_in=max(0, self.conn.received - audit.in_mark),
            bytes_out=(counting.written - audit.out_mark) if counting is not None else 0,
            source=self.client_address,
        )

    def upstream_status(self, code: int, response: ResponseHeaders) -> None:
        """The cluster answered ``code``; the caller sees the request's
        ``Audit-Id`` (the cluster's is dropped)."""
        self.status = code
        audit = self.audit
        if audit is not None:
            audit.head_at = time.monotonic()
            response.forward.insert(0, (AUDIT_ID, audit.audit_id))

    def _dispatch(self, head: RequestHead) -> None:
        self._head = head
        self.on_body = None
        self.on_end = None
        self._start_audit()
        self._factory.pipeline.handle(self, head)

    def audit_id(self) -> str:
        """The current request's ``Audit-Id`` (for log lines; "" between requests)."""
        audit = self.audit
        return audit.audit_id.decode("ascii") if audit is not None else ""

    def _send_error(self, error: ApiError) -> None:
        self.status = error.code
        audit = self.audit
        if audit is not None and error.code in (401, 403):
            audit.reason = error.message
        headers = _JSON if audit is None else [*_JSON, (AUDIT_ID, audit.audit_id)]
        if error.headers:
            headers = [*headers, *error.headers]
        data, close = self.conn.respond(
            self._head, error.code, headers, error.body(), self.conn.failed
        )
        self.transport.write(data)  # type: ignore[union-attr]
        self.finish_response(close)

    def finish_response(self, close: bool) -> None:
        """The response to the current request is complete."""
        if self.audit is not None:
            self._request_done()
        self.forwarder = None
        self.responder = None
        self.cluster_name = None
        conn = self.conn
        if conn.end_response(close, self._factory.now):
            if conn.refused_head:
                self._close_lingering()
            else:
                self._close()
            return
        # what was held (the next pipelined request, or the bytes after an
        # upgrade request answered without switching) is handled now
        if conn.events:
            self._pump()
        if conn.holding:
            self._pause(_HELD)
        elif self._pauses:
            self._resume(_HELD)
        if conn.draining:
            self._close_when_idle()

    # -- draining (the worker is stopping) ------------------------------------------

    def _idle(self) -> bool:
        return self.conn.idle and self._splice is None

    def drain(self) -> None:
        """Stop taking requests on this connection without failing one.

        The response in progress says ``Connection: close`` (if its head is
        not written yet) and the connection closes after it; requests already
        received (pipelined) are answered first.  An idle keep-alive
        connection is closed once it stayed idle for :data:`DRAIN_IDLE_GRACE`
        (a request already on its way is answered, with ``Connection:
        close``).  A connection that has not sent its first request yet gets
        it answered first (it was accepted to be served: closing it now would
        fail a request no client retries), or waits for the drain deadline."""
        self.conn.draining = True
        if self.conn.answered:
            self._close_when_idle()

    def _close_when_idle(self) -> None:
        if self._idle_timer is None and self._idle() and not self.conn.closing:
            clock: Any = self._factory.clock()
            self._idle_timer = clock.callLater(DRAIN_IDLE_GRACE, self._idle_timeout)

    def _idle_timeout(self) -> None:
        self._idle_timer = None
        if self._idle() and not self.disconnected:
            self._close()

    def cluster_removed(self, names: frozenset[str]) -> None:
        """End the stream in progress (watch, ``logs -f``, exec) if it goes
        to one of the removed clusters ``names``: cleanly, as at a drain (a
        session is cut as a failure the client sees)."""
        busy = self.conn.busy or self._splice is not None
        if busy and self.cluster_name in names:
            self.end_streams(f'the cluster "{self.cluster_name}" was removed from the gateway')

    def end_streams(self, reason: str | None = "the gateway is shutting down") -> None:
        """The drain deadline: end what is still going, cleanly where the
        framing allows (a chunked stream gets its last chunk, so a watching
        client sees the stream end and watches again elsewhere).  An
        upgraded session is cut with a failure carrying ``reason``
        (:meth:`end_session`), or left running when ``reason`` is ``None``
        (its own deadline comes later)."""
        self.conn.draining = True
        if self._splice is not None:
            if reason is not None:
                self.end_session(reason)
            return
        forwarder = self.forwarder
        if forwarder is not None:
            forwarder.end_stream()
        responder = self.responder
        if responder is not None:
            responder.finish()
        self._close()

    def end_session(self, reason: str) -> None:
        """Cut the upgraded session (exec, attach, port-forward), if any, so
        the client sees a failure carrying ``reason`` (:meth:`Splice.cut`)."""
        splice = self._splice
        if splice is not None:
            self.conn.closing = True
            splice.cut(reason)

    # -- Front (for the pipeline) ---------------------------------------------------

    def upgradable(self) -> GatewayProtocol:
        """The connection an upgrade request is spliced on: this one."""
        return self

    def api_responder(self, head: RequestHead) -> Responder:
        """How the own API answers the current request."""
        responder = self.responder = Responder(self, head)
        return responder

    # -- Channel (for the forwarder) ------------------------------------------------

    @property
    def client(self) -> ITransport:
        """The client's transport."""
        assert self.transport is not None
        return self.transport

    def reading(self) -> IPushProducer:
        """A producer pausing request-body reads (for an upstream transport)."""
        return _ReadValve(self)

    def pause_for_upstream(self) -> None:
        """Stop reading until the request has an upstream connection."""
        self._pause(_UPSTREAM)

    def resume_for_upstream(self) -> None:
        """Read again: the request has an upstream connection (or failed)."""
        self._resume(_UPSTREAM)

    def send_error(self, error: ApiError) -> None:
        """Answer the current request with a ``Status``."""
        self._send_error(error)

    def relay_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        """Pass a cluster's ``1xx`` on (HTTP/1.1 clients only)."""
        assert self._head is not None
        data = self.conn.interim_head(self._head, code, reason, headers)
        if data:
            self.transport.write(data)  # type: ignore[union-attr]

    def relay_head(self, code: int, reason: bytes, response: ResponseHeaders) -> bool:
        """Note the cluster's status (audit, metrics), then pass its head on,
        framed by the connection (``Connection: close`` when the worker
        drains and no further request was received); whether a body follows."""
        assert self._head is not None
        self.upstream_status(code, response)
        data, body = self.conn.relay_head(
            self._head, code, reason, response.forward, response.content_length
        )
        self.transport.write(data)  # type: ignore[union-attr]
        return body

    def stream_from(self, producer: IPushProducer) -> None:
        """Pause ``producer`` (the cluster's side) while the client is slow."""
        self.transport.registerProducer(producer, True)  # type: ignore[union-attr]
        self._relaying = True

    def relay_body(self, data: bytes) -> None:
        """Pass a piece of the cluster's response body on."""
        self.transport.write(self.conn.send_body(data))  # type: ignore[union-attr]

    def relay_chunked(self) -> bool:
        """Whether the relayed response is chunked (it can end at any point)."""
        return self.conn.chunked

    def relay_end(self, close: bool = False) -> None:
        """The relayed response is complete."""
        transport = self.transport
        data, closes = self.conn.finish_body()
        if data:
            transport.write(data)  # type: ignore[union-attr]
        if self._relaying:
            self._relaying = False
            transport.unregisterProducer()  # type: ignore[union-attr]
        self.finish_response(close or closes)

    def abort(self) -> None:
        """Drop the client connection."""
        self.forwarder = None
        if self._relaying:
            self._relaying = False
            self.transport.unregisterProducer()  # type: ignore[union-attr]
        self.transport.abortConnection()  # type: ignore[union-attr]

    # -- TunnelChannel (for an upgrade) ----------------------------------------------

    def relay_switch(self, reason: bytes, response: ResponseHeaders) -> None:
        """Note the ``101``, then pass the cluster's head on."""
        self.upstream_status(101, response)
        self.transport.write(self.conn.switch_head(reason, response.forward))  # type: ignore[union-attr]

    def spliced(self, splice: Splice | AgentLink) -> bytes:
        """The request switched protocols: from now on the connection
        belongs to ``splice``; returns the bytes held since the request head."""
        self._splice = splice
        self.forwarder = None
        held = self.conn.switched()
        self.conn.take_events()
        if self._pauses:
            self._pauses.clear()
            if not self.disconnected:
                self.transport.resumeProducing()  # type: ignore[union-attr]
        return held

    def pause_reading(self) -> None:
        """Stop reading from the client (the cluster side of a splice is slow)."""
        self._pause(_SPLICE)

    def resume_reading(self) -> None:
        """Read from the client again."""
        self._resume(_SPLICE)


class GatewayFactory(Factory):
    """Builds a :class:`GatewayProtocol` per client connection.

    ``clusters()`` returns the current registry snapshot's clusters by name
    (looked up once per request); ``pools`` holds the upstream connections;
    ``access`` authenticates and authorizes, ``audit`` writes the audit
    log, ``exec_credentials`` (handed to ``pools``, which resolve the
    credentials) runs clusters' exec plugins, ``health_gate``
    refuses requests to unhealthy clusters
    (:meth:`karpor.health.prober.HealthProber.refusal`), ``metrics``
    records each request; wrap this factory in TLS
    (``karpor.net.tls.server_options``) to serve it.

    ``host_routing`` routes requests to clusters by TLS server name or
    ``Host`` besides paths (:class:`~karpor.http.route.HostRouting`).

    ``connections`` bounds the client connections
    (:class:`~karpor.http.bounds.ClientConnectionSettings`): past
    ``maxConnections`` open ones, :meth:`buildProtocol` refuses (the
    listener closes the socket at once, before any TLS), logging once per
    burst; while connections are open, one timer sweeps them every
    :func:`~karpor.http.bounds.sweep_interval` seconds and times
    out those whose phase outlived its timeout.
    """

    noisy = False

    def __init__(
        self,
        clusters: Callable[[], Mapping[str, Cluster]],
        api: ApiHandler,
        authenticator: CertificateAuthenticator | None,
        pools: UpstreamPools,
        reactor: IReactorTime | None = None,
        max_api_body: int = MAX_API_BODY,
        *,
        access: Access | None = None,
        audit: AuditWriter | None = None,
        exec_credentials: ExecCredentialCache | None = None,
        health_gate: Callable[[Cluster], ApiError | None] | None = None,
        metrics: GatewayMetrics | None = None,
        connections: ClientConnectionSettings | None = None,
        host_routing: HostRouting = NO_HOST_ROUTING,
        limiter: Limiter | None = None,
        recordings: Recordings | None = None,
    ) -> None:
        self.clusters = clusters
        #: the limits on forwarded requests (:mod:`karpor.front.limits`; ``None``: none)
        self.limiter = limiter
        #: the session recording directory (``None``: nothing is recorded)
        self.recordings = recordings
        #: clusters by TLS server name or ``Host`` (:mod:`karpor.http.route`; off by default)
        self.host_routing = host_routing
        #: the bounds on client connections
        self.connections = connections = connections or ClientConnectionSettings()
        self.max_header_bytes = connections.max_header_bytes
        #: the sweep's clock (``reactor.seconds()`` at the last sweep)
        self.now = 0.0
        self._cap = ConnectionCap(connections.max_connections)
        self._sweep_interval = sweep_interval(connections)
        self._phase_limits = phase_limits(connections, self._sweep_interval)
        self._sweeper: LoopingCall | None = None
        self.api = api
        #: authentication and authorization (client certificates of
        #: ``authenticator`` only, no policy, when not given)
        self.access = access if access is not None else Access(certificates=authenticator)
        #: where each request's audit record goes (``None``: no audit log)
        self.audit = audit
        if exec_credentials is not None:
            pools.use_exec_credentials(exec_credentials)
        #: the ``Status`` of a request to an unhealthy cluster (``None``: forward it)
        self.health_gate = health_gate
        #: where each request's metrics go (``None``: none)
        self.metrics = metrics
        self.drop, self.drop_prefixes = request_drops(
            self.access.drop_names, self.access.drop_prefixes
        )
        self.pools = pools
        self.reactor = reactor
        self.max_api_body = max_api_body
        #: what happens to each request (authenticate → authorize → gate → forward | own API)
        self.pipeline = RequestPipeline(self)
        #: serve HTTP/2 where a client's ALPN chose it (``clientConnections.http2``)
        self.http2 = connections.http2
        self.protocols: set[GatewayProtocol | H2FrontProtocol] = set()
        self.draining = False
        self._drained: Deferred[None] | None = None
        self._timers: list[IDelayedCall] = []
        self._sessions_timer: IDelayedCall | None = None
        self._abort_timer: IDelayedCall | None = None

    def buildProtocol(self, addr: Any) -> GatewayProtocol | None:
        """A protocol for one client connection; ``None`` (the connection is
        closed at accept) while ``maxConnections`` are open."""
        admitted, line = self._cap.admit(len(self.protocols))
        if line is not None:
            if admitted:
                log.info("{line}", line=line)
            else:
                log.warn("{line}", line=line)
        return GatewayProtocol(self) if admitted else None

    def connection_opened(self, protocol: GatewayProtocol | H2FrontProtocol) -> None:
        """Track an open client connection (drained on stop); the first
        starts the sweep."""
        self.protocols.add(protocol)
        if self._sweeper is None:
            clock = self.clock()
            self.now = clock.seconds()
            sweeper = self._sweeper = LoopingCall(self._sweep)
            sweeper.clock = clock
            sweeper.start(self._sweep_interval, now=False)
        if self.draining:
            protocol.drain()

    def _sweep(self) -> None:
        """Time out the connections whose phase outlived its timeout."""
        now = self.now = self.clock().seconds()
        limits = self._phase_limits
        late = [p for p in self.protocols if now - p.conn.since >= limits[p.conn.phase]]
        for protocol in late:
            protocol.timed_out()

    def end_cluster_streams(self, names: frozenset[str]) -> None:
        """End every open stream to the removed clusters ``names``."""
        if names:
            for protocol in list(self.protocols):
                protocol.cluster_removed(names)

    def connection_closed(self, protocol: GatewayProtocol | H2FrontProtocol) -> None:
        """Forget a closed client connection (the last stops the sweep)."""
        self.protocols.discard(protocol)
        sweeper = self._sweeper
        if not self.protocols and sweeper is not None:
            self._sweeper = None
            sweeper.stop()
        self._check_drained()

    def clock(self) -> IReactorTime:
        """The reactor's clock (the global reactor when none was given)."""
        clock: Any = self.reactor
        if clock is None:
            from twisted.internet import reactor as clock  # noqa: PLC0415
        return clock  # type: ignore[no-any-return]

    def drain(self, deadline: float, sessions: float | None = None) -> Deferred[None]:
        """Close connections once idle (:meth:`GatewayProtocol.drain`); at
        ``deadline`` seconds end long-running streams (watch, ``logs -f``)
        cleanly, and cut upgraded sessions (exec, attach, port-forward) at
        ``sessions`` seconds (``deadline`` when ``None``) with a failure the
        client sees; fire once every connection is closed.

        Called again while draining, it only brings the sessions' cut
        forward (a stop during a rolling restart).  Call it after the
        listener stopped accepting.
        """
        if sessions is None:
            sessions = deadline
        clock = self.clock()
        if self._drained is None:
            self.draining = True
            self._drained = Deferred()
            self._sessions_timer = clock.callLater(sessions, self._sessions_deadline)
            self._abort_timer = clock.callLater(
                max(deadline, sessions) + DRAIN_GRACE, self._abort_all
            )
            self._timers = [
                clock.callLater(deadline, self._deadline),
                self._sessions_timer,
                self._abort_timer,
            ]
            for protocol in list(self.protocols):
                protocol.drain()
            self._check_drained()
        else:
            timer, abort = self._sessions_timer, self._abort_timer
            now = clock.seconds()
            if timer is not None and timer.active() and timer.getTime() > now + sessions:
                timer.reset(sessions)
                if abort is not None and abort.active():
                    latest = max(t.getTime() for t in self._timers if t.active() and t is not abort)
                    abort.reset(latest - now + DRAIN_GRACE)
        return self._drained

    def _deadline(self) -> None:
        for protocol in list(self.protocols):
            protocol.end_streams(None)

    def _sessions_deadline(self) -> None:
        for protocol in list(self.protocols):
            protocol.end_session("the gateway is shutting down: the session was cut")

    def _abort_all(self) -> None:
        for protocol in list(self.protocols):
            if protocol.transport is not None:
                protocol.transport.abortConnection()  # type: ignore[attr-defined]

    def _check_drained(self) -> None:
        drained = self._drained
        if drained is None or self.protocols or drained.called:
            return
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []
        drained.callback(None)
