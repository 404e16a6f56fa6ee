"""Routing of a raw request target: to a cluster, or to the gateway's own API.

Sans-IO and decided on the *raw* target, before any percent-decoding:

- ``/apis/cluster.karpor.io/v1beta1/clusters/{name}/proxy/{path}`` and the
  KubeVela alias ``/apis/cluster.core.oam.dev/v1alpha1/clustergateways/{name}/proxy/{path}``
  go to cluster ``name`` with the upstream target ``/{path}`` (``/proxy``
  alone is ``/``) and the query string byte for byte;
- everything else goes to the gateway's own API.

A target that some decoder could read as another cluster (``.``/``..``
segments, also percent-encoded; a percent-encoded cluster name or proxy
prefix; NUL bytes) is refused with a 400 ``Status``: the cluster chosen here is
the cluster any spelling of the path names, or none.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import unquote_to_bytes

from karpor.kube.status import ApiError

#: Raw path prefixes of the proxy routes (the alias second).
KARPOR_PREFIX = b"/apis/cluster.karpor.io/v1beta1/clusters/"
ALIAS_PREFIX = b"/apis/cluster.core.oam.dev/v1alpha1/clustergateways/"
_PREFIXES = (KARPOR_PREFIX, ALIAS_PREFIX)

#: Paths a caller without credentials may reach (kube's public-info-viewer).
PUBLIC_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/livez",
        "/healthz/ping",
        "/readyz/ping",
        "/livez/ping",
        "/version",
        "/version/",
    }
)

_MAX_NAME = 63
_NAME = re.compile(rb"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?")
# Bytes that never belong in a request target: controls, space, DEL, '#'.
_FORBIDDEN = re.compile(rb"[\x00-\x20\x7f#]")
_DOT_SEGMENT = frozenset({b".", b".."})
_SLASHES = re.compile(rb"/{2,}")


class ClusterRoute(NamedTuple):
    """A request for cluster ``name``; ``target`` is the upstream request
    target (path and query string, raw)."""

    name: str
    target: bytes


class ApiRoute(NamedTuple):
    """A request for the gateway's own API (path and query raw, as text)."""

    path: str
    query: str

    @property
    def public(self) -> bool:
        """Whether the path may be served without credentials."""
        return self.path in PUBLIC_PATHS


Route = ClusterRoute | ApiRoute


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


def _check_segments(path: bytes) -> None:
    """Refuse dot segments (plain, percent-encoded or with ``;`` parameters)
    and encoded NULs anywhere in ``path``."""
    encoded = b"%" in path
    if b"/." not in path and not encoded:
        return
    if encoded and b"%00" in path:
        raise _bad("the request path must not contain NUL bytes")
    for raw in path.split(b"/"):
        segment = raw
        if encoded and b"%" in segment:
            segment = unquote_to_bytes(segment)
            if b"\x00" in segment:
                raise _bad("the request path must not contain NUL bytes")
            if b"/" in segment:
                # an encoded slash hides a segment; check what it hides
                for inner in segment.split(b"/"):
                    if inner.split(b";", 1)[0] in _DOT_SEGMENT:
                        raise _bad("the request path must not contain '.' or '..' segments")
        if segment.split(b";", 1)[0] in _DOT_SEGMENT:
            raise _bad("the request path must not contain '.' or '..' segments")


def _match(path: bytes) -> tuple[bytes, bytes] | None:
    """``(name, upstream path)`` when ``path`` is a proxy path, else ``None``."""
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            name, _, rest = path[len(prefix) :].partition(b"/")
            if rest == b"proxy":
                return name, b"/"
            if rest.startswith(b"proxy/"):
                return name, rest[5:]
            return None
    return None


def route(target: bytes) -> Route:
    """Route the raw request ``target`` (origin form, as received).

    Raises :class:`~karpor.kube.status.ApiError` (400) for a target that is
    not a plain origin-form path or could name another cluster when decoded.
    """
    if not target.startswith(b"/"):
        raise _bad("the request target must be an absolute path")
    if _FORBIDDEN.search(target):
        raise _bad("the request target contains forbidden bytes")
    path, sep, query = target.partition(b"?")
    _check_segments(path)
    found = _match(path)
    if b"%" in path or b"//" in path:
        # A decoding or slash-merging reader must not see a proxy path (or
        # another cluster) the raw path does not show.
        decoded = unquote_to_bytes(path)
        for candidate in (decoded, _SLASHES.sub(b"/", decoded)):
            seen = _match(candidate)
            if seen is not None and (found is None or found[0] != seen[0]):
                raise _bad(
                    "the proxy path prefix and cluster name must be plain "
                    "(no percent-encoding, no empty segments)"
                )
    if found is None:
        return ApiRoute(path.decode("latin-1"), query.decode("latin-1"))
    name, upstream = found
    if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise _bad(
            f"invalid cluster name {name.decode('latin-1')[: _MAX_NAME + 1]!r}: "
            "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)"
        )
    return ClusterRoute(name.decode("ascii"), upstream + sep + query)
