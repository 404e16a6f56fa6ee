"""Host (SNI) routing (sans-IO, :mod:`karpor.http.route`), with hypothesis
for "the cluster chosen is the one the server name or Host names, never
another", and through the front protocol with a transport reporting a
server name."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.fakeendpoint import FakeEndpoint
from twisted.internet.testing import MemoryReactorClock, StringTransport

from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import Identity
from karpor.config.model import Cluster, TokenCredential
from karpor.front.protocol import GatewayFactory, GatewayProtocol
from karpor.http.route import (
    DEFAULT_HOST_SUFFIX,
    NO_HOST_ROUTING,
    ApiRoute,
    ClusterRoute,
    HostRouting,
    check_host_suffix,
    request_host,
    route,
    route_request,
)
from karpor.kube.status import ApiError
from karpor.upstream.pool import UpstreamPools

HOSTS = HostRouting()
SUFFIX = DEFAULT_HOST_SUFFIX
GATEWAY_HOST = [(b"Host", b"127.0.0.1:8443")]

names = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)
segments = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12).filter(
    lambda s: s not in (".", "..")
)
paths = st.lists(segments, max_size=6).map(lambda parts: "/" + "/".join(parts))
queries = st.sampled_from(["", "?watch=1", "?labelSelector=a%3Db&limit=5", "?x=/../.."])


def test_suffix_setting() -> None:
    assert HOSTS.suffix == "clusters.karpor" and HOSTS.enabled
    assert HOSTS.wildcard == "*.clusters.karpor"
    assert HostRouting("Example.COM.").suffix == "example.com"
    assert not HostRouting("").enabled
    for bad in ("a b", "*.x", "-x.y", "10.0.0.1", "x..y", "a" * 200):
        with pytest.raises(ValueError):
            check_host_suffix(bad)


@pytest.mark.parametrize(
    ("host", "cluster"),
    [
        (b"sim-1.clusters.karpor", "sim-1"),
        (b"sim-1.clusters.karpor:8443", "sim-1"),
        (b"SIM-1.Clusters.Karpor", "sim-1"),
        (b"sim-1.clusters.karpor.", "sim-1"),
        (b"clusters.karpor", None),  # the suffix alone: the gateway
        (b"sim-1.clusters.karpor.example", None),
        (b"sim-1.xclusters.karpor", None),
        (b"127.0.0.1:8443", None),
        (b"[::1]:8443", None),
        (b"gateway.example", None),
        (b"", None),
    ],
)
def test_cluster_of(host: bytes, cluster: str | None) -> None:
    assert HOSTS.cluster_of(host) == cluster


@pytest.mark.parametrize(
    "host",
    [
        b"a.b.clusters.karpor",
        b"-a.clusters.karpor",
        b"a_b.clusters.karpor",
        b"x" * 64 + b".clusters.karpor",
    ],
)
def test_a_name_under_the_suffix_that_is_no_cluster_name_is_a_400(host: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        HOSTS.cluster_of(host)
    assert raised.value.code == 400
    # classified once per connection: every request on it gets the 400
    refused = HOSTS.server_name(host)
    assert isinstance(refused, ApiError) and refused.code == 400
    with pytest.raises(ApiError):
        route_request(b"/version", GATEWAY_HOST, refused, HOSTS)


def test_server_name_classification() -> None:
    assert HOSTS.server_name(None) is None
    assert HOSTS.server_name(b"gateway.example") is None
    assert HOSTS.server_name(b"a.clusters.karpor") == "a"
    assert NO_HOST_ROUTING.server_name(b"a.clusters.karpor") is None


def test_the_path_is_the_clusters_own_under_a_cluster_host() -> None:
    for target in (
        b"/version",
        b"/api",
        b"/apis?x=1",
        b"/openapi/v3",
        b"/metrics",
        b"/healthz",
        b"/apis/cluster.karpor.io/v1beta1/clusters",
        b"/apis/cluster.karpor.io/v1beta1/clusters/other/proxy/api",
    ):
        assert route_request(target, GATEWAY_HOST, "a", HOSTS) == ClusterRoute("a", target, True)


def test_without_a_cluster_host_paths_route() -> None:
    assert route_request(b"/version", GATEWAY_HOST, None, HOSTS) == ApiRoute("/version", "")
    proxied = b"/apis/cluster.karpor.io/v1beta1/clusters/b/proxy/api"
    assert route_request(proxied, GATEWAY_HOST, None, HOSTS) == ClusterRoute("b", b"/api")
    # host routing off: a Host under the suffix means nothing
    named = [(b"Host", b"a.clusters.karpor")]
    assert route_request(b"/version", named, "a", NO_HOST_ROUTING) == ApiRoute("/version", "")


def test_host_decides_without_sni_and_must_agree_with_it() -> None:
    named = [(b"host", b"b.clusters.karpor:443")]
    assert route_request(b"/api", named, None, HOSTS) == ClusterRoute("b", b"/api", True)
    assert route_request(b"/api", named, "b", HOSTS) == ClusterRoute("b", b"/api", True)
    with pytest.raises(ApiError) as raised:
        route_request(b"/api", named, "a", HOSTS)
    assert raised.value.code == 421 and raised.value.reason == "MisdirectedRequest"
    twice = [(b"Host", b"127.0.0.1"), (b"Host", b"b.clusters.karpor")]
    with pytest.raises(ApiError) as raised:
        request_host(twice)
    assert raised.value.code == 400


@pytest.mark.parametrize(
    "target",
    [b"/api/v1/namespaces/a/../b/pods", b"/api/%2e%2e/x", b"api", b"/a b", b"/x%00"],
)
def test_a_host_routed_target_gets_the_path_checks(target: bytes) -> None:
    with pytest.raises(ApiError) as raised:
        route_request(target, GATEWAY_HOST, "a", HOSTS)
    assert raised.value.code == 400


@given(names, names, paths, queries, st.booleans())
def test_the_cluster_is_the_one_named(
    sni: str, host: str, path: str, query: str, with_host: bool
) -> None:
    target = (path + query).encode()
    headers = [(b"Host", f"{host}.{SUFFIX}:8443".encode())] if with_host else GATEWAY_HOST
    server = HOSTS.server_name(f"{sni}.{SUFFIX}".encode())
    if with_host and host != sni:
        with pytest.raises(ApiError) as raised:
            route_request(target, headers, server, HOSTS)
        assert raised.value.code == 421
        return
    assert route_request(target, headers, server, HOSTS) == ClusterRoute(sni, target, True)
    # without SNI, the Host alone
    expected = ClusterRoute(host, target, True) if with_host else route(target)
    assert route_request(target, headers, None, HOSTS) == expected


# -- through the front protocol ---------------------------------------------------------


class _Auth(CertificateAuthenticator):
    def __init__(self) -> None:
        pass

    def identify(self, peer: object) -> Identity | None:
        return Identity("alice", ("dev",))


class _Api:
    def __init__(self) -> None:
        self.paths: list[str] = []

    def handle(self, request: object, responder: object) -> None:
        self.paths.append(request.path)  # type: ignore[attr-defined]
        responder.respond(200, [], b"own")  # type: ignore[attr-defined]


class _TLSClient(StringTransport):
    """A client transport reporting the TLS server name it asked for."""

    def __init__(self, sni: bytes | None) -> None:
        super().__init__()
        self._sni = sni

    def server_name(self) -> bytes | None:
        return self._sni


def _front(
    sni: bytes | None, hosts: HostRouting = HOSTS
) -> tuple[GatewayProtocol, _TLSClient, FakeEndpoint, _Api]:
    clock = MemoryReactorClock()
    endpoint = FakeEndpoint()
    pools = UpstreamPools(clock, endpoint_factory=lambda creds: endpoint)
    clusters = {
        n: Cluster(name=n, endpoint="http://10.0.0.9:6443", credential=TokenCredential(token="t"))
        for n in ("a", "b")
    }
    api = _Api()
    factory = GatewayFactory(
        lambda: clusters, api, _Auth(), pools, reactor=clock, host_routing=hosts
    )
    proto = factory.buildProtocol(None)
    assert proto is not None
    client = _TLSClient(sni)
    proto.makeConnection(client)
    proto.handshakeCompleted()
    return proto, client, endpoint, api


def _upstream_request(endpoint: FakeEndpoint) -> bytes:
    d, factory = endpoint.attempts.pop()
    proto = factory.buildProtocol(None)
    transport = StringTransport()
    proto.makeConnection(transport)
    d.callback(proto)
    data: bytes = transport.value()
    return data


def test_front_routes_by_the_connections_server_name() -> None:
    proto, _client, endpoint, api = _front(b"a.clusters.karpor")
    proto.dataReceived(b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8443\r\n\r\n")
    assert _upstream_request(endpoint).startswith(b"GET /metrics?x=1 HTTP/1.1\r\n")
    assert api.paths == []


def test_front_refuses_a_host_naming_another_cluster() -> None:
    proto, client, endpoint, _api = _front(b"a.clusters.karpor")
    proto.dataReceived(b"GET /api HTTP/1.1\r\nHost: b.clusters.karpor\r\n\r\n")
    head, _, body = client.value().partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 421 ")
    assert json.loads(body)["reason"] == "MisdirectedRequest"
    assert endpoint.attempts == []


def test_front_without_sni_uses_host_and_without_host_routing_serves_itself() -> None:
    proto, _, endpoint, api = _front(None)
    proto.dataReceived(b"GET /version HTTP/1.1\r\nHost: b.clusters.karpor:8443\r\n\r\n")
    assert _upstream_request(endpoint).startswith(b"GET /version HTTP/1.1\r\n")
    proto, _client, endpoint, api = _front(b"a.clusters.karpor", NO_HOST_ROUTING)
    proto.dataReceived(b"GET /version HTTP/1.1\r\nHost: a.clusters.karpor\r\n\r\n")
    assert api.paths == ["/version"] and endpoint.attempts == []
