"""The plain-HTTP scrape address (``metricsAddress``): ``/metrics`` without TLS
or authentication, for a scraper on a trusted network.

Served by the supervisor (the twistd process; with ``workers: 0`` the
gateway in it), which renders the same merged view as the workers' own
``/metrics`` (:class:`~karpor.metrics.exposition.Exposition`).  Only ``GET``
and ``HEAD`` of ``/metrics`` answer; any other path goes to ``pages`` when
given (the status page, :mod:`karpor.status.resource`), else is 404; any
other method is 405.  Scrapes are
not logged (one every few seconds would drown the log).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

#: renders the metrics for a scraper's ``Accept``: (content type, body)
Renderer = Callable[[str], tuple[bytes, bytes]]


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9090`` for IPv6) as ``(host, port)``."""
    host, _, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class MetricsResource(Resource):
    """``/metrics``, and ``pages`` for any other path."""

    isLeaf = True

    def __init__(self, render: Renderer, pages: IResource | None = None) -> None:
        super().__init__()
        self._render = render
        self._pages = pages

    def render(self, request: IRequest) -> bytes:
        """Answer one scrape."""
        if request.path != b"/metrics":
            if self._pages is not None:
                body: bytes = self._pages.render(request)
                return body
            request.setResponseCode(404)
            return b"404 page not found\n"
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b"405 method not allowed\n"
        accept = request.getHeader(b"accept") or b""
        content_type, body = self._render(accept.decode("latin-1"))
        request.setHeader(b"content-type", content_type)
        request.setHeader(b"cache-control", b"no-cache, private")
        return body


class _QuietSite(Site):
    noisy = False

    def log(self, request: Any) -> None:
        """No access log line per scrape."""


def listen(
    reactor: Any, address: str, render: Renderer, pages: IResource | None = None
) -> IListeningPort:
    """Serve ``/metrics`` (and ``pages``) at ``address``; ``SystemExit``
    naming it when the address cannot be bound."""
    host, port = split_address(address)
    try:
        listening: IListeningPort = reactor.listenTCP(
            port, _QuietSite(MetricsResource(render, pages)), interface=host
        )
    except CannotListenError as exc:
        reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
        raise SystemExit(f"karpor: metricsAddress {address}: cannot listen: {reason}") from None
    return listening
