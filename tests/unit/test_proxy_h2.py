"""HTTP/2 streams to a cluster without sockets: the gateway's multiplexer
and stream adapter wired to StringTransports, with a paired sans-IO
``h2`` server playing the cluster; and the simulator's HTTP/2 server."""

from __future__ import annotations

import json
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import pytest
from support.channel import RecordingChannel as Client
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IProtocol,
    IProtocolFactory,
    IPushProducer,
    IStreamClientEndpoint,
)
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.config.model import Cluster, TokenCredential
from karpor.http.headers import split_request
from karpor.sim.cluster import SimulatedCluster
from karpor.sim.http2 import NegotiatingChannel
from karpor.upstream.credentials import ClusterCredentials
from karpor.upstream.forward import Forwarder
from karpor.upstream.h2 import (
    ACK_BATCH,
    STREAM_WINDOW,
    H2UpstreamConnection,
    Multiplexer,
    StreamExchange,
    is_long_running,
    multiplexed,
)
from karpor.upstream.request import UpstreamRequest, h2_header_list

TOKEN = "s3cr3t-cluster-token"
WATCH = b"/api/v1/namespaces/default/configmaps?watch=true"
CREDENTIAL = ClusterCredentials(
    Cluster(name="c", endpoint="https://10.0.0.1:6443", insecure=True), MemoryReactorClock()
).current()


# -- doubles ----------------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class Endpoint:
    """Hands out the protocols the multiplexer connects (the test connects them)."""

    def __init__(self) -> None:
        self.protocols: list[H2UpstreamConnection] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 6443))
        assert isinstance(protocol, H2UpstreamConnection)
        self.protocols.append(protocol)
        return succeed(protocol)


class Pool:
    """The pool side: records exchanges handed back to HTTP/1.1."""

    def __init__(self) -> None:
        self.fallen_back: list[StreamExchange] = []
        self.refused_credentials = 0

    def fallback(self, exchange: StreamExchange) -> None:
        self.fallen_back.append(exchange)

    def unauthorized(self) -> None:
        self.refused_credentials += 1


@implementer(IPushProducer)
class Reading:
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


class Cluster2:
    """A sans-IO h2 server paired with one gateway connection."""

    def __init__(self, proto: H2UpstreamConnection, *, alpn: bytes = b"h2", **settings: int):
        self.proto = proto
        self.transport = StringTransport()
        self.transport.negotiatedProtocol = alpn  # type: ignore[attr-defined]
        self.server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.server.initiate_connection()
        if settings:
            codes = {"max_streams": h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS}
            self.server.update_settings({codes[k]: v for k, v in settings.items()})
        self.events: list[h2.events.Event] = []
        proto.makeConnection(self.transport)
        proto.handshakeCompleted()
        if alpn == b"h2":
            self.pump()

    def pump(self) -> None:
        """Exchange bytes both ways until both sides are quiet."""
        for _ in range(20):
            moved = False
            data = self.transport.value()
            if data:
                self.transport.clear()
                self.events += self.server.receive_data(data)
                moved = True
            out = self.server.data_to_send()
            if out:
                self.proto.dataReceived(out)
                moved = True
            if not moved:
                return

    def requests(self) -> dict[int, dict[bytes, bytes]]:
        return {
            e.stream_id: dict(e.headers or [])
            for e in self.events
            if isinstance(e, h2.events.RequestReceived)
        }

    def resets(self) -> dict[int, int]:
        return {
            e.stream_id: int(e.error_code or 0)
            for e in self.events
            if isinstance(e, h2.events.StreamReset)
        }

    def respond(self, stream_id: int, *chunks: bytes, end: bool = False) -> None:
        self.server.send_headers(
            stream_id, [(b":status", b"200"), (b"content-type", b"application/json")]
        )
        for data in chunks:
            self.server.send_data(stream_id, data)
        if end:
            self.server.end_stream(stream_id)
        self.pump()

    def send(self, stream_id: int, data: bytes, end: bool = False) -> None:
        size = self.server.max_outbound_frame_size
        pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
        for n, piece in enumerate(pieces):
            self.server.send_data(stream_id, piece, end_stream=end and n == len(pieces) - 1)
        self.pump()


def watch(client: Client | None = None, target: bytes = WATCH) -> tuple[Forwarder, Client]:
    client = client or Client()
    request = split_request(
        [(b"Accept", b"application/json"), (b"TE", b"trailers"), (b"Connection", b"keep-alive")]
    )
    forwarder = Forwarder(
        client,
        UpstreamRequest(b"GET", target, request.forward, forwarded_for=b"192.0.2.7"),
    )
    # what the pool sets before it submits to the multiplexer
    forwarder.credential = CREDENTIAL
    return forwarder, client


@pytest.fixture
def setup() -> tuple[Multiplexer, Endpoint, Pool, MemoryReactorClock]:
    endpoint = Endpoint()
    pool = Pool()
    clock = MemoryReactorClock()
    mux = Multiplexer(
        "c", pool, endpoint, clock, connect_timeout=3.0, idle_timeout=90.0, max_connections=8
    )
    return mux, endpoint, pool, clock


def chunks(raw: bytes) -> list[bytes]:
    """The chunk payloads of a chunked body (after the head)."""
    _, _, body = raw.partition(b"\r\n\r\n")
    out = []
    while body:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        out.append(rest[:n])
        body = rest[n + 2 :]
    return out


# -- policy and headers ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/api/v1/pods?watch=true", True),
        (b"/api/v1/pods?labelSelector=a&watch=1", True),
        (b"/api/v1/watch/namespaces/default/pods", True),
        (b"/api/v1/namespaces/d/pods/p/log?follow=true&container=c", True),
        (b"/api/v1/pods?watch=false", False),
        (b"/api/v1/pods?watch=0", False),
        (b"/api/v1/pods", False),
        (b"/api/v1/pods?follow=true", False),
        (b"/api/v1/namespaces/d/pods/p/log?follow=false", False),
        (b"/api/v1/pods?xwatch=true", False),
    ],
)
def test_long_running_requests_are_multiplexed(target: bytes, expected: bool) -> None:
    assert is_long_running(target) is expected
    assert multiplexed(b"GET", target) is expected


def test_request_headers_are_h2_shaped() -> None:
    creds = ClusterCredentials(
        Cluster(
            name="c",
            endpoint="https://10.0.0.1:6443/prefix",
            credential=TokenCredential(token=TOKEN),
            insecure=True,
        ),
        MemoryReactorClock(),
    )
    request = split_request(
        [
            (b"Host", b"gateway"),
            (b"Authorization", b"Bearer caller"),
            (b"Connection", b"keep-alive, X-Drop"),
            (b"X-Drop", b"1"),
            (b"TE", b"trailers"),
            (b"Accept", b"application/json"),
            (b"X-Forwarded-For", b"198.51.100.1"),
            (b"X-Real-IP", b"198.51.100.2"),
        ]
    )
    headers = h2_header_list(
        UpstreamRequest(b"GET", WATCH, request.forward, forwarded_for=b"192.0.2.7"),
        creds.current(),
    )
    assert headers[:4] == [
        (b":method", b"GET"),
        (b":path", b"/prefix" + WATCH),
        (b":scheme", b"https"),
        (b":authority", b"10.0.0.1:6443"),
    ]
    names = [n for n, _ in headers]
    assert all(n == n.lower() for n in names)
    assert not {b"host", b"te", b"connection", b"x-drop", b"transfer-encoding"} & set(names)
    assert (b"authorization", b"Bearer " + TOKEN.encode()) in headers
    assert (b"accept", b"application/json") in headers
    # the address the gateway saw, never one the caller chose
    assert [v for n, v in headers if n == b"x-forwarded-for"] == [b"192.0.2.7"]
    assert b"x-real-ip" not in names
    assert creds.tls_h2 is not None


# -- streams -----------------------------------------------------------------------------


def test_watch_events_relayed_in_order_as_they_arrive(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    forwarder, client = watch()
    mux.submit(forwarder)
    assert len(endpoint.protocols) == 1
    cluster = Cluster2(endpoint.protocols[0])
    (sid, headers), *_ = cluster.requests().items()
    assert headers[b":path"] == WATCH and headers[b":method"] == b"GET"
    assert b"te" not in headers and b"connection" not in headers

    cluster.respond(sid, b'{"type":"ADDED","n":1}\n')
    head = client.client.value()
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked\r\n" in head
    assert chunks(head) == [b'{"type":"ADDED","n":1}\n']
    for n in range(2, 5):
        cluster.send(sid, b'{"type":"MODIFIED","n":%d}\n' % n)
        # each DATA frame reaches the client in the same turn it arrived
        assert chunks(client.client.value())[-1] == b'{"type":"MODIFIED","n":%d}\n' % n
    cluster.send(sid, b"", end=True)
    assert client.client.value().endswith(b"0\r\n\r\n")
    assert client.finished == [False]
    assert mux.streams == 0


def test_content_length_passes_through(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    forwarder, client = watch()
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    (sid,) = cluster.requests()
    cluster.server.send_headers(sid, [(b":status", b"404"), (b"content-length", b"2")])
    cluster.send(sid, b"{}", end=True)
    raw = client.client.value()
    assert raw.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert b"content-length: 2\r\n" in raw and b"chunked" not in raw
    assert raw.endswith(b"\r\n\r\n{}")


def test_acknowledgement_follows_the_client(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    forwarder, client = watch()
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    (sid,) = cluster.requests()
    cluster.respond(sid)
    producer = client.client.producer
    assert producer is not None and client.client.streaming

    # the client takes everything: credit goes back to the cluster
    cluster.send(sid, b"x" * 40_000)
    window = cluster.server.local_flow_control_window(sid)
    assert window > 65_535 - 40_000  # (h2 batches its WINDOW_UPDATEs)

    # the client is slow: no credit, the cluster's window for the stream closes
    producer.pauseProducing()
    cluster.send(sid, b"y" * window)
    assert cluster.server.local_flow_control_window(sid) == 0
    assert b"".join(chunks(client.client.value())).count(b"y") == window  # relayed all the same

    # the client drained: the credit comes back at once
    producer.resumeProducing()
    cluster.pump()
    assert cluster.server.local_flow_control_window(sid) == 65_535


def _record_acks(proto: H2UpstreamConnection) -> list[tuple[int, int]]:
    """Record every ``acknowledge_received_data(size, stream_id)`` ``proto`` makes."""
    acks: list[tuple[int, int]] = []
    real = proto.h2.acknowledge_received_data

    def acknowledge(size: int, stream_id: int) -> None:
        acks.append((stream_id, size))
        real(size, stream_id)

    proto.h2.acknowledge_received_data = acknowledge  # type: ignore[method-assign,assignment]
    return acks


def test_small_frames_are_acknowledged_in_batches(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    forwarder, client = watch()
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    (sid,) = cluster.requests()
    cluster.respond(sid)
    acks = _record_acks(cluster.proto)
    event = b'{"type":"MODIFIED"}\n' + b"x" * 80  # 100 bytes, one DATA frame per read
    total = 0
    for _ in range(3 * STREAM_WINDOW // len(event)):
        cluster.send(sid, event)
        total += len(event)
        # the cluster's window never closes on a client that keeps up
        assert cluster.server.local_flow_control_window(sid) > 0
    assert b"".join(chunks(client.client.value())).count(event) == total // len(event)
    # one call into h2 per ACK_BATCH bytes, not one per frame
    assert acks and all(s == sid and size >= ACK_BATCH for s, size in acks)
    assert len(acks) == total // ACK_BATCH
    held = total - sum(size for _, size in acks)
    assert 0 < held < ACK_BATCH
    # the stream ends: what was gathered goes back to the connection window
    cluster.send(sid, b"", end=True)
    assert sum(size for _, size in acks) == total


def test_gathered_bytes_are_acknowledged_on_resume(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    forwarder, client = watch()
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    (sid,) = cluster.requests()
    cluster.respond(sid)
    acks = _record_acks(cluster.proto)
    producer = client.client.producer
    assert producer is not None
    cluster.send(sid, b"a" * 100)  # gathered towards a batch
    producer.pauseProducing()
    cluster.send(sid, b"b" * 20_000)  # held while paused, even past a batch
    assert acks == []
    producer.resumeProducing()
    assert acks == [(sid, 20_100)]


def test_one_write_per_read(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    watches = [watch() for _ in range(3)]
    mux.submit(watches[0][0])
    cluster = Cluster2(endpoint.protocols[0])
    for forwarder, _ in watches[1:]:
        mux.submit(forwarder)
    cluster.pump()
    sids = sorted(cluster.requests())
    for sid in sids:
        cluster.respond(sid)
    writes: list[bytes] = []
    real = cluster.transport.write

    def write(data: bytes) -> None:
        writes.append(data)
        real(data)

    cluster.transport.write = write  # type: ignore[method-assign]
    for sid in sids:  # enough on every stream for a WINDOW_UPDATE each
        size = cluster.server.max_outbound_frame_size
        for offset in range(0, 40_000, size):
            cluster.server.send_data(sid, b"z" * min(size, 40_000 - offset))
    cluster.proto.dataReceived(cluster.server.data_to_send())
    assert len(writes) == 1
    updates = [
        e for e in cluster.server.receive_data(writes[0]) if isinstance(e, h2.events.WindowUpdated)
    ]
    assert set(sids) <= {e.stream_id for e in updates}


def test_paused_stream_does_not_stall_the_others(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    slow, slow_client = watch()
    fast, fast_client = watch()
    mux.submit(slow)
    cluster = Cluster2(endpoint.protocols[0])
    mux.submit(fast)
    cluster.pump()
    first, second = sorted(cluster.requests())
    cluster.respond(first)
    cluster.respond(second)
    assert slow_client.client.producer is not None
    slow_client.client.producer.pauseProducing()
    cluster.send(first, b"s" * 65_535)
    for letter in b"fgh":
        cluster.send(second, bytes([letter]) * 30_000)
    assert cluster.server.local_flow_control_window(first) == 0
    assert cluster.server.local_flow_control_window(second) > 0
    # more than one window went to the fast client while the slow one held its own
    body = b"".join(chunks(fast_client.client.value()))
    assert [body.count(c) for c in (b"f", b"g", b"h")] == [30_000] * 3


def test_client_disconnect_resets_only_its_stream(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    gone, _ = watch()
    stays, stays_client = watch()
    mux.submit(gone)
    cluster = Cluster2(endpoint.protocols[0])
    mux.submit(stays)
    cluster.pump()
    first, second = sorted(cluster.requests())
    cluster.respond(first, b"a\n")
    cluster.respond(second, b"b\n")

    gone.client_lost()
    cluster.pump()
    assert cluster.resets() == {first: h2.errors.ErrorCodes.CANCEL}
    cluster.send(second, b"c\n")
    assert chunks(stays_client.client.value()) == [b"b\n", b"c\n"]
    assert mux.streams == 1 and len(mux.connections) == 1


def test_connection_loss_ends_every_stream(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    started, started_client = watch()
    waiting, waiting_client = watch()
    mux.submit(started)
    cluster = Cluster2(endpoint.protocols[0])
    mux.submit(waiting)
    cluster.pump()
    first, _ = sorted(cluster.requests())
    cluster.respond(first, b"a\n")

    endpoint.protocols[0].connectionLost(Failure(ConnectionLost("gone")))
    assert started_client.aborted  # a response had begun: the client connection breaks
    assert [e.code for e in waiting_client.errors] == [502]
    assert mux.streams == 0 and mux.connections == []


def test_goaway_retries_unprocessed_streams_elsewhere(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    kept, kept_client = watch()
    refused, refused_client = watch()
    mux.submit(kept)
    cluster = Cluster2(endpoint.protocols[0])
    mux.submit(refused)
    cluster.pump()
    first, _ = sorted(cluster.requests())
    cluster.respond(first, b"a\n")

    cluster.server.close_connection(last_stream_id=first)
    cluster.pump()
    old = endpoint.protocols[0]
    assert old.goaway and old.free == 0
    # the unprocessed stream went to a new connection, nothing failed
    assert len(endpoint.protocols) == 2
    assert refused_client.errors == [] and not refused_client.aborted
    assert kept_client.errors == [] and not kept_client.aborted
    again = Cluster2(endpoint.protocols[1])
    (sid,) = again.requests()
    again.respond(sid, b"b\n")
    assert chunks(refused_client.client.value()) == [b"b\n"]
    # a new watch never goes to the connection that went away
    late, _ = watch()
    mux.submit(late)
    again.pump()
    assert len(again.requests()) == 2


def test_refused_stream_is_retried(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    forwarder, client = watch()
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    (sid,) = cluster.requests()
    cluster.server.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
    cluster.pump()
    assert client.errors == []
    assert len(cluster.requests()) == 2  # sent again on the same connection


def test_max_concurrent_streams_opens_another_connection(setup: Any) -> None:
    mux, endpoint, _, _ = setup
    forwarders = [watch()[0] for _ in range(5)]
    mux.submit(forwarders[0])
    cluster = Cluster2(endpoint.protocols[0], max_streams=2)
    for forwarder in forwarders[1:]:
        mux.submit(forwarder)
    cluster.pump()
    assert len(cluster.requests()) == 2
    assert mux.expected_streams == 2
    others = [Cluster2(p, max_streams=2) for p in endpoint.protocols[1:]]
    for other in others:
        other.pump()
    assert len(endpoint.protocols) == 3
    assert sorted(len(o.requests()) for o in others) == [1, 2]


def test_http11_answer_falls_back_and_is_remembered(setup: Any) -> None:
    mux, endpoint, pool, _ = setup
    forwarder, _ = watch()
    mux.submit(forwarder)
    Cluster2(endpoint.protocols[0], alpn=b"http/1.1")
    assert pool.fallen_back == [forwarder]
    assert mux.speaks_h2 is False
    later, _ = watch()
    mux.submit(later)
    assert pool.fallen_back == [forwarder, later]
    assert len(endpoint.protocols) == 1  # no more HTTP/2 attempts


def test_idle_connection_closes_after_idle_timeout(setup: Any) -> None:
    mux, endpoint, _, clock = setup
    forwarder, _ = watch()
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    (sid,) = cluster.requests()
    cluster.respond(sid, b"a\n", end=True)
    assert not cluster.transport.disconnecting
    clock.advance(91)
    assert cluster.transport.disconnecting


# -- the simulator's HTTP/2 server ---------------------------------------------------


class H2Client:
    """A sans-IO h2 client against the simulator's negotiating channel."""

    def __init__(self, sim: SimulatedCluster) -> None:
        self.channel = NegotiatingChannel(sim.site, None)
        self.transport = StringTransport()
        self.transport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        self.channel.makeConnection(self.transport)
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()
        self.events: list[h2.events.Event] = []
        self.token = sim.token.encode()
        self.pump()

    def pump(self) -> None:
        for _ in range(20):
            out = self.conn.data_to_send()
            if out:
                self.channel.dataReceived(out)
            data = self.transport.value()
            if data:
                self.transport.clear()
                self.events += self.conn.receive_data(data)
            if not out and not data:
                return

    def get(self, path: bytes) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(
            sid,
            [
                (b":method", b"GET"),
                (b":path", path),
                (b":scheme", b"https"),
                (b":authority", b"127.0.0.1"),
                (b"authorization", b"Bearer " + self.token),
            ],
            end_stream=True,
        )
        self.pump()
        return sid

    def body(self, sid: int) -> bytes:
        return b"".join(
            e.data or b""
            for e in self.events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == sid
        )

    def status(self, sid: int) -> bytes:
        for e in self.events:
            if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid:
                return dict(e.headers or [])[b":status"]
        return b""

    def ended(self, sid: int) -> bool:
        return any(isinstance(e, h2.events.StreamEnded) and e.stream_id == sid for e in self.events)


@pytest.fixture
def sim() -> SimulatedCluster:
    return SimulatedCluster("h2sim", token=TOKEN, reactor=MemoryReactorClock())


def test_simulator_serves_watches_over_h2_and_stops_them_on_reset(
    sim: SimulatedCluster,
) -> None:
    client = H2Client(sim)
    settings = [e for e in client.events if isinstance(e, h2.events.RemoteSettingsChanged)]
    announced = settings[0].changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]
    assert announced.new_value == 250

    sid = client.get(b"/api/v1/namespaces/default/configmaps?watch=true")
    assert client.status(sid) == b"200"
    before = client.body(sid).count(b"\n")
    sim.api.store.create(
        sim.api.catalog.lookup("", "v1", "configmaps"),  # type: ignore[arg-type]
        "default",
        {"metadata": {"name": "fresh"}, "data": {"k": "v"}},
    )
    client.pump()
    lines = client.body(sid).splitlines()
    assert len(lines) == before + 1
    event = json.loads(lines[-1])
    assert event["type"] == "ADDED" and event["object"]["metadata"]["name"] == "fresh"

    client.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
    client.pump()
    sim.api.store.create(
        sim.api.catalog.lookup("", "v1", "configmaps"),  # type: ignore[arg-type]
        "default",
        {"metadata": {"name": "unseen"}},
    )
    client.pump()
    assert b"unseen" not in client.body(sid)
    # the connection still serves other requests
    sid2 = client.get(b"/version")
    assert client.status(sid2) == b"200" and client.ended(sid2)
    assert json.loads(client.body(sid2))["gitVersion"]


def test_simulator_refuses_upgrades_over_h2(sim: SimulatedCluster) -> None:
    client = H2Client(sim)
    sim.api.store.create(
        sim.api.catalog.lookup("", "v1", "pods"),  # type: ignore[arg-type]
        "default",
        {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    sid = client.get(b"/api/v1/namespaces/default/pods/p/exec?command=ls&stdout=1")
    assert client.status(sid) == b"400"
    status = json.loads(client.body(sid))
    assert "HTTP/1.1" in status["message"] and "HTTP/2" in status["message"]


def test_a_401_on_a_stream_tells_the_pool(setup: Any) -> None:
    """The pool drops an exec plugin's token on a 401, whatever carried it."""
    mux, endpoint, pool, _ = setup
    forwarder, client = watch()
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    [stream_id] = cluster.requests()
    cluster.server.send_headers(stream_id, [(b":status", b"401")], end_stream=True)
    cluster.pump()
    assert pool.refused_credentials == 1
    assert client.client.value().startswith(b"HTTP/1.1 401 ")


# -- the response-header timeout: the stream is reset ------------------------------


def test_no_head_in_time_resets_the_stream(setup: Any) -> None:
    mux, endpoint, _, clock = setup
    forwarder, client = watch(target=b"/api/v1/namespaces/d/pods/p")
    forwarder.head_timeout = 0.5
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    cluster.pump()
    [stream_id] = cluster.requests()
    clock.advance(0.6)
    cluster.pump()
    assert cluster.resets() == {stream_id: h2.errors.ErrorCodes.CANCEL}
    assert [e.code for e in client.errors] == [504]
    assert mux.streams == 0 and len(mux.connections) == 1  # the connection stays


def test_a_stream_head_in_time_stops_the_wait(setup: Any) -> None:
    mux, endpoint, _, clock = setup
    forwarder, client = watch(target=b"/api/v1/namespaces/d/pods/p")
    forwarder.head_timeout = 0.5
    mux.submit(forwarder)
    cluster = Cluster2(endpoint.protocols[0])
    cluster.pump()
    [stream_id] = cluster.requests()
    cluster.respond(stream_id, b"{}")
    clock.advance(1)
    cluster.pump()
    assert cluster.resets() == {} and client.errors == []
