"""The health prober on a MemoryReactorClock: probes through the upstream
pool (its connections, its credential), timing, timeouts, hot reload, exec
credentials, log lines, and the front failing fast (or trying anyway)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, cast

import httptools
import pytest
from support.fakeendpoint import FakeEndpoint
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.python.failure import Failure

from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import Identity
from karpor.config.model import Cluster, ExecCredential, TokenCredential
from karpor.front.protocol import GatewayFactory, GatewayProtocol
from karpor.health import prober as prober_module
from karpor.health.probe import ClusterStatus, ProbeSettings
from karpor.health.prober import HealthProber
from karpor.upstream.execcredential import ExecCredentialCache, ProcessResult
from karpor.upstream.http1 import UpstreamConnection
from karpor.upstream.pool import UpstreamPools

TOKEN = "s3cr3t-probe-token"
EPOCH = 1_700_000_000.0
CLUSTER = Cluster(
    name="a", endpoint="http://10.0.0.9:6443/k8s/c-1", credential=TokenCredential(token=TOKEN)
)
OTHER = Cluster(name="b", endpoint="http://10.0.0.10:6443", credential=TokenCredential(token="t2"))
VERSION = json.dumps({"gitVersion": "v1.31.0"}).encode()


def ok(body: bytes = b"ok") -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


class Upstream:
    """A completed connection to the (fake) cluster."""

    def __init__(self, proto: UpstreamConnection, transport: StringTransport) -> None:
        self.proto = proto
        self.transport = transport

    def take(self) -> bytes:
        """What the gateway wrote since last taken."""
        data: bytes = self.transport.value()
        self.transport.clear()
        return data

    def respond(self, data: bytes) -> None:
        self.proto.dataReceived(data)


class FakeAuth(CertificateAuthenticator):
    def __init__(self) -> None:
        pass

    def identify(self, peer: Any) -> Identity | None:
        return Identity("alice", ("dev",))


class Harness:
    def __init__(
        self,
        clusters: Sequence[Cluster] = (CLUSTER,),
        settings: ProbeSettings | None = None,
        exec_credentials: ExecCredentialCache | None = None,
    ) -> None:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.pools = UpstreamPools(self.clock, endpoint_factory=lambda creds: self.endpoint)
        self.changes: list[tuple[str, ClusterStatus | None]] = []
        self.prober = HealthProber(
            self.clock,
            self.pools,
            settings or ProbeSettings(),
            exec_credentials=exec_credentials,
            on_change=lambda name, status: self.changes.append((name, status)),
            now=lambda: EPOCH + self.clock.seconds(),
        )
        self.clusters: dict[str, Cluster] = {c.name: c for c in clusters}
        self.prober.sync(self.clusters)

    def accept(self) -> Upstream:
        """Complete the oldest pending connection attempt."""
        d, factory = self.endpoint.attempts.pop(0)
        proto = factory.buildProtocol(None)
        transport = StringTransport(lenient=True)
        proto.makeConnection(transport)
        d.callback(proto)
        return Upstream(proto, transport)

    def refuse(self) -> None:
        """Fail the oldest pending connection attempt."""
        d, _ = self.endpoint.attempts.pop(0)
        d.errback(Failure(ConnectionRefusedError("Connection refused")))

    def healthy_probe(self, up: Upstream) -> None:
        """Answer a probe's two requests on ``up``."""
        assert up.take().startswith(b"GET /k8s/c-1/readyz ")
        up.respond(ok())
        assert up.take().startswith(b"GET /k8s/c-1/version ")
        up.respond(ok(VERSION))

    def status(self, name: str = "a") -> ClusterStatus | None:
        return self.prober.status(name)

    def front(self) -> tuple[GatewayProtocol, StringTransport]:
        factory = GatewayFactory(
            lambda: self.clusters,
            _NoApi(),
            FakeAuth(),
            self.pools,
            reactor=self.clock,
            health_gate=self.prober.refusal,
        )
        proto = factory.buildProtocol(None)
        assert proto is not None
        client = StringTransport(lenient=True)
        proto.makeConnection(client)
        return proto, client


class _NoApi:
    def handle(self, request: Any, responder: Any) -> None:
        raise AssertionError("no own-API request in these tests")


def response_of(data: bytes) -> tuple[int, dict[str, Any]]:
    found: list[tuple[int, bytes]] = []

    class P:
        body = b""

        def on_body(self, b: bytes) -> None:
            self.body += b

        def on_message_complete(self) -> None:
            found.append((parser.get_status_code(), self.body))

    parser = httptools.HttpResponseParser(P())
    parser.feed_data(data)
    [(code, body)] = found
    return code, json.loads(body)


def proxied(cluster: bytes = b"a") -> bytes:
    return (
        b"GET /apis/cluster.karpor.io/v1beta1/clusters/"
        + cluster
        + b"/proxy/api/v1/pods HTTP/1.1\r\nHost: gw\r\n\r\n"
    )


@pytest.fixture
def log_lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    monkeypatch.setattr(prober_module, "log", Logger(observer=cast(ILogObserver, observe)))
    return lines


def test_a_probe_rides_the_pool_with_the_cluster_credential() -> None:
    h = Harness()
    assert h.status() is None and not h.endpoint.attempts
    h.clock.advance(0)  # a new cluster is probed at once
    up = h.accept()
    head = up.transport.value()
    assert head.startswith(b"GET /k8s/c-1/readyz HTTP/1.1\r\nHost: 10.0.0.9:6443\r\n")
    assert f"Authorization: Bearer {TOKEN}\r\n".encode() in head
    assert b"User-Agent: karpor-health-probe\r\n" in head
    h.healthy_probe(up)
    status = h.status()
    assert status == ClusterStatus(True, "/readyz: ok", EPOCH, "v1.31.0")
    assert h.changes == [("a", status)]
    # the next probe: after the interval, on the same pooled connection
    h.clock.advance(9.9)
    assert up.transport.value() == b""
    h.clock.advance(0.1)
    h.healthy_probe(up)
    assert not h.endpoint.attempts  # one connection for every probe
    assert len(h.changes) == 2  # every verdict is passed on (the probe time moves)
    assert h.pools.get(CLUSTER).open_connections == 1


def test_unhealthy_then_probed_sooner_then_healthy_one_log_line_each(
    log_lines: list[str],
) -> None:
    h = Harness()
    h.clock.advance(0)
    h.refuse()
    status = h.status()
    assert status is not None and not status.healthy
    assert status.message.startswith("GET /readyz: cluster 'a' is unreachable: ")
    assert "refused" in status.message
    assert log_lines == [f"cluster a is unhealthy: {status.message}"]
    # failing: the next probe after the retry interval, not the interval
    h.clock.advance(2.4)
    assert not h.endpoint.attempts
    h.clock.advance(0.1)
    h.refuse()  # still down: no second log line
    assert len(log_lines) == 1
    h.clock.advance(2.5)
    h.healthy_probe(h.accept())
    status = h.status()
    assert status is not None and status.healthy and status.version == "v1.31.0"
    assert log_lines[1:] == ["cluster a is healthy (v1.31.0): /readyz: ok"]
    assert all(TOKEN not in line for line in log_lines)


def test_a_hung_probe_times_out_aborts_and_never_piles_up() -> None:
    h = Harness()
    h.clock.advance(0)
    up = h.accept()
    assert up.take().startswith(b"GET /k8s/c-1/readyz ")
    h.clock.advance(3.9)
    assert h.status() is None  # still in flight: nothing known yet
    h.clock.advance(0.1)
    status = h.status()
    assert status is not None and status.message == "GET /readyz: no answer within 4s"
    assert up.transport.disconnected  # the connection of the dropped request is aborted
    up.proto.connectionLost(Failure(ConnectionDone()))
    # nothing else was sent meanwhile: one probe in flight at a time
    assert up.take() == b"" and not h.endpoint.attempts
    h.clock.advance(2.5)
    assert len(h.endpoint.attempts) == 1
    # a connection that never completes: the pool's connect timeout (3 s) fails it first
    h.clock.advance(3)
    status = h.status()
    assert status is not None
    assert status.message == (
        "GET /readyz: cluster 'a' is unreachable: connection timed out after 3s"
    )


def test_the_front_fails_fast_without_connecting() -> None:
    h = Harness()
    h.clock.advance(0)
    h.refuse()
    proto, client = h.front()
    proto.dataReceived(proxied())
    code, status = response_of(client.value())
    assert code == 503
    assert status["reason"] == "ServiceUnavailable"
    message = status["message"]
    assert message.startswith('cluster "a" is unhealthy: GET /readyz: ')
    assert "unreachable" in message and "(probed 2023-11-14T22:13:20Z)" in message
    assert status["details"]["name"] == "a"
    assert not h.endpoint.attempts  # no connection was even tried
    assert TOKEN not in json.dumps(status)
    # kubectl prints it even where its discovery drops the Status message
    head = client.value().split(b"\r\n\r\n")[0].decode()
    assert '\r\nwarning: 299 - "cluster \\"a\\" is unhealthy: get /readyz: ' in head.lower()
    assert TOKEN not in head


def test_try_anyway_forwards_to_an_unhealthy_cluster() -> None:
    h = Harness(settings=ProbeSettings(fail_fast=False))
    h.clock.advance(0)
    h.refuse()
    status = h.status()
    assert status is not None and not status.healthy  # known, and shown
    proto, client = h.front()
    proto.dataReceived(proxied())
    assert len(h.endpoint.attempts) == 1  # the request tries the cluster itself
    assert client.value() == b""


def test_a_cluster_never_probed_is_not_failed_fast() -> None:
    h = Harness()
    proto, client = h.front()
    proto.dataReceived(proxied())  # before the first probe even started
    assert len(h.endpoint.attempts) == 1
    assert client.value() == b""


def test_hot_reload_adds_removes_and_restarts_probes() -> None:
    h = Harness()
    h.clock.advance(0)
    h.healthy_probe(h.accept())
    # added: probed at once
    h.prober.sync({"a": CLUSTER, "b": OTHER})
    h.clock.advance(0)
    up_b = h.accept()
    assert up_b.take().startswith(b"GET /readyz ")
    # removed while its probe is in flight: the probe is dropped, no verdict
    before = len(h.changes)
    h.prober.sync({"a": CLUSTER})
    assert up_b.transport.disconnected
    up_b.respond(ok())
    assert h.prober.status("b") is None and len(h.changes) == before
    # a new endpoint: unknown again, probed at once
    moved = Cluster(
        name="a", endpoint="http://10.0.0.11:6443/k8s/c-1", credential=TokenCredential(TOKEN)
    )
    h.prober.sync({"a": moved})
    assert h.changes[-1] == ("a", None) and h.status() is None
    h.clock.advance(0)
    h.healthy_probe(h.accept())
    # another display name only: the verdict stands
    renamed = Cluster(
        name="a",
        endpoint="http://10.0.0.11:6443/k8s/c-1",
        credential=TokenCredential(TOKEN),
        display_name="A",
    )
    before = len(h.changes)
    h.prober.sync({"a": renamed})
    assert len(h.changes) == before and h.status() is not None
    h.prober.stop()
    h.clock.advance(100)
    assert not h.endpoint.attempts and len(h.changes) == before


def test_exec_credential_is_fetched_and_a_401_drops_it() -> None:
    runs: list[Deferred[ProcessResult]] = []

    def runner(argv: Sequence[str], env: Mapping[str, str]) -> Deferred[ProcessResult]:
        runs.append(Deferred())
        return runs[-1]

    clock = MemoryReactorClock()
    cluster = Cluster(
        name="e", endpoint="http://10.0.0.7:6443", credential=ExecCredential(command="/bin/true")
    )
    h = Harness([cluster], exec_credentials=ExecCredentialCache(clock, runner))
    h.clock.advance(0)
    assert len(runs) == 1 and not h.endpoint.attempts
    token = {"kind": "ExecCredential", "status": {"token": "plugin-token"}}
    token["apiVersion"] = "client.authentication.k8s.io/v1"
    runs[0].callback(ProcessResult(0, json.dumps(token).encode()))
    up = h.accept()
    assert b"Authorization: Bearer plugin-token\r\n" in up.take()
    up.respond(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")
    status = h.prober.status("e")
    assert status is not None and status.message == "GET /readyz: 401 Unauthorized"
    h.clock.advance(2.5)
    assert len(runs) == 2  # the refused token is not used again
    # a plugin that takes too long: the probe says what it waited for
    h.clock.advance(4)
    status = h.prober.status("e")
    assert status is not None
    assert status.message == "GET /readyz: no answer within 4s (the exec plugin)"


def test_a_definition_that_cannot_be_used_is_unhealthy_with_the_pool_error() -> None:
    broken = Cluster(
        name="x", endpoint="https://10.0.0.5:6443", ca_pem=b"not a certificate", insecure=False
    )
    h = Harness([broken])
    h.clock.advance(0)
    status = h.prober.status("x")
    assert status is not None and not status.healthy
    assert status.message.startswith("GET /readyz: cluster 'x': invalid TLS configuration: ")
    assert status.refusal_code == 502
    error = h.prober.refusal(broken)
    assert error is not None and error.code == 502


def test_clusters_added_together_are_first_probed_spread_out_not_in_one_burst() -> None:
    many = [
        Cluster(
            name=f"c{i}",
            endpoint=f"http://10.1.{i // 250}.{i % 250}:6443",
            credential=TokenCredential(token="t"),
        )
        for i in range(1000)
    ]
    h = Harness(clusters=many)
    h.clock.advance(0)
    assert len(h.endpoint.attempts) == 1  # the first at once
    h.clock.advance(1.0)
    assert 150 < len(h.endpoint.attempts) < 250  # about 200 a second
    h.clock.advance(ProbeSettings().interval)
    assert len(h.endpoint.attempts) == 1000  # every one within an interval
