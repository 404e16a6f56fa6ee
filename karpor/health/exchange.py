"""One health-probe request, carried by a cluster's connection pool.

A :class:`ProbeExchange` is a :class:`~karpor.upstream.capture.CapturedExchange`:
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

from karpor.health.probe import MAX_BODY
from karpor.http.headers import Header
from karpor.upstream.capture import CapturedExchange, Done
from karpor.upstream.request import UpstreamRequest

USER_AGENT = b"karpor-health-probe"
#: the headers of every probe request
PROBE_HEADERS: tuple[Header, ...] = (
    (b"Accept", b"application/json, */*"),
    (b"User-Agent", USER_AGENT),
)


def probe_request(path: bytes) -> UpstreamRequest:
    """``GET path`` (the cluster's API path; the pool adds the endpoint's
    prefix, ``Host`` and the credential)."""
    return UpstreamRequest(b"GET", path, PROBE_HEADERS)


class ProbeExchange(CapturedExchange):
    """One probe request as the pool sees it: a bodiless request whose answer
    is kept up to :data:`~karpor.health.probe.MAX_BODY` bytes (the rest
    dropped), under the probe's own timeout (no response-header timeout)."""

    def __init__(self, request: UpstreamRequest, done: Done) -> None:
        super().__init__(request, b"", done, None, MAX_BODY, truncate=True)
