"""One request to a cluster, and its two wire forms (sans-IO).

An :class:`UpstreamRequest` is what every caller hands a cluster's pool
(:meth:`karpor.upstream.pool.ClusterPool.submit`): a proxied request (the
front), an upgrade request, a health probe.  It says what to ask and never
how: the pool adds the cluster's :class:`Credential` (its ``Host`` or
``:authority``, its token, the endpoint's path prefix), and the carrier
that takes the request writes it in its own framing with one of the two
builders here, both reading the same fields in the same order:

- :func:`http1_head` for an HTTP/1.1 connection (pooled or dedicated);
- :func:`h2_header_list` for an HTTP/2 stream.

What differs between them is only what each protocol demands: HTTP/2 has
lower-case names and pseudo-headers (``:method``, ``:path``, ``:scheme``,
``:authority``) and no hop-by-hop headers (``Connection``, ``Upgrade``,
``Transfer-Encoding``); HTTP/1.1 has ``Host`` and states the body's framing.

Built once per request without copying: ``headers`` is the caller's header
list as the rewrite left it (:func:`karpor.http.headers.split_request`), the
:class:`Credential` is shared by every request with the same token.  The
body's bytes are not here: the exchange carrying the request feeds them to
its carrier as the client sends them; ``body`` says how they are framed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from karpor.http.headers import Header, valid_header

#: ``UpstreamRequest.body``: no body follows the head
NO_BODY = 0
#: ``UpstreamRequest.body``: a body of the ``Content-Length`` among the headers
LENGTH = 1
#: ``UpstreamRequest.body``: a body of unknown length (HTTP/1.1 sends it
#: chunked, HTTP/2 in DATA frames)
CHUNKED = 2


class UpstreamRequest(NamedTuple):
    """What to ask a cluster (see the module docstring).

    ``target`` is the path and query as the cluster's API sees them (the
    endpoint's prefix is the :class:`Credential`'s); ``headers`` the
    caller's headers to forward, already rewritten (written as they are);
    ``identity`` the headers the gateway decided on (``Impersonate-*``),
    each checked with :func:`~karpor.http.headers.valid_header` when
    written; ``forwarded_for`` the ``X-Forwarded-For`` value (``None``:
    no such header); ``audit_id`` the ``Audit-Id`` (``b""``: none);
    ``upgrade`` the protocol an upgrade request asks for (it then travels
    on a dedicated HTTP/1.1 connection).
    """

    method: bytes
    target: bytes
    headers: Sequence[Header] = ()
    #: how the body is framed: :data:`NO_BODY`, :data:`LENGTH` or :data:`CHUNKED`
    body: int = NO_BODY
    identity: Sequence[Header] = ()
    forwarded_for: bytes | None = None
    audit_id: bytes = b""
    upgrade: bytes | None = None


class Credential(NamedTuple):
    """How requests present themselves to one cluster, in both wire forms:
    built once per cluster definition (or per exec-plugin token) by
    :class:`~karpor.upstream.credentials.ClusterCredentials`, shared by
    every request: never modified."""

    #: the endpoint's path (``/k8s/clusters/c-1``), put before every target
    prefix: bytes
    #: HTTP/1.1: the ``Host`` line and the credential's (CRLF-ended)
    block: bytes
    #: HTTP/2: ``:scheme``, ``:authority`` and the credential's ``authorization``
    h2: tuple[Header, ...]


#: The credential of an exchange the pool has not resolved yet (it waits
#: for an exec plugin, or was never submitted).
UNRESOLVED = Credential(b"", b"", ())


def http1_head(request: UpstreamRequest, credential: Credential) -> bytes:
    """The HTTP/1.1 head of ``request`` with ``credential``, in one piece:
    the request line, the cluster's lines, ``Audit-Id``, the caller's
    headers, the identity headers (a line that cannot be written safely is
    left out), ``X-Forwarded-For``, then the framing the gateway restates
    (``Connection: Upgrade``, ``Transfer-Encoding: chunked``)."""
    parts: list[bytes] = [
        request.method,
        b" ",
        credential.prefix,
        request.target,
        b" HTTP/1.1\r\n",
        credential.block,
    ]
    audit_id = request.audit_id
    if audit_id:
        parts += (b"Audit-Id: ", audit_id, b"\r\n")
    for name, value in request.headers:
        parts += (name, b": ", value, b"\r\n")
    for name, value in request.identity:
        if valid_header(name, value):
            parts += (name, b": ", value, b"\r\n")
    forwarded_for = request.forwarded_for
    if forwarded_for is not None:
        parts += (b"X-Forwarded-For: ", forwarded_for, b"\r\n")
    upgrade = request.upgrade
    if upgrade is not None:
        parts += (b"Connection: Upgrade\r\nUpgrade: ", upgrade, b"\r\n")
    if request.body == CHUNKED:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def h2_header_list(request: UpstreamRequest, credential: Credential) -> list[Header]:
    """The HTTP/2 header list of ``request`` with ``credential``: the same
    headers as :func:`http1_head` but for the framing (never an upgrade:
    those go over HTTP/1.1), names lower-cased, the pseudo-headers and the
    cluster's ``:authority`` and credential first, ``audit-id`` last."""
    out: list[Header] = [
        (b":method", request.method),
        (b":path", credential.prefix + request.target),
    ]
    out += credential.h2
    for name, value in request.headers:
        out.append((name.lower(), value))
    for name, value in request.identity:
        if valid_header(name, value):
            out.append((name.lower(), value))
    forwarded_for = request.forwarded_for
    if forwarded_for is not None:
        out.append((b"x-forwarded-for", forwarded_for))
    audit_id = request.audit_id
    if audit_id:
        out.append((b"audit-id", audit_id))
    return out
