"""A hypothesis-driven security suite for the request path (in process).

The front protocol, the access checks and the upstream pools run for real;
the clusters are fake endpoints recording every byte sent to them.  Alice
may reach cluster ``a`` and the impersonating cluster ``i``, never ``b``.
Generated request targets (prefixes, encodings, dot segments, doubled
slashes, NULs, long names) never reach ``b``; generated header sets
(duplicates, case variants, CRLF attempts, smuggled ``Impersonate-*``,
``X-Remote-*``, ``Authorization`` and the configured front-proxy headers)
never reach a cluster, which sees only the gateway's credential and the
identity the gateway decided on.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import implementer

from karpor.auth.access import Access
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import Identity
from karpor.auth.policy import Policy, parse_policy
from karpor.auth.requestheader import RequestHeaderConfig
from karpor.auth.revocation import ReloadingFile
from karpor.config.model import Cluster, TokenCredential
from karpor.front.protocol import GatewayFactory
from karpor.gatewayapi.request import ApiRequest, Responder
from karpor.http.route import ALIAS_PREFIX, KARPOR_PREFIX
from karpor.upstream.pool import UpstreamPools

ALICE = Identity("alice", ("dev",))
TOKENS = {"a": "token-of-a", "b": "token-of-b", "i": "token-of-i"}
HOSTS = {"a": "10.0.0.1", "b": "10.0.0.2", "i": "10.0.0.3"}
CLUSTERS = {
    name: Cluster(
        name=name,
        endpoint=f"http://{HOSTS[name]}:6443",
        credential=TokenCredential(token=TOKENS[name]),
        impersonate=name == "i",
    )
    for name in TOKENS
}
POLICY = parse_policy(
    "rules:\n- users: [alice]\n  clusters: [a, i]\n  verbs: ['*']\n", "policy.yaml"
)
#: the configured front-proxy header names (besides the X-Remote-* defaults)
CUSTOM = RequestHeaderConfig(
    username_headers=("X-Custom-User",),
    group_headers=("X-Custom-Group",),
    extra_headers_prefix=("X-Custom-Extra-",),
)


class _Alice(CertificateAuthenticator):
    def __init__(self) -> None:
        pass

    def identify(self, peer: Any) -> Identity | None:
        return ALICE


class _Api:
    def handle(self, request: ApiRequest, responder: Responder) -> None:
        responder.respond(404, [], b"")


@implementer(IStreamClientEndpoint)
class _Recording:
    """Connects at once; keeps every upstream transport."""

    def __init__(self, name: str, sent: dict[str, list[StringTransport]]) -> None:
        self.name = name
        self.sent = sent

    def connect(self, factory: Any) -> Deferred[Any]:
        proto = factory.buildProtocol(None)
        transport = StringTransport(lenient=True)
        proto.makeConnection(transport)
        self.sent.setdefault(self.name, []).append(transport)
        return succeed(proto)


def _cluster_of(host: str) -> str:
    return next(name for name, h in HOSTS.items() if h == host)


def run(requests: bytes) -> dict[str, list[bytes]]:
    """Feed raw client bytes to a fresh front; what each cluster received."""
    clock = MemoryReactorClock()
    sent: dict[str, list[StringTransport]] = {}
    pools = UpstreamPools(
        clock,
        endpoint_factory=lambda creds: _Recording(_cluster_of(creds.endpoint.host), sent),
    )
    access = Access(
        certificates=_Alice(),
        policy=ReloadingFile[Policy]("/nonexistent/policy.yaml", lambda p: POLICY, POLICY),
        request_header=CUSTOM,
    )
    factory = GatewayFactory(lambda: CLUSTERS, _Api(), None, pools, reactor=clock, access=access)
    proto = factory.buildProtocol(None)
    assert proto is not None
    proto.makeConnection(StringTransport(lenient=True))
    proto.dataReceived(requests)
    return {name: [t.value() for t in transports] for name, transports in sent.items()}


# -- paths ------------------------------------------------------------------------------

_PREFIXES = [
    KARPOR_PREFIX,
    ALIAS_PREFIX,
    KARPOR_PREFIX.replace(b"clusters/", b"clusters//"),
    KARPOR_PREFIX.replace(b"/clusters/", b"/%63lusters/"),
    b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/../../clusters/",
    b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/%2e%2e/%2E%2E/clusters/",
    b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/..%2f..%2fclusters/",
    b"//apis/cluster.karpor.io/v1beta1/clusters/",
    b"/apis/cluster.karpor.io/v1beta1/./clusters/",
]
_NAMES = [
    b"a",
    b"b",
    b"i",
    b"%62",
    b"%2562",
    b"B",
    b"b.",
    b"a%2fb",
    b"a/../b",
    b"a\x00b",
    b"b" * 80,
]
_PIECES = st.sampled_from(
    [
        *(b"/", b"//", b".", b"..", b"%2e", b"%2E", b"%2f", b"%2F", b"%00", b"%5c", b"\\", b";"),
        *(b"b", b"proxy", b"clusters", b"api", b"v1", b"pods", b"x" * 300, b"%252e", b"?", b"&"),
    ]
)


@st.composite
def targets(draw: st.DrawFn) -> bytes:
    prefix = draw(st.sampled_from(_PREFIXES))
    name = draw(st.sampled_from(_NAMES))
    middle = draw(st.sampled_from([b"/proxy", b"/proxy/", b"%2fproxy", b"/PROXY", b"/proxy/.."]))
    rest = b"".join(draw(st.lists(_PIECES, max_size=12)))
    return prefix + name + middle + rest


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(targets(), min_size=1, max_size=4))
def test_no_spelling_of_a_path_reaches_a_forbidden_cluster(paths: list[bytes]) -> None:
    data = b"".join(b"GET " + p + b" HTTP/1.1\r\nHost: gw\r\n\r\n" for p in paths)
    received = run(data)
    assert "b" not in received, received.get("b")
    for heads in received.values():
        for head in heads:
            assert TOKENS["b"].encode() not in head


# -- headers ----------------------------------------------------------------------------

_CALLER_HEADERS = [
    b"Authorization",
    b"authorization",
    b"AUTHORIZATION",
    b"Impersonate-User",
    b"impersonate-user",
    b"Impersonate-Group",
    b"IMPERSONATE-GROUP",
    b"Impersonate-Uid",
    b"Impersonate-Extra-Scopes",
    b"impersonate-extra-%61",
    b"X-Remote-User",
    b"x-remote-group",
    b"X-Remote-Extra-Foo",
    b"X-Custom-User",
    b"x-custom-group",
    b"X-Custom-Extra-Bar",
    b"Proxy-Authorization",
]
_BENIGN = [b"Accept", b"User-Agent", b"X-Trace"]
_VALUES = [
    b"Bearer caller-secret",
    b"root",
    b"system:masters",
    b"caller-secret\r\nImpersonate-User: root",
    b"x\r\nX-Remote-User: root",
    b"x\nAuthorization: Bearer caller-secret",
    b"a\x00b",
    b"",
]
_FORBIDDEN_PREFIXES = (b"impersonate-", b"x-remote-", b"x-custom-", b"proxy-")


@st.composite
def header_sets(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    caller = st.tuples(st.sampled_from(_CALLER_HEADERS), st.sampled_from(_VALUES))
    benign = st.tuples(st.sampled_from(_BENIGN), st.just(b"text/plain"))
    return draw(st.lists(st.one_of(caller, benign), max_size=8))


def _lines(head: bytes) -> list[tuple[bytes, bytes]]:
    out = []
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        out.append((name.strip().lower(), value.strip()))
    return out


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header_sets(), st.sampled_from(["a", "i"]))
def test_no_caller_header_reaches_a_cluster(headers: list[tuple[bytes, bytes]], name: str) -> None:
    extra = b"".join(n + b": " + v + b"\r\n" for n, v in headers)
    path = KARPOR_PREFIX + name.encode() + b"/proxy/api/v1/namespaces/d/pods"
    received = run(b"GET " + path + b" HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n")
    for cluster, heads in received.items():
        for head in heads:
            assert b"caller-secret" not in head
            lines = _lines(head)
            auth = [v for n, v in lines if n == b"authorization"]
            assert auth == [b"Bearer " + TOKENS[cluster].encode()]
            identity = [(n, v) for n, v in lines if n.startswith(_FORBIDDEN_PREFIXES)]
            if cluster == "i":
                assert identity == [(b"impersonate-user", b"alice"), (b"impersonate-group", b"dev")]
            else:
                assert identity == []


def test_the_properties_are_not_vacuous() -> None:
    plain = run(b"GET " + KARPOR_PREFIX + b"i/proxy/api HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert b"Impersonate-User: alice\r\n" in plain["i"][0]
    smuggled = b"X-Trace: x\r\nImpersonate-User: root\r\n"
    denied = run(
        b"GET " + KARPOR_PREFIX + b"a/proxy/api HTTP/1.1\r\nHost: gw\r\n" + smuggled + b"\r\n"
    )
    assert denied == {}
