"""Header rewriting (sans-IO), with hypothesis for what must never be forwarded."""

from __future__ import annotations

import contextlib
import re

import httptools
from hypothesis import given
from hypothesis import strategies as st

from karpor.http.headers import (
    Header,
    RequestHeaders,
    caller_audit_id,
    new_audit_id,
    split_request,
    split_response,
    valid_header,
    websocket_protocols,
)
from karpor.upstream.request import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    Credential,
    UpstreamRequest,
    h2_header_list,
    http1_head,
)

BLOCK = b"Host: cluster.example:6443\r\nAuthorization: Bearer cluster-token\r\n"


def _request(
    method: bytes,
    target: bytes,
    req: RequestHeaders,
    client: bytes,
    identity: list[Header] | None = None,
    audit_id: bytes = b"",
) -> UpstreamRequest:
    """The upstream request the front builds from a caller's rewritten headers."""
    body = CHUNKED if req.chunked else LENGTH if req.content_length else NO_BODY
    return UpstreamRequest(
        method, target, req.forward, body, identity or (), client, audit_id, req.upgrade
    )


def request_head(
    method: bytes,
    target: bytes,
    req: RequestHeaders,
    block: bytes,
    client: bytes,
    identity: list[Header] | None = None,
    audit_id: bytes = b"",
) -> bytes:
    """The HTTP/1.1 head of that request with the cluster ``block``."""
    return http1_head(
        _request(method, target, req, client, identity, audit_id), Credential(b"", block, ())
    )


def h2_request_headers(
    method: bytes,
    target: bytes,
    req: RequestHeaders,
    cluster: list[Header],
    client: bytes,
    audit_id: bytes = b"",
) -> list[Header]:
    """The HTTP/2 header list of that request with the cluster's ``cluster`` headers."""
    return h2_header_list(
        _request(method, target, req, client, audit_id=audit_id),
        Credential(b"", b"", tuple(cluster)),
    )


def _parse_head(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """Parse a request head with llhttp, as a cluster would."""

    class P:
        def __init__(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

    p = P()
    parser = httptools.HttpRequestParser(p)
    with contextlib.suppress(httptools.HttpParserUpgrade):  # a well-formed upgrade
        parser.feed_data(head)
    return p.url, p.headers


def _as_parsed(
    headers: list[tuple[bytes, bytes]], response: bool = False
) -> list[tuple[bytes, bytes]] | None:
    """``headers`` written as the raw lines of a request (or response) head
    and parsed by llhttp, as the gateway receives them; ``None`` when
    llhttp refuses the head (the gateway answers 400, or 502 for a
    response)."""
    raw = b"".join(b"%b: %b\r\n" % (name, value) for name, value in headers)
    start = b"HTTP/1.1 200 OK\r\n" if response else b"GET /api HTTP/1.1\r\nHost: h\r\n"

    class P:
        def __init__(self) -> None:
            self.headers: list[tuple[bytes, bytes]] = []
            self.complete = False

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            self.complete = True

    p = P()
    parser = httptools.HttpResponseParser(p) if response else httptools.HttpRequestParser(p)
    try:
        parser.feed_data(start + raw + b"\r\n")
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return None
    return p.headers if p.complete else None


def test_request_rewrite() -> None:
    req = split_request(
        [
            (b"Host", b"gateway:8443"),
            (b"Authorization", b"Bearer caller"),
            (b"Accept", b"application/json"),
            (b"Connection", b"keep-alive, X-Secret"),
            (b"X-Secret", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"TE", b"trailers"),
            (b"Proxy-Authorization", b"Basic x"),
            (b"Impersonate-User", b"admin"),
            (b"impersonate-group", b"system:masters"),
            (b"X-Remote-User", b"admin"),
            (b"Upgrade", b"h2c"),
            (b"X-Forwarded-For", b"10.0.0.1"),
            (b"User-Agent", b"kubectl"),
        ]
    )
    head = request_head(b"GET", b"/api/v1/pods?watch=1", req, BLOCK, b"127.0.0.1")
    url, headers = _parse_head(head)
    assert url == b"/api/v1/pods?watch=1"
    assert headers == [
        (b"Host", b"cluster.example:6443"),
        (b"Authorization", b"Bearer cluster-token"),
        (b"Accept", b"application/json"),
        (b"User-Agent", b"kubectl"),
        (b"X-Forwarded-For", b"127.0.0.1"),
    ]
    assert not req.chunked and req.content_length is None and req.upgrade is None


def test_identity_headers_are_added_after_stripping() -> None:
    req = split_request([(b"Impersonate-User", b"root")])
    head = request_head(
        b"GET", b"/", req, BLOCK, b"::1", identity=[(b"Impersonate-User", b"alice")]
    )
    _, headers = _parse_head(head)
    assert (b"Impersonate-User", b"alice") in headers
    assert (b"Impersonate-User", b"root") not in headers


def test_chunked_body_is_restated() -> None:
    req = split_request([(b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"x/y")])
    assert req.chunked
    head = request_head(b"POST", b"/", req, BLOCK, b"1.2.3.4")
    assert head.endswith(b"Transfer-Encoding: chunked\r\n\r\n")
    assert head.count(b"Transfer-Encoding") == 1


def test_content_length_is_kept() -> None:
    req = split_request([(b"Content-Length", b"12")])
    assert req.content_length == 12
    assert b"Content-Length: 12\r\n" in request_head(b"PUT", b"/", req, BLOCK, b"h")


def test_upgrade_request_keeps_upgrade() -> None:
    req = split_request([(b"Connection", b"Upgrade"), (b"Upgrade", b"SPDY/3.1")])
    assert req.upgrade == b"SPDY/3.1"
    head = request_head(b"POST", b"/exec?command=sh", req, BLOCK, b"h")
    assert b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n" in head


def test_response_rewrite() -> None:
    resp = split_response(
        [
            (b"Content-Type", b"application/json"),
            (b"Transfer-Encoding", b"chunked"),
            (b"Connection", b"close, X-Hop"),
            (b"X-Hop", b"1"),
            (b"Keep-Alive", b"timeout=5"),
            (b"Proxy-Authenticate", b"Basic"),
            (b"Audit-Id", b"abc"),
        ]
    )
    # the cluster's Audit-Id never reaches the caller: the gateway states its own
    assert resp.forward == [(b"Content-Type", b"application/json")]
    assert resp.chunked and resp.close and resp.content_length is None


def test_response_upgrade() -> None:
    resp = split_response(
        [(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"), (b"Sec-WebSocket-Accept", b"x")],
        upgrade=True,
    )
    assert (b"Upgrade", b"websocket") in resp.forward
    assert (b"Connection", b"Upgrade") in resp.forward


# -- source addresses and WebSocket bearer tokens -----------------------------------


_SOURCE_CLAIMS = [
    b"X-Forwarded-For",
    b"x-real-ip",
    b"Forwarded",
    b"X-REAL-IP",
    b"X-Forwarded-Host",
    b"x-forwarded-proto",
]


@given(st.lists(st.sampled_from(_SOURCE_CLAIMS)))
def test_the_callers_source_address_claims_never_pass(names: list[bytes]) -> None:
    req = split_request([(name, b"203.0.113.9") for name in names])
    head = request_head(b"GET", b"/api", req, BLOCK, b"192.0.2.7")
    _, headers = _parse_head(head)
    lowered = [(n.lower(), v) for n, v in headers]
    assert [v for n, v in lowered if n == b"x-forwarded-for"] == [b"192.0.2.7"]
    claims = {b"x-real-ip", b"forwarded", b"x-forwarded-host", b"x-forwarded-proto"}
    assert not claims & {n for n, _ in lowered}
    h2 = h2_request_headers(b"GET", b"/api", req, [(b":authority", b"c")], b"192.0.2.7")
    assert [v for n, v in h2 if n == b"x-forwarded-for"] == [b"192.0.2.7"]
    assert b"203.0.113.9" not in head and all(b"203.0.113.9" not in v for _, v in h2)


_BEARER_PREFIX = b"base64url.bearer.authorization.k8s.io."
_token = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8)
_protocol = st.sampled_from(
    [b"v5.channel.k8s.io", b"v4.channel.k8s.io", b"base64.channel.k8s.io", b"SPDY/3.1+x"]
)
_bearer = st.builds(
    lambda prefix, token: prefix + token.encode(),
    st.sampled_from(
        [_BEARER_PREFIX, _BEARER_PREFIX.upper(), b"Base64url.Bearer.authorization.k8s.io."]
    ),
    _token,
)


@given(
    st.lists(st.lists(st.one_of(_protocol, _bearer), max_size=4), min_size=1, max_size=3),
    st.sampled_from([b",", b", ", b" ,  "]),
)
def test_bearer_tokens_in_websocket_protocols_never_pass(
    headers: list[list[bytes]], separator: bytes
) -> None:
    raw = [(b"Sec-WebSocket-Protocol", separator.join(entries)) for entries in headers]
    req = split_request([(b"Connection", b"Upgrade"), (b"Upgrade", b"websocket"), *raw])
    forwarded = [v for n, v in req.forward if n.lower() == b"sec-websocket-protocol"]
    # each header keeps its other entries, in order; one left empty goes
    expected = [
        b", ".join(e for e in entries if not e.lower().startswith(_BEARER_PREFIX))
        for entries in headers
    ]
    assert forwarded == [e for e in expected if e]
    head = request_head(b"GET", b"/exec", req, BLOCK, b"h")
    assert b"bearer.authorization" not in head.lower()


def test_websocket_protocols() -> None:
    token = b"base64url.bearer.authorization.k8s.io.c2VjcmV0"
    assert websocket_protocols(token + b", v5.channel.k8s.io") == b"v5.channel.k8s.io"
    assert websocket_protocols(b" v4.channel.k8s.io ,v5.channel.k8s.io") == (
        b"v4.channel.k8s.io, v5.channel.k8s.io"
    )
    assert websocket_protocols(token) == b""
    assert websocket_protocols(b"base64url.bearer.authorization.k8s.io") == b""


# -- Audit-Id ------------------------------------------------------------------------

_UUID4 = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_new_audit_ids_are_distinct_v4_uuids() -> None:
    ids = {new_audit_id() for _ in range(2000)}
    assert len(ids) == 2000
    for audit_id in ids:
        assert _UUID4.fullmatch(audit_id), audit_id


@given(st.sampled_from([b"Audit-Id", b"audit-id", b"AUDIT-ID"]))
def test_a_sane_caller_audit_id_is_kept(name: bytes) -> None:
    for sane in (b"0f5b8c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f", b"req.42:retry-1", b"X" * 128):
        assert caller_audit_id([(b"Accept", b"*/*"), (name, b" " + sane + b" ")]) == sane


@given(
    st.one_of(
        st.binary(max_size=200).filter(
            lambda v: re.fullmatch(rb"[0-9A-Za-z][-._:0-9A-Za-z]{0,127}", v.strip()) is None
        ),
        st.sampled_from([b"", b"a b", b"-leading", b"x" * 129, b"id\r\nX-Evil: 1", b"caf\xc3\xa9"]),
    )
)
def test_an_insane_caller_audit_id_is_replaced(value: bytes) -> None:
    assert caller_audit_id([(b"Audit-Id", value)]) is None


def test_no_caller_audit_id() -> None:
    assert caller_audit_id([(b"Accept", b"*/*"), (b"Audit-Ids", b"x")]) is None


def test_the_callers_audit_id_header_is_dropped_and_the_gateways_sent() -> None:
    req = split_request([(b"Audit-Id", b"caller-id"), (b"audit-id", b"second"), (b"Accept", b"x")])
    assert all(n.lower() != b"audit-id" for n, _ in req.forward)
    head = request_head(b"GET", b"/api", req, BLOCK, b"h", audit_id=b"gateway-id")
    _, headers = _parse_head(head)
    assert [v for n, v in headers if n.lower() == b"audit-id"] == [b"gateway-id"]
    h2 = h2_request_headers(b"GET", b"/api", req, [(b":authority", b"c")], b"h", audit_id=b"gw")
    assert [v for n, v in h2 if n == b"audit-id"] == [b"gw"]
    assert b"Audit-Id" not in request_head(b"GET", b"/api", req, BLOCK, b"h")


# -- generated header sets --------------------------------------------------------

_FORBIDDEN_NAMES = [
    b"Authorization",
    b"Impersonate-User",
    b"Impersonate-Group",
    b"Impersonate-Uid",
    b"Impersonate-Extra-Scopes",
    b"X-Remote-User",
    b"X-Remote-Group",
    b"X-Remote-Extra-Foo",
    b"Proxy-Authorization",
    b"Proxy-Connection",
    b"Keep-Alive",
    b"TE",
    b"Trailer",
    b"Transfer-Encoding",
    b"Upgrade",
    b"Host",
]


def _case_variants(name: bytes) -> st.SearchStrategy[bytes]:
    return st.lists(st.booleans(), min_size=len(name), max_size=len(name)).map(
        lambda flips: bytes(
            (c ^ 0x20) if flip and chr(c).isalpha() else c
            for c, flip in zip(name, flips, strict=True)
        )
    )


_forbidden = st.sampled_from(_FORBIDDEN_NAMES).flatmap(_case_variants)
_ordinary = st.sampled_from([b"Accept", b"User-Agent", b"X-Custom", b"Content-Type", b"Audit-Id"])
_value = st.one_of(
    st.sampled_from([b"v", b"Bearer stolen", b"admin", b"system:masters"]),
    st.binary(max_size=20),
    st.builds(
        lambda a, b: a + b"\r\nAuthorization: Bearer smuggled" + b,
        st.binary(max_size=5),
        st.binary(max_size=5),
    ),
)
_headers = st.lists(
    st.tuples(st.one_of(_forbidden, _ordinary, st.binary(min_size=1, max_size=12)), _value),
    max_size=14,
)


@given(_headers, st.booleans())
def test_forbidden_headers_never_forwarded(headers: list[tuple[bytes, bytes]], conn: bool) -> None:
    if conn:
        headers = [*headers, (b"Connection", b"x-custom, upgrade")]
    parsed_in = _as_parsed(headers)
    if parsed_in is None:
        return  # llhttp refuses the request: 400, nothing forwarded
    req = split_request(parsed_in)
    head = request_head(b"GET", b"/api", req, BLOCK, b"10.1.1.1")
    url, parsed = _parse_head(head)  # never a parse error: every line is well formed
    assert url == b"/api"
    names = [n.lower() for n, _ in parsed]
    assert names.count(b"authorization") == 1
    assert (b"Authorization", b"Bearer cluster-token") in parsed
    assert names.count(b"host") == 1
    for lname in names:
        assert not lname.startswith((b"impersonate-", b"x-remote-", b"proxy-"))
        assert lname not in {b"keep-alive", b"te", b"trailer", b"transfer-encoding"}
        if req.upgrade is None:
            assert lname not in {b"upgrade", b"connection"}
    if conn:
        assert b"x-custom" not in names
    if req.upgrade is not None:
        assert (b"Connection", b"Upgrade") in parsed
        assert names.count(b"upgrade") == 1
    for _, value in parsed:
        assert b"smuggled" not in value or b"\r" not in value
    assert head.count(b"\r\n\r\n") == 1 and head.endswith(b"\r\n\r\n")


@given(_headers)
def test_response_headers_are_safe(headers: list[tuple[bytes, bytes]]) -> None:
    parsed = _as_parsed(headers, response=True)
    if parsed is None:
        return  # llhttp refuses the response: 502, nothing forwarded
    resp = split_response(parsed)
    for name, value in resp.forward:
        assert valid_header(name, value)
        assert name.lower() not in {
            b"connection",
            b"keep-alive",
            b"transfer-encoding",
            b"te",
            b"trailer",
            b"upgrade",
        }
        assert not name.lower().startswith(b"proxy-")


_raw_field = st.one_of(
    st.binary(max_size=16),
    st.builds(
        lambda a, sep, b: a + sep + b,
        st.binary(max_size=6),
        st.sampled_from([b"\r\n ", b"\r\n\t", b"\n", b"\r", b"\x00", b"\x7f", b"\t"]),
        st.binary(max_size=6),
    ),
)


@given(st.lists(st.tuples(_raw_field, _raw_field), min_size=1, max_size=6), st.booleans())
def test_llhttp_accepts_only_valid_headers(
    headers: list[tuple[bytes, bytes]], response: bool
) -> None:
    """What split_request and split_response rely on: every header llhttp
    hands over, from any bytes a peer sends, is one valid_header accepts."""
    parsed = _as_parsed(headers, response=response)
    for name, value in parsed or []:
        assert valid_header(name, value), (name, value)
