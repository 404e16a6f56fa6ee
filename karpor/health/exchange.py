"""One health-probe request, carried by a cluster's connection pool.

A :class:`ProbeExchange` is the smallest :class:`~karpor.upstream.http1.Exchange`:
a bodiless ``GET`` (:func:`probe_request`, an
:class:`~karpor.upstream.request.UpstreamRequest` like any other) submitted
to the cluster's pool, which adds the cluster's credential (an exec
plugin's token included, dropped on a ``401``) and carries it on a pooled
connection with the pool's TLS options, so a probe costs no TLS context and
usually no handshake.  It keeps at most :data:`~karpor.health.probe.MAX_BODY`
bytes of the answer and reports once, to ``done``: ``(code, body, None)``
for an answer, ``(None, b"", error)`` for a failure (``error`` is an
:class:`~karpor.kube.status.ApiError`, worded by the pool without a secret).
:meth:`ProbeExchange.cancel` (the probe timed out) drops it: a pooled
connection it holds is closed, a queued one skipped, and ``done`` is not
called.
"""

from __future__ import annotations

from collections.abc import Callable

from karpor.health.probe import MAX_BODY
from karpor.http.headers import Header, ResponseHeaders
from karpor.kube.status import ApiError
from karpor.upstream.http1 import Carrier, Tunnel
from karpor.upstream.request import UNRESOLVED, UpstreamRequest

USER_AGENT = b"karpor-health-probe"
#: the headers of every probe request
PROBE_HEADERS: tuple[Header, ...] = (
    (b"Accept", b"application/json, */*"),
    (b"User-Agent", USER_AGENT),
)

#: ``done(code, body, error)``: an answer (``error`` is ``None``) or a failure
Done = Callable[[int | None, bytes, ApiError | None], None]


def probe_request(path: bytes) -> UpstreamRequest:
    """``GET path`` (the cluster's API path; the pool adds the endpoint's
    prefix, ``Host`` and the credential)."""
    return UpstreamRequest(b"GET", path, PROBE_HEADERS)


class ProbeExchange:
    """One probe request as the pool sees it (an ``Exchange``)."""

    head_only = False
    #: a stale pooled connection may be retried: a GET without a body
    retriable = True
    #: the probe has a timeout of its own
    head_timeout: float | None = None

    def __init__(self, request: UpstreamRequest, done: Done) -> None:
        self.request = request
        #: set by the pool (:data:`~karpor.upstream.request.UNRESOLVED`
        #: while it waits for an exec plugin)
        self.credential = UNRESOLVED
        self.cancelled = False
        self._done: Done | None = done
        self._carrier: Carrier | None = None
        self._code: int | None = None
        self._body: list[bytes] = []
        self._size = 0

    def attach(self, connection: Carrier) -> None:
        """``connection`` wrote the head: the request is complete."""
        self._carrier = connection
        connection.finish_request()

    def upstream_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        """A 1xx: nothing to do."""

    def upstream_head(self, code: int, reason: bytes, response: ResponseHeaders) -> None:
        """The answer's status."""
        self._code = code

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> Tunnel | None:
        """A probe never asks to switch protocols."""
        return None

    def upstream_body(self, data: bytes) -> None:
        """Keep the first :data:`MAX_BODY` bytes."""
        room = MAX_BODY - self._size
        if room > 0 and data:
            piece = data[:room]
            self._body.append(piece)
            self._size += len(piece)

    def upstream_end(self) -> None:
        """The answer is complete."""
        self._carrier = None
        code = self._code
        if code is None:
            self._report(None, b"", ApiError(502, "the cluster sent no status"))
        else:
            self._report(code, b"".join(self._body), None)

    def upstream_failed(self, error: ApiError) -> None:
        """The request failed before or during the answer."""
        self._carrier = None
        self._report(None, b"", error)

    def cancel(self) -> None:
        """Drop the request (the probe timed out): ``done`` will not be called."""
        self.cancelled = True
        self._done = None
        carrier, self._carrier = self._carrier, None
        if carrier is not None and not carrier.closed:
            carrier.abort()

    def _report(self, code: int | None, body: bytes, error: ApiError | None) -> None:
        done, self._done = self._done, None
        if done is not None:
            done(code, body, error)
