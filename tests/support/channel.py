"""A forwarder's client side for unit tests: a :class:`~karpor.upstream.forward.Channel`
that frames the relayed response with the real
:class:`~karpor.http.connection.FrontConnection` into a ``StringTransport``
and records what happened (errors answered, responses finished, aborts)."""

from __future__ import annotations

from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from karpor.http.connection import FrontConnection, RequestHead
from karpor.http.headers import Header, ResponseHeaders
from karpor.kube.status import ApiError


@implementer(IPushProducer)
class _Reading:
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


class RecordingChannel:
    """The front protocol's side of one forwarded request (see the module docstring).

    ``client`` holds the bytes the client would receive; ``finished`` one
    entry per ended response (whether the connection closes after it).
    """

    def __init__(self, method: bytes = b"GET", http11: bool = True) -> None:
        self.client = StringTransport()
        self.errors: list[ApiError] = []
        self.finished: list[bool] = []
        self.aborted = False
        self._conn = FrontConnection(16384)
        self._head = RequestHead(method, b"/", [], http11, True, False)

    def reading(self) -> IPushProducer:
        return _Reading()

    def pause_for_upstream(self) -> None: ...
    def resume_for_upstream(self) -> None: ...

    def send_error(self, error: ApiError) -> None:
        self.errors.append(error)

    def relay_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        self.client.write(self._conn.interim_head(self._head, code, reason, headers))

    def relay_head(self, code: int, reason: bytes, response: ResponseHeaders) -> bool:
        data, body = self._conn.relay_head(
            self._head, code, reason, response.forward, response.content_length
        )
        self.client.write(data)
        return body

    def stream_from(self, producer: IPushProducer) -> None:
        self.client.registerProducer(producer, True)

    def relay_body(self, data: bytes) -> None:
        self.client.write(self._conn.send_body(data))

    def relay_chunked(self) -> bool:
        return self._conn.chunked

    def relay_end(self, close: bool = False) -> None:
        data, closes = self._conn.finish_body()
        self.client.write(data)
        if self.client.producer is not None:
            self.client.unregisterProducer()
        self.finished.append(close or closes)

    def abort(self) -> None:
        if self.client.producer is not None:
            self.client.unregisterProducer()
        self.aborted = True
