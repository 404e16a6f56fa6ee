"""One upstream request model, two wire forms (sans-IO, hypothesis): for any
UpstreamRequest and cluster credential, the HTTP/1.1 head and the HTTP/2
header list carry the same method, target and headers; they differ only in
what each protocol demands (Host vs :authority, lower-case names, framing)."""

from __future__ import annotations

import contextlib
import functools
import string

import httptools
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.testing import MemoryReactorClock

from karpor.config.model import Cluster, Credential, TokenCredential
from karpor.health.exchange import probe_request
from karpor.http.headers import Header, valid_header
from karpor.upstream.credentials import ClusterCredentials
from karpor.upstream.request import (
    CHUNKED,
    LENGTH,
    NO_BODY,
    UpstreamRequest,
    h2_header_list,
    http1_head,
)

#: names a caller's rewritten headers may have (never hop-by-hop or Host:
#: split_request drops those; never Content-Length: its framing is tested apart)
_NAME = st.builds(
    bytes.__add__,
    st.sampled_from([b"X-", b"Accept", b"User-Agent", b"Content-Type", b"Impersonate-"]),
    st.text("abcXYZ019-", max_size=8).map(str.encode),
)
_VALUE = st.builds(
    bytes.__add__,
    st.text(string.ascii_letters + string.digits + "-_./:;=,*", min_size=1, max_size=12).map(
        str.encode
    ),
    st.sampled_from([b"", b" x", b"\tkept"]),
)
_HEADER = st.tuples(_NAME, _VALUE)
#: identity headers the gateway adds: some cannot be written (a CR or LF)
_IDENTITY = st.tuples(
    st.sampled_from([b"Impersonate-User", b"Impersonate-Group", b"Bad Name"]),
    st.one_of(_VALUE, st.just(b"evil\r\nX-Injected: 1")),
)
_TARGET = st.builds(
    bytes.__add__,
    st.text(string.ascii_letters + "/._-", max_size=24).map(lambda t: b"/" + t.encode()),
    st.sampled_from([b"", b"?watch=true", b"?a=1&b=%20"]),
)

_REQUEST = st.builds(
    UpstreamRequest,
    st.sampled_from([b"GET", b"POST", b"PUT", b"PATCH", b"DELETE", b"HEAD"]),
    _TARGET,
    st.lists(_HEADER, max_size=6),
    st.sampled_from([NO_BODY, LENGTH, CHUNKED]),
    st.lists(_IDENTITY, max_size=3),
    st.one_of(st.none(), st.sampled_from([b"192.0.2.7", b"2001:db8::1"])),
    st.one_of(st.just(b""), st.just(b"0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9")),
    upgrade=st.none(),
)

_CLUSTERS = [
    ("https://10.0.0.1:6443", TokenCredential(token="cluster-token")),
    ("https://api.example:443/k8s/clusters/c-1", TokenCredential(token="t")),
    ("http://[2001:db8::5]:8080", None),
]


@functools.cache
def _credentials(index: int) -> ClusterCredentials:
    endpoint, credential = _CLUSTERS[index]
    cred: Credential | None = credential
    cluster = Cluster(name="c", endpoint=endpoint, credential=cred, insecure=True)
    return ClusterCredentials(cluster, MemoryReactorClock())


def _parse(head: bytes) -> tuple[bytes, bytes, list[Header]]:
    """Method, target and headers of an HTTP/1.1 head, as llhttp reads them."""

    class Collect:
        def __init__(self) -> None:
            self.url = b""
            self.headers: list[Header] = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name, value))

    collect = Collect()
    parser = httptools.HttpRequestParser(collect)
    with contextlib.suppress(httptools.HttpParserUpgrade):
        parser.feed_data(head)
    return parser.get_method(), collect.url, collect.headers


_FRAMING = {b"connection", b"upgrade", b"transfer-encoding"}


@given(_REQUEST, st.sampled_from(range(len(_CLUSTERS))))
def test_both_wire_forms_carry_the_same_request(request: UpstreamRequest, index: int) -> None:
    credential = _credentials(index).current()
    method, target, h1 = _parse(http1_head(request, credential))
    h2 = h2_header_list(request, credential)
    pseudo = dict(h for h in h2 if h[0].startswith(b":"))
    plain = [h for h in h2 if not h[0].startswith(b":")]
    # the same method and target (the endpoint's prefix before it)
    assert method == pseudo[b":method"] == request.method
    assert target == pseudo[b":path"] == credential.prefix + request.target
    # Host is :authority; the cluster's scheme goes as :scheme
    hosts = [v for n, v in h1 if n == b"Host"]
    assert hosts == [pseudo[b":authority"]]
    assert pseudo[b":scheme"] in (b"https", b"http")
    # every other header the same (the caller's in their order), but for
    # the case of names and the framing HTTP/1.1 alone states
    rest = [(n.lower(), v) for n, v in h1 if n != b"Host" and n.lower() not in _FRAMING]
    assert sorted(rest) == sorted(plain)
    callers = {(n.lower(), v) for n, v in request.headers}
    assert [h for h in rest if h in callers] == [h for h in plain if h in callers]
    assert all(n == n.lower() for n, _ in plain)
    # what the model asked for, and nothing else
    expected = [(n.lower(), v) for n, v in request.headers]
    expected += [(n.lower(), v) for n, v in request.identity if valid_header(n, v)]
    for name, value in expected:
        assert (name, value) in plain
    assert b"x-injected" not in {n for n, _ in plain}
    assert [v for n, v in plain if n == b"x-forwarded-for"] == (
        [request.forwarded_for] if request.forwarded_for is not None else []
    )
    assert [v for n, v in plain if n == b"audit-id"] == (
        [request.audit_id] if request.audit_id else []
    )
    # the framing: HTTP/1.1 restates a chunked body; HTTP/2 has no such header
    chunked = [v for n, v in h1 if n == b"Transfer-Encoding"]
    assert chunked == ([b"chunked"] if request.body == CHUNKED else [])


@given(_REQUEST)
def test_an_upgrade_is_stated_in_http11_only(request: UpstreamRequest) -> None:
    upgrade = request._replace(upgrade=b"SPDY/3.1", body=NO_BODY)
    credential = _credentials(0).current()
    _, _, h1 = _parse(http1_head(upgrade, credential))
    assert (b"Connection", b"Upgrade") in h1 and (b"Upgrade", b"SPDY/3.1") in h1
    # the same request but for the upgrade: the other headers are unchanged
    _, _, plain = _parse(http1_head(upgrade._replace(upgrade=None), credential))
    assert [h for h in h1 if h[0] not in (b"Connection", b"Upgrade")] == plain


def test_the_credential_is_built_once_and_shared() -> None:
    creds = _credentials(0)
    first = creds.current()
    assert creds.current() is first
    assert first.block == b"Host: 10.0.0.1:6443\r\nAuthorization: Bearer cluster-token\r\n"
    assert first.h2 == (
        (b":scheme", b"https"),
        (b":authority", b"10.0.0.1:6443"),
        (b"authorization", b"Bearer cluster-token"),
    )
    # an exec plugin's token: one credential per token, in both forms
    token = "plugin-token"
    plugin = creds.with_token(token)
    assert creds.with_token(token) is plugin
    assert plugin.block == b"Host: 10.0.0.1:6443\r\nAuthorization: Bearer plugin-token\r\n"
    assert plugin.h2[-1] == (b"authorization", b"Bearer plugin-token")
    assert creds.current() is first  # the definition's own is untouched


def test_a_probe_request_is_the_head_probes_always_sent() -> None:
    credential = _credentials(1).current()
    assert http1_head(probe_request(b"/readyz"), credential) == (
        b"GET /k8s/clusters/c-1/readyz HTTP/1.1\r\n"
        b"Host: api.example\r\nAuthorization: Bearer t\r\n"
        b"Accept: application/json, */*\r\nUser-Agent: karpor-health-probe\r\n\r\n"
    )
