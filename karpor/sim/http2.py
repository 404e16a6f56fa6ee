"""HTTP/2 for the simulator, as kube-apiserver serves it (ALPN ``h2``).

Twisted's own HTTP/2 server (``twisted.web._http2``) needs the ``priority``
package, which the project does not install; this module is a lean
replacement on the sans-IO ``h2`` library that feeds the same
``twisted.web`` :class:`~twisted.web.server.Request` objects the HTTP/1.1
channel does, so :class:`~karpor.sim.server.ApiServer` answers both alike.

- :class:`NegotiatingChannel` is what the simulator's ``Site`` builds per
  connection: once TLS has negotiated (at the first bytes) it becomes an
  :class:`H2ServerConnection` for ``h2`` or Twisted's HTTP/1.1 channel for
  anything else.  Upgrades (exec, attach, port-forward) need HTTP/1.1:
  kubectl's upgrade clients force ALPN ``http/1.1``.
- :class:`H2ServerConnection` announces ``SETTINGS_MAX_CONCURRENT_STREAMS``
  250 (kube-apiserver's default) and ``SETTINGS_MAX_HEADER_LIST_SIZE`` as
  Go derives it from its 1 MiB ``MaxHeaderBytes`` (and enforces it); each request stream becomes a
  :class:`H2RequestChannel`, the ``Request``'s channel.  Response bytes go
  out as DATA frames at once (watch events are not held back) within the
  client's flow-control windows; what does not fit waits on that stream
  until a ``WINDOW_UPDATE`` (and pauses a registered producer).  A stream the
  client resets ends its ``Request`` (``notifyFinish`` errs back, so a watch
  stops), and so does a lost connection.
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IAddress, IPushProducer
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Site

from karpor.net.h2window import send_within_window
from karpor.sim.headlimit import MAX_HEADER_BYTES

#: Streams one client connection may have open (kube-apiserver: 250).
MAX_CONCURRENT_STREAMS = 250
#: ``SETTINGS_MAX_HEADER_LIST_SIZE``, as Go's HTTP/2 server derives it from
#: ``MaxHeaderBytes`` (1 MiB, plus 32 bytes for each of 10 typical headers);
#: a longer header list is a connection error
MAX_HEADER_LIST_SIZE = MAX_HEADER_BYTES + 10 * 32

log = Logger()


class H2RequestChannel:
    """One HTTP/2 stream as the channel of a ``twisted.web`` request."""

    #: a stream has no transport of its own (twisted.web's convention)
    transport = None

    def __init__(
        self, connection: H2ServerConnection, stream_id: int, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.connection = connection
        self.stream_id = stream_id
        self.site = connection.site
        self.factory = connection.site
        self.producer: IPushProducer | None = None
        self._queued = b""
        self._end_queued = False
        self._done = False
        self.command = b"GET"
        self.path = b"/"
        self.request: Any = connection.site.requestFactory(self, queued=False)
        length: int | None = None
        request_headers = self.request.requestHeaders
        for name, value in headers:
            if name == b":method":
                self.command = value
            elif name == b":path":
                self.path = value
            elif name == b":authority":
                request_headers.addRawHeader(b"host", value)
            elif not name.startswith(b":"):
                if name == b"content-length" and value.isdigit():
                    length = int(value)
                request_headers.addRawHeader(name, value)
        if length is None and self.command in (b"GET", b"HEAD"):
            length = 0
        self.request.gotLength(length)
        self.request.parseCookies()

    @property
    def peer_transport(self) -> Any:
        """The connection's TLS transport (for the client certificate)."""
        return self.connection.transport

    # -- from the connection ---------------------------------------------------

    def body(self, data: bytes) -> None:
        """Request body bytes."""
        self.request.handleContentChunk(data)

    def complete(self) -> None:
        """The request is complete: render it."""
        self.request.requestReceived(self.command, self.path, b"HTTP/2")

    def lost(self, reason: Failure) -> None:
        """The stream was reset or the connection lost."""
        self._done = True
        self._queued = b""
        if not self.request.finished:
            self.request.connectionLost(reason)

    def window_opened(self) -> None:
        """The client granted window: send what waits."""
        if self._queued or self._end_queued:
            self._flush()

    # -- the channel interface twisted.web's Request uses -----------------------

    def getPeer(self) -> IAddress:
        """The client's address."""
        return self.connection.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:
        """Our address."""
        return self.connection.transport.getHost()  # type: ignore[union-attr]

    def isSecure(self) -> bool:
        """Always served inside TLS."""
        return True

    def writeHeaders(self, version: bytes, code: bytes, reason: bytes, headers: Any) -> None:
        """Send the response HEADERS frame."""
        if self._done:
            return
        block = [(b":status", code)]
        for name, values in headers.getAllRawHeaders():
            lname = name.lower()
            if lname in (b"connection", b"transfer-encoding", b"keep-alive"):
                continue
            block += [(lname, v) for v in values]
        self.connection.send_headers(self.stream_id, block)

    def write(self, data: bytes) -> None:
        """Send response body bytes now, as far as the windows allow."""
        if self._done or not data:
            return
        self._queued += data
        self._flush()

    def writeSequence(self, data: list[bytes]) -> None:
        """Send several pieces."""
        self.write(b"".join(data))

    def requestDone(self, request: Any) -> None:
        """The response is complete: end the stream (after what waits)."""
        if self._done:
            return
        self._end_queued = True
        self._flush()

    def _flush(self) -> None:
        if self._queued:
            sent = self.connection.send_data(self.stream_id, self._queued)
            self._queued = self._queued[sent:]
        if self._queued:
            if self.producer is not None:
                self.producer.pauseProducing()
            return
        if self.producer is not None:
            self.producer.resumeProducing()
        if self._end_queued:
            self._end_queued = False
            self._done = True
            self.connection.end_stream(self.stream_id)

    def loseConnection(self) -> None:
        """End the response (an HTTP/2 stream has no connection to lose)."""
        self.requestDone(self.request)

    def abortConnection(self) -> None:
        """Reset the stream."""
        if not self._done:
            self._done = True
            self.connection.reset_stream(self.stream_id)

    def _respondToBadRequestAndDisconnect(self) -> None:
        """A malformed request: 400 and end the stream."""
        if not self._done:
            self._done = True
            self.connection.send_headers(self.stream_id, [(b":status", b"400")], end=True)

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """Pause ``producer`` while the stream's window is exhausted."""
        self.producer = producer

    def unregisterProducer(self) -> None:
        """Undo :meth:`registerProducer`."""
        self.producer = None


class H2ServerConnection(Protocol):
    """An HTTP/2 server connection feeding a ``twisted.web`` site."""

    def __init__(self, site: Site, max_streams: int = MAX_CONCURRENT_STREAMS) -> None:
        self.site = site
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.h2.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
            },
        )
        # what the settings announce is what the HPACK decoder enforces
        # (h2 would otherwise keep its 64 KiB default)
        self.h2.decoder.max_header_list_size = MAX_HEADER_LIST_SIZE
        self.streams: dict[int, H2RequestChannel] = {}
        self.closed = False

    def connectionMade(self) -> None:
        """Send our preface and SETTINGS."""
        self.h2.initiate_connection()
        self._flush()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed and self.transport is not None:
            self.transport.write(data)

    def dataReceived(self, data: bytes) -> None:
        """Feed ``h2`` and dispatch its events."""
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError:
            self._flush()
            self.transport.loseConnection()  # type: ignore[union-attr]
            return
        for event in events:
            if isinstance(event, h2.events.RequestReceived):
                sid = event.stream_id
                # (a request without body: h2 reports StreamEnded next)
                self.streams[sid] = H2RequestChannel(self, sid, list(event.headers or []))
            elif isinstance(event, h2.events.DataReceived):
                stream_or_none = self.streams.get(event.stream_id)
                if stream_or_none is not None and event.data:
                    stream_or_none.body(event.data)
                if event.flow_controlled_length:
                    self.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                stream_or_none = self.streams.get(event.stream_id)
                if stream_or_none is not None:
                    stream_or_none.complete()
            elif isinstance(event, h2.events.StreamReset):
                stream_or_none = self.streams.pop(event.stream_id, None)
                if stream_or_none is not None:
                    reason = f"stream reset ({event.error_code!s})"
                    stream_or_none.lost(Failure(ConnectionLost(reason)))
            elif isinstance(event, h2.events.WindowUpdated):
                if event.stream_id:
                    stream_or_none = self.streams.get(event.stream_id)
                    if stream_or_none is not None:
                        stream_or_none.window_opened()
                else:
                    for stream in list(self.streams.values()):
                        stream.window_opened()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self._flush()
                self.transport.loseConnection()  # type: ignore[union-attr]
        self._flush()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """End every request still open."""
        self.closed = True
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.lost(reason)

    # -- for the streams ---------------------------------------------------------

    def send_headers(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], end: bool = False
    ) -> None:
        """Send a response head."""
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end)
        except h2.exceptions.ProtocolError:
            return
        if end:
            self.streams.pop(stream_id, None)
        self._flush()

    def send_data(self, stream_id: int, data: bytes) -> int:
        """Send what the windows allow of ``data``; how much went."""
        sent = send_within_window(self.h2, stream_id, data)
        self._flush()
        return sent

    def end_stream(self, stream_id: int) -> None:
        """End a response."""
        self.streams.pop(stream_id, None)
        try:
            self.h2.end_stream(stream_id)
        except h2.exceptions.ProtocolError:
            return
        self._flush()

    def reset_stream(self, stream_id: int) -> None:
        """Abort a response."""
        self.streams.pop(stream_id, None)
        try:
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        except h2.exceptions.ProtocolError:
            return
        self._flush()


class NegotiatingChannel(Protocol):
    """HTTP/2 or HTTP/1.1 per connection, as TLS's ALPN decided.

    Like Twisted's own ``_GenericHTTPChannelProtocol``, it starts as the
    site's HTTP/1.1 channel (so its idle timeout runs from the start) and
    swaps in an :class:`H2ServerConnection` at the first bytes when ALPN
    said ``h2`` (the handshake is over by then).
    """

    def __init__(self, site: Site, addr: IAddress | None) -> None:
        self._site = site
        self._addr = addr
        self._inner: Protocol | None = None
        self._checked = False

    def connectionMade(self) -> None:
        """Start as HTTP/1.1."""
        inner = Site.buildProtocol(self._site, self._addr)
        assert inner is not None
        self._inner = inner
        inner.makeConnection(self.transport)

    def dataReceived(self, data: bytes) -> None:
        """Switch to HTTP/2 on the first bytes if ALPN chose it; pass on."""
        inner = self._inner
        assert inner is not None
        if not self._checked:
            self._checked = True
            if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
                # undo what the HTTP/1.1 channel set up (as Twisted's switch does)
                channel = getattr(inner, "_channel", inner)
                set_timeout = getattr(channel, "setTimeout", None)
                if set_timeout is not None:
                    set_timeout(None)
                self.transport.unregisterProducer()  # type: ignore[union-attr]
                inner = H2ServerConnection(self._site)
                self._inner = inner
                inner.makeConnection(self.transport)
        inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Pass the loss on."""
        if self._inner is not None:
            self._inner.connectionLost(reason)
