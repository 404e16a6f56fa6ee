"""Header rewriting between a caller and a cluster (sans-IO).

Requests: hop-by-hop headers (``Connection`` and every header it names,
``Keep-Alive``, ``TE``, ``Trailer``, ``Transfer-Encoding``, ``Upgrade`` unless
the request upgrades, ``Proxy-*``), ``Host``, the caller's ``Authorization``
and the caller's identity headers (``Impersonate-*``, ``X-Remote-*`` and the
configured front-proxy header names, :func:`request_drops`) are dropped;
so are the caller's ``X-Forwarded-For``, ``X-Real-IP`` and ``Forwarded``
(a cluster's audit log takes the source address from them: a caller must
not choose it), ``X-Forwarded-Host`` and ``X-Forwarded-Proto`` (the host and
scheme the caller reached are the gateway's, not the caller's to claim; Go's
``httputil.ReverseProxy`` drops them too) and, from
``Sec-WebSocket-Protocol``, the entries carrying a bearer token
(``base64url.bearer.authorization.k8s.io.<token>``,
:func:`websocket_protocols`; the gateway authenticates the caller by it when
there is no ``Authorization``, :func:`websocket_bearer`).  What goes upstream is then written by
:mod:`karpor.upstream.request`: the cluster's ``Host`` and credential, the
identity headers the gateway decides on, and ``X-Forwarded-For`` holding the
one address the gateway saw are added; the body framing is restated by the
gateway.  Responses lose their
hop-by-hop headers in the same way.

No header line whose name is not an HTTP token or whose value holds CR, LF
or NUL (or any control character but HTAB) is ever written: the headers of
HTTP/1.1 requests and responses come from llhttp, which refuses such a line
(the request gets a 400, the response a 502), and every other header (the
identity headers the gateway adds, an HTTP/2 response's) passes
:func:`valid_header`.  Nothing a caller sends can split a header line
upstream.

``Audit-Id`` (kube's request correlation id): every request gets one, the
caller's when it sent a sane one (:func:`caller_audit_id`), else a fresh
UUID (:func:`new_audit_id`).  The caller's header is never forwarded as
sent: the gateway states the id itself upstream (``audit_id`` of
:class:`~karpor.upstream.request.UpstreamRequest`), and drops the cluster's ``Audit-Id`` from the
response (:func:`split_response`) so that the caller sees exactly one, the
gateway's, which is also the id the cluster received.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Header = tuple[bytes, bytes]

#: Hop-by-hop headers (lower-case), dropped in both directions.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
#: The request correlation header (kube-apiserver's name for it).
AUDIT_ID = b"Audit-Id"
#: The ``Sec-WebSocket-Protocol`` header (lower-case).
_WEBSOCKET_PROTOCOL = b"sec-websocket-protocol"
#: Request headers the gateway always drops (besides hop-by-hop ones); the
#: ``Sec-WebSocket-Protocol`` headers come back without bearer tokens.
_REQUEST_DROP = HOP_BY_HOP | {
    b"host",
    b"authorization",
    b"x-forwarded-for",
    b"x-real-ip",
    b"forwarded",
    b"x-forwarded-host",
    b"x-forwarded-proto",
    b"audit-id",
    _WEBSOCKET_PROTOCOL,
}
#: Request headers among the dropped ones that say something (framing,
#: upgrade, WebSocket subprotocols).
_REQUEST_NOTED = frozenset({b"connection", b"transfer-encoding", b"upgrade", _WEBSOCKET_PROTOCOL})
#: The WebSocket subprotocol prefix that carries a bearer token
#: (kube-apiserver's ``base64url.bearer.authorization.k8s.io.<base64url token>``),
#: compared case-insensitively, and without the final dot.
_BEARER_PROTOCOL = b"base64url.bearer.authorization.k8s.io"
#: Response headers dropped besides hop-by-hop ones (the gateway states its
#: own ``Audit-Id``), plus ``Content-Length`` (read, and kept).
_RESPONSE_NOTED = HOP_BY_HOP | {b"audit-id", b"content-length"}
#: ``Connection`` options that name no header beyond the hop-by-hop ones.
_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"}) | HOP_BY_HOP
#: Headers framing a body, kept whatever ``Connection`` names.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
#: Header name prefixes dropped from requests: proxy hop-by-hop headers and
#: the caller's own identity claims.
_REQUEST_DROP_PREFIXES = (b"proxy-", b"impersonate-", b"x-remote-")

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: What a caller's ``Audit-Id`` may be: a UUID, or any id of letters, digits
#: and ``-._:`` up to 128 bytes (nothing that could confuse a log reader).
_SANE_AUDIT_ID = re.compile(rb"[0-9A-Za-z][-._:0-9A-Za-z]{0,127}")
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
# Control characters other than HTAB never belong in a field value.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def valid_header(name: bytes, value: bytes) -> bool:
    """Whether ``name: value`` can be written as one safe header line."""
    return _BAD_VALUE.search(value) is None and _TOKEN.fullmatch(name) is not None


def caller_audit_id(headers: Sequence[Header]) -> bytes | None:
    """The caller's ``Audit-Id`` when it sent a sane one (the first such
    header, surrounding blanks stripped), else ``None``."""
    for name, value in headers:
        if len(name) == 8 and name.lower() == b"audit-id":
            found = value.strip()
            return found if _SANE_AUDIT_ID.fullmatch(found) is not None else None
    return None


class _RandomHex:
    """Hex digits from ``os.urandom``, fetched 4 KiB at a time (one
    ``getrandom`` call per 256 ids instead of one per id)."""

    def __init__(self) -> None:
        self._hex = b""
        self._at = 0

    def take32(self) -> bytes:
        """32 fresh random hex digits."""
        at = self._at
        if at + 32 > len(self._hex):
            self._hex = binascii.hexlify(os.urandom(4096))
            at = 0
        self._at = at + 32
        return self._hex[at : at + 32]

    def forget(self) -> None:
        """Drop the digits fetched (a forked child must not repeat its parent's ids)."""
        self._hex = b""
        self._at = 0


_random_hex = _RandomHex()
os.register_at_fork(after_in_child=_random_hex.forget)


def new_audit_id() -> bytes:
    """A fresh random (version 4) UUID, as kube-apiserver makes its ``Audit-Id``."""
    h = _random_hex.take32()
    variant = h[16:17].translate(_VARIANT)
    return b"%b-%b-4%b-%b%b-%b" % (h[:8], h[8:12], h[13:16], variant, h[17:20], h[20:])


#: the ``Connection`` values nearly every message carries, tokenized once
_USUAL_CONNECTION = {
    value: frozenset({value.lower()})
    for value in (b"keep-alive", b"Keep-Alive", b"close", b"Close", b"Upgrade", b"upgrade")
}


def websocket_protocols(value: bytes) -> bytes:
    """A ``Sec-WebSocket-Protocol`` value without its bearer-token entries
    (any entry starting with ``base64url.bearer.authorization.k8s.io``, in
    any case): the others in order, joined by ``", "``; ``b""`` when none
    is left (the header is then dropped)."""
    kept = []
    for raw in value.split(b","):
        entry = raw.strip()
        if entry and entry[: len(_BEARER_PROTOCOL)].lower() != _BEARER_PROTOCOL:
            kept.append(entry)
    return b", ".join(kept)


def websocket_bearer(value: bytes) -> str | None:
    """The bearer token a WebSocket client put in ``Sec-WebSocket-Protocol``
    (a browser cannot set ``Authorization``): the base64url (unpadded)
    text after ``base64url.bearer.authorization.k8s.io.``, as kube-apiserver
    reads it.  ``None`` when no entry carries one; ``""`` (a credential no
    authenticator accepts) when one is empty, not base64url, not text, or
    given twice."""
    prefix = _BEARER_PROTOCOL + b"."
    found: str | None = None
    for raw in value.split(b","):
        entry = raw.strip()
        if entry[: len(prefix)] != prefix:
            continue
        if found is not None:
            return ""
        encoded = entry[len(prefix) :]
        try:
            found = base64.urlsafe_b64decode(encoded + b"=" * (-len(encoded) % 4)).decode()
        except (binascii.Error, ValueError):
            return ""
        if not found or "=" in encoded.decode("latin-1"):
            return ""
    return found


def _connection_tokens(values: list[bytes]) -> frozenset[bytes]:
    if len(values) == 1:
        usual = _USUAL_CONNECTION.get(values[0])
        if usual is not None:
            return usual
    tokens: set[bytes] = set()
    for value in values:
        for raw in value.split(b","):
            token = raw.strip().lower()
            if token:
                tokens.add(token)
    return frozenset(tokens)


@dataclass(slots=True)
class RequestHeaders:
    """The result of one pass over a caller's request headers."""

    #: headers to forward, in order, original case
    forward: list[Header]
    #: ``Content-Length`` as sent (``None`` when absent)
    content_length: int | None
    #: whether the body was sent chunked
    chunked: bool
    #: the ``Upgrade`` value when ``Connection`` asks for an upgrade
    upgrade: bytes | None


def request_drops(
    names: Iterable[bytes] = (), prefixes: Iterable[bytes] = ()
) -> tuple[frozenset[bytes], tuple[bytes, ...]]:
    """The request header names and name prefixes :func:`split_request`
    drops, plus ``names`` and ``prefixes`` (lower-case; the configured
    front-proxy headers): build once, pass to every call."""
    return (
        _REQUEST_DROP | frozenset(n.lower() for n in names),
        _REQUEST_DROP_PREFIXES + tuple(p.lower() for p in prefixes),
    )


def _noted(noted: list[tuple[bytes, bytes]], lname: bytes) -> list[bytes]:
    return [value for name, value in noted if name == lname]


def _framing(
    noted: list[tuple[bytes, bytes]], forward: list[Header], content_length: int | None
) -> tuple[frozenset[bytes], list[Header], int | None, bool]:
    """What the dropped headers (``noted``) say of a message: the
    ``Connection`` options (a header they name leaves ``forward`` too, but
    ``Content-Length``: the body's framing is never dropped that way) and
    whether the body is chunked (``Content-Length`` then goes); returns
    ``(options, forward, content_length, chunked)``."""
    named = _connection_tokens(_noted(noted, b"connection"))
    if not named <= _CONNECTION_OPTIONS:
        dropped = named - _FRAMING
        forward = [h for h in forward if h[0].lower() not in dropped]
    chunked = any(b"chunked" in v.lower() for v in _noted(noted, b"transfer-encoding"))
    if chunked:
        forward = [(n, v) for n, v in forward if n.lower() != b"content-length"]
        content_length = None
    return named, forward, content_length, chunked


def split_request(
    headers: Sequence[Header],
    drop: frozenset[bytes] = _REQUEST_DROP,
    drop_prefixes: tuple[bytes, ...] = _REQUEST_DROP_PREFIXES,
) -> RequestHeaders:
    """Sort a caller's request headers into what is forwarded and what the
    gateway restates (framing, upgrade, WebSocket subprotocols without
    bearer tokens).  ``drop`` and
    ``drop_prefixes`` (from :func:`request_drops`) name what never goes
    upstream; they must include the built-in ones.

    ``headers`` are as llhttp parsed them: llhttp refuses a name that is
    not a token and a value with a control character (see
    :func:`valid_header`), so they are not checked again here."""
    forward: list[Header] = []
    noted: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    for header in headers:
        lname = header[0].lower()
        if lname in drop or lname.startswith(drop_prefixes):
            if lname in _REQUEST_NOTED:
                noted.append((lname, header[1]))
            continue
        if lname == b"content-length":
            value = header[1].strip()
            content_length = int(value) if value.isdigit() else None
        forward.append(header)
    if not noted:
        return RequestHeaders(forward, content_length, False, None)
    named, forward, content_length, chunked = _framing(noted, forward, content_length)
    if _WEBSOCKET_PROTOCOL not in named:
        for value in _noted(noted, _WEBSOCKET_PROTOCOL):
            kept = websocket_protocols(value)
            if kept:
                forward.append((b"Sec-WebSocket-Protocol", kept))
    upgrade_value: bytes | None = None
    if b"upgrade" in named:
        ups = _noted(noted, b"upgrade")
        if ups and ups[0].strip():
            upgrade_value = ups[0].strip()
    return RequestHeaders(forward, content_length, chunked, upgrade_value)


@dataclass(slots=True)
class ResponseHeaders:
    """The result of one pass over a cluster's response headers."""

    #: headers to forward, in order, original case (``Content-Length`` kept)
    forward: list[Header]
    #: ``Content-Length`` as sent (``None`` when absent)
    content_length: int | None
    #: whether the upstream sent the body chunked
    chunked: bool
    #: whether the upstream asked to close its connection
    close: bool


def split_response(headers: Sequence[Header], upgrade: bool = False) -> ResponseHeaders:
    """Drop hop-by-hop headers and the cluster's ``Audit-Id`` (the gateway
    adds its own) from a cluster's response; for a ``101`` (``upgrade``),
    ``Connection: Upgrade`` and ``Upgrade`` are kept.

    ``headers`` are as llhttp parsed them (or checked with
    :func:`valid_header`, for HTTP/2): they are not checked again here."""
    forward: list[Header] = []
    noted: list[tuple[bytes, bytes]] = []
    content_length: int | None = None
    for header in headers:
        lname = header[0].lower()
        if lname in _RESPONSE_NOTED or lname.startswith(b"proxy-"):
            if lname == b"content-length":
                value = header[1].strip()
                content_length = int(value) if value.isdigit() else None
                forward.append(header)
            elif upgrade and lname == b"upgrade":
                forward.append(header)
            else:
                noted.append((lname, header[1]))
            continue
        forward.append(header)
    named: frozenset[bytes] = frozenset()
    chunked = False
    if noted:
        named, forward, content_length, chunked = _framing(noted, forward, content_length)
    if upgrade:
        forward.append((b"Connection", b"Upgrade"))
    return ResponseHeaders(forward, content_length, chunked, b"close" in named)


def lines(headers: Sequence[Header]) -> list[bytes]:
    """``headers`` as the pieces of header lines, ready for ``b"".join``."""
    parts: list[bytes] = []
    for name, value in headers:
        parts += (name, b": ", value, b"\r\n")
    return parts
