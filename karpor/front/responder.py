"""How the gateway's own API answers one request on a front connection
(:class:`Responder`, the :class:`karpor.gatewayapi.request.Responder` of
an HTTP/1.1 connection): a complete response, or a streamed one (chunked
for HTTP/1.1), each head carrying the request's ``Audit-Id``; the last
response before a drain says ``Connection: close``."""

from __future__ import annotations

import http
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from twisted.logger import Logger

from karpor.http.connection import RequestHead
from karpor.http.headers import Header
from karpor.upstream.forward import chunk

if TYPE_CHECKING:
    from karpor.front.protocol import GatewayProtocol

log = Logger()

_PHRASES: dict[int, bytes] = {s.value: s.phrase.encode() for s in http.HTTPStatus}
_FRAMING = frozenset({b"content-length", b"transfer-encoding", b"connection"})


def status_line(code: int) -> bytes:
    """``HTTP/1.1 <code> <phrase>`` with CRLF."""
    return b"HTTP/1.1 %d %b\r\n" % (code, _PHRASES.get(code, b"Unknown"))


class Responder:
    """How the own API answers one request (:class:`karpor.gatewayapi.request.Responder`)."""

    def __init__(self, protocol: GatewayProtocol, head: RequestHead) -> None:
        self._protocol = protocol
        self._head = head
        self._started = False
        self._done = False
        self._lost = False
        self._chunked = False
        #: the connection closes after this response (it drains)
        self._close = False
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
        audit = self._protocol.audit
        if audit is not None:
            audit.head_at = time.monotonic()
            parts += (b"Audit-Id: ", audit.audit_id, b"\r\n")
        return parts

    def respond(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        """Send a complete response."""
        if self._started or self._lost:
            return
        self._started = self._done = True
        self._protocol.status = code
        close = not self._head.keep_alive or self._protocol.last_before_drain()
        parts = self._head_bytes(code, headers)
        parts.append(b"Content-Length: %d\r\n" % len(body))
        if close:
            parts.append(b"Connection: close\r\n")
        parts += (b"\r\n", b"" if self._head.method == b"HEAD" else body)
        self._protocol.transport.write(b"".join(parts))  # type: ignore[union-attr]
        self._protocol.response_finished(close)

    def start(self, code: int, headers: Sequence[Header]) -> None:
        """Start a streamed response (chunked for HTTP/1.1)."""
        if self._started or self._lost:
            return
        self._started = True
        self._protocol.status = code
        parts = self._head_bytes(code, headers)
        if self._head.http11:
            self._chunked = True
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if self._protocol.last_before_drain():
            self._close = True
        if self._close or not self._head.keep_alive or not self._head.http11:
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
        self._protocol.response_finished(
            self._close or not self._head.keep_alive or not self._chunked
        )

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once if the client goes away before :meth:`finish`."""
        if self._lost:
            callback()
        elif not self._done:
            self._callbacks.append(callback)

    def connection_lost(self) -> None:
        if self._done or self._lost:
            return
        self._lost = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.failure("on_close callback failed")
