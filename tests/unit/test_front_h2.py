"""The front over HTTP/2 (karpor.front.h2protocol) on StringTransports and a
MemoryReactorClock: the switch at the handshake (or not, with ``http2``
off), a request through the pipeline, the idle timeout, the drain's
``GOAWAY``; the settings; the serving context's ALPN."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from hyperframe.frame import Frame, GoAwayFrame
from OpenSSL import SSL
from support.fakeendpoint import FakeEndpoint
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from zope.interface import alsoProvides, implementer

from karpor.app.service import GatewayService, resolve_settings
from karpor.app.settings import SettingsError, parse_settings
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import Identity
from karpor.config.model import Cluster, TokenCredential
from karpor.front.h2protocol import H2FrontProtocol
from karpor.front.protocol import GatewayFactory, GatewayProtocol
from karpor.http.bounds import ClientConnectionSettings, sweep_interval
from karpor.http.headers import split_response
from karpor.upstream.pool import UpstreamPools

CLUSTER = Cluster(name="a", endpoint="http://10.0.0.9:6443", credential=TokenCredential(token="t"))
SMALL = ClientConnectionSettings(idle_timeout=0.3, max_concurrent_streams=9)


class FakeAuth(CertificateAuthenticator):
    def __init__(self) -> None:
        pass

    def identify(self, peer: Any) -> Identity | None:
        return Identity("alice", ("dev",))


class Api:
    def handle(self, request: Any, responder: Any) -> None:
        responder.respond(200, [(b"Content-Type", b"text/plain")], request.path.encode())


class World:
    def __init__(self, connections: ClientConnectionSettings = SMALL) -> None:
        self.clock = MemoryReactorClock()
        self.factory = GatewayFactory(
            lambda: {"a": CLUSTER},
            Api(),
            FakeAuth(),
            UpstreamPools(self.clock, endpoint_factory=lambda creds: FakeEndpoint()),
            reactor=self.clock,
            connections=connections,
        )

    def connect(self, alpn: bytes = b"h2") -> tuple[StringTransport, Any]:
        proto = self.factory.buildProtocol(None)
        assert proto is not None
        transport = StringTransport(lenient=True)
        alsoProvides(transport, ISSLTransport)
        transport.negotiatedProtocol = alpn  # type: ignore[attr-defined]
        transport.protocol = proto  # type: ignore[attr-defined]
        proto.makeConnection(transport)
        proto.handshakeCompleted()
        return transport, transport.protocol  # type: ignore[attr-defined]


class Client:
    """The ``h2`` library as the client, over a StringTransport."""

    def __init__(self, transport: StringTransport, protocol: Any) -> None:
        self.transport = transport
        self.protocol = protocol
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.exchange()

    def exchange(self) -> None:
        for _ in range(5):
            out = self.h2.data_to_send()
            if out:
                self.protocol.dataReceived(out)
            got = self.transport.value()
            self.transport.clear()
            if got:
                self.events += self.h2.receive_data(got)
            if not out and not got:
                return

    def get(self, path: bytes) -> int:
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(
            sid,
            [(b":method", b"GET"), (b":path", path), (b":scheme", b"https"), (b":authority", b"g")],
            end_stream=True,
        )
        self.exchange()
        return sid

    def response(self, sid: int) -> tuple[int, bytes]:
        status = 0
        body = b""
        for event in self.events:
            if getattr(event, "stream_id", None) != sid:
                continue
            if isinstance(event, h2.events.ResponseReceived):
                status = int(dict(event.headers or [])[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                body += event.data or b""
        return status, body


def test_the_settings_section_has_the_http2_keys() -> None:
    defaults = ClientConnectionSettings()
    assert (defaults.max_concurrent_streams, defaults.http2) == (1000, True)
    text = "clientConnections: {maxConcurrentStreams: 50, http2: false}\n"
    parsed = parse_settings(text, "f").client_connections
    assert (parsed.max_concurrent_streams, parsed.http2) == (50, False)
    for bad, message in (
        ("{maxConcurrentStreams: 0}", "maxConcurrentStreams: must be a positive integer"),
        ("{http2: 1}", "http2: must be true or false"),
    ):
        with pytest.raises(SettingsError) as info:
            parse_settings(f"clientConnections: {bad}\n", "f")
        assert message in info.value.problems[0]


def test_h2_chosen_at_the_handshake_serves_streams_through_the_pipeline() -> None:
    world = World()
    transport, proto = world.connect()
    assert isinstance(proto, H2FrontProtocol)
    assert world.factory.protocols == {proto}
    client = Client(transport, proto)
    assert client.h2.remote_settings.max_concurrent_streams == 9
    first, second = client.get(b"/version"), client.get(b"/healthz")
    assert client.response(first) == (200, b"/version")
    assert client.response(second) == (200, b"/healthz")
    # the pipeline's answers: a Status for a route it refuses, with the Audit-Id
    refused = client.get(b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/api/v1/pods/x/exec")
    code, body = client.response(refused)
    assert code == 400 and json.loads(body)["kind"] == "Status"
    assert not proto.streams


def test_http2_off_keeps_http11_even_when_alpn_says_h2() -> None:
    world = World(dataclasses.replace(SMALL, http2=False))
    transport, proto = world.connect()
    assert isinstance(proto, GatewayProtocol)
    proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: g\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 200")


def test_http11_alpn_stays_http11() -> None:
    _, proto = World().connect(b"http/1.1")
    assert isinstance(proto, GatewayProtocol)


def test_an_idle_connection_gets_its_goaway_and_closes() -> None:
    world = World()
    transport, proto = world.connect()
    client = Client(transport, proto)
    for _ in range(int((0.3 + 3 * sweep_interval(SMALL)) / sweep_interval(SMALL)) + 2):
        world.clock.advance(sweep_interval(SMALL))
    client.exchange()
    assert any(isinstance(e, h2.events.ConnectionTerminated) for e in client.events)
    assert transport.disconnecting


def test_drain_sends_goaway_and_closes_once_answered() -> None:
    world = World()
    transport, proto = world.connect()
    client = Client(transport, proto)
    sid = client.get(b"/version")
    assert client.response(sid)[0] == 200
    drained = world.factory.drain(30.0)
    # (the h2 library as a client stops at a GOAWAY: the frames are read here)
    assert goaways(transport.value()) == [2**31 - 1]
    assert not transport.disconnecting
    transport.clear()
    world.clock.advance(1.0)  # no answer to the PING: the final GOAWAY, then the close
    assert goaways(transport.value()) == [sid]
    assert transport.disconnecting
    proto.connectionLost()
    assert drained.called


def test_the_serving_context_offers_h2_unless_http2_is_off(tmp_path: Path) -> None:
    for http2, chosen in ((True, b"h2"), (False, b"http/1.1")):
        config = tmp_path / f"karpor-{http2}.yaml"
        config.write_text(f"clientConnections: {{http2: {str(http2).lower()}}}\n")
        settings = resolve_settings(
            str(config),
            {"clusters_dir": str(tmp_path), "state_dir": str(tmp_path / "state")},
            demo=False,
        )
        service = GatewayService(settings, reactor=MemoryReactorClock())
        service._open_state()
        assert _handshake(service.tls_context) == chosen


def goaways(data: bytes) -> list[int]:
    """The ``last_stream_id`` of each GOAWAY frame in ``data``."""
    found = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        if isinstance(frame, GoAwayFrame):
            found.append(frame.last_stream_id)
        view = view[9 + length :]
    return found


def _handshake(server_context: Any) -> bytes:
    """ALPN's choice between ``server_context`` and a client offering h2 and http/1.1."""
    client_context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    client_context.set_alpn_protos([b"h2", b"http/1.1"])
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_connect_state()
    for _ in range(10):
        for a, b in ((client, server), (server, client)):
            with contextlib.suppress(SSL.WantReadError):
                a.do_handshake()
            with contextlib.suppress(SSL.WantReadError):
                b.bio_write(a.bio_read(65536))
    return client.get_alpn_proto_negotiated()


class Held:
    """An own-API handler that answers nothing (the test relays on the stream)."""

    def handle(self, request: Any, responder: Any) -> None:
        pass


@implementer(IPushProducer)
class Producer:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None:
        pass


def test_a_blocked_stream_pauses_its_own_producer_only() -> None:
    world = World()
    world.factory.api = Held()
    transport, proto = world.connect()
    client = Client(transport, proto)
    # (a client's connection window is its own choice: Go's is 1 GiB)
    client.h2.increment_flow_control_window(1 << 20)
    slow_id, fast_id = client.get(b"/slow"), client.get(b"/fast")
    slow, fast = proto.streams[slow_id], proto.streams[fast_id]
    producers = {slow_id: Producer(), fast_id: Producer()}
    for sid, stream in ((slow_id, slow), (fast_id, fast)):
        assert stream.relay_head(200, b"OK", split_response([]))
        stream.stream_from(producers[sid])
    slow.relay_body(b"x" * 70_000)  # past the client's 65,535-byte stream window
    assert producers[slow_id].paused and not producers[fast_id].paused
    fast.relay_body(b"y" * 10)
    fast.relay_end()
    client.exchange()
    assert client.response(fast_id) == (200, b"y" * 10)
    # the client reads what came: its WINDOW_UPDATE lets the rest go, the producer resumes
    client.h2.acknowledge_received_data(len(client.response(slow_id)[1]), slow_id)
    client.exchange()
    assert not producers[slow_id].paused
    # a full transport pauses every stream's producer until it drains
    proto.pauseProducing()
    assert producers[slow_id].paused
    proto.resumeProducing()
    assert not producers[slow_id].paused
    slow.relay_end()
    client.exchange()
    assert client.response(slow_id) == (200, b"x" * 70_000)
    assert not proto.streams


def test_a_stream_past_the_limit_or_with_too_many_headers_is_refused_alone() -> None:
    world = World(dataclasses.replace(SMALL, max_header_bytes=8192))
    world.factory.api = Held()
    transport, proto = world.connect()
    client = Client(transport, proto)
    held = [client.get(b"/held/%d" % i) for i in range(9)]  # SMALL's limit
    # a client ignoring the announced limit (h2 itself respects it: force it)
    client.h2.remote_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 100}
    )
    extra = client.get(b"/one-too-many")
    [reset] = [e for e in client.events if isinstance(e, h2.events.StreamReset)]
    assert (reset.stream_id, reset.error_code) == (extra, h2.errors.ErrorCodes.REFUSED_STREAM)
    assert set(proto.streams) == set(held) and not transport.disconnecting
    # a stream ends: the next is served; a header list over maxHeaderBytes is a 431 on its stream
    proto.streams[held[0]].relay_head(200, b"OK", split_response([]))
    proto.streams[held[0]].relay_end()
    client.exchange()
    world.factory.api = Api()
    sid = client.h2.get_next_available_stream_id()
    client.h2.send_headers(
        sid,
        [
            (b":method", b"GET"),
            (b":path", b"/version"),
            (b":scheme", b"https"),
            (b":authority", b"g"),
            (b"x-big", b"a" * 9000),
        ],
        end_stream=True,
    )
    client.exchange()
    code, body = client.response(sid)
    assert code == 431 and json.loads(body)["reason"] == "RequestEntityTooLarge"
    assert client.response(client.get(b"/version")) == (200, b"/version")
    assert not transport.disconnecting
