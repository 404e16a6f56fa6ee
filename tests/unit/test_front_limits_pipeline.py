"""The limits on the request path without sockets: a front connection
(HTTP/1.1 or HTTP/2) with a :class:`~karpor.front.limits.Limiter`, its upstream
connections completed by hand.  What a request holds is given back when
its response ends, when the client goes away, and when an upgraded
session closes; a watch counts as long-running; the own API is not
counted; a refusal is a 429 ``Status`` with ``Retry-After`` and the
request's ``Audit-Id``."""

from __future__ import annotations

import json
from typing import Any

import h2.config
import h2.connection
import h2.events
from support.fakeendpoint import FakeEndpoint
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import alsoProvides

from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import Identity
from karpor.config.model import Cluster, TokenCredential
from karpor.front.limits import ClusterLimits, Exemptions, Limiter, LimitSettings, UserLimits
from karpor.front.limitstable import CountTable
from karpor.front.protocol import GatewayFactory, GatewayProtocol
from karpor.gatewayapi.request import ApiRequest, Responder
from karpor.upstream.pool import UpstreamPools

CLUSTER = Cluster(name="a", endpoint="http://10.0.0.9:6443", credential=TokenCredential("t"))
PREFIX = b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy"
SPDY = (
    b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n"
)
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n"


class Auth(CertificateAuthenticator):
    def __init__(self) -> None:
        self.identity = Identity("alice", ("dev",))

    def identify(self, peer: Any) -> Identity | None:
        return self.identity


class Api:
    def handle(self, request: ApiRequest, responder: Responder) -> None:
        responder.respond(200, [(b"Content-Type", b"text/plain")], b"ok")


class Gateway:
    def __init__(self, settings: LimitSettings) -> None:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.auth = Auth()
        self.limiter = Limiter(CountTable.in_memory(64, 16), settings)
        self.factory = GatewayFactory(
            lambda: {"a": CLUSTER},
            Api(),
            self.auth,
            UpstreamPools(self.clock, endpoint_factory=lambda creds: self.endpoint),
            reactor=self.clock,
            limiter=self.limiter,
        )

    def connect(self) -> tuple[StringTransport, GatewayProtocol]:
        proto = self.factory.buildProtocol(None)
        assert proto is not None
        client = StringTransport(lenient=True)
        proto.makeConnection(client)
        return client, proto

    def request(self, head: bytes) -> tuple[StringTransport, GatewayProtocol]:
        client, proto = self.connect()
        proto.dataReceived(head)
        return client, proto

    def accept(self) -> Any:
        d, factory = self.endpoint.attempts.pop(0)
        upstream = factory.buildProtocol(None)
        upstream.makeConnection(StringTransport(lenient=True))
        d.callback(upstream)
        return upstream

    def held(self) -> int:
        return sum(self.limiter.table.user_counts)


def get(path: bytes, extra: bytes = b"") -> bytes:
    return b"GET " + PREFIX + path + b" HTTP/1.1\r\nHost: gw\r\n" + extra + b"\r\n"


def refusal(client: StringTransport) -> tuple[dict[str, str], dict[str, Any]]:
    head, _, body = client.value().partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 429 "), lines[0]
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    status: dict[str, Any] = json.loads(body)
    return headers, status


def test_a_request_holds_its_place_until_its_response_ends() -> None:
    gw = Gateway(LimitSettings(UserLimits(inflight=1)))
    first, _ = gw.request(get(b"/api/v1/pods"))
    upstream = gw.accept()
    assert gw.held() == 1
    second, _ = gw.request(get(b"/api/v1/pods", b"Audit-Id: mine-1\r\n"))
    headers, status = refusal(second)
    assert headers["retry-after"] == "1"
    assert headers["audit-id"] == "mine-1"
    assert status["reason"] == "TooManyRequests"
    assert status["details"] == {"retryAfterSeconds": 1}
    assert not gw.endpoint.attempts  # nothing was sent for it
    upstream.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    assert first.value().startswith(b"HTTP/1.1 200 ")
    assert gw.held() == 0
    third, _ = gw.request(get(b"/api/v1/pods"))
    assert gw.held() == 1 and not third.value()


def test_a_client_that_goes_away_gives_its_place_back() -> None:
    gw = Gateway(LimitSettings(UserLimits(inflight=1)))
    _, proto = gw.request(get(b"/api/v1/pods"))
    gw.accept()
    proto.connectionLost(Failure(ConnectionLost()))
    assert gw.held() == 0


def test_a_watch_counts_against_watches_not_inflight() -> None:
    gw = Gateway(LimitSettings(UserLimits(inflight=1, watches=1)))
    gw.request(get(b"/api/v1/pods?watch=true"))
    client, _ = gw.request(get(b"/api/v1/pods?watch=1"))
    _, status = refusal(client)
    assert "limits.user.watches: 1" in status["message"]
    client, _ = gw.request(get(b"/api/v1/pods"))  # an ordinary request still goes
    assert not client.value()
    assert len(gw.endpoint.attempts) == 2


def test_an_upgraded_session_holds_its_place_until_it_closes() -> None:
    gw = Gateway(LimitSettings(UserLimits(watches=1)))
    exec_path = b"/api/v1/namespaces/d/pods/p/exec?command=sh"
    client, proto = gw.request(
        b"POST " + PREFIX + exec_path + b" HTTP/1.1\r\nHost: gw\r\n" + SPDY + b"\r\n"
    )
    gw.accept().dataReceived(SWITCH)
    assert client.value().startswith(b"HTTP/1.1 101 ")
    refused, _ = gw.request(get(b"/api/v1/pods?watch=true"))
    refusal(refused)
    proto.connectionLost(Failure(ConnectionLost()))
    assert gw.held() == 0


def test_exempt_callers_and_the_own_api_are_not_refused() -> None:
    settings = LimitSettings(
        UserLimits(inflight=1), ClusterLimits(inflight=5), Exemptions(("admins",))
    )
    gw = Gateway(settings)
    gw.request(get(b"/api/v1/pods"))
    client, _ = gw.request(b"GET /version HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert client.value().startswith(b"HTTP/1.1 200 ")
    gw.auth.identity = Identity("root", ("admins",))
    for _ in range(3):
        client, _ = gw.request(get(b"/api/v1/pods"))
        assert not client.value()
    assert dict(gw.limiter.inflight(["a"])) == {"a": 4}


def test_http2_streams_are_counted_and_a_reset_gives_the_place_back() -> None:
    gw = Gateway(LimitSettings(UserLimits(inflight=1)))
    proto = gw.factory.buildProtocol(None)
    assert proto is not None
    transport = StringTransport(lenient=True)
    alsoProvides(transport, ISSLTransport)
    transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
    transport.protocol = proto  # type: ignore[attr-defined]
    proto.makeConnection(transport)
    proto.handshakeCompleted()
    front = transport.protocol  # type: ignore[attr-defined]
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    events: list[h2.events.Event] = []

    def exchange() -> None:
        for _ in range(5):
            out = client.data_to_send()
            if out:
                front.dataReceived(out)
            got = transport.value()
            transport.clear()
            if got:
                events.extend(client.receive_data(got))
            if not out and not got:
                return

    def get() -> int:
        sid = client.get_next_available_stream_id()
        path = PREFIX + b"/api/v1/pods"
        client.send_headers(
            sid,
            [(b":method", b"GET"), (b":path", path), (b":scheme", b"https"), (b":authority", b"g")],
            end_stream=True,
        )
        exchange()
        return sid

    exchange()
    first = get()
    assert gw.held() == 1
    second = get()
    [response] = [
        e for e in events if isinstance(e, h2.events.ResponseReceived) and e.stream_id == second
    ]
    headers = dict(response.headers or [])
    assert (headers[b":status"], headers[b"retry-after"]) == (b"429", b"1")
    client.reset_stream(first)
    exchange()
    assert gw.held() == 0
