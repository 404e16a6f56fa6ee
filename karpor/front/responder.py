"""How the gateway's own API answers one request on a front connection
(:class:`Responder`, the :class:`karpor.gatewayapi.request.Responder` of
an HTTP/1.1 connection): a complete response, or a streamed one (chunked
for HTTP/1.1), each head carrying the request's ``Audit-Id``; the last
response before a drain says ``Connection: close``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from karpor.http.connection import RequestHead
from karpor.http.headers import AUDIT_ID, Header

if TYPE_CHECKING:
    from karpor.front.protocol import GatewayProtocol

log = Logger()


class ResponderBase:
    """The state of one own-API response, whatever carries it: a complete
    response or a streamed one (begun, written, finished) at most once, each
    head with the request's ``Audit-Id``, nothing after the client went away,
    and the ``on_close`` callbacks.  A subclass writes it on its wire
    (``_send``, ``_send_head``, ``_send_data``, ``_send_end``) and names the
    request's record (``_record``)."""

    def __init__(self) -> None:
        self._started = False
        self._done = False
        self._lost = False
        self._callbacks: list[Callable[[], None]] = []

    @property
    def started(self) -> bool:
        """Whether a response began."""
        return self._started

    def _record(self) -> Any:
        """The request's front (its ``audit`` and ``status``)."""
        raise NotImplementedError

    def _send(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        raise NotImplementedError

    def _send_head(self, code: int, headers: Sequence[Header]) -> None:
        raise NotImplementedError

    def _send_data(self, data: bytes) -> None:
        raise NotImplementedError

    def _send_end(self) -> None:
        raise NotImplementedError

    def _headers(self, headers: Sequence[Header]) -> Sequence[Header]:
        """``headers`` and the request's ``Audit-Id`` (noting when the head went)."""
        audit = self._record().audit
        if audit is None:
            return headers
        audit.head_at = time.monotonic()
        return [*headers, (AUDIT_ID, audit.audit_id)]

    def respond(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        """Send a complete response."""
        if self._started or self._lost:
            return
        self._started = self._done = True
        self._record().status = code
        self._send(code, self._headers(headers), body)

    def start(self, code: int, headers: Sequence[Header]) -> None:
        """Start a streamed response."""
        if self._started or self._lost:
            return
        self._started = True
        self._record().status = code
        self._send_head(code, self._headers(headers))

    def write(self, data: bytes) -> None:
        """Send a piece of a streamed response."""
        if self._started and not self._done and not self._lost and data:
            self._send_data(data)

    def finish(self) -> None:
        """End a streamed response."""
        if not self._started or self._done or self._lost:
            return
        self._done = True
        self._send_end()

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once if the client goes away before :meth:`finish`."""
        if self._lost:
            callback()
        elif not self._done:
            self._callbacks.append(callback)

    def connection_lost(self) -> None:
        """The client went away (the connection, or an HTTP/2 stream)."""
        if self._done or self._lost:
            return
        self._lost = True
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.failure("on_close callback failed")


class Responder(ResponderBase):
    """How the own API answers one request on an HTTP/1.1 connection
    (:class:`karpor.gatewayapi.request.Responder`): chunked when streamed,
    ``Connection: close`` as the connection decides."""

    def __init__(self, protocol: GatewayProtocol, head: RequestHead) -> None:
        super().__init__()
        self._protocol = protocol
        self._head = head

    def _record(self) -> GatewayProtocol:
        return self._protocol

    def _send(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        protocol = self._protocol
        data, close = protocol.conn.respond(self._head, code, headers, body)
        protocol.transport.write(data)  # type: ignore[union-attr]
        protocol.finish_response(close)

    def _send_head(self, code: int, headers: Sequence[Header]) -> None:
        protocol = self._protocol
        protocol.transport.write(protocol.conn.start_response(self._head, code, headers))  # type: ignore[union-attr]

    def _send_data(self, data: bytes) -> None:
        protocol = self._protocol
        protocol.transport.write(protocol.conn.send_body(data))  # type: ignore[union-attr]

    def _send_end(self) -> None:
        protocol = self._protocol
        data, close = protocol.conn.finish_body()
        if data:
            protocol.transport.write(data)  # type: ignore[union-attr]
        protocol.finish_response(close)
