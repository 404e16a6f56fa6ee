"""The front protocol: HTTP/1.1 from callers (inside TLS), the top of the
request path.

One :class:`GatewayProtocol` per client connection: it parses requests with
llhttp (``httptools.HttpRequestParser``), authenticates the connection once
from its TLS peer certificate, routes each request
(:func:`karpor.proxy.route.route`) and either forwards it to its cluster
(:class:`karpor.proxy.forward.Forwarder`; long-running requests as
HTTP/2 streams, :mod:`karpor.proxy.h2upstream`) or hands it to the gateway's own
API (:class:`karpor.api.request.ApiHandler`) with a :class:`Responder`.

Requests on a connection are answered in order, one at a time: when a
request begins while the previous response is still going (pipelining),
reading pauses and the parsed pieces of what was already read wait in a
small queue until that response is done.  A connection that is not
pipelining keeps reading, so a client that goes away is noticed at once and
its upstream connection closed.

An upgrade request (``Connection: Upgrade``) stops the parser: what the
client sends after its head is not HTTP until the request is answered, so
those bytes are held (and reading paused).  A cluster's ``101`` hands them,
and the connection, to a :class:`~karpor.proxy.splice.Splice`
(:class:`~karpor.proxy.splice.UpgradeForwarder`); any other answer (the
cluster's, an error of the gateway's, the own API's) is an ordinary
response, after which a fresh parser reads the held bytes as HTTP again.
"""

from __future__ import annotations

import http
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httptools
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IPushProducer,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.api.request import ApiHandler, ApiRequest
from karpor.api.status import ApiError
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import Identity
from karpor.config.model import Cluster
from karpor.proxy.forward import Forwarder, chunk
from karpor.proxy.h2upstream import multiplexed
from karpor.proxy.h2upstream import request_headers as h2_request_headers
from karpor.proxy.headers import Header, RequestHeaders, lines, request_head, split_request
from karpor.proxy.pool import ClusterPool, UpstreamPools
from karpor.proxy.route import ApiRoute, ClusterRoute, route
from karpor.proxy.splice import Splice, UpgradeForwarder
from karpor.proxy.upstream import no_delay

log = Logger()

#: Largest request body the gateway's own API reads (kube-apiserver's limit).
MAX_API_BODY = 3 * 1024 * 1024
#: After the drain deadline, how long ended streams get to flush before the
#: remaining connections are aborted.
DRAIN_GRACE = 2.0

_PHRASES: dict[int, bytes] = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_JSON: list[Header] = [(b"Content-Type", b"application/json"), (b"Cache-Control", b"no-cache")]
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

# why reading from the client is paused
_PIPELINE = 1
_UPSTREAM = 2
_BODY = 3
_RAW = 4  # bytes after an upgrade request's head wait for its answer
_SPLICE = 5  # the cluster side of a splice is slow

# kinds of queued parser events
_BEGIN = 0
_URL = 1
_HEADER = 2
_HEADERS_DONE = 3
_DATA = 4
_DONE = 5
_BAD = 6

_UNKNOWN: Any = object()


def status_line(code: int) -> bytes:
    """``HTTP/1.1 <code> <phrase>`` with CRLF."""
    return b"HTTP/1.1 %d %b\r\n" % (code, _PHRASES.get(code, b"Unknown"))


@dataclass(frozen=True, slots=True)
class _Head:
    """What the parser knew of a request when its head was complete."""

    method: bytes
    http11: bool
    keep_alive: bool
    upgrade: bool


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


class Responder:
    """How the own API answers one request (:class:`karpor.api.request.Responder`)."""

    def __init__(self, protocol: GatewayProtocol, head: _Head) -> None:
        self._protocol = protocol
        self._head = head
        self._started = False
        self._done = False
        self._lost = False
        self._chunked = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def started(self) -> bool:
        """Whether a response began."""
        return self._started

    def _head_bytes(self, code: int, headers: Sequence[Header]) -> list[bytes]:
        parts = [status_line(code)]
        for name, value in headers:
            if name.lower() not in _FRAMING:
                parts += (name, b": ", value, b"\r\n")
        return parts

    def respond(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        """Send a complete response."""
        if self._started or self._lost:
            return
        self._started = self._done = True
        close = not self._head.keep_alive
        parts = self._head_bytes(code, headers)
        parts.append(b"Content-Length: %d\r\n" % len(body))
        if close:
            parts.append(b"Connection: close\r\n")
        parts += (b"\r\n", b"" if self._head.method == b"HEAD" else body)
        self._protocol.transport.write(b"".join(parts))  # type: ignore[union-attr]
        self._protocol._finish_response(close)

    def start(self, code: int, headers: Sequence[Header]) -> None:
        """Start a streamed response (chunked for HTTP/1.1)."""
        if self._started or self._lost:
            return
        self._started = True
        parts = self._head_bytes(code, headers)
        if self._head.http11:
            self._chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if not self._head.keep_alive or not self._head.http11:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        self._protocol.transport.write(b"".join(parts))  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        """Send a piece of a streamed response."""
        if not self._started or self._done or self._lost or not data:
            return
        self._protocol.transport.write(chunk(data) if self._chunked else data)  # type: ignore[union-attr]

    def finish(self) -> None:
        """End a streamed response."""
        if not self._started or self._done or self._lost:
            return
        self._done = True
        if self._chunked:
            self._protocol.transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]
        self._protocol._finish_response(not self._head.keep_alive or not self._chunked)

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once if the client goes away before :meth:`finish`."""
        if self._lost:
            callback()
        elif not self._done:
            self._callbacks.append(callback)

    def _connection_lost(self) -> None:
        if self._done or self._lost:
            return
        self._lost = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.failure("on_close callback failed")


@implementer(IHalfCloseableProtocol)
class GatewayProtocol(Protocol):
    """One client connection (see the module docstring)."""

    def __init__(self, factory: GatewayFactory) -> None:
        self._factory = factory
        self._parser = httptools.HttpRequestParser(self)
        self._identity: Identity | None = _UNKNOWN
        self._client_address = b""
        self._pauses: set[int] = set()
        self._queue: deque[tuple[int, Any]] | None = None
        self._replaying = False
        self._busy = False
        self._in_message = False
        self._closing = False
        self._failed = False
        self.disconnected = False
        self._head: _Head | None = None
        self._url = b""
        self._headers: list[Header] = []
        self._on_body: Callable[[bytes], None] | None = None
        self._on_end: Callable[[], None] | None = None
        self._forwarder: Forwarder | None = None
        self._splice: Splice | None = None
        self._raw = False
        self._held: list[bytes] = []
        self._responder: Responder | None = None
        self._api_body: list[bytes] = []
        self._api_size = 0
        self._draining = False
        self._answered = 0

    # -- connection ---------------------------------------------------------------

    def connectionMade(self) -> None:
        """Note the caller's address (for ``X-Forwarded-For``); no Nagle
        delays (streams and interactive sessions write small pieces)."""
        no_delay(self.transport)
        peer = self.transport.getPeer()  # type: ignore[union-attr]
        self._client_address = str(getattr(peer, "host", "")).encode()
        self._factory.connection_opened(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Close what the current request (or the splice) holds upstream."""
        self.disconnected = True
        self._factory.connection_closed(self)
        splice, self._splice = self._splice, None
        if splice is not None:
            splice.client_lost()
            return
        self._queue = None
        self._held = []
        forwarder, self._forwarder = self._forwarder, None
        if forwarder is not None:
            forwarder.client_lost()
        responder, self._responder = self._responder, None
        if responder is not None:
            responder._connection_lost()

    def _identify(self) -> Identity | None:
        if self._identity is _UNKNOWN:
            get_peer = getattr(self.transport, "getPeerCertificate", None)
            peer = get_peer() if get_peer is not None else None
            self._identity = self._factory.authenticator.identify(peer)
        return self._identity

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
        elif not self.disconnected:
            self.transport.abortConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        """Our sending side is shut down (a splice passed on a half-close)."""

    def dataReceived(self, data: bytes) -> None:
        """Parse request bytes (or pass them to the splice)."""
        splice = self._splice
        if splice is not None:
            splice.client_data(data)
            return
        if self._failed or self._closing:
            return
        if self._raw:
            self._hold(data)
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgrade_parsed(data[e.args[0] :])
        except httptools.HttpParserError as e:
            self._failed = True
            self._bad_request(e)

    # -- after an upgrade request's head ------------------------------------------

    def _upgrade_parsed(self, rest: bytes) -> None:
        """The parser stopped after an upgrade request's head; ``rest`` is
        what followed it in the same read."""
        self._parser = httptools.HttpRequestParser(self)
        if self._closing:
            return
        self._raw = True
        if rest:
            self._hold(rest)
        if not self._busy and self._queue is None:
            self._end_raw()  # already answered (an error, the own API)

    def _hold(self, data: bytes) -> None:
        self._held.append(data)
        self._pause(_RAW)

    def _end_raw(self) -> None:
        """The upgrade request was answered without switching: what the
        client sent after it is HTTP again."""
        self._raw = False
        held = b"".join(self._held)
        self._held = []
        self._resume(_RAW)
        if held:
            self.dataReceived(held)

    def _bad_request(self, error: Exception) -> None:
        cause = error.__context__ if isinstance(error, httptools.HttpParserCallbackError) else None
        if cause is not None and not isinstance(cause, ApiError):
            log.failure("request handling failed", Failure(cause))
        if self._queue is not None:
            self._enqueue(_BAD, None)  # in pipelined bytes: answer in turn
        elif self._in_message and self._head is not None:
            # the body of a dispatched request is broken: nothing sane can follow
            if self._busy:
                self.transport.abortConnection()  # type: ignore[union-attr]
            else:
                self._close()
        elif self._busy:
            self._enqueue(_BAD, None)
        else:
            self._reject_malformed()

    def _reject_malformed(self) -> None:
        self._head = _Head(b"GET", True, False, False)
        self._busy = True
        self._send_error(ApiError(400, "malformed HTTP request"))

    def _close(self) -> None:
        if not self._closing:
            self._closing = True
            self.transport.loseConnection()  # type: ignore[union-attr]

    # -- parser callbacks (queued while a previous response is going) ----------

    def _enqueue(self, kind: int, arg: Any) -> None:
        if self._queue is None:
            self._queue = deque()
            self._pause(_PIPELINE)
        self._queue.append((kind, arg))

    def on_message_begin(self) -> None:
        """Parser: a request begins."""
        if self._busy or self._queue is not None:
            self._enqueue(_BEGIN, None)
        else:
            self._begin()

    def on_url(self, url: bytes) -> None:
        """Parser: (a piece of) the request target."""
        if self._queue is not None:
            self._enqueue(_URL, url)
        else:
            self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser: one header."""
        if self._queue is not None:
            self._enqueue(_HEADER, (name, value))
        else:
            self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Parser: the request head is complete."""
        p = self._parser
        head = _Head(
            p.get_method(), p.get_http_version() == "1.1", p.should_keep_alive(), p.should_upgrade()
        )
        if self._queue is not None:
            self._enqueue(_HEADERS_DONE, head)
        else:
            self._dispatch(head)

    def on_body(self, data: bytes) -> None:
        """Parser: request body bytes."""
        if self._queue is not None:
            self._enqueue(_DATA, data)
        elif self._on_body is not None:
            self._on_body(data)

    def on_message_complete(self) -> None:
        """Parser: the request is complete."""
        if self._queue is not None:
            self._enqueue(_DONE, None)
        else:
            self._message_done()

    def _replay(self) -> None:
        queue = self._queue
        if queue is None or self._replaying:
            return
        self._replaying = True
        try:
            while queue and not self._closing and not self.disconnected:
                kind, arg = queue[0]
                if kind in (_BEGIN, _BAD) and self._busy:
                    break
                queue.popleft()
                if kind == _BEGIN:
                    self._begin()
                elif kind == _URL:
                    self._url += arg
                elif kind == _HEADER:
                    self._headers.append(arg)
                elif kind == _HEADERS_DONE:
                    self._dispatch(arg)
                elif kind == _DATA:
                    if self._on_body is not None:
                        self._on_body(arg)
                elif kind == _DONE:
                    self._message_done()
                else:
                    self._reject_malformed()
        finally:
            self._replaying = False
        if not queue and self._queue is queue:
            self._queue = None
            self._resume(_PIPELINE)
            if self._failed and not self._busy:
                self._close()
            elif self._raw and not self._busy:
                self._end_raw()

    # -- requests -----------------------------------------------------------------

    def _begin(self) -> None:
        self._in_message = True
        self._head = None
        self._url = b""
        self._headers = []
        self._on_body = None
        self._on_end = None

    def _message_done(self) -> None:
        self._in_message = False
        on_end, self._on_end = self._on_end, None
        self._on_body = None
        if on_end is not None:
            on_end()

    def _dispatch(self, head: _Head) -> None:
        self._head = head
        self._busy = True
        try:
            target = route(self._url)
            if isinstance(target, ClusterRoute):
                self._proxy(target, head)
            else:
                self._api(target, head)
        except ApiError as e:
            self._send_error(e)
        except Exception:
            log.failure("request dispatch failed")
            self._send_error(ApiError(500, "internal error"))

    def _proxy(self, target: ClusterRoute, head: _Head) -> None:
        identity = self._identify()
        if identity is None:
            raise ApiError(401, "Unauthorized")
        cluster = self._factory.clusters().get(target.name)
        if cluster is None:
            raise ApiError(
                404,
                f'clusters.cluster.karpor.io "{target.name}" not found',
                details={"name": target.name, "group": "cluster.karpor.io", "kind": "clusters"},
            )
        pool = self._factory.pools.get(cluster)
        if pool.error is not None:
            raise pool.error
        assert pool.credentials is not None
        request = split_request(self._headers)
        if head.upgrade:
            self._proxy_upgrade(target, head, pool, request)
            return
        request.upgrade = None  # the parser saw no upgrade: none is asked upstream
        has_body = request.chunked or bool(request.content_length)
        upstream_head = self._upstream_head(target, head, pool, request)
        stream = pool.multiplexes and multiplexed(head.method, target.target)
        forwarder = Forwarder(
            self,
            head.method,
            upstream_head,
            body=has_body,
            chunked=request.chunked,
            http11=head.http11,
            keep_alive=head.keep_alive,
            h2_headers=(
                h2_request_headers(
                    head.method,
                    pool.credentials.endpoint.prefix + target.target,
                    request,
                    pool.credentials.h2_headers(),
                    self._client_address,
                )
                if stream
                else None
            ),
        )
        self._forwarder = forwarder
        if has_body:
            self._on_body = forwarder.body
            self._on_end = forwarder.body_end
        if stream:
            pool.submit_stream(forwarder)
        else:
            pool.submit(forwarder)

    def _upstream_head(
        self, target: ClusterRoute, head: _Head, pool: ClusterPool, request: RequestHeaders
    ) -> bytes:
        """The request head for the cluster: the same for plain and upgrade
        requests (the cluster's credential in, the caller's out)."""
        assert pool.credentials is not None
        return request_head(
            head.method,
            pool.credentials.endpoint.prefix + target.target,
            request,
            pool.credentials.block(),
            self._client_address,
        )

    def _proxy_upgrade(
        self, target: ClusterRoute, head: _Head, pool: ClusterPool, request: RequestHeaders
    ) -> None:
        """Send an upgrade request over a dedicated connection."""
        if request.upgrade is None:
            self._failed = True
            raise ApiError(400, "invalid Upgrade header")
        if request.chunked or request.content_length:
            # the body would be read as tunnel bytes: nothing sane can follow
            self._failed = True
            raise ApiError(400, "an upgrade request cannot carry a body")
        forwarder = UpgradeForwarder(
            self,
            head.method,
            self._upstream_head(target, head, pool, request),
            http11=head.http11,
            keep_alive=head.keep_alive,
            clock=pool.reactor,
        )
        self._forwarder = forwarder
        pool.connect_dedicated(forwarder)

    def _api(self, target: ApiRoute, head: _Head) -> None:
        identity = self._identify()
        if identity is None and not target.public:
            raise ApiError(401, "Unauthorized")
        self._api_body = []
        self._api_size = 0
        self._on_body = self._api_data
        self._on_end = lambda: self._api_call(target, head, identity)
        if head.http11 and any(
            n.lower() == b"expect" and v.lower() == b"100-continue" for n, v in self._headers
        ):
            self.transport.write(_CONTINUE)  # type: ignore[union-attr]

    def _api_data(self, data: bytes) -> None:
        self._api_size += len(data)
        if self._api_size > self._factory.max_api_body:
            self._on_body = None
            self._on_end = None
            self._api_body = []
            self._send_error(ApiError(413, "the request body is too large"))
            return
        self._api_body.append(data)

    def _api_call(self, target: ApiRoute, head: _Head, identity: Identity | None) -> None:
        body = b"".join(self._api_body)
        self._api_body = []
        request = ApiRequest(
            method=head.method.decode("ascii"),
            path=target.path,
            query=target.query,
            headers={n.decode("latin-1").lower(): v.decode("latin-1") for n, v in self._headers},
            identity=identity,
            body=body,
        )
        responder = Responder(self, head)
        self._responder = responder
        try:
            self._factory.api.handle(request, responder)
        except ApiError as e:
            if not responder.started:
                self._responder = None
                self._send_error(e)
            else:
                self.transport.abortConnection()  # type: ignore[union-attr]
        except Exception:
            log.failure(
                "the API handler failed on {method} {path}",
                method=request.method,
                path=request.path,
            )
            if not responder.started:
                self._responder = None
                self._send_error(ApiError(500, "internal error"))
            else:
                self.transport.abortConnection()  # type: ignore[union-attr]

    def _send_error(self, error: ApiError) -> None:
        head = self._head
        close = head is None or not head.keep_alive or self._failed
        body = error.body()
        parts = [status_line(error.code), *lines(_JSON), b"Content-Length: %d\r\n" % len(body)]
        if close:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if head is None or head.method != b"HEAD":
            parts.append(body)
        self.transport.write(b"".join(parts))  # type: ignore[union-attr]
        self._finish_response(close)

    def _finish_response(self, close: bool) -> None:
        """The response to the current request is complete."""
        self._busy = False
        self._forwarder = None
        self._responder = None
        self._answered += 1
        if close or self._draining or (self._failed and self._queue is None):
            self._close()
            return
        if self._raw and self._queue is None:
            self._end_raw()  # the upgrade request, answered without switching
            return
        self._replay()

    # -- draining (the worker is stopping) ------------------------------------------

    def drain(self) -> None:
        """Close now if idle between requests, else right after the current
        response.  A connection that has not sent its first request yet gets it
        answered first (it was accepted to be served: closing it now would fail
        a request no client retries), or waits for the drain deadline."""
        self._draining = True
        idle = not self._busy and self._queue is None and self._splice is None and not self._raw
        if idle and self._answered:
            self._close()

    def end_streams(self) -> None:
        """The drain deadline: end what is still going, cleanly where the
        framing allows (a chunked stream gets its last chunk, so a watching
        client sees the stream end and watches again elsewhere)."""
        self._draining = True
        splice, self._splice = self._splice, None
        if splice is not None:
            splice.client_lost()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        forwarder = self._forwarder
        if forwarder is not None:
            forwarder.end_stream()
        responder = self._responder
        if responder is not None:
            responder.finish()
        self._close()

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

    def response_finished(self, close: bool) -> None:
        """The forwarded response is complete."""
        self._finish_response(close)

    def abort(self) -> None:
        """Drop the client connection."""
        self._forwarder = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    # -- TunnelChannel (for an upgrade) ----------------------------------------------

    def spliced(self, splice: Splice) -> bytes:
        """The request switched protocols: from now on the connection
        belongs to ``splice``; returns the bytes held since the request head."""
        self._splice = splice
        self._forwarder = None
        self._raw = False
        self._queue = None
        held = b"".join(self._held)
        self._held = []
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
    wrap this factory in TLS (``karpor.tls.server_options``) to serve it.
    """

    noisy = False

    def __init__(
        self,
        clusters: Callable[[], Mapping[str, Cluster]],
        api: ApiHandler,
        authenticator: CertificateAuthenticator,
        pools: UpstreamPools,
        reactor: IReactorTime | None = None,
        max_api_body: int = MAX_API_BODY,
    ) -> None:
        self.clusters = clusters
        self.api = api
        self.authenticator = authenticator
        self.pools = pools
        self.reactor = reactor
        self.max_api_body = max_api_body
        self.protocols: set[GatewayProtocol] = set()
        self.draining = False
        self._drained: Deferred[None] | None = None
        self._timers: list[IDelayedCall] = []

    def buildProtocol(self, addr: Any) -> GatewayProtocol:
        """A protocol for one client connection."""
        return GatewayProtocol(self)

    def connection_opened(self, protocol: GatewayProtocol) -> None:
        """Track an open client connection (drained on stop)."""
        self.protocols.add(protocol)
        if self.draining:
            protocol.drain()

    def connection_closed(self, protocol: GatewayProtocol) -> None:
        """Forget a closed client connection."""
        self.protocols.discard(protocol)
        self._check_drained()

    def drain(self, deadline: float) -> Deferred[None]:
        """Close idle connections now and the others after their current
        response; at ``deadline`` seconds end long-running streams (watch,
        ``logs -f``, exec) cleanly; fire once every connection is closed.

        Call it after the listener stopped accepting.
        """
        if self._drained is None:
            self.draining = True
            self._drained = Deferred()
            clock: Any = self.reactor
            if clock is None:
                from twisted.internet import reactor as clock  # noqa: PLC0415
            self._timers = [
                clock.callLater(deadline, self._deadline),
                clock.callLater(deadline + DRAIN_GRACE, self._abort_all),
            ]
            for protocol in list(self.protocols):
                protocol.drain()
            self._check_drained()
        return self._drained

    def _deadline(self) -> None:
        for protocol in list(self.protocols):
            protocol.end_streams()

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
