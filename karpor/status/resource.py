"""The status page on the operations listener (``metricsAddress``): a thin
``twisted.web`` resource over :class:`~karpor.status.board.StatusBoard`.

Paths (``GET`` and ``HEAD`` only; anything else 405, unknown paths 404):
``/`` (the overview), ``/clusters/NAME`` (one cluster; 404 when not
defined), ``/status.json`` (the document), ``/static/status.js`` and
``/static/status.css``.  Every answer forbids everything but its own
origin's script, stylesheet and JSON (``Content-Security-Policy``), framing,
content sniffing and referrers; nothing is cached.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from importlib import resources
from urllib.parse import unquote

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from karpor.status import page
from karpor.status.board import StatusBoard

#: what every answer may load, and from where
CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    b"img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_STATIC = {
    b"/static/status.js": ("status.js", b"text/javascript; charset=utf-8"),
    b"/static/status.css": ("status.css", b"text/css; charset=utf-8"),
}
_HTML = b"text/html; charset=utf-8"
_CLUSTERS = b"/clusters/"


def _static(name: str) -> bytes:
    return resources.files("karpor.status").joinpath("static").joinpath(name).read_bytes()


class StatusResource(Resource):
    """The status page's paths (see the module docstring)."""

    isLeaf = True

    def __init__(self, board: StatusBoard, now: Callable[[], float] = time.time) -> None:
        super().__init__()
        self._board = board
        self._now = now
        self._files = {path: (_static(name), kind) for path, (name, kind) in _STATIC.items()}

    def render(self, request: IRequest) -> bytes:
        """Answer one request (``HEAD``: the headers ``GET`` would have)."""
        body = self._answer(request)
        return b"" if request.method == b"HEAD" else body

    def _answer(self, request: IRequest) -> bytes:
        request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"x-frame-options", b"DENY")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"cache-control", b"no-cache, private")
        if request.method not in (b"GET", b"HEAD"):
            request.setResponseCode(405)
            request.setHeader(b"allow", b"GET, HEAD")
            return b"405 method not allowed\n"
        path = request.path or b"/"
        if path in self._files:
            body, kind = self._files[path]
            request.setHeader(b"content-type", kind)
            return body
        if path == b"/status.json":
            request.setHeader(b"content-type", b"application/json")
            return json.dumps(self._board.document(self._now()), separators=(",", ":")).encode()
        if path in (b"/", b"/index.html"):
            request.setHeader(b"content-type", _HTML)
            return page.overview(self._board.document(self._now())).encode()
        if path.startswith(_CLUSTERS) and b"/" not in path[len(_CLUSTERS) :]:
            name = unquote(path[len(_CLUSTERS) :].decode("latin-1"))
            request.setHeader(b"content-type", _HTML)
            if self._board.cluster(name) is None:
                request.setResponseCode(404)
            return page.cluster_page(self._board.document(self._now()), name).encode()
        request.setResponseCode(404)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"404 page not found\n"
