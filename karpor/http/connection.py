"""The front connection, sans-IO: HTTP/1.1 request bytes in, request events
out, in the style of h11 (no socket, no clock, no timer).

:meth:`FrontConnection.receive_data` parses what a client sent (llhttp,
``httptools.HttpRequestParser``, each byte parsed once) into events, which
the caller takes in order (:meth:`FrontConnection.take_events`):

* a :class:`RequestHead` (method, target, headers, version, keep-alive,
  upgrade) once a request head is complete;
* :class:`bytes`, a piece of the request body;
* :data:`END`, the request is complete;
* a :class:`ProtocolError` carrying the ``Status`` to answer (400 for a
  broken head or chunked body, 414 or 431 past ``maxHeaderBytes``, 501
  for a transfer coding other than ``chunked``, 400 or 505 for an HTTP
  version other than 1.0 and 1.1): nothing is parsed after it.

Requests are answered one at a time, in order: from a request head until
the caller says its response ended (:meth:`FrontConnection.end_response`)
the connection is :data:`PAUSED`, and what a client pipelined meanwhile is
parsed but held (:attr:`FrontConnection.holding`: the caller stops reading)
and released when the response ends.  After the head of an upgrade request
the bytes that follow are not HTTP until it is answered: they are held
(:data:`UPGRADE`); :meth:`FrontConnection.switched` hands them over when
the request switched protocols (:data:`SWITCHED`), any other answer reads
them as HTTP again.

The gateway's own answers are written by the connection too: a complete
response (:meth:`FrontConnection.respond`) or a streamed one
(:meth:`~FrontConnection.start_response`, :meth:`~FrontConnection.send_body`,
:meth:`~FrontConnection.finish_body`: chunked over HTTP/1.1, else delimited
by the close), each deciding keep-alive: ``Connection: close`` when the
request did not keep alive, the caller asks, or the connection drains
(:attr:`FrontConnection.draining`) and no further request was received
(:meth:`FrontConnection.last_response`).  A relayed response (a
cluster's) is framed here too: :meth:`~FrontConnection.relay_head` keeps
the cluster's headers and reason phrase (its ``Content-Length`` frames the
body; a body of unknown length is chunked, or delimited by the close for an
HTTP/1.0 client), then :meth:`~FrontConnection.send_body` and
:meth:`~FrontConnection.finish_body` as for a streamed answer;
:meth:`~FrontConnection.interim_head` and
:meth:`~FrontConnection.switch_head` write a ``1xx`` and a ``101``.

The connection's timeout phase (:mod:`karpor.http.bounds`) is kept in
:attr:`FrontConnection.phase` with the caller's clock at its start in
:attr:`FrontConnection.since` (the caller passes ``now``); a request head
is read up to ``max_header_bytes``.
"""

from __future__ import annotations

import http
from collections import deque
from collections.abc import Sequence
from typing import Final

import httptools

from karpor.http.bounds import (
    BUSY,
    CLOSING,
    HANDSHAKE,
    HEAD,
    IDLE,
    head_too_large,
    http_version_refused,
    parser_error,
    unsupported_transfer_encoding,
)
from karpor.http.headers import Header, lines
from karpor.kube.status import ApiError

_PHRASES: dict[int, bytes] = {s.value: s.phrase.encode() for s in http.HTTPStatus}
#: the framing headers a response's writer sets (dropped from the headers given)
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})

#: what stops the parser: an upgrade request's head, or an error
_STOPS = (httptools.HttpParserUpgrade, httptools.HttpParserError)
#: the head budget while a request body is read (no head is being read)
_NO_HEAD = 1 << 62

# the states of a connection (:attr:`FrontConnection.state`)
#: waiting for a request
IDLE_STATE: Final = "idle"
#: a request head is being read
READING_HEAD: Final = "reading head"
#: a request body is being read
READING_BODY: Final = "reading body"
#: a request was read; until its response ends, what follows is held
PAUSED: Final = "paused until the response ends"
#: an upgrade request was read; the bytes after it are held
UPGRADE: Final = "upgrade pending"
#: the connection switched protocols: its bytes are no longer HTTP
SWITCHED: Final = "switched"
#: no further request is taken once the response in progress ended
DRAINING: Final = "draining"
#: the connection closes (nothing more is read)
CLOSING_STATE: Final = "closing"
#: a request could not be parsed: answered in turn, then the connection closes
ERROR: Final = "error"


def reason_phrase(code: int) -> bytes:
    """The standard reason phrase of ``code`` (``Unknown`` for a code without one)."""
    return _PHRASES.get(code, b"Unknown")


def status_line(code: int) -> bytes:
    """``HTTP/1.1 <code> <phrase>`` with CRLF."""
    return b"HTTP/1.1 %d %b\r\n" % (code, _PHRASES.get(code, b"Unknown"))


class RequestHead:
    """A complete request head."""

    __slots__ = ("headers", "http11", "in_mark", "keep_alive", "method", "target", "upgrade")

    def __init__(
        self,
        method: bytes,
        target: bytes,
        headers: list[Header],
        http11: bool,
        keep_alive: bool,
        upgrade: bool,
        in_mark: int = 0,
    ) -> None:
        self.method = method
        #: the request target as sent
        self.target = target
        self.headers = headers
        #: HTTP/1.1 (else 1.0)
        self.http11 = http11
        #: the client keeps the connection open after the response
        self.keep_alive = keep_alive
        #: an upgrade request (``Connection: Upgrade``)
        self.upgrade = upgrade
        #: :attr:`FrontConnection.received` before the read the request began in
        self.in_mark = in_mark

    def __repr__(self) -> str:
        return f"RequestHead({self.method!r}, {self.target!r})"


class _End:
    """The type of :data:`END`."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


#: the request is complete
END: Final = _End()


class ProtocolError:
    """A request the connection cannot read on from, and its answer."""

    __slots__ = ("error", "in_body", "target")

    def __init__(self, error: ApiError, target: bytes, in_body: bool) -> None:
        #: the ``Status`` to answer
        self.error = error
        #: what of the request target had arrived
        self.target = target
        #: the body of a request whose head was delivered is broken (else a
        #: request head is, and the error takes the turn of a request)
        self.in_body = in_body

    def __repr__(self) -> str:
        return f"ProtocolError({self.error.code}, in_body={self.in_body})"


Event = RequestHead | bytes | _End | ProtocolError


class FrontConnection:
    """One client connection's HTTP/1.1, sans-IO (see the module docstring)."""

    def __init__(self, max_header_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        #: the timeout phase (:mod:`karpor.http.bounds`) and the
        #: caller's clock when it began
        self.phase = HANDSHAKE
        self.since = 0.0
        #: bytes received so far
        self.received = 0
        #: the events parsed and not yet taken, in order
        self.events: list[Event] = []
        #: a request was delivered and its response has not ended
        self.busy = False
        #: a request is being parsed (begun, not complete)
        self.in_message = False
        #: bytes are held (pipelined requests, or the bytes after an upgrade
        #: request's head): the caller should stop reading
        self.holding = False
        #: nothing more is parsed (a protocol error, or the caller's word)
        self.failed = False
        #: a request head was refused (a 431, 414, 400, 501 or 505 answers
        #: it): the close after its answer lingers
        #: (:class:`~karpor.http.bounds.Linger`), the client may still be sending
        self.refused_head = False
        self.closing = False
        #: the worker drains: the last response says ``Connection: close``
        self.draining = False
        #: responses ended so far
        self.answered = 0
        self._switched = False
        self._now = 0.0
        self._read_start = 0
        #: bytes the current request head may still take (:data:`_NO_HEAD` while none is read)
        self._head_left = max_header_bytes
        self._parser = httptools.HttpRequestParser(self)
        # the message being parsed
        self._url = b""
        self._headers: list[Header] = []
        self._mark = 0
        self._delivered = False  # its head went to the events
        self._queued_head: RequestHead | None = None  # its head, held
        # events held until the response in progress ends
        self._queue: deque[Event] | None = None
        # bytes held after an upgrade request's head
        self._raw = False
        self._held: list[bytes] = []
        # the streamed response in progress
        self._chunked = False
        self._response_closes = False

    # -- state ------------------------------------------------------------------

    @property
    def state(self) -> str:
        """What the connection is doing (one of the state constants)."""
        if self._switched:
            return SWITCHED
        if self.closing:
            return CLOSING_STATE
        if self.failed:
            return ERROR
        if self._raw:
            return UPGRADE
        if self.in_message and self._delivered:
            return READING_BODY
        if self.busy or self._queue is not None:
            return PAUSED
        if self.in_message:
            return READING_HEAD
        return DRAINING if self.draining else IDLE_STATE

    @property
    def idle(self) -> bool:
        """No request in progress, none held."""
        return not (self.busy or self.in_message or self.holding)

    def last_response(self) -> bool:
        """Whether the response being started is the connection's last: it
        drains and no further request was received (pipelined requests
        already received are answered first, the last one closing)."""
        return self.draining and self._queue is None

    def handshake_completed(self, now: float) -> None:
        """TLS is up (or there is none): the first request head is read from now on."""
        if self.phase == HANDSHAKE:
            self.phase = HEAD
            self.since = now

    def close(self, now: float) -> bool:
        """The connection closes (nothing more is read); ``False`` if it already was."""
        if self.closing:
            return False
        self.closing = True
        self.phase = CLOSING
        self.since = now
        return True

    # -- bytes in -----------------------------------------------------------------

    def receive_data(self, data: bytes, now: float) -> None:
        """Parse ``data`` from the client (``now``: the caller's clock)."""
        self._read_start = self.received
        self.received += len(data)
        if self.failed or self.closing or self._switched:
            return
        self._now = now
        if self._raw:
            self._hold(data)
            return
        left = self._head_left - len(data)
        if left < 0:
            self._feed_bounded(data)
            return
        self._head_left = left
        try:
            self._parser.feed_data(data)
        except _STOPS as e:
            self._parse_error(data, e)

    def take_events(self) -> list[Event]:
        """The events parsed and released since the last call, in order."""
        events = self.events
        self.events = []
        return events

    def _feed(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except _STOPS as e:
            self._parse_error(data, e)

    def _parse_error(self, data: bytes, e: Exception) -> None:
        """The parser stopped on ``data``: an upgrade, or an error."""
        if isinstance(e, httptools.HttpParserUpgrade):
            self._upgrade_parsed(data[e.args[0] :])
        else:
            cause = e.__context__ if isinstance(e, httptools.HttpParserCallbackError) else None
            if isinstance(cause, ApiError):
                refusal = cause  # a head the callbacks refused (transfer coding, version)
            else:
                refusal = parser_error(str(e.args[0]) if e.args and cause is None else "")
            self._refuse(refusal)

    def _feed_bounded(self, data: bytes) -> None:
        """Feed ``data``, which may take the request head past its budget:
        what fits first; if the head is still not complete, the request is
        refused (431 or 414) and the parser, with what it held, dropped."""
        while data:
            fit = self._head_left
            if len(data) <= fit:
                self._head_left = fit - len(data)
                self._feed(data)
                return
            self._head_left = 0
            self._feed(data[:fit])
            data = data[fit:]
            if self.failed:
                return
            if self._raw:
                self._hold(data)
                return
            if self._head_left == 0:  # neither the head nor its message ended
                self._parser = httptools.HttpRequestParser(self)  # what it held goes
                self._refuse(head_too_large(len(self._url), self.max_header_bytes))
                return

    def _refuse(self, refusal: ApiError) -> None:
        """A request cannot be read on from: its error is an event, in turn."""
        self.failed = True
        in_body = self.in_message and self._delivered
        self.refused_head = not in_body
        error = ProtocolError(refusal, self._url, in_body)
        if self._queue is not None:
            self._queue.append(error)
        elif in_body:
            self.events.append(error)
        elif self.busy:
            self._enqueue(error)
        else:
            self.busy = True
            self.events.append(error)

    def _enqueue(self, event: Event) -> None:
        if self._queue is None:
            self._queue = deque()
            self.holding = True
        self._queue.append(event)

    # -- parser callbacks ---------------------------------------------------------

    def on_message_begin(self) -> None:
        """Parser: a request begins."""
        self.in_message = True
        self._delivered = False
        self._queued_head = None
        self._url = b""
        self._headers = []
        self._mark = self._read_start
        if self.phase == IDLE and not self.busy:
            self.phase = HEAD  # the first byte of a request head
            self.since = self._now

    def on_url(self, url: bytes) -> None:
        """Parser: (a piece of) the request target."""
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        """Parser: one header (a transfer coding but ``chunked`` is refused: 501)."""
        if len(name) == 17 and name.lower() == b"transfer-encoding":
            unsupported = unsupported_transfer_encoding(value)
            if unsupported is not None:
                raise unsupported
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        """Parser: the request head is complete (HTTP/1.0 or 1.1 only: any
        other version is refused, not read as HTTP/1.1)."""
        self._head_left = _NO_HEAD
        p = self._parser
        version = p.get_http_version()
        if version not in ("1.1", "1.0"):
            refused = http_version_refused(version)
            if refused is not None:
                raise refused
        head = RequestHead(
            p.get_method(),
            self._url,
            self._headers,
            version == "1.1",
            p.should_keep_alive(),
            p.should_upgrade(),
            self._mark,
        )
        if self.busy or self._queue is not None:
            self._queued_head = head
            self._enqueue(head)
        else:
            self._delivered = True
            self.busy = True
            self.phase = BUSY
            self.since = self._now
            self.events.append(head)

    def on_body(self, data: bytes) -> None:
        """Parser: request body bytes."""
        if self._queue is not None:
            self._queue.append(data)
        else:
            self.events.append(data)

    def on_message_complete(self) -> None:
        """Parser: the request is complete."""
        self._head_left = self.max_header_bytes
        self.in_message = False
        if self._queue is not None:
            self._queue.append(END)
        else:
            self.events.append(END)

    # -- after an upgrade request's head ------------------------------------------

    def _upgrade_parsed(self, rest: bytes) -> None:
        """The parser stopped after an upgrade request's head; ``rest`` is
        what followed it in the same read."""
        self._parser = httptools.HttpRequestParser(self)
        self._head_left = self.max_header_bytes
        self._raw = True
        self.holding = True
        if rest:
            self._held.append(rest)

    def _hold(self, data: bytes) -> None:
        self._held.append(data)

    def _end_raw(self) -> None:
        """The upgrade request was answered without switching: what the
        client sent after it is HTTP again."""
        self._raw = False
        self.holding = False
        held = b"".join(self._held)
        self._held = []
        if held:
            left = self._head_left - len(held)
            if left < 0:
                self._feed_bounded(held)
            else:
                self._head_left = left
                self._feed(held)

    def switched(self) -> bytes:
        """The request switched protocols: the connection's bytes are no
        longer HTTP; returns those held since the request head."""
        self._switched = True
        self._raw = False
        self._queue = None
        self.holding = False
        held = b"".join(self._held)
        self._held = []
        return held

    # -- responses ------------------------------------------------------------------

    def end_response(self, close: bool, now: float) -> bool:
        """The response to the current request ended (``close``: it said
        ``Connection: close``); whether the connection must close now.
        Otherwise what was held is released to the events: the next
        pipelined request, or the bytes after an upgrade request answered
        without switching, parsed as HTTP again."""
        self.busy = False
        self.answered += 1
        self.phase = IDLE
        self.since = now
        self._now = now
        if close or (self.failed and self._queue is None):
            return True
        if self._queue is not None:
            self._release()
        elif self._raw:
            self._end_raw()
        return False

    def _release(self) -> None:
        queue = self._queue
        assert queue is not None
        events = self.events
        while queue:
            event = queue[0]
            if type(event) is RequestHead:
                if self.busy:
                    return
                self.busy = True
                self.phase = BUSY
                if event is self._queued_head:
                    self._queued_head = None
                    self._delivered = self.in_message  # its body still comes
            elif type(event) is ProtocolError:
                if self.busy:
                    return
                self.busy = True
            events.append(queue.popleft())
        self._queue = None
        self.holding = self._raw

    # -- bytes out (the gateway's own answers) ---------------------------------------

    def _head_parts(self, code: int, headers: Sequence[Header]) -> list[bytes]:
        parts = [status_line(code)]
        for name, value in headers:
            if name.lower() not in _FRAMING:
                parts += (name, b": ", value, b"\r\n")
        return parts

    def respond(
        self,
        head: RequestHead | None,
        code: int,
        headers: Sequence[Header],
        body: bytes,
        close: bool = False,
    ) -> tuple[bytes, bool]:
        """A complete response to ``head`` (``None``: a request never read
        whole) as bytes (no body for ``HEAD``), and whether the connection
        closes after it: ``close`` asked, the request did not keep alive, or
        this is the last response of a draining connection."""
        close = close or head is None or not head.keep_alive or self.last_response()
        parts = self._head_parts(code, headers)
        parts.append(b"Content-Length: %d\r\n" % len(body))
        if close:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        if head is None or head.method != b"HEAD":
            parts.append(body)
        return b"".join(parts), close

    def start_response(self, head: RequestHead, code: int, headers: Sequence[Header]) -> bytes:
        """The head of a streamed response to ``head``: chunked over
        HTTP/1.1 (else delimited by the close); ``Connection: close`` as
        :meth:`respond` decides, and for HTTP/1.0."""
        chunked = self._chunked = head.http11
        parts = self._head_parts(code, headers)
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        close = self._response_closes = self.last_response() or not head.keep_alive or not chunked
        if close:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts)

    def relay_head(
        self,
        head: RequestHead,
        code: int,
        reason: bytes,
        headers: Sequence[Header],
        content_length: int | None,
    ) -> tuple[bytes, bool]:
        """The head of a cluster's response to ``head``, relayed (see the
        module docstring), and whether a body follows it (not for ``HEAD``,
        ``204`` or ``304``).  ``headers`` are the cluster's, hop-by-hop
        ones removed (:func:`karpor.http.headers.split_response`)."""
        parts = [b"HTTP/1.1 %d %b\r\n" % (code, reason), *lines(headers)]
        body = head.method != b"HEAD" and code not in (204, 304)
        unsized = body and content_length is None
        chunked = self._chunked = unsized and head.http11
        if chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        close = self._response_closes = (
            not head.keep_alive or (unsized and not chunked) or self.last_response()
        )
        if close:
            parts.append(b"Connection: close\r\n")
        parts.append(b"\r\n")
        return b"".join(parts), body

    @property
    def chunked(self) -> bool:
        """Whether the streamed response in progress is chunked (so that it
        can be ended cleanly at any point)."""
        return self._chunked

    def interim_head(
        self, head: RequestHead, code: int, reason: bytes, headers: Sequence[Header]
    ) -> bytes:
        """A cluster's ``1xx`` (``100 Continue``) for ``head``: nothing for
        an HTTP/1.0 client, which does not expect one."""
        if not head.http11:
            return b""
        return b"".join([b"HTTP/1.1 %d %b\r\n" % (code, reason), *lines(headers), b"\r\n"])

    @staticmethod
    def switch_head(reason: bytes, headers: Sequence[Header]) -> bytes:
        """A cluster's ``101 Switching Protocols``, relayed (``headers`` keep
        its ``Connection: Upgrade`` and ``Upgrade``)."""
        return b"".join([b"HTTP/1.1 101 %b\r\n" % reason, *lines(headers), b"\r\n"])

    def send_body(self, data: bytes) -> bytes:
        """A piece of the streamed response as bytes."""
        return b"%x\r\n%b\r\n" % (len(data), data) if self._chunked else data

    def finish_body(self) -> tuple[bytes, bool]:
        """The end of the streamed response as bytes, and whether the
        connection closes after it."""
        return (b"0\r\n\r\n" if self._chunked else b""), self._response_closes
