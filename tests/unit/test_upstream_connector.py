"""One connector for both pools: a connection attempt that fails fails the
same way whether it was for a pooled HTTP/1.1 request or an HTTP/2 stream
(the same Status, the same metric), and a request's credential is resolved
by the pool whatever carries it (exec-plugin tokens awaited, dropped on a
401), probes included."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from OpenSSL import SSL
from support.fakeendpoint import FakeEndpoint
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from karpor.config.model import Cluster, ExecCredential, TokenCredential
from karpor.http.headers import Header, ResponseHeaders
from karpor.kube.status import ApiError
from karpor.upstream.execcredential import ExecCredentialCache, ProcessResult
from karpor.upstream.http1 import Carrier, Tunnel
from karpor.upstream.pool import ClusterPool, PoolSettings
from karpor.upstream.request import UNRESOLVED, UpstreamRequest

TLS = Cluster(
    name="t", endpoint="https://10.0.0.1:6443", credential=TokenCredential(token="c"), insecure=True
)
PLAIN = b"/api/v1/pods"
WATCH = b"/api/v1/pods?watch=true"


class Exchange:
    """The smallest exchange: notes what the pool and carrier tell it."""

    head_only = False
    retriable = False
    head_timeout: float | None = None

    def __init__(self, target: bytes, upgrade: bytes | None = None) -> None:
        self.request = UpstreamRequest(b"GET", target, upgrade=upgrade)
        self.credential = UNRESOLVED
        self.cancelled = False
        self.errors: list[ApiError] = []
        self.codes: list[int] = []
        self.carrier: Carrier | None = None

    def attach(self, connection: Carrier) -> None:
        self.carrier = connection
        connection.finish_request()

    def upstream_interim(self, code: int, reason: bytes, headers: list[Header]) -> None: ...

    def upstream_head(self, code: int, reason: bytes, response: ResponseHeaders) -> None:
        self.codes.append(code)

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> Tunnel | None:
        return None

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_end(self) -> None: ...

    def upstream_failed(self, error: ApiError) -> None:
        self.errors.append(error)


class Errors:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def connect_error(self, cluster: str) -> None:
        self.seen.append(("connect", cluster))

    def tls_error(self, cluster: str) -> None:
        self.seen.append(("tls", cluster))


class Harness:
    def __init__(self, cluster: Cluster = TLS, **pool: Any) -> None:
        self.clock = MemoryReactorClock()
        self.h1 = FakeEndpoint()
        self.h2 = FakeEndpoint()
        self.errors = Errors()
        self.pool = ClusterPool(
            cluster,
            self.clock,
            PoolSettings(connect_timeout=3.0),
            endpoint_factory=lambda creds: self.h1,
            h2_endpoint_factory=lambda creds: self.h2,
            errors=self.errors,
            **pool,
        )

    def attempt(self, endpoint: FakeEndpoint) -> tuple[Deferred[Any], Any]:
        d, factory = endpoint.attempts.pop(0)
        return d, factory.buildProtocol(None)


def _refused(h: Harness, endpoint: FakeEndpoint) -> None:
    d, _ = h.attempt(endpoint)
    d.errback(Failure(ConnectionRefusedError("Connection refused")))


def _connect_timeout(h: Harness, endpoint: FakeEndpoint) -> None:
    h.clock.advance(3.0)  # the attempt is cancelled


def _tls_failure(h: Harness, endpoint: FakeEndpoint) -> None:
    d, proto = h.attempt(endpoint)
    proto.makeConnection(StringTransport())
    d.callback(proto)
    proto.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))


def _handshake_timeout(h: Harness, endpoint: FakeEndpoint) -> None:
    d, proto = h.attempt(endpoint)
    transport = StringTransport()
    proto.makeConnection(transport)
    d.callback(proto)
    h.clock.advance(3.0)  # the handshake never ends: aborted
    assert transport.disconnecting
    proto.connectionLost(Failure(ConnectionRefusedError("aborted")))


FAILURES = {
    "refused": (
        _refused,
        503,
        "cluster 't' is unreachable: Connection was refused by other side: Connection refused.",
        "connect",
    ),
    "connect timeout": (
        _connect_timeout,
        503,
        "cluster 't' is unreachable: connection timed out after 3s",
        "connect",
    ),
    "tls failure": (
        _tls_failure,
        502,
        "cluster 't': TLS handshake failed: certificate verify failed",
        "tls",
    ),
    "handshake timeout": (
        _handshake_timeout,
        503,
        "cluster 't' is unreachable: connection timed out after 3s",
        "connect",
    ),
}


@pytest.mark.parametrize("kind", FAILURES)
def test_each_failure_is_the_same_status_for_both_pools(kind: str) -> None:
    fail, code, message, metric = FAILURES[kind]
    outcomes = []
    for target, side in ((PLAIN, "h1"), (WATCH, "h2")):
        h = Harness()
        exchange = Exchange(target)
        h.pool.submit(exchange)
        endpoint = getattr(h, side)
        assert len(endpoint.attempts) == 1  # the carrier the request's kind calls for
        fail(h, endpoint)
        [error] = exchange.errors
        outcomes.append((error.code, error.message, h.errors.seen))
        assert h.clock.getDelayedCalls() == []  # the attempt's timer is gone
        assert h.pool.empty
    assert outcomes[0] == outcomes[1] == (code, message, [(metric, "t")])


def test_an_upgrade_gets_a_dedicated_connection_with_the_same_errors() -> None:
    h = Harness()
    exchange = Exchange(b"/api/v1/namespaces/d/pods/p/exec", upgrade=b"SPDY/3.1")
    h.pool.submit(exchange)
    assert h.pool.dedicated_connections == 1 and h.pool.open_connections == 0
    _refused(h, h.h1)
    assert [(e.code, e.message) for e in exchange.errors] == [
        (
            503,
            "cluster 't' is unreachable: Connection was refused by other side: Connection refused.",
        )
    ]
    assert h.pool.dedicated_connections == 0


# -- the credential, resolved by the pool ---------------------------------------------


def _exec_harness() -> tuple[Harness, list[Deferred[ProcessResult]]]:
    runs: list[Deferred[ProcessResult]] = []

    def runner(argv: Sequence[str], env: Mapping[str, str]) -> Deferred[ProcessResult]:
        runs.append(Deferred())
        return runs[-1]

    cluster = Cluster(
        name="e", endpoint="http://10.0.0.7:6443/p", credential=ExecCredential(command="/bin/true")
    )
    h = Harness(cluster)
    h.pool.exec_credentials = ExecCredentialCache(h.clock, runner)
    return h, runs


def _token(token: str) -> ProcessResult:
    out = {"kind": "ExecCredential", "apiVersion": "client.authentication.k8s.io/v1"}
    out["status"] = {"token": token}  # type: ignore[assignment]
    return ProcessResult(0, json.dumps(out).encode())


@pytest.mark.parametrize(
    "target", [PLAIN, b"/api/v1/namespaces/d/pods/p/attach"], ids=["plain", "upgrade"]
)
def test_the_pool_awaits_an_exec_token_and_a_401_drops_it(target: bytes) -> None:
    h, runs = _exec_harness()
    upgrade = b"websocket" if target.endswith(b"attach") else None
    exchange = Exchange(target, upgrade)
    h.pool.submit(exchange)
    assert len(runs) == 1 and not h.h1.attempts and exchange.credential is UNRESOLVED
    runs[0].callback(_token("plugin-token"))
    d, proto = h.attempt(h.h1)
    transport = StringTransport()
    proto.makeConnection(transport)
    d.callback(proto)
    sent = transport.value()
    assert sent.startswith(b"GET /p" + target + b" HTTP/1.1\r\nHost: 10.0.0.7:6443\r\n")
    assert b"Authorization: Bearer plugin-token\r\n" in sent
    proto.dataReceived(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
    assert exchange.codes == [401]
    # the refused token is not used again: the next request runs the plugin
    h.pool.submit(Exchange(PLAIN))
    assert len(runs) == 2


def test_a_request_gone_while_the_plugin_runs_is_not_sent() -> None:
    h, runs = _exec_harness()
    exchange = Exchange(PLAIN)
    h.pool.submit(exchange)
    exchange.cancelled = True
    runs[0].callback(_token("plugin-token"))
    assert not h.h1.attempts and exchange.errors == []


def test_a_plugin_that_fails_is_a_502_naming_the_cluster() -> None:
    h, runs = _exec_harness()
    exchange = Exchange(PLAIN)
    h.pool.submit(exchange)
    runs[0].callback(ProcessResult(1, b"", b"secret detail"))
    [error] = exchange.errors
    assert error.code == 502 and error.message.startswith('cluster "e": exec plugin "true" failed')
    assert "secret detail" not in error.message
