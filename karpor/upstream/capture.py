"""One small request whose answer the gateway reads itself.

A :class:`CapturedExchange` is the smallest
:class:`~karpor.upstream.http1.Exchange`: it sends a request with a
complete, already read body, or none (a ``SelfSubjectAccessReview`` the
gateway asks a cluster on a caller's behalf; a health probe,
:class:`karpor.health.exchange.ProbeExchange`) through the cluster's pool,
which adds the credential, and keeps at most ``max_body`` bytes of the
answer (more is a failure, a 502, or with ``truncate`` the rest is
dropped).  It reports once, to ``done``:
``(code, body, None)`` for an answer, ``(None, b"", error)`` for a failure
(an :class:`~karpor.kube.status.ApiError` worded without a secret).
:meth:`CapturedExchange.cancel` (the caller went away) drops it.  The pool's
response-header timeout applies as to any request (``head_timeout``).
"""

from __future__ import annotations

from collections.abc import Callable

from karpor.http.headers import Header, ResponseHeaders
from karpor.kube.status import ApiError
from karpor.upstream.http1 import Carrier, Tunnel
from karpor.upstream.request import UNRESOLVED, UpstreamRequest

#: ``done(code, body, error)``: an answer (``error`` is ``None``) or a failure
Done = Callable[[int | None, bytes, ApiError | None], None]
#: the largest answer kept by default
MAX_BODY = 1 << 20


class CapturedExchange:
    """One request with a body, its answer read whole (an ``Exchange``)."""

    head_only = False
    #: a stale pooled connection may be retried: the body is kept whole
    retriable = True

    def __init__(
        self,
        request: UpstreamRequest,
        body: bytes,
        done: Done,
        head_timeout: float | None,
        max_body: int = MAX_BODY,
        truncate: bool = False,
    ) -> None:
        self.request = request
        self.credential = UNRESOLVED
        self.cancelled = False
        self.head_timeout = head_timeout
        self._body = body
        self._done: Done | None = done
        self._max = max_body
        self._truncate = truncate
        self._carrier: Carrier | None = None
        self._code: int | None = None
        self._answer: list[bytes] = []
        self._size = 0

    def attach(self, connection: Carrier) -> None:
        """``connection`` wrote the head: write the body."""
        self._carrier = connection
        if self._body:
            connection.write(self._body)
        connection.finish_request()

    def upstream_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        """A 1xx: nothing to do."""

    def upstream_head(self, code: int, reason: bytes, response: ResponseHeaders) -> None:
        """The answer's status."""
        self._code = code

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> Tunnel | None:
        """Never asked for."""
        return None

    def upstream_body(self, data: bytes) -> None:
        """Keep the answer (past ``max_body``: a failure, the connection
        dropped; with ``truncate``, only what fits is kept)."""
        if self._done is None:
            return
        if self._truncate:
            room = self._max - self._size
            if room > 0 and data:
                piece = data[:room]
                self._answer.append(piece)
                self._size += len(piece)
            return
        self._size += len(data)
        if self._size > self._max:
            self.cancel_carrier()
            self._report(None, b"", ApiError(502, "the cluster's answer is too large"))
            return
        self._answer.append(data)

    def upstream_end(self) -> None:
        """The answer is complete."""
        self._carrier = None
        if self._code is None:
            self._report(None, b"", ApiError(502, "the cluster sent no status"))
        else:
            self._report(self._code, b"".join(self._answer), None)

    def upstream_failed(self, error: ApiError) -> None:
        """The request failed before or during the answer."""
        self._carrier = None
        self._report(None, b"", error)

    def cancel(self) -> None:
        """Drop the request: ``done`` will not be called."""
        self.cancelled = True
        self._done = None
        self.cancel_carrier()

    def cancel_carrier(self) -> None:
        """Drop the connection carrying the request, if any."""
        carrier, self._carrier = self._carrier, None
        if carrier is not None and not carrier.closed:
            carrier.abort()

    def _report(self, code: int | None, body: bytes, error: ApiError | None) -> None:
        done, self._done = self._done, None
        self._answer = []
        if done is not None:
            done(code, body, error)
