"""The gateway's tunnel carrier: no agent, the sweep (liveness, revocation),
streams ended by a lost tunnel."""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
from twisted.internet.task import Clock

from karpor.http.headers import Header, ResponseHeaders
from karpor.kube.status import ApiError
from karpor.upstream.request import UNRESOLVED, UpstreamRequest
from karpor.upstream.tunnel import DEAD_AFTER, PING_INTERVAL, SWEEP_INTERVAL, AgentLink, Tunnels

_PING_HEAD = b"\x00\x00\x08\x06\x00"  # length 8, type PING, no flags


class FakeTransport:
    def __init__(self) -> None:
        self.data = b""
        self.aborted = False
        self.closed = False

    def write(self, data: bytes) -> None:
        self.data += data

    def loseConnection(self) -> None:
        self.closed = True

    def abortConnection(self) -> None:
        self.aborted = True


class FakeExchange:
    def __init__(self, target: bytes = b"/api") -> None:
        self.request = UpstreamRequest(b"GET", target)
        self.credential = UNRESOLVED
        self.head_only = False
        self.retriable = True
        self.cancelled = False
        self.head_timeout: float | None = None
        self.failed: ApiError | None = None
        self.carrier: Any = None

    def attach(self, connection: Any) -> None:
        self.carrier = connection
        connection.finish_request()

    def upstream_interim(self, code: int, reason: bytes, headers: list[Header]) -> None:
        pass

    def upstream_head(self, code: int, reason: bytes, response: ResponseHeaders) -> None:
        pass

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> None:
        return None

    def upstream_body(self, data: bytes) -> None:
        pass

    def upstream_end(self) -> None:
        pass

    def upstream_failed(self, error: ApiError) -> None:
        self.failed = error


def make_link(clock: Clock, authorized: list[bool]) -> tuple[Tunnels, AgentLink, FakeTransport]:
    tunnels = Tunnels(clock, worker=1, workers=2, wall_clock=lambda: 1000.0)
    transport = FakeTransport()
    link = AgentLink(
        tunnels,
        "edge",
        transport,  # type: ignore[arg-type]
        agent="system:karpor:agent:edge",
        address="10.0.0.7",
        version="1.0",
        authorized=lambda: authorized[0],
    )
    link.start(b"")
    return tunnels, link, transport


def agent_settings() -> bytes:
    server = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    server.initiate_connection()
    return server.data_to_send()


def test_no_agent_fails_at_once_naming_the_cluster() -> None:
    tunnels = Tunnels(Clock())
    exchange = FakeExchange()
    tunnels.multiplexer("edge").submit(exchange)
    assert exchange.failed is not None
    assert exchange.failed.code == 503
    assert exchange.failed.message == 'cluster "edge" is unreachable: no agent connected'


def test_link_status_and_streams_on_it() -> None:
    clock = Clock()
    tunnels, link, transport = make_link(clock, [True])
    assert transport.data.startswith(b"PRI * HTTP/2.0")  # the gateway is the HTTP/2 client
    link.client_data(agent_settings())
    status = tunnels.status("edge")
    assert (status.connected, status.since, status.version) == (1, 1000.0, "1.0")
    exchange = FakeExchange()
    tunnels.multiplexer("edge").submit(exchange)
    assert exchange.carrier is not None and exchange.failed is None
    assert tunnels.streams("edge") == 1
    link.client_lost()  # the agent's connection dropped: its stream fails for its client
    assert exchange.failed is not None and exchange.failed.code == 502
    assert tunnels.status("edge").connected == 0
    later = FakeExchange()
    tunnels.multiplexer("edge").submit(later)
    assert later.failed is not None and later.failed.code == 503


def test_a_quiet_link_is_pinged_then_dropped() -> None:
    clock = Clock()
    _, link, transport = make_link(clock, [True])
    link.client_data(agent_settings())
    clock.advance(SWEEP_INTERVAL)  # the sweep notes what was received
    sent = len(transport.data)
    steps = int(PING_INTERVAL / SWEEP_INTERVAL)
    for _ in range(steps):
        clock.advance(SWEEP_INTERVAL)
    assert _PING_HEAD in transport.data[sent:]
    assert not transport.aborted
    while clock.seconds() < DEAD_AFTER + 2 * SWEEP_INTERVAL:
        clock.advance(SWEEP_INTERVAL)
    assert transport.aborted


def test_a_link_that_hears_from_its_agent_stays() -> None:
    clock = Clock()
    _, link, transport = make_link(clock, [True])
    for _ in range(int(3 * DEAD_AFTER / SWEEP_INTERVAL)):
        link.client_data(b"")  # nothing parsed, but counted as bytes only when bytes come
        link.received += 1  # a PING answer or any frame: bytes arrived
        clock.advance(SWEEP_INTERVAL)
    assert not transport.aborted


def test_a_revoked_agent_is_cut_at_the_next_sweep() -> None:
    clock = Clock()
    authorized = [True]
    _, _, transport = make_link(clock, authorized)
    clock.advance(SWEEP_INTERVAL)
    assert not transport.aborted
    authorized[0] = False
    clock.advance(SWEEP_INTERVAL)
    assert transport.aborted


def test_tunnel_metrics_count_links_connects_and_bytes() -> None:
    from prometheus_client import CollectorRegistry  # noqa: PLC0415

    from karpor.metrics.gateway import GatewayMetrics  # noqa: PLC0415

    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    clock = Clock()
    tunnels = Tunnels(clock, metrics=metrics)
    transport = FakeTransport()
    link = AgentLink(
        tunnels,
        "edge",
        transport,  # type: ignore[arg-type]
        agent="system:karpor:agent:edge",
        address="10.0.0.7",
        version="1.0",
        authorized=lambda: True,
    )
    link.start(b"")
    link.client_data(agent_settings())

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"cluster": "edge", **labels})

    assert value("karpor_tunnels") == 1
    assert value("karpor_tunnel_connects_total") == 1
    clock.advance(SWEEP_INTERVAL)
    assert value("karpor_tunnel_bytes_total", direction="in") == link.received
    link.client_lost()
    assert value("karpor_tunnels") == 0


class RecordingTunnel:
    def __init__(self) -> None:
        self.data = b""
        self.eof = False
        self.lost = False

    def upstream_data(self, data: bytes) -> None:
        self.data += data

    def upstream_eof(self) -> None:
        self.eof = True

    def upstream_lost(self) -> None:
        self.lost = True


class UpgradeExchange(FakeExchange):
    def __init__(self) -> None:
        super().__init__(b"/api/v1/namespaces/a/pods/p/exec?command=sh")
        self.request = UpstreamRequest(
            b"POST",
            self.request.target,
            [(b"Content-Length", b"0"), (b"X-Stream-Protocol-Version", b"v4.channel.k8s.io")],
            upgrade=b"SPDY/3.1",
        )
        self.switched: ResponseHeaders | None = None
        self.tunnel = RecordingTunnel()

    def upstream_switch(self, reason: bytes, response: ResponseHeaders) -> Any:
        self.switched = response
        return self.tunnel


def test_an_upgrade_is_a_session_stream_spliced_on_switch() -> None:
    import h2.events  # noqa: PLC0415

    from karpor.http.tunnelwire import SWITCHED_HEADER, UPGRADE_HEADER  # noqa: PLC0415

    clock = Clock()
    tunnels, link, transport = make_link(clock, [True])
    agent = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    agent.initiate_connection()
    agent.receive_data(transport.data)
    transport.data = b""
    link.client_data(agent.data_to_send())
    exchange = UpgradeExchange()
    tunnels.multiplexer("edge").submit(exchange)
    events = agent.receive_data(transport.data)
    transport.data = b""
    (received,) = [e for e in events if isinstance(e, h2.events.RequestReceived)]
    headers = dict(received.headers or [])
    assert headers[b":method"] == b"POST"
    assert headers[UPGRADE_HEADER] == b"SPDY/3.1"
    assert b"content-length" not in headers  # the session's bytes are no body
    assert received.stream_ended is None  # the stream stays open
    stream_id = received.stream_id or 0
    agent.send_headers(
        stream_id,
        [
            (b":status", b"200"),
            (b"x-stream-protocol-version", b"v4.channel.k8s.io"),
            (SWITCHED_HEADER, b"101"),
            (UPGRADE_HEADER, b"SPDY/3.1"),
        ],
    )
    agent.send_data(stream_id, b"from the pod")
    link.client_data(agent.data_to_send())
    assert exchange.switched is not None
    forward = exchange.switched.forward
    assert (b"Upgrade", b"SPDY/3.1") in forward and (b"Connection", b"Upgrade") in forward
    assert (b"x-stream-protocol-version", b"v4.channel.k8s.io") in forward
    assert exchange.tunnel.data == b"from the pod"
    exchange.carrier.transport.write(b"from the client")
    events = agent.receive_data(transport.data)
    assert b"".join(e.data or b"" for e in events if isinstance(e, h2.events.DataReceived)) == (
        b"from the client"
    )
    agent.end_stream(stream_id)
    link.client_data(agent.data_to_send())
    assert exchange.tunnel.eof and exchange.tunnel.lost
