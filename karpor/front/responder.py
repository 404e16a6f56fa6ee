"""How the gateway's own API answers one request on a front connection
(:class:`Responder`, the :class:`karpor.gatewayapi.request.Responder` of
an HTTP/1.1 connection): a complete response, or a streamed one (chunked
for HTTP/1.1), each head carrying the request's ``Audit-Id``; the last
response before a drain says ``Connection: close``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from twisted.logger import Logger

from karpor.http.connection import RequestHead
from karpor.http.headers import AUDIT_ID, Header

if TYPE_CHECKING:
    from karpor.front.protocol import GatewayProtocol

log = Logger()


class Responder:
    """How the own API answers one request (:class:`karpor.gatewayapi.request.Responder`)."""

    def __init__(self, protocol: GatewayProtocol, head: RequestHead) -> None:
        self._protocol = protocol
        self._head = head
        self._started = False
        self._done = False
        self._lost = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def started(self) -> bool:
        """Whether a response began."""
        return self._started

    def _headers(self, headers: Sequence[Header]) -> Sequence[Header]:
        """``headers`` and the request's ``Audit-Id`` (noting when the head went)."""
        audit = self._protocol.audit
        if audit is None:
            return headers
        audit.head_at = time.monotonic()
        return [*headers, (AUDIT_ID, audit.audit_id)]

    def respond(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        """Send a complete response."""
        if self._started or self._lost:
            return
        self._started = self._done = True
        protocol = self._protocol
        protocol.status = code
        data, close = protocol.conn.respond(self._head, code, self._headers(headers), body)
        protocol.transport.write(data)  # type: ignore[union-attr]
        protocol.finish_response(close)

    def start(self, code: int, headers: Sequence[Header]) -> None:
        """Start a streamed response (chunked for HTTP/1.1)."""
        if self._started or self._lost:
            return
        self._started = True
        protocol = self._protocol
        protocol.status = code
        data = protocol.conn.start_response(self._head, code, self._headers(headers))
        protocol.transport.write(data)  # type: ignore[union-attr]

    def write(self, data: bytes) -> None:
        """Send a piece of a streamed response."""
        if not self._started or self._done or self._lost or not data:
            return
        protocol = self._protocol
        protocol.transport.write(protocol.conn.send_body(data))  # type: ignore[union-attr]

    def finish(self) -> None:
        """End a streamed response."""
        if not self._started or self._done or self._lost:
            return
        self._done = True
        protocol = self._protocol
        data, close = protocol.conn.finish_body()
        if data:
            protocol.transport.write(data)  # type: ignore[union-attr]
        protocol.finish_response(close)

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
