"""Front-proxy authentication: the identity in ``X-Remote-*`` headers (sans-IO).

When karpor runs behind a kube-apiserver as an aggregated APIService, the
apiserver authenticates the caller and forwards the request with the
caller's identity in headers (``X-Remote-User``, ``X-Remote-Group``,
``X-Remote-Extra-<key>``), on a connection authenticated by a client
certificate from its *requestheader* (front-proxy) CA.  Those headers are
trusted only on such a connection: the caller checks the certificate's
chain against the requestheader CA (with
:class:`~karpor.auth.authenticate.CertificateAuthenticator`) and hands the
certificate's CN here, where it is checked against ``allowedNames``.

The headers are read as kube-apiserver's requestheader authenticator reads
them (``k8s.io/apiserver/pkg/authentication/request/headerrequest``):

- user: the first *non-empty* value among ``usernameHeaders`` (for each
  header in order, its first value); none: not authenticated this way;
- uid: likewise from ``uidHeaders`` (kube 1.32+; empty by default);
- groups: every non-empty value of every ``groupHeaders`` header, in order
  (values are not split on commas);
- extra: for each prefix of ``extraHeadersPrefix``, each header whose name
  starts with it (case-insensitively) gives the key: the rest of the name,
  lower-cased, then percent-decoded (kept as is when it does not decode);
  all its values are appended.

Header names compare case-insensitively; values are taken as sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from karpor.auth.identity import Identity

#: a request header as the front protocol has it (bytes) or as text
HeaderPair = tuple[bytes, bytes] | tuple[str, str]


@dataclass(frozen=True)
class RequestHeaderConfig:
    """The ``authentication.requestHeader`` settings, minus the CA file."""

    #: CNs a front-proxy certificate may have; empty: any certificate of the CA
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_headers_prefix: tuple[str, ...] = ("X-Remote-Extra-",)
    uid_headers: tuple[str, ...] = ()

    def header_names(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """``(names, prefixes)`` (lower-case) of every header this
        configuration reads: they must never be forwarded to a cluster."""
        names = tuple(
            n.lower() for n in (*self.username_headers, *self.group_headers, *self.uid_headers)
        )
        return names, tuple(p.lower() for p in self.extra_headers_prefix)


def allowed_common_name(config: RequestHeaderConfig, common_name: str | None) -> bool:
    """Whether a certificate (already verified against the requestheader
    CA) with ``common_name`` may assert identities in headers."""
    if common_name is None:
        return False
    return not config.allowed_names or common_name in config.allowed_names


def _text(value: bytes | str) -> str:
    if isinstance(value, bytes):
        # header bytes as Go keeps them: any byte string; UTF-8 where it is
        return value.decode("utf-8", "surrogateescape")
    return value


def _lowered(headers: Sequence[HeaderPair]) -> list[tuple[str, str, str]]:
    out = []
    for name, value in headers:
        text = _text(name)
        out.append((text.lower(), text, _text(value)))
    return out


def authenticate_headers(
    config: RequestHeaderConfig,
    common_name: str | None,
    headers: Sequence[HeaderPair],
) -> Identity | None:
    """The identity the front proxy asserts, or ``None``.

    ``common_name`` is the CN of the connection's client certificate, which
    the caller has verified against the requestheader CA (``None`` when there
    is no such certificate); ``headers`` are the request's ``(name, value)``
    pairs in order.  ``None`` when the CN is not allowed or no username
    header has a value: authentication goes on with the next method.
    """
    if not allowed_common_name(config, common_name):
        return None
    lowered = _lowered(headers)
    user = _first_value(lowered, config.username_headers)
    if not user:
        return None
    uid = _first_value(lowered, config.uid_headers)
    groups: list[str] = []
    for name in config.group_headers:
        wanted = name.lower()
        groups.extend(v for lname, _, v in lowered if lname == wanted and v)
    extra: dict[str, tuple[str, ...]] = {}
    for prefix in config.extra_headers_prefix:
        lprefix = prefix.lower()
        for lname, original, value in lowered:
            if not lname.startswith(lprefix):
                continue
            key = unescape_extra_key(original[len(prefix) :].lower())
            extra[key] = (*extra.get(key, ()), value)
    return Identity(user=user, groups=tuple(groups), uid=uid, extra=extra)


def _first_value(lowered: list[tuple[str, str, str]], names: Sequence[str]) -> str:
    """The first value of the first header of ``names`` that has a non-empty one
    (Go's ``Header.Get``: the first value of a header only)."""
    for name in names:
        wanted = name.lower()
        for lname, _, value in lowered:
            if lname == wanted:
                if value:
                    return value
                break
    return ""


def unescape_extra_key(encoded: str) -> str:
    """An extra key from a header name suffix, percent-decoded as Go's
    ``url.PathUnescape`` (the suffix as is when it does not decode)."""
    if "%" not in encoded:
        return encoded
    raw = encoded.encode("utf-8", "surrogateescape")
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # '%'
            pair = raw[i + 1 : i + 3]
            if len(pair) != 2 or any(c not in b"0123456789abcdefABCDEF" for c in pair):
                return encoded
            i += 3
        else:
            i += 1
    return unquote(encoded, errors="surrogateescape")
