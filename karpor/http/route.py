"""Routing of a raw request target: to a cluster, or to the gateway's own API.

Sans-IO and decided on the *raw* target, before any percent-decoding:

- ``/apis/cluster.karpor.io/v1beta1/clusters/{name}/proxy/{path}`` and the
  KubeVela alias ``/apis/cluster.core.oam.dev/v1alpha1/clustergateways/{name}/proxy/{path}``
  go to cluster ``name`` with the upstream target ``/{path}`` (``/proxy``
  alone is ``/``) and the query string byte for byte;
- the same with ``*`` or a label selector (``env=prod``, ``env%20in%20(a,b)``,
  ``tier!=edge``: a segment holding ``=``, ``!``, ``,``, a space or ``(``,
  which no cluster name does; percent-decoded after the path is split) in
  place of the name goes to many clusters at once (:class:`FanoutRoute`);
- everything else goes to the gateway's own API.

**Host routing** (:class:`HostRouting`, the ``hostRouting`` setting): a
request whose TLS server name (SNI) is ``NAME.<suffix>`` goes to cluster
``NAME`` with its target used as is (``/version``, ``/api``, ``/metrics``
are the cluster's own); without SNI naming a cluster, the ``Host`` header
(port dropped) decides the same way.  The SNI is classified once per
connection (:meth:`HostRouting.server_name`), the ``Host`` header per
request (:func:`route_request`).  The safe rule when both name something:
SNI naming cluster ``A`` and ``Host`` naming another cluster ``B`` is
refused (``421 Misdirected Request``: the connection was made for ``A``);
a ``Host`` that names no cluster (the gateway's address, as kubectl sends
with ``tls-server-name``) does not matter.  A name under the suffix that
is not a cluster name (``a.b.<suffix>``, more than 63 characters) is a 400;
the suffix alone is the gateway itself.  A host-routed target gets the same
checks as a proxied path (forbidden bytes, dot segments, encoded NULs), so
the policy reads the path the cluster serves.

A target that some decoder could read as another cluster (``.``/``..``
segments, also percent-encoded; a percent-encoded cluster name or proxy
prefix; NUL bytes) is refused with a 400 ``Status``: the cluster chosen here is
the cluster any spelling of the path names, or none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
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
    target (path and query string, raw); ``by_host``: chosen by the TLS
    server name or ``Host`` (the target is the request's own)."""

    name: str
    target: bytes
    by_host: bool = False


class FanoutRoute(NamedTuple):
    """A request for many clusters at once (issue "Fan-out"): every cluster
    the caller may reach (``selector`` empty: the ``*`` form) or those whose
    labels match ``selector`` (a label selector, percent-decoded); ``target``
    is the upstream target, as for :class:`ClusterRoute`."""

    selector: str
    target: bytes


class ApiRoute(NamedTuple):
    """A request for the gateway's own API (path and query raw, as text)."""

    path: str
    query: str

    @property
    def public(self) -> bool:
        """Whether the path may be served without credentials."""
        return self.path in PUBLIC_PATHS


Route = ClusterRoute | FanoutRoute | ApiRoute

#: bytes that make a cluster segment a label selector (never in a cluster name)
_SELECTOR_BYTES = frozenset(b"=!, (")


def _fanout_selector(raw: bytes) -> str | None:
    """The label selector a cluster segment names (``""`` for ``*``), or
    ``None`` when it names one cluster."""
    decoded = unquote_to_bytes(raw) if b"%" in raw else raw
    if decoded == b"*":
        return ""
    if not any(b in _SELECTOR_BYTES for b in decoded):
        return None
    try:
        return decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise _bad("the cluster selector is not UTF-8") from None


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
    """``(name, upstream path)`` when ``path`` is a proxy path, else ``None``.

    A label selector whose keys have a prefix (``example.com/tier=web``) may
    span segments: clients that join paths (client-go) send its ``/``
    unencoded.  Such a name holds a selector byte; a cluster name never holds
    a ``/``."""
    for prefix in _PREFIXES:
        if path.startswith(prefix):
            name, _, rest = path[len(prefix) :].partition(b"/")
            if rest == b"proxy":
                return name, b"/"
            if rest.startswith(b"proxy/"):
                return name, rest[5:]
            if not any(b in _SELECTOR_BYTES for b in rest.split(b"/proxy", 1)[0]):
                return None
            segments = rest.split(b"/")
            for i, segment in enumerate(segments):
                if segment == b"proxy":
                    joined = b"/".join([name, *segments[:i]])
                    if not any(b in _SELECTOR_BYTES for b in joined):
                        return None
                    return joined, b"/" + b"/".join(segments[i + 1 :])
            return None
    return None


def _check_target(target: bytes) -> tuple[bytes, bytes, bytes]:
    """``(path, "?" or "", query)`` of a plain origin-form ``target``; 400 otherwise."""
    if not target.startswith(b"/"):
        raise _bad("the request target must be an absolute path")
    if _FORBIDDEN.search(target):
        raise _bad("the request target contains forbidden bytes")
    path, sep, query = target.partition(b"?")
    _check_segments(path)
    return path, sep, query


def route(target: bytes) -> Route:
    """Route the raw request ``target`` (origin form, as received) by its path.

    Raises :class:`~karpor.kube.status.ApiError` (400) for a target that is
    not a plain origin-form path or could name another cluster when decoded.
    """
    path, sep, query = _check_target(target)
    found = _match(path)
    selector = _fanout_selector(found[0]) if found is not None else None
    if b"%" in path or b"//" in path:
        # A decoding or slash-merging reader must not see a proxy path (or
        # another cluster) the raw path does not show; a selector segment
        # may be percent-encoded (spaces, parentheses), nothing else.
        decoded = unquote_to_bytes(path)
        named = None
        if found is not None:
            named = found[0] if selector is None else unquote_to_bytes(found[0])
        for candidate in (decoded, _SLASHES.sub(b"/", decoded)):
            seen = _match(candidate)
            if seen is not None and (found is None or named != seen[0]):
                raise _bad(
                    "the proxy path prefix and cluster name must be plain "
                    "(no percent-encoding, no empty segments)"
                )
    if found is None:
        return ApiRoute(path.decode("latin-1"), query.decode("latin-1"))
    name, upstream = found
    if selector is not None:
        return FanoutRoute(selector, upstream + sep + query)
    if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
        raise _bad(
            f"invalid cluster name {name.decode('latin-1')[: _MAX_NAME + 1]!r}: "
            "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63)"
        )
    return ClusterRoute(name.decode("ascii"), upstream + sep + query)


#: the default ``hostRouting.suffix``
DEFAULT_HOST_SUFFIX = "clusters.karpor"
_HOST_SUFFIX = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")
_MAX_SUFFIX = 253 - 2 - _MAX_NAME  # room for NAME. before it


def check_host_suffix(value: str) -> str:
    """``value`` as a host-routing suffix (lower-case DNS name, no trailing
    dot; ``""`` turns host routing off); :class:`ValueError` saying why not."""
    suffix = value.strip().lower().rstrip(".")
    if suffix and (len(suffix) > _MAX_SUFFIX or not _HOST_SUFFIX.fullmatch(suffix)):
        raise ValueError(
            f"must be a DNS name (clusters are NAME.<suffix>) or empty, not {value[:64]!r}"
        )
    if suffix and all(part.isdigit() for part in suffix.split(".")):
        raise ValueError(f"must be a DNS name, not an address: {value[:64]!r}")
    return suffix


@dataclass(frozen=True)
class HostRouting:
    """The ``hostRouting`` section: clusters by TLS server name or ``Host``.

    ``suffix``: a request for ``NAME.<suffix>`` goes to cluster ``NAME``
    (``""``: host routing off, paths only).  The serving certificate covers
    ``*.<suffix>`` (:mod:`karpor.app.state`).
    """

    suffix: str = DEFAULT_HOST_SUFFIX
    #: ``NAME.<suffix>``, a trailing dot and a port allowed, any case (one
    #: match per request; a host not under the suffix fails it at once)
    _under: re.Pattern[bytes] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        suffix = check_host_suffix(self.suffix)
        object.__setattr__(self, "suffix", suffix)
        if suffix:
            escaped = re.escape(suffix.encode("ascii"))
            under = re.compile(rb"([^:\[\]]*)\." + escaped + rb"\.?(?::[0-9]*)?", re.IGNORECASE)
            object.__setattr__(self, "_under", under)

    @property
    def enabled(self) -> bool:
        """Whether hosts route at all."""
        return bool(self.suffix)

    @property
    def wildcard(self) -> str:
        """The name the serving certificate must cover (``*.<suffix>``)."""
        return f"*.{self.suffix}"

    def cluster_of(self, host: bytes) -> str | None:
        """The cluster ``host`` (a server name, or a ``Host`` value with or
        without a port) names, ``None`` when it names none (not under the
        suffix, an IP address, the suffix alone); 400 for a name under the
        suffix that is not a cluster name."""
        under = self._under
        found = under.fullmatch(host) if under is not None else None
        if found is None:
            return None
        name = found[1].lower()
        if len(name) > _MAX_NAME or not _NAME.fullmatch(name):
            raise ApiError(
                400,
                f"the host {host.decode('latin-1')[:128]!r} does not name a cluster: "
                f"clusters are NAME.{self.suffix}, NAME a DNS-1123 label",
            )
        return name.decode("ascii")

    def server_name(self, sni: bytes | None) -> str | ApiError | None:
        """What a connection's TLS server name says, classified once per
        connection: a cluster's name, ``None`` (no SNI, or one naming no
        cluster), or the 400 every request on it gets."""
        if not sni or not self.suffix:
            return None
        try:
            return self.cluster_of(sni)
        except ApiError as e:
            return e


#: host routing off
NO_HOST_ROUTING = HostRouting("")


def request_host(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The value of the ``Host`` header (``b""`` without one); 400 for
    several (RFC 9112, 3.2: which one a reader takes is anyone's guess)."""
    found: bytes | None = None
    for name, value in headers:
        if len(name) == 4 and name.lower() == b"host":
            if found is not None:
                raise _bad("the request has more than one Host header")
            found = value.strip()
    return found or b""


def route_request(
    target: bytes,
    headers: Iterable[tuple[bytes, bytes]],
    server: str | ApiError | None,
    hosts: HostRouting,
) -> Route:
    """Route a request: by host (the connection's TLS server name
    classified as :meth:`HostRouting.server_name` says, ``server``; else
    its ``Host`` header), else by path (:func:`route`).  See the module
    docstring for the rule when the SNI and ``Host`` disagree (421)."""
    if not hosts.suffix:
        return route(target)
    if isinstance(server, ApiError):  # a fresh one: a raise extends the traceback it holds
        raise ApiError(server.code, server.message, server.reason)
    named = hosts.cluster_of(request_host(headers))
    if server is not None and named is not None and named != server:
        raise ApiError(
            421,
            f"the Host header names cluster {named!r} but the connection was made "
            f"for cluster {server!r} (its TLS server name)",
            "MisdirectedRequest",
        )
    name = server if server is not None else named
    if name is None:
        return route(target)
    _check_target(target)
    return ClusterRoute(name, target, True)
