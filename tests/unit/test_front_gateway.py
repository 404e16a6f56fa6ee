"""The request path without sockets: front protocol, forwarder, pool and
upstream protocol wired to StringTransports and a MemoryReactorClock."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from OpenSSL import SSL
from prometheus_client import CollectorRegistry
from support.fakeendpoint import FakeEndpoint
from support.http1 import encode, requests_strategy, splits
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from karpor.auth.audit import AuditWriter
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import Identity
from karpor.config.model import Cluster, ExecCredential, TokenCredential
from karpor.front.protocol import DRAIN_IDLE_GRACE, GatewayFactory, GatewayProtocol
from karpor.front.responder import Responder as FrontResponder
from karpor.gatewayapi.request import ApiRequest, Responder
from karpor.http.bounds import LINGER_SECONDS
from karpor.metrics.gateway import GatewayMetrics
from karpor.upstream.execcredential import ExecCredentialCache, ProcessResult
from karpor.upstream.http1 import DedicatedConnection, UpstreamConnection
from karpor.upstream.pool import UpstreamPools
from karpor.upstream.splice import CLOSE_GRACE

TOKEN = "s3cr3t-cluster-token"
ALICE = Identity("alice", ("dev",))
CLUSTER = Cluster(
    name="a", endpoint="http://10.0.0.9:6443", credential=TokenCredential(token=TOKEN)
)
TLS_CLUSTER = Cluster(
    name="t",
    endpoint="https://10.0.0.8:6443",
    credential=TokenCredential(token=TOKEN),
    insecure=True,
)
PREFIX = b"/apis/cluster.karpor.io/v1beta1/clusters/"


class FakeAuth(CertificateAuthenticator):
    def __init__(self, identity: Identity | None) -> None:
        self._identity = identity

    def identify(self, peer: Any) -> Identity | None:
        return self._identity


class RecordingApi:
    def __init__(self) -> None:
        self.requests: list[tuple[ApiRequest, Responder]] = []
        self.answer: Callable[[ApiRequest, Responder], None] | None = lambda req, r: r.respond(
            200, [(b"Content-Type", b"text/plain")], b"ok"
        )

    def handle(self, request: ApiRequest, responder: Responder) -> None:
        self.requests.append((request, responder))
        if self.answer is not None:
            self.answer(request, responder)


class Upstream:
    def __init__(self, proto: UpstreamConnection, transport: StringTransport) -> None:
        self.proto = proto
        self.transport = transport

    def respond(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def lose(self, reason: Failure | None = None) -> None:
        self.proto.connectionLost(reason or Failure(ConnectionDone()))


_AUDIT_ID_LINE = re.compile(rb"\r\nAudit-Id: [-0-9a-f]{36}\r\n")


class ClientTransport(StringTransport):
    """The client's transport: :meth:`value` leaves out the ``Audit-Id``
    line the gateway adds to every response head (a random UUID; what it
    holds is tested below, under "Audit-Id and metrics"), :meth:`raw` keeps it."""

    def value(self) -> bytes:
        return _AUDIT_ID_LINE.sub(b"\r\n", self.raw())

    def raw(self) -> bytes:
        data: bytes = super().value()
        return data


class Harness:
    def __init__(
        self,
        identity: Identity | None = ALICE,
        clusters: Sequence[Cluster] = (CLUSTER, TLS_CLUSTER),
        **options: Any,
    ):
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.pools = UpstreamPools(self.clock, endpoint_factory=lambda creds: self.endpoint)
        self.api = RecordingApi()
        self.clusters = {c.name: c for c in clusters}
        self.factory = GatewayFactory(
            lambda: self.clusters,
            self.api,
            FakeAuth(identity),
            self.pools,
            reactor=self.clock,
            **options,
        )
        self.client, self.proto = self.connect()
        self.upstreams: list[Upstream] = []

    def connect(self) -> tuple[ClientTransport, GatewayProtocol]:
        proto = self.factory.buildProtocol(None)
        assert proto is not None
        client = ClientTransport(lenient=True)
        proto.makeConnection(client)
        return client, proto

    def send(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    def accept(self, index: int = -1, handshake: bool = True) -> Upstream:
        """Complete a pending upstream connection attempt."""
        d, factory = self.endpoint.attempts.pop(index)
        proto = factory.buildProtocol(None)
        transport = StringTransport(lenient=True)
        proto.makeConnection(transport)
        if handshake and proto._tls:
            proto.handshakeCompleted()
        d.callback(proto)
        up = Upstream(proto, transport)
        self.upstreams.append(up)
        return up

    def responses(self) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
        return parse_responses(self.client.value())


def parse_responses(
    data: bytes, head: bool = False
) -> list[tuple[int, list[tuple[bytes, bytes]], bytes]]:
    out: list[tuple[int, list[tuple[bytes, bytes]], bytes]] = []

    class P:
        def on_message_begin(self) -> None:
            self.headers: list[tuple[bytes, bytes]] = []
            self.body = b""

        def on_header(self, n: bytes, v: bytes) -> None:
            self.headers.append((n, v))

        def on_body(self, b: bytes) -> None:
            self.body += b

        def on_message_complete(self) -> None:
            out.append((parser.get_status_code(), self.headers, self.body))

    parser = httptools.HttpResponseParser(P())
    parser.feed_data(data)
    return out


def header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name.lower():
            return v
    return None


def get(path: bytes, extra: bytes = b"", cluster: bytes = b"a") -> bytes:
    return (
        b"GET "
        + PREFIX
        + cluster
        + b"/proxy"
        + path
        + b" HTTP/1.1\r\nHost: gw\r\n"
        + extra
        + b"\r\n"
    )


def status_of(body: bytes) -> dict[str, Any]:
    obj: dict[str, Any] = json.loads(body)
    assert obj["kind"] == "Status"
    return obj


# -- plain requests -----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    st.lists(requests_strategy, min_size=1, max_size=5),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_the_adapter_answers_pipelined_requests_in_order(
    requests: list[tuple[bytes, bytes, str, bytes, int]], cuts: list[int]
) -> None:
    """Through GatewayProtocol (own-API requests, answered by a fake API
    with what it read): N requests however split, N answers in order."""
    h = Harness()

    def answer(request: Any, responder: Any) -> None:
        responder.respond(200, [], request.method.encode() + b" " + request.body)

    h.api.answer = answer
    encoded = [
        encode((m, b"/version/" + str(i).encode(), f, b, n))
        for i, (m, _, f, b, n) in enumerate(requests)
    ]
    for piece in splits(b"".join(encoded), cuts):
        h.send(piece)
    got = [(code, body) for code, _, body in h.responses()]
    assert got == [(200, m + b" " + (b if f != "none" else b"")) for m, _, f, b, _ in requests]
    assert [r.path for r, _ in h.api.requests] == [
        "/version/" + str(i) for i in range(len(requests))
    ]
    assert not h.client.disconnecting and h.client.producerState == "producing"


class FakePipeline:
    """Answers each request with its method and body, at once or (every
    other request) only once the next read arrives."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.later: list[Callable[[], None]] = []

    def handle(self, front: GatewayProtocol, head: Any) -> None:
        body: list[bytes] = []
        front.on_body = body.append

        def answer() -> None:
            FrontResponder(front, head).respond(200, [], head.method + b" " + b"".join(body))

        def end() -> None:
            if len(self.seen) % 2:
                self.later.append(answer)
            else:
                answer()

        self.seen.append(head.target)
        front.on_end = end


@settings(max_examples=40, deadline=None)
@given(
    st.lists(requests_strategy, min_size=1, max_size=5),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
)
def test_the_adapter_with_a_fake_pipeline_answers_in_order(
    requests: list[tuple[bytes, bytes, str, bytes, int]], cuts: list[int]
) -> None:
    """N pipelined requests however split, answered now or later by a fake
    pipeline: N answers in order, and reading resumes once all are answered."""
    h = Harness()
    pipeline = FakePipeline()
    h.factory.pipeline = pipeline  # type: ignore[assignment]
    for piece in splits(b"".join(encode(r) for r in requests), cuts):
        h.send(piece)
        while pipeline.later:
            pipeline.later.pop(0)()
    got = [(code, body) for code, _, body in h.responses()]
    assert got == [(200, m + b" " + (b if f != "none" else b"")) for m, _, f, b, _ in requests]
    assert pipeline.seen == [p for _, p, _, _, _ in requests]
    assert not h.client.disconnecting and h.client.producerState == "producing"


def test_get_is_forwarded_with_cluster_credential_and_pooled() -> None:
    h = Harness()
    h.send(get(b"/api/v1/pods?limit=1", b"Authorization: Bearer caller\r\nX-Remote-User: root\r\n"))
    up = h.accept()
    sent = up.transport.value()
    assert sent.startswith(b"GET /api/v1/pods?limit=1 HTTP/1.1\r\n")
    assert b"Host: 10.0.0.9:6443\r\n" in sent
    assert f"Authorization: Bearer {TOKEN}\r\n".encode() in sent
    assert b"caller" not in sent and b"X-Remote" not in sent
    assert b"X-Forwarded-For: 192.168.1.1\r\n" in sent
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
    [(code, headers, body)] = h.responses()
    assert (code, body) == (200, b"{}")
    assert header(headers, b"Content-Length") == b"2"
    assert header(headers, b"Transfer-Encoding") is None
    pool = h.pools.get(CLUSTER)
    assert pool.idle_connections == 1
    # the next request reuses the connection: no new attempt
    up.transport.clear()
    h.send(get(b"/version"))
    assert h.endpoint.attempts == []
    assert up.transport.value().startswith(b"GET /version HTTP/1.1\r\n")
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
    assert [r[2] for r in h.responses()] == [b"{}", b"x"]
    assert not h.client.disconnecting


def test_chunked_response_streams_each_piece() -> None:
    h = Harness()
    h.send(get(b"/api/v1/pods?watch=1"))
    up = h.accept()
    up.respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n"
    )
    assert b"Transfer-Encoding: chunked\r\n" in h.client.value()
    h.client.clear()
    up.respond(b'd\r\n{"type":"A"}\n\r\n')
    assert h.client.value() == b'd\r\n{"type":"A"}\n\r\n'
    h.client.clear()
    up.respond(b"5\r\nhello\r\n")
    assert h.client.value() == b"5\r\nhello\r\n"
    up.respond(b"0\r\n\r\n")
    assert h.client.value().endswith(b"0\r\n\r\n")
    assert h.pools.get(CLUSTER).idle_connections == 1


def test_eof_delimited_response_is_rechunked_and_not_pooled() -> None:
    h = Harness()
    h.send(get(b"/logs"))
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nline1\n")
    up.respond(b"line2\n")
    up.lose()
    [(code, _, body)] = h.responses()
    assert (code, body) == (200, b"line1\nline2\n")
    assert h.pools.get(CLUSTER).idle_connections == 0


def test_head_and_204_have_no_body() -> None:
    h = Harness()
    h.send(b"HEAD " + PREFIX + b"a/proxy/x HTTP/1.1\r\nHost: gw\r\n\r\n")
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert h.client.value().endswith(b"Content-Length: 1234\r\n\r\n")
    assert h.pools.get(CLUSTER).idle_connections == 1
    h.client.clear()
    up.transport.clear()
    h.send(b"DELETE " + PREFIX + b"a/proxy/x HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert up.transport.value().startswith(b"DELETE /x HTTP/1.1")
    up.respond(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert h.client.value() == b"HTTP/1.1 204 No Content\r\n\r\n"
    assert h.pools.get(CLUSTER).idle_connections == 1


def test_pipelined_requests_answered_in_order() -> None:
    h = Harness()
    h.send(get(b"/one") + get(b"/two") + get(b"/three"))
    assert h.client.producerState == "paused"
    up = h.accept()
    assert up.transport.value().count(b"GET ") == 1
    up.transport.clear()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    # the second request goes out on the same connection only now
    assert up.transport.value().startswith(b"GET /two ")
    up.transport.clear()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
    assert up.transport.value().startswith(b"GET /three ")
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nthree")
    assert [r[2] for r in h.responses()] == [b"one", b"two", b"three"]
    assert h.client.producerState == "producing"
    assert h.endpoint.attempts == []


def test_pipelined_own_api_and_errors_in_order() -> None:
    h = Harness()
    h.api.answer = None
    h.send(
        b"GET /version HTTP/1.1\r\n\r\n"
        + get(b"/x", cluster=b"nope")
        + b"GET /healthz HTTP/1.1\r\n\r\n"
    )
    assert h.responses() == []
    (_, responder) = h.api.requests[0]
    responder.respond(200, [], b"v1")
    # the 404 is answered, then /healthz reaches the API
    codes = [r[0] for r in h.responses()]
    assert codes == [200, 404]
    assert [r.path for r, _ in h.api.requests] == ["/version", "/healthz"]
    h.api.requests[1][1].respond(200, [], b"ok")
    assert [r[0] for r in h.responses()] == [200, 404, 200]
    assert h.client.producerState == "producing"


def test_chunked_request_body_streams_upstream() -> None:
    h = Harness()
    h.send(
        b"POST "
        + PREFIX
        + b"a/proxy/api/v1/namespaces HTTP/1.1\r\nHost: gw\r\n"
        + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
    )
    # no connection yet: reading pauses, the piece waits
    assert h.client.producerState == "paused"
    up = h.accept()
    assert h.client.producerState == "producing"
    assert up.transport.value().endswith(b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
    # the client side is the producer of the upstream transport
    assert up.transport.producer is not None
    up.transport.producer.pauseProducing()
    assert h.client.producerState == "paused"
    up.transport.producer.resumeProducing()
    assert h.client.producerState == "producing"
    h.send(b"6\r\n world\r\n0\r\n\r\n")
    assert up.transport.value().endswith(b"6\r\n world\r\n0\r\n\r\n")
    assert up.transport.producer is None
    up.respond(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    assert h.responses()[0][0] == 201
    assert h.pools.get(CLUSTER).idle_connections == 1


def test_content_length_body_passes_through() -> None:
    h = Harness()
    h.send(b"PUT " + PREFIX + b"a/proxy/x HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234")
    up = h.accept()
    h.send(b"56789")
    assert up.transport.value().endswith(
        b"Content-Length: 10\r\nX-Forwarded-For: 192.168.1.1\r\n\r\n0123456789"
    )


def test_expect_continue_is_relayed() -> None:
    h = Harness()
    h.send(
        b"POST "
        + PREFIX
        + b"a/proxy/x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    up = h.accept()
    assert b"Expect: 100-continue\r\n" in up.transport.value()
    up.respond(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert h.client.value() == b"HTTP/1.1 100 Continue\r\n\r\n"
    h.send(b"ok")
    assert up.transport.value().endswith(b"\r\n\r\nok")
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert h.client.value().endswith(b"Content-Length: 0\r\n\r\n")


def test_response_backpressure_pauses_upstream() -> None:
    h = Harness()
    h.send(get(b"/big"))
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    producer = h.client.producer
    assert producer is not None
    producer.pauseProducing()  # the client's transport buffer is full
    assert up.transport.producerState == "paused"
    producer.resumeProducing()
    assert up.transport.producerState == "producing"
    up.respond(b"x" * 90)
    assert h.client.producer is None
    assert h.responses()[0][2] == b"x" * 100


def test_client_disconnect_closes_upstream() -> None:
    h = Harness()
    h.send(get(b"/api/v1/pods?watch=1"))
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    h.proto.connectionLost(Failure(ConnectionLost()))
    assert up.transport.disconnecting
    up.lose()
    pool = h.pools.get(CLUSTER)
    assert pool.idle_connections == 0 and pool.open_connections == 0


def test_client_disconnect_while_connecting() -> None:
    h = Harness()
    h.send(get(b"/x"))
    h.proto.connectionLost(Failure(ConnectionLost()))
    up = h.accept()
    # the connection is not wasted: it goes idle in the pool
    assert up.transport.value() == b""
    assert h.pools.get(CLUSTER).idle_connections == 1


def test_stale_pooled_connection_is_retried_once_for_get() -> None:
    h = Harness()
    h.send(get(b"/one"))
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    h.send(get(b"/two"))
    up.lose()  # closed before any response byte
    fresh = h.accept()
    assert fresh.transport.value().startswith(b"GET /two ")
    fresh.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2")
    assert [r[2] for r in h.responses()] == [b"1", b"2"]


def test_stale_pooled_connection_is_not_retried_for_post() -> None:
    h = Harness()
    h.send(get(b"/one"))
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1")
    h.send(b"POST " + PREFIX + b"a/proxy/x HTTP/1.1\r\nContent-Length: 0\r\n\r\n")
    up.lose()
    assert h.endpoint.attempts == []
    code, _, body = h.responses()[1]
    assert code == 502
    assert "closed the connection" in status_of(body)["message"]


def test_mid_response_failure_aborts_client() -> None:
    h = Harness()
    h.send(get(b"/big"))
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nxx")
    up.lose(Failure(ConnectionLost()))
    assert h.client.disconnecting


def test_invalid_upstream_response_is_502() -> None:
    h = Harness()
    h.send(get(b"/x"))
    up = h.accept()
    up.respond(b"garbage\r\n\r\n")
    code, _, body = h.responses()[0]
    assert code == 502 and "invalid response" in status_of(body)["message"]
    assert up.transport.disconnecting


# -- errors -------------------------------------------------------------------------


def test_no_identity_is_401_but_public_paths_pass() -> None:
    h = Harness(identity=None)
    h.send(get(b"/api"))
    code, _, body = h.responses()[0]
    assert code == 401 and status_of(body)["reason"] == "Unauthorized"
    h.send(b"GET /apis HTTP/1.1\r\n\r\n")
    assert h.responses()[1][0] == 401
    h.send(b"GET /healthz HTTP/1.1\r\n\r\n")
    assert h.responses()[2] == (200, h.responses()[2][1], b"ok")
    assert h.api.requests[0][0].identity is None
    assert h.endpoint.attempts == []


def test_unknown_cluster_is_404_like_kube() -> None:
    h = Harness()
    h.send(get(b"/x", cluster=b"nope"))
    code, headers, body = h.responses()[0]
    assert code == 404
    assert header(headers, b"Content-Type") == b"application/json"
    status = status_of(body)
    assert status["reason"] == "NotFound"
    assert status["message"] == 'clusters.cluster.karpor.io "nope" not found'
    assert status["details"] == {"name": "nope", "group": "cluster.karpor.io", "kind": "clusters"}


def test_bad_path_is_400() -> None:
    h = Harness()
    h.send(b"GET " + PREFIX + b"a/proxy/../../b/proxy/ HTTP/1.1\r\n\r\n")
    code, _, body = h.responses()[0]
    assert code == 400 and status_of(body)["code"] == 400
    assert not h.client.disconnecting


def test_unreachable_cluster_is_503() -> None:
    h = Harness()
    h.send(get(b"/x"))
    d, _ = h.endpoint.attempts.pop()
    d.errback(Failure(ConnectionRefusedError("10.0.0.9")))
    code, _, body = h.responses()[0]
    assert code == 503
    message = status_of(body)["message"]
    assert "'a' is unreachable" in message and TOKEN not in message
    assert h.pools.get(CLUSTER).open_connections == 0


def test_connect_timeout_is_503() -> None:
    h = Harness()
    h.send(get(b"/x"))
    h.clock.advance(3.0)
    code, _, body = h.responses()[0]
    assert code == 503
    assert "timed out after 3s" in status_of(body)["message"]


def test_tls_handshake_timeout_is_503() -> None:
    h = Harness()
    h.send(get(b"/x", cluster=b"t"))
    up = h.accept(handshake=False)
    h.clock.advance(3.0)
    assert up.transport.disconnecting
    up.lose(Failure(ConnectionLost()))
    assert h.responses()[0][0] == 503


def test_tls_failure_is_502_naming_cluster_and_reason() -> None:
    h = Harness()
    h.send(get(b"/x", cluster=b"t"))
    up = h.accept(handshake=False)
    up.lose(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    code, _, body = h.responses()[0]
    assert code == 502
    message = status_of(body)["message"]
    assert message == "cluster 't': TLS handshake failed: certificate verify failed"


def test_exec_credentials_without_a_cache_are_502() -> None:
    cluster = Cluster(name="e", endpoint="https://10.0.0.1", credential=ExecCredential(command="x"))
    h = Harness(clusters=[cluster])
    h.send(get(b"/x", cluster=b"e"))
    code, _, body = h.responses()[0]
    assert code == 502
    assert status_of(body)["message"] == 'cluster "e": exec credentials are not enabled'


def test_malformed_request_is_400_and_closes() -> None:
    h = Harness()
    h.send(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    code, headers, _ = h.responses()[0]
    assert code == 400 and header(headers, b"Connection") == b"close"
    h.clock.advance(LINGER_SECONDS)  # the close lingers for what the client still sends
    assert h.client.disconnecting


def test_http10_client_gets_close_delimited_stream() -> None:
    h = Harness()
    h.send(b"GET " + PREFIX + b"a/proxy/logs HTTP/1.0\r\n\r\n")
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
    assert h.client.value() == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc"
    assert h.client.disconnecting


def test_changed_cluster_definition_gets_a_fresh_pool() -> None:
    h = Harness()
    h.send(get(b"/one"))
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    old = h.pools.get(CLUSTER)
    assert old.idle_connections == 1
    # an equal definition keeps the pool
    same = Cluster(
        name="a", endpoint="http://10.0.0.9:6443", credential=TokenCredential(token=TOKEN)
    )
    assert h.pools.get(same) is old
    changed = Cluster(
        name="a", endpoint="http://10.0.0.10:6443", credential=TokenCredential(token="new")
    )
    h.clusters["a"] = changed
    h.send(get(b"/two"))
    assert up.transport.disconnecting  # the old pool drained
    fresh = h.accept()
    assert b"Host: 10.0.0.10:6443\r\nAuthorization: Bearer new\r\n" in fresh.transport.value()


def test_idle_connections_expire() -> None:
    h = Harness()
    h.send(get(b"/one"))
    up = h.accept()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h.clock.advance(90.0)
    assert up.transport.disconnecting


# -- the own API ------------------------------------------------------------------


def test_own_api_request_and_complete_response() -> None:
    h = Harness()
    h.send(
        b"POST /apis/x?y=1 HTTP/1.1\r\nContent-Type: application/json\r\n"
        b'Content-Length: 5\r\n\r\n{"a"'
    )
    assert h.api.requests == []
    h.send(b"}")
    [(request, _)] = h.api.requests
    assert request.method == "POST"
    assert (request.path, request.query) == ("/apis/x", "y=1")
    assert request.headers["content-type"] == "application/json"
    assert request.body == b'{"a"}'
    assert request.identity == ALICE
    [(code, headers, body)] = h.responses()
    assert (code, body) == (200, b"ok")
    assert header(headers, b"Content-Length") == b"2"


def test_own_api_streaming_and_on_close() -> None:
    h = Harness()
    h.api.answer = None
    h.send(b"GET /apis/cluster.karpor.io/v1beta1/clusters?watch=1 HTTP/1.1\r\n\r\n")
    _, responder = h.api.requests[0]
    responder.start(200, [(b"Content-Type", b"application/json")])
    responder.write(b'{"type":"ADDED"}\n')
    assert h.client.value().endswith(b'11\r\n{"type":"ADDED"}\n\r\n')
    closed: list[bool] = []
    responder.on_close(lambda: closed.append(True))
    h.proto.connectionLost(Failure(ConnectionLost()))
    assert closed == [True]


def test_own_api_handler_crash_is_500_without_detail() -> None:
    h = Harness()

    def crash(request: ApiRequest, responder: Responder) -> None:
        raise RuntimeError(f"boom {TOKEN}")

    h.api.answer = crash
    h.send(b"GET /apis HTTP/1.1\r\n\r\n")
    code, _, body = h.responses()[0]
    assert code == 500 and TOKEN.encode() not in body


def test_own_api_body_limit() -> None:
    h = Harness()
    h.factory.max_api_body = 4
    h.send(b"POST /apis HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789")
    assert h.responses()[0][0] == 413
    assert h.api.requests == []
    h.send(b"GET /version HTTP/1.1\r\n\r\n")
    assert h.responses()[1][0] == 200


@pytest.mark.parametrize("connection", [b"close", None])
def test_connection_close_is_honoured(connection: bytes | None) -> None:
    h = Harness()
    extra = b"Connection: close\r\n" if connection else b""
    h.send(b"GET /version HTTP/1.1\r\n" + extra + b"\r\n")
    assert h.client.disconnecting == bool(connection)


# -- upgrades (exec, attach, port-forward) -------------------------------------------

EXEC = b"/api/v1/namespaces/d/pods/p/exec?command=sh&command=-c&command=echo%20hi&stdin=true"
SWITCH = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
    b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nKeep-Alive: timeout=5\r\n\r\n"
)


def spdy_exec(extra: bytes = b"", path: bytes = EXEC, cluster: bytes = b"a") -> bytes:
    return (
        b"POST " + PREFIX + cluster + b"/proxy" + path + b" HTTP/1.1\r\nHost: gw\r\n"
        b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n"
        b"X-Stream-Protocol-Version: v3.channel.k8s.io\r\nContent-Length: 0\r\n" + extra + b"\r\n"
    )


def websocket_exec(extra: bytes = b"") -> bytes:
    return (
        b"GET " + PREFIX + b"a/proxy" + EXEC + b" HTTP/1.1\r\nHost: gw\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n" + extra + b"\r\n"
    )


def switched(h: Harness, request: bytes = b"") -> Upstream:
    """Send an exec upgrade, accept its connection and answer 101."""
    h.send(request or spdy_exec())
    up = h.accept()
    up.respond(SWITCH)
    assert h.client.value().startswith(b"HTTP/1.1 101 ")
    h.client.clear()
    up.transport.clear()
    return up


def test_upgrade_goes_on_a_dedicated_connection_with_cluster_credential() -> None:
    h = Harness()
    h.send(
        spdy_exec(
            b"Authorization: Bearer caller\r\nX-Remote-Group: system:masters\r\n"
            b"X-Remote-User: mallory\r\n"
        )
    )
    pool = h.pools.get(CLUSTER)
    assert (pool.open_connections, pool.dedicated_connections) == (0, 1)
    up = h.accept()
    assert isinstance(up.proto, DedicatedConnection)
    sent = up.transport.value()
    assert sent.startswith(b"POST " + EXEC + b" HTTP/1.1\r\n")
    assert b"Host: 10.0.0.9:6443\r\n" in sent
    assert f"Authorization: Bearer {TOKEN}\r\n".encode() in sent
    assert b"caller" not in sent and b"mallory" not in sent
    assert b"Impersonate" not in sent and b"X-Remote" not in sent
    assert b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n" in sent
    assert b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n" in sent
    assert b"X-Stream-Protocol-Version: v3.channel.k8s.io\r\n" in sent
    assert b"Content-Length: 0\r\n" in sent
    assert sent.endswith(b"\r\n\r\n")


def test_101_is_relayed_then_bytes_flow_raw_both_ways() -> None:
    h = Harness()
    # bytes the client sends right after its head wait for the 101
    h.send(spdy_exec() + b"EARLY-SPDY-FRAME")
    assert h.client.producerState == "paused"
    up = h.accept()
    assert b"EARLY" not in up.transport.value()
    head_sent = len(up.transport.value())
    # the cluster's first frame arrives in the same read as the 101 head
    up.respond(SWITCH + b"\x80\x03\x00\x02first-frame")
    assert h.client.value() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n"
        b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nConnection: Upgrade\r\n\r\n"
        b"\x80\x03\x00\x02first-frame"
    )
    assert up.transport.value()[head_sent:] == b"EARLY-SPDY-FRAME"
    assert h.client.producerState == "producing"
    # from now on nothing is parsed: not even bytes that look like HTTP
    h.client.clear()
    up.transport.clear()
    h.send(b"GET / HTTP/1.1\r\n\r\n\x00\xff")
    assert up.transport.value() == b"GET / HTTP/1.1\r\n\r\n\x00\xff"
    up.respond(b"HTTP/1.1 200 OK\r\n\r\n\x00\x01")
    assert h.client.value() == b"HTTP/1.1 200 OK\r\n\r\n\x00\x01"
    # a dedicated connection never joins the pool
    pool = h.pools.get(CLUSTER)
    assert pool.idle_connections == 0 and pool.dedicated_connections == 1


def test_101_head_split_across_reads_and_after_100_continue() -> None:
    h = Harness()
    h.send(spdy_exec())
    up = h.accept()
    up.respond(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 101 Switching Protocols\r\n")
    up.respond(b"Connection: Upgrade\r\nUpgrade: SPDY/3.1\r\n")
    assert b"101" not in h.client.value()
    up.respond(b"\r\nraw")
    assert h.client.value().endswith(b"Connection: Upgrade\r\n\r\nraw")
    up.respond(b"more")
    assert h.client.value().endswith(b"\r\n\r\nrawmore")


def test_websocket_upgrade_keeps_end_to_end_headers() -> None:
    h = Harness()
    h.send(websocket_exec())
    up = h.accept()
    sent = up.transport.value()
    assert sent.startswith(b"GET " + EXEC + b" HTTP/1.1\r\n")
    assert b"Connection: Upgrade\r\nUpgrade: websocket\r\n" in sent
    assert b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" in sent
    assert b"Sec-WebSocket-Version: 13\r\n" in sent
    assert b"Sec-WebSocket-Protocol: v5.channel.k8s.io, v4.channel.k8s.io\r\n" in sent
    up.respond(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n\x82\x02\x01a"
    )
    assert h.client.value() == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"Sec-WebSocket-Protocol: v5.channel.k8s.io\r\nConnection: Upgrade\r\n\r\n\x82\x02\x01a"
    )


def test_splice_backpressure_both_ways() -> None:
    h = Harness()
    up = switched(h)
    # the client's transport is full: stop reading the cluster
    assert h.client.producer is not None
    h.client.producer.pauseProducing()
    assert up.transport.producerState == "paused"
    h.client.producer.resumeProducing()
    assert up.transport.producerState == "producing"
    # the cluster's transport is full: stop reading the client
    assert up.transport.producer is not None
    up.transport.producer.pauseProducing()
    assert h.client.producerState == "paused"
    up.transport.producer.resumeProducing()
    assert h.client.producerState == "producing"


def test_client_disconnect_closes_the_spliced_upstream() -> None:
    h = Harness()
    up = switched(h)
    up.transport.producer.pauseProducing()  # type: ignore[union-attr]
    h.send(b"last bytes")
    h.proto.connectionLost(Failure(ConnectionLost()))
    assert up.transport.value() == b"last bytes"
    assert up.transport.disconnecting and not up.transport.disconnected
    assert up.transport.producer is None
    up.lose()
    assert h.pools.get(CLUSTER).dedicated_connections == 0
    h.clock.advance(CLOSE_GRACE)
    assert not up.transport.disconnected  # gone already: no abort


def test_cluster_close_closes_the_client_after_its_bytes() -> None:
    h = Harness()
    up = switched(h)
    up.respond(b"final frame")
    up.lose()
    assert h.client.value() == b"final frame"
    assert h.client.disconnecting and h.client.producer is None
    assert h.pools.get(CLUSTER).dedicated_connections == 0
    # a client that never finishes closing is aborted after the grace period
    h.clock.advance(CLOSE_GRACE)
    assert h.client.disconnected


def test_client_half_close_is_passed_on_over_tls() -> None:
    h = Harness()
    up = switched(h)
    h.proto.readConnectionLost()
    # the upstream transport cannot half-close (TLS): both sides close
    assert up.transport.disconnecting and h.client.disconnecting


def test_no_timeout_cuts_a_live_splice() -> None:
    h = Harness()
    up = switched(h)
    h.clock.advance(24 * 3600)
    h.send(b"still")
    up.respond(b"alive")
    assert up.transport.value() == b"still" and h.client.value() == b"alive"
    assert not up.transport.disconnecting and not h.client.disconnecting


@pytest.mark.parametrize("code", [400, 403, 404])
def test_non_101_is_relayed_unchanged_and_connection_kept(code: int) -> None:
    h = Harness()
    body = json.dumps({"kind": "Status", "code": code, "message": "upgrade refused"}).encode()
    # a pipelined plain request waits behind the upgrade request
    h.send(websocket_exec() + get(b"/after"))
    up = h.accept()
    up.respond(
        b"HTTP/1.1 %d Refused\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
        % (code, len(body), body)
    )
    [(got, headers, got_body)] = h.responses()
    assert (got, got_body) == (code, body)
    assert header(headers, b"Content-Type") == b"application/json"
    assert header(headers, b"Upgrade") is None
    # the dedicated connection is closed, not pooled
    assert up.transport.disconnecting
    up.lose()
    pool = h.pools.get(CLUSTER)
    assert pool.idle_connections == 0 and pool.dedicated_connections == 0
    # the client connection goes on: the pipelined request is read as HTTP
    assert not h.client.disconnecting
    plain = h.accept()
    assert plain.transport.value().startswith(b"GET /after HTTP/1.1\r\n")
    plain.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    assert [r[0] for r in h.responses()] == [code, 200]
    assert h.client.producerState == "producing"
    # and kubectl's fallback, SPDY, can follow on the same connection
    h.send(spdy_exec())
    spdy = h.accept()
    assert isinstance(spdy.proto, DedicatedConnection)


def test_non_101_with_connection_close_closes_the_client() -> None:
    h = Harness()
    h.send(websocket_exec(b"Connection: close\r\n"))
    up = h.accept()
    up.respond(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    assert h.responses()[0][0] == 400
    assert h.client.disconnecting


def test_upgrade_pipelined_behind_a_request() -> None:
    h = Harness()
    h.send(get(b"/one") + spdy_exec() + b"EARLY")
    first = h.accept()
    assert h.endpoint.attempts == []  # the upgrade waits its turn
    first.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    assert h.client.producerState == "paused"  # still holding EARLY
    up = h.accept()
    assert up.transport.value().startswith(b"POST " + EXEC)
    up.respond(SWITCH)
    assert up.transport.value().endswith(b"\r\n\r\nEARLY")
    assert h.client.producerState == "producing"
    assert h.client.value().endswith(b"Connection: Upgrade\r\n\r\n")


def test_upgrade_errors_are_the_plain_statuses() -> None:
    h = Harness()
    h.send(spdy_exec(cluster=b"nope"))
    code, _, body = h.responses()[0]
    assert code == 404
    assert status_of(body)["message"] == 'clusters.cluster.karpor.io "nope" not found'
    assert not h.client.disconnecting  # the connection goes on
    h.send(spdy_exec())
    d, _ = h.endpoint.attempts.pop()
    d.errback(Failure(ConnectionRefusedError("10.0.0.9")))
    code, _, body = h.responses()[1]
    assert code == 503 and "'a' is unreachable" in status_of(body)["message"]
    h.send(spdy_exec(cluster=b"t"))
    up = h.accept(handshake=False)
    up.lose(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    code, _, body = h.responses()[2]
    assert code == 502
    assert status_of(body)["message"] == (
        "cluster 't': TLS handshake failed: certificate verify failed"
    )
    assert h.pools.get(TLS_CLUSTER).dedicated_connections == 0


def test_upgrade_connect_timeout_is_503() -> None:
    h = Harness()
    h.send(spdy_exec())
    h.clock.advance(3.0)
    code, _, body = h.responses()[0]
    assert code == 503 and "timed out after 3s" in status_of(body)["message"]


def test_upgrade_with_a_body_is_refused_and_closes() -> None:
    h = Harness()
    request = spdy_exec().replace(b"Content-Length: 0", b"Content-Length: 4") + b"body"
    h.send(request)
    code, headers, body = h.responses()[0]
    assert code == 400 and "cannot carry a body" in status_of(body)["message"]
    assert header(headers, b"Connection") == b"close"
    assert h.client.disconnecting
    assert h.endpoint.attempts == []


def test_101_without_upgrade_headers_is_502() -> None:
    h = Harness()
    h.send(spdy_exec())
    up = h.accept()
    up.respond(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
    code, _, body = h.responses()[0]
    assert code == 502 and "invalid response" in status_of(body)["message"]
    assert up.transport.disconnecting


def test_101_to_a_plain_request_is_502() -> None:
    h = Harness()
    h.send(get(b"/x"))
    up = h.accept()
    up.respond(SWITCH + b"raw")
    code, _, body = h.responses()[0]
    assert code == 502 and "invalid response" in status_of(body)["message"]
    assert up.transport.disconnecting
    assert b"101" not in h.client.value()


def test_client_gone_before_the_101_closes_the_dedicated_connection() -> None:
    h = Harness()
    h.send(spdy_exec())
    up = h.accept()
    h.proto.connectionLost(Failure(ConnectionLost()))
    assert up.transport.disconnected  # aborted
    up.respond(SWITCH)
    assert h.client.value() == b""


def test_client_gone_while_connecting_drops_the_dedicated_connection() -> None:
    h = Harness()
    h.send(spdy_exec())
    h.proto.connectionLost(Failure(ConnectionLost()))
    up = h.accept()
    assert up.transport.value() == b"" and up.transport.disconnecting
    up.lose()
    pool = h.pools.get(CLUSTER)
    assert pool.idle_connections == 0 and pool.dedicated_connections == 0


def test_own_api_upgrade_request_is_answered_and_connection_goes_on() -> None:
    h = Harness()
    h.send(
        b"GET /version HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
        b"GET /healthz HTTP/1.1\r\n\r\n"
    )
    assert [r.path for r, _ in h.api.requests] == ["/version", "/healthz"]
    assert [r[0] for r in h.responses()] == [200, 200]
    assert not h.client.disconnecting


class NoDelayTransport(StringTransport):
    no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def test_nagle_is_off_on_client_and_upstream_connections() -> None:
    h = Harness()
    proto = h.factory.buildProtocol(None)
    assert proto is not None
    client = NoDelayTransport()
    proto.makeConnection(client)
    assert client.no_delay is True
    h.send(spdy_exec())
    _, factory = h.endpoint.attempts.pop()
    upstream = factory.buildProtocol(None)
    transport = NoDelayTransport()
    upstream.makeConnection(transport)
    assert transport.no_delay is True


# -- exec-plugin credentials ---------------------------------------------------------


def _exec_harness() -> tuple[Harness, list[Deferred[ProcessResult]]]:
    runs: list[Deferred[ProcessResult]] = []

    def runner(argv: Sequence[str], env: Mapping[str, str]) -> Deferred[ProcessResult]:
        runs.append(Deferred())
        return runs[-1]

    cluster = Cluster(
        name="e", endpoint="http://10.0.0.7:6443", credential=ExecCredential(command="/bin/true")
    )
    clock = MemoryReactorClock()
    cache = ExecCredentialCache(clock, runner)
    h = Harness(clusters=[cluster], exec_credentials=cache)
    return h, runs


def _credential(token: str) -> ProcessResult:
    out = {
        "kind": "ExecCredential",
        "apiVersion": "client.authentication.k8s.io/v1",
        "status": {"token": token},
    }
    return ProcessResult(0, json.dumps(out).encode())


def test_exec_token_is_awaited_then_carried_and_a_401_drops_it() -> None:
    h, runs = _exec_harness()
    h.send(
        b"POST " + PREFIX + b"e/proxy/api/v1/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n\r\nbo"
    )
    assert len(runs) == 1 and not h.endpoint.attempts
    h.send(b"dy")
    runs[0].callback(_credential("plugin-token"))
    up = h.accept()
    sent = up.transport.value()
    assert b"Authorization: Bearer plugin-token\r\n" in sent
    assert sent.endswith(b"\r\n\r\nbody")
    up.respond(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
    assert h.responses()[0][0] == 401
    h.send(get(b"/again", cluster=b"e"))
    assert len(runs) == 2  # the refused token is not used again


def test_failing_exec_plugin_is_502_naming_the_cluster() -> None:
    h, runs = _exec_harness()
    h.send(get(b"/x", cluster=b"e"))
    runs[0].callback(ProcessResult(1, b"", b"no credentials here"))
    code, _, body = h.responses()[0]
    assert code == 502
    message = status_of(body)["message"]
    assert message.startswith('cluster "e": exec plugin "true" failed')
    assert "no credentials here" not in message


# -- Audit-Id and metrics ----------------------------------------------------------------
# Every response carries the request's Audit-Id (kept from the caller when sane,
# sent upstream, replacing the cluster's), the audit record names it, and each
# request is counted once, where it ends.

_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


class Measured(Harness):
    """The front harness with metrics (in a registry of the test's own)."""

    def __init__(self, **options: Any) -> None:
        self.registry = CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        super().__init__(metrics=self.metrics, **options)
        self.pools = UpstreamPools(
            self.clock, endpoint_factory=lambda creds: self.endpoint, errors=self.metrics
        )
        self.factory.pools = self.pools

    def value(self, name: str, **labels: str) -> float:
        found = self.registry.get_sample_value(name, labels)
        return 0.0 if found is None else found

    def audit_ids(self) -> list[bytes]:
        """The Audit-Id of every response so far, in order."""
        return [
            header(headers, b"Audit-Id") or b""
            for _, headers, _ in parse_responses(self.client.raw())
        ]


def test_a_proxied_response_carries_the_id_sent_upstream_not_the_clusters() -> None:
    h = Measured()
    h.send(get(b"/api/v1/namespaces/d/pods"))
    up = h.accept()
    sent = up.transport.value()
    upstream_ids = re.findall(rb"\r\nAudit-Id: ([^\r]*)\r\n", sent)
    assert len(upstream_ids) == 1 and _UUID.fullmatch(upstream_ids[0])
    up.respond(b"HTTP/1.1 200 OK\r\nAudit-Id: the-clusters-own\r\nContent-Length: 2\r\n\r\n{}")
    assert h.audit_ids() == [upstream_ids[0]]
    assert b"the-clusters-own" not in h.client.raw()


def test_a_sane_caller_id_is_kept_and_an_insane_one_replaced() -> None:
    h = Measured()
    h.send(get(b"/x", b"Audit-Id: caller-chosen.42\r\n"))
    up = h.accept()
    assert b"\r\nAudit-Id: caller-chosen.42\r\n" in up.transport.value()
    up.respond(b"HTTP/1.1 204 No Content\r\n\r\n")
    up.transport.clear()
    h.send(get(b"/x", b"Audit-Id: two words\r\n"))
    up.respond(b"HTTP/1.1 204 No Content\r\n\r\n")
    first, second = h.audit_ids()
    assert first == b"caller-chosen.42"
    assert _UUID.fullmatch(second)
    assert b"two words" not in up.transport.value()


def test_errors_own_api_and_upgrades_carry_an_id() -> None:
    h = Measured()
    h.send(get(b"/x", cluster=b"nope"))  # 404 Status
    h.send(b"GET /version HTTP/1.1\r\nHost: gw\r\n\r\n")  # own API
    assert [code for code, _, _ in parse_responses(h.client.raw())] == [404, 200]
    ids = h.audit_ids()
    assert len(ids) == 2 and all(_UUID.fullmatch(i) for i in ids) and ids[0] != ids[1]
    h.client.clear()
    h.send(spdy_exec(b"Audit-Id: exec-session-1\r\n"))
    up = h.accept()
    assert b"\r\nAudit-Id: exec-session-1\r\n" in up.transport.value()
    up.respond(SWITCH.replace(b"\r\n\r\n", b"\r\nAudit-Id: clusters\r\n\r\n"))
    head = h.client.raw().split(b"\r\n\r\n")[0]
    assert head.startswith(b"HTTP/1.1 101 ")
    assert re.findall(rb"\r\nAudit-Id: ([^\r]*)", head) == [b"exec-session-1"]


def test_unauthenticated_and_malformed_requests_carry_an_id() -> None:
    h = Measured(identity=None)
    h.send(get(b"/x"))
    ((code, headers, _),) = parse_responses(h.client.raw())
    assert code == 401 and _UUID.fullmatch(header(headers, b"Audit-Id") or b"")
    h2 = Measured()
    h2.send(b"GET /\x01 HTTP/1.1\r\n\r\n")
    ((code, headers, _),) = parse_responses(h2.client.raw())
    assert code == 400 and header(headers, b"Audit-Id")


def test_the_audit_record_names_the_responses_id(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    writer = AuditWriter(str(log))
    h = Measured(audit=writer)
    h.send(get(b"/x", b"Audit-Id: from-the-caller\r\n"))
    h.accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    h.send(get(b"/x", cluster=b"nope"))
    writer.close()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["requestID"].encode() for r in records] == h.audit_ids()
    assert records[0]["requestID"] == "from-the-caller"


def test_requests_are_counted_by_cluster_verb_and_code() -> None:
    h = Measured()
    for _ in range(3):
        h.send(get(b"/api/v1/namespaces/d/pods"))
        up = h.upstreams[0] if h.upstreams else h.accept()
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    h.send(get(b"/api/v1/namespaces/d/pods/p"))
    h.upstreams[0].respond(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    h.send(get(b"/x", cluster=b"nope"))
    h.send(b"GET /version HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert h.value("karpor_requests_total", cluster="a", verb="list", code="200") == 3
    assert h.value("karpor_requests_total", cluster="a", verb="get", code="404") == 1
    # the gateway answered these itself: one fixed cluster label, whatever the name asked
    assert h.value("karpor_requests_total", cluster="-", verb="get", code="404") == 1
    assert h.value("karpor_requests_total", cluster="-", verb="get", code="200") == 1
    assert h.value("karpor_request_duration_seconds_count", cluster="a", verb="list") == 3
    sent = sum(len(up.transport.value()) for up in h.upstreams)
    assert sent > 0
    assert h.value("karpor_request_bytes_total", cluster="a") == sum(
        len(get(p)) for p in (b"/api/v1/namespaces/d/pods",) * 3 + (b"/api/v1/namespaces/d/pods/p",)
    )
    answered = len(h.client.raw())
    assert (
        h.value("karpor_response_bytes_total", cluster="a")
        + h.value("karpor_response_bytes_total", cluster="-")
        == answered
    )


def test_latency_is_the_time_to_the_response_head() -> None:
    h = Measured()
    h.send(get(b"/api/v1/namespaces/d/pods?watch=true"))
    up = h.accept()
    assert h.value("karpor_long_running_requests", kind="watch") == 1
    up.respond(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    up.respond(b"5\r\nevent\r\n")
    assert h.value("karpor_requests_total", cluster="a", verb="watch", code="200") == 0
    up.respond(b"0\r\n\r\n")
    assert h.value("karpor_long_running_requests", kind="watch") == 0
    assert h.value("karpor_requests_total", cluster="a", verb="watch", code="200") == 1
    assert h.value("karpor_request_duration_seconds_count", cluster="a", verb="watch") == 1


def test_an_exec_session_is_in_flight_until_its_connection_closes() -> None:
    h = Measured()
    h.send(spdy_exec())
    up = h.accept()
    up.respond(SWITCH)
    assert h.value("karpor_long_running_requests", kind="exec") == 1
    h.send(b"stdin bytes")
    up.respond(b"stdout bytes")
    h.proto.connectionLost(Failure(ConnectionRefusedError()))
    assert h.value("karpor_long_running_requests", kind="exec") == 0
    assert h.value("karpor_requests_total", cluster="a", verb="exec", code="101") == 1
    assert h.value("karpor_request_bytes_total", cluster="a") == len(spdy_exec()) + len(
        b"stdin bytes"
    )
    assert h.value("karpor_response_bytes_total", cluster="a") == len(h.client.raw())


def test_connect_and_tls_failures_are_counted_per_cluster() -> None:
    h = Measured()
    h.send(get(b"/x"))
    d, _ = h.endpoint.attempts.pop()
    d.errback(Failure(ConnectionRefusedError("10.0.0.9")))
    h.send(get(b"/x", cluster=b"t"))
    up = h.accept(handshake=False)
    up.lose(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
    assert h.value("karpor_upstream_connect_errors_total", cluster="a") == 1
    assert h.value("karpor_upstream_tls_errors_total", cluster="t") == 1
    assert h.value("karpor_requests_total", cluster="a", verb="get", code="503") == 1
    assert h.value("karpor_requests_total", cluster="t", verb="get", code="502") == 1


@pytest.mark.parametrize("target", [b"/api/v1/pods", b"/version"])
def test_without_metrics_the_front_still_sends_ids(target: bytes) -> None:
    h = Harness()
    h.send(b"GET " + PREFIX + b"a/proxy" + target + b" HTTP/1.1\r\nHost: gw\r\n\r\n")
    up = h.accept()
    assert b"\r\nAudit-Id: " in up.transport.value()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    assert re.search(rb"\r\nAudit-Id: [-0-9a-f]{36}\r\n", h.client.raw())
    assert h.pools.get(CLUSTER).idle_connections == 1


# -- draining (issue 14 items 7 and 8) ---------------------------------------------


def test_drain_answers_the_request_in_flight_with_connection_close() -> None:
    h = Harness()
    h.send(get(b"/one"))
    up = h.accept()
    h.factory.drain(30.0)
    assert not h.client.disconnecting  # a request was received: it is answered
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    [(code, headers, body)] = h.responses()
    assert (code, body) == (200, b"one")
    assert header(headers, b"Connection") == b"close"
    assert h.client.disconnecting


def test_drain_closes_an_idle_connection_only_after_a_moment_of_idleness() -> None:
    h = Harness()
    h.send(get(b"/one"))
    h.accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    h.factory.drain(30.0)
    assert not h.client.disconnecting
    h.clock.advance(DRAIN_IDLE_GRACE / 2)
    # a request already on its way when the drain began is answered
    h.send(get(b"/two"))
    h.clock.advance(DRAIN_IDLE_GRACE)
    assert not h.client.disconnecting
    h.upstreams[0].respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
    responses = h.responses()
    assert [r[2] for r in responses] == [b"one", b"two"]
    assert header(responses[1][1], b"Connection") == b"close"
    assert h.client.disconnecting
    # an idle connection that sends nothing is closed after the grace
    other = Harness()
    other.send(get(b"/one"))
    other.accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    other.factory.drain(30.0)
    other.clock.advance(DRAIN_IDLE_GRACE)
    assert other.client.disconnecting


def test_drain_never_closes_under_a_request_head_partly_received() -> None:
    h = Harness()
    h.send(get(b"/one"))
    h.accept().respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
    request = get(b"/two")
    h.send(request[:10])
    h.factory.drain(30.0)
    h.clock.advance(DRAIN_IDLE_GRACE * 3)
    assert not h.client.disconnecting
    h.send(request[10:])
    h.upstreams[0].respond(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo")
    assert header(h.responses()[1][1], b"Connection") == b"close"
    assert h.client.disconnecting


def test_drain_answers_pipelined_requests_the_last_with_connection_close() -> None:
    h = Harness()
    h.send(get(b"/one") + get(b"/two") + get(b"/three"))
    up = h.accept()
    h.factory.drain(30.0)
    for body in (b"one", b"two", b"three"):
        up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    responses = h.responses()
    assert [r[2] for r in responses] == [b"one", b"two", b"three"]
    assert [header(r[1], b"Connection") for r in responses] == [None, None, b"close"]
    assert h.client.disconnecting


def test_drain_own_api_and_errors_say_connection_close() -> None:
    h = Harness()
    h.factory.drain(30.0)
    h.send(b"GET /version HTTP/1.1\r\nHost: gw\r\n\r\n")
    [(code, headers, _)] = h.responses()
    assert header(headers, b"Connection") == b"close"
    assert h.client.disconnecting
    other = Harness()
    other.factory.drain(30.0)
    other.send(get(b"/x", cluster=b"nope"))
    [(code, headers, _)] = other.responses()
    assert code == 404 and header(headers, b"Connection") == b"close"


def test_drain_keeps_a_session_past_the_stream_deadline_then_cuts_it_as_a_failure() -> None:
    from karpor.sim import spdy  # noqa: PLC0415 (a client's frames, as kubectl sends them)

    h = Harness()
    up = switched(h)
    encoder = spdy.FrameEncoder()
    h.send(encoder.encode(spdy.SynStream(1, {"streamtype": "error"})))
    up.respond(spdy.FrameEncoder().encode(spdy.SynReply(1, {})))
    h.client.clear()
    drained = h.factory.drain(5.0, 60.0)
    h.clock.advance(10.0)  # the streams' deadline passed: the session runs on
    assert not h.client.disconnecting and not drained.called
    h.send(b"more")
    assert up.transport.value().endswith(b"more")
    # a stop during the drain brings the cut forward
    h.factory.drain(5.0, 1.0)
    h.clock.advance(1.0)
    [frame] = spdy.FrameDecoder().receive_data(h.client.value())
    assert isinstance(frame, spdy.Data) and frame.stream_id == 1 and frame.fin
    assert status_of(frame.data)["status"] == "Failure"
    assert h.client.disconnecting and up.transport.disconnecting


def test_a_session_with_no_clean_ending_is_dropped() -> None:
    h = Harness()
    switched(h)
    h.factory.drain(1.0)
    h.clock.advance(1.0)
    assert h.client.disconnected  # aborted: no clean close the client could take for success
