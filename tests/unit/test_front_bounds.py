"""Bounds on client connections (issue 14, items 3, 5 and 13) without
sockets: the sans-IO decisions of :mod:`karpor.http.bounds`, and the
front protocol on StringTransports and a MemoryReactorClock.

* the request head is bounded (431, or 414 for the URL alone), a body is not;
* handshake, head-read and idle timeouts, a request in flight never timed out;
* the connection cap, logged once per burst;
* malformed heads and bodies are answered (400/501/505), not dropped silently;
* ``Connection: Content-Length`` keeps the body.
"""

from __future__ import annotations

import json
from typing import Any, cast

import httptools
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.fakeendpoint import FakeEndpoint
from twisted.internet.interfaces import ISSLTransport
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import ILogObserver, formatEvent, globalLogPublisher
from zope.interface import alsoProvides

from karpor.app.settings import SettingsError, parse_settings
from karpor.auth.audit import MAX_PATH, AuditRecord, bounded_target
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.identity import Identity
from karpor.config.model import Cluster, TokenCredential
from karpor.front.protocol import GatewayFactory, GatewayProtocol
from karpor.http.bounds import (
    BUSY,
    CLOSING,
    HANDSHAKE,
    HEAD,
    IDLE,
    LINGER_BYTES,
    LINGER_SECONDS,
    ClientConnectionSettings,
    ConnectionCap,
    head_too_large,
    http_version_refused,
    parser_error,
    phase_limits,
    sweep_interval,
    unsupported_transfer_encoding,
)
from karpor.http.headers import split_request
from karpor.upstream.http1 import UpstreamConnection
from karpor.upstream.pool import UpstreamPools

CLUSTER = Cluster(name="a", endpoint="http://10.0.0.9:6443", credential=TokenCredential(token="t"))
PREFIX = b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy"
LIMIT = 8192
SMALL = ClientConnectionSettings(
    max_header_bytes=LIMIT,
    handshake_timeout=0.3,
    header_read_timeout=0.3,
    idle_timeout=0.3,
    max_connections=3,
)
TICK = sweep_interval(SMALL)
#: long enough for any phase of SMALL to time out (two sweeps past it)
EXPIRED = 0.3 + 3 * TICK


class FakeAuth(CertificateAuthenticator):
    def __init__(self) -> None:
        pass

    def identify(self, peer: Any) -> Identity | None:
        return Identity("alice", ("dev",))


class Api:
    def handle(self, request: Any, responder: Any) -> None:
        responder.respond(200, [(b"Content-Type", b"text/plain")], b"ok")


class HalfClosable(StringTransport):
    """A client transport that can shut down its sending side, as TCP and TLS can."""

    write_closed = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True


def lingers_then_closes(w: World, client: HalfClosable) -> bool:
    """The close after a refused request head: the sending side shut down
    at once, what follows dropped, the connection closed
    :data:`LINGER_SECONDS` later."""
    if client.disconnecting or not client.write_closed:
        return False
    w.clock.advance(LINGER_SECONDS)
    return bool(client.disconnecting)


class World:
    def __init__(self, connections: ClientConnectionSettings = SMALL, tls: bool = False) -> None:
        self.clock = MemoryReactorClock()
        self.endpoint = FakeEndpoint()
        self.pools = UpstreamPools(self.clock, endpoint_factory=lambda creds: self.endpoint)
        self.factory = GatewayFactory(
            lambda: {"a": CLUSTER},
            Api(),
            FakeAuth(),
            self.pools,
            reactor=self.clock,
            connections=connections,
        )
        self.tls = tls

    def connect(self) -> tuple[HalfClosable, GatewayProtocol]:
        proto = self.factory.buildProtocol(None)
        assert proto is not None
        client = HalfClosable(lenient=True)
        if self.tls:
            alsoProvides(client, ISSLTransport)
        proto.makeConnection(client)
        return client, proto

    def accept(self) -> tuple[UpstreamConnection, StringTransport]:
        d, factory = self.endpoint.attempts.pop(0)
        proto = factory.buildProtocol(None)
        transport = StringTransport(lenient=True)
        proto.makeConnection(transport)
        d.callback(proto)
        return proto, transport


def responses(data: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    out: list[tuple[int, dict[bytes, bytes], bytes]] = []

    class P:
        headers: dict[bytes, bytes]
        body: bytes

        def on_message_begin(self) -> None:
            self.headers, self.body = {}, b""

        def on_header(self, n: bytes, v: bytes) -> None:
            self.headers[n.lower()] = v

        def on_body(self, b: bytes) -> None:
            self.body += b

        def on_message_complete(self) -> None:
            out.append((parser.get_status_code(), self.headers, self.body))

    parser = httptools.HttpResponseParser(P())
    parser.feed_data(data)
    return out


def only_status(client: StringTransport) -> tuple[int, dict[str, Any], dict[bytes, bytes]]:
    [(code, headers, body)] = responses(client.value())
    status = json.loads(body)
    assert status["kind"] == "Status" and status["code"] == code
    return code, status, headers


# -- sans-IO -------------------------------------------------------------------------


def test_defaults_are_gos_and_the_issues() -> None:
    d = ClientConnectionSettings()
    assert d.max_header_bytes == 1 << 20
    assert (d.handshake_timeout, d.header_read_timeout, d.idle_timeout) == (10, 30, 120)
    assert d.max_connections > 10_000  # the bench holds 10,000 watches in one worker


def test_the_settings_section_parses_and_checks() -> None:
    text = (
        "clientConnections: {maxHeaderBytes: 65536, handshakeTimeout: 2, "
        "headerReadTimeout: 3, idleTimeout: 0.5, maxConnections: 7}\n"
    )
    assert parse_settings(text, "f").client_connections == ClientConnectionSettings(
        65536, 2.0, 3.0, 0.5, 7
    )
    assert parse_settings("port: 1\n", "f").client_connections == ClientConnectionSettings()
    for bad, message in (
        ("{maxHeaderBytes: 100}", "maxHeaderBytes must be at least 4096"),
        ("{idleTimeout: 0}", "idleTimeout: must be a positive number of seconds"),
        ("{maxConnections: 0}", "maxConnections: must be a positive integer"),
        ("{idle: 1}", "idle: unknown key"),
    ):
        with pytest.raises(SettingsError) as info:
            parse_settings(f"clientConnections: {bad}\n", "f")
        assert message in info.value.problems[0]


def test_phase_limits_include_one_sweep_and_busy_never_expires() -> None:
    limits = phase_limits(SMALL, TICK)
    assert limits[HANDSHAKE] == limits[HEAD] == limits[IDLE] == limits[CLOSING] == 0.3 + TICK
    assert limits[BUSY] == float("inf")
    assert sweep_interval(ClientConnectionSettings()) == 1.0
    assert 0.01 <= TICK <= 0.3 / 4


def test_head_too_large_is_414_for_the_url_alone_else_431() -> None:
    assert head_too_large(LIMIT - 10, LIMIT).code == 414
    assert head_too_large(LIMIT // 2, LIMIT).code == 431
    assert head_too_large(0, LIMIT).code == 431


@given(st.binary(max_size=20))
def test_only_exactly_chunked_is_a_known_transfer_coding(value: bytes) -> None:
    refused = unsupported_transfer_encoding(value)
    assert (refused is None) == (value.strip().lower() == b"chunked")
    if refused is not None:
        assert refused.code == 501


def test_versions_and_parser_errors_map_to_codes() -> None:
    assert http_version_refused("1.1") is None and http_version_refused("1.0") is None
    assert http_version_refused("0.9").code == 400  # type: ignore[union-attr]
    assert http_version_refused("2.0").code == 505  # type: ignore[union-attr]
    assert parser_error("Request has invalid `Transfer-Encoding`").code == 501
    assert parser_error("Chunk size overflow").code == 400


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=0, max_value=12), max_size=60))
def test_the_cap_logs_once_per_burst(counts: list[int]) -> None:
    cap = ConnectionCap(10)
    full = False
    for count in counts:
        admitted, line = cap.admit(count)
        assert admitted == (count < 10)
        if line is not None:
            # a line only when the state changes: full, then below the low water mark
            assert full != (not admitted)
            full = not admitted
            assert ("limit reached" in line) == full
        else:
            assert not (count >= 10 and not full)


def test_the_cap_line_counts_the_refused() -> None:
    cap = ConnectionCap(100)
    assert cap.admit(100)[1] is not None
    assert cap.admit(100) == (False, None)
    assert cap.admit(95) == (True, None)  # not yet a tenth below
    admitted, line = cap.admit(90)
    assert admitted and line is not None and "2 refused" in line


# -- the request head ------------------------------------------------------------------


def big_header_request(size: int) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * size + b"\r\n\r\n"


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=1, max_value=4096))
def test_a_head_over_the_limit_is_431_and_closes_whatever_the_reads(piece: int) -> None:
    w = World()
    client, proto = w.connect()
    data = big_header_request(2 * LIMIT)
    fed = 0
    answered_at = 0
    while fed < len(data) and not client.disconnecting:
        proto.dataReceived(data[fed : fed + piece])
        fed = min(len(data), fed + piece)
        if client.value() and not answered_at:
            answered_at = fed
    assert 0 < answered_at <= LIMIT + piece  # nothing past the limit was parsed
    # what came after the answer was dropped (less than the linger's budget)
    assert fed == len(data) < answered_at + LINGER_BYTES
    assert lingers_then_closes(w, client)
    code, status, headers = only_status(client)
    assert code == 431 and headers[b"connection"] == b"close"
    assert str(LIMIT) in status["message"]


def test_a_url_over_the_limit_is_414() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(b"GET /" + b"u" * (2 * LIMIT) + b" HTTP/1.1\r\n\r\n")
    code, _, _ = only_status(client)
    assert code == 414 and lingers_then_closes(w, client)


def test_a_refused_head_lingers_dropping_what_follows_then_closes() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(big_header_request(2 * LIMIT)[: LIMIT + 100])
    answer = client.value()
    assert only_status(client)[0] == 431
    # the answer is out and the sending side shut down, the reading goes on
    assert client.write_closed and not client.disconnecting
    proto.dataReceived(b"a" * 1000 + b"\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n")
    assert client.value() == answer and not w.endpoint.attempts  # dropped, not parsed
    w.clock.advance(LINGER_SECONDS * 0.9)
    assert not client.disconnecting
    w.clock.advance(LINGER_SECONDS * 0.2)
    assert client.disconnecting


def test_a_lingering_close_ends_when_its_budget_is_spent() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(big_header_request(2 * LIMIT)[: LIMIT + 100])
    assert client.write_closed and not client.disconnecting
    proto.dataReceived(b"a" * (LINGER_BYTES - 1))  # LIMIT is less: LINGER_BYTES are dropped
    assert not client.disconnecting
    proto.dataReceived(b"a")  # the budget spent: no more
    assert client.disconnecting


def test_a_lingering_close_ends_when_the_client_stops_sending() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
    assert client.write_closed and not client.disconnecting
    proto.readConnectionLost()  # an orderly close, not an abort: the answer goes first
    assert client.disconnecting and not getattr(client, "disconnected", False)


def test_a_lingering_close_whose_client_reads_nothing_is_aborted_after_it() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n")
    w.clock.advance(LINGER_SECONDS)
    assert client.disconnecting and not getattr(client, "disconnected", False)
    w.clock.pump([TICK] * 8)  # the closing phase's timeout, as for any close
    assert getattr(client, "disconnected", False)


def test_a_head_just_under_the_limit_and_a_larger_body_pass() -> None:
    w = World()
    client, proto = w.connect()
    head = b"POST " + PREFIX + b"/api HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
    body = b"b" * (4 * LIMIT)
    head = head % len(body)
    head += b"X-Pad: " + b"p" * (LIMIT - len(head) - 11) + b"\r\n\r\n"
    assert len(head) == LIMIT
    for at in range(0, len(head + body), 1000):
        proto.dataReceived((head + body)[at : at + 1000])
    _, upstream = w.accept()
    sent = upstream.value()
    assert sent.endswith(body) and client.value() == b""
    # the next request's head is bounded afresh
    proto.dataReceived(big_header_request(2 * LIMIT))
    assert client.value() == b""  # answered in turn, after the first response


def test_a_pipelined_head_over_the_limit_is_answered_in_turn() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(b"GET " + PREFIX + b"/api HTTP/1.1\r\nHost: x\r\n\r\n")
    proto.dataReceived(big_header_request(2 * LIMIT)[:2000])
    proto.dataReceived(big_header_request(2 * LIMIT)[2000:])
    up, _ = w.accept()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    [(first, _, body), (second, headers, _)] = responses(client.value())
    assert (first, body, second) == (200, b"ok", 431)
    assert headers[b"connection"] == b"close" and lingers_then_closes(w, client)


def test_the_audit_log_keeps_a_bounded_prefix_of_a_url() -> None:
    url = "/api/v1/pods?" + "a=1&" * 100_000 + "access_token=secret"
    assert len(bounded_target(url)) < MAX_PATH + 64
    line = AuditRecord(time=0, request_id="r", user="u", path=url).to_json()
    path = json.loads(line)["path"]
    assert path.startswith("/api/v1/pods?a=1&")
    assert path.endswith(f"...[truncated {len(url) - MAX_PATH} characters]")
    assert "secret" not in line
    short = "/x?token=abc"
    assert json.loads(AuditRecord(time=0, request_id="r", user="u", path=short).to_json())[
        "path"
    ] == ("/x?token=REDACTED")


# -- timeouts ---------------------------------------------------------------------------


def test_a_handshake_not_done_in_time_is_aborted() -> None:
    w = World(tls=True)
    client, proto = w.connect()
    assert proto.conn.phase == HANDSHAKE
    w.clock.advance(0.3 - TICK)
    w.clock.advance(TICK / 2)
    assert not client.disconnecting
    w.clock.pump([TICK] * 5)
    assert client.disconnecting and getattr(client, "disconnected", False) and client.value() == b""


def test_after_the_handshake_the_head_timeout_runs() -> None:
    w = World(tls=True)
    client, proto = w.connect()
    w.clock.advance(0.2)
    proto.handshakeCompleted()
    w.clock.pump([TICK] * 3)
    assert not client.disconnecting  # the handshake's time does not count
    w.clock.pump([TICK] * 6)
    assert client.disconnecting and not getattr(client, "disconnected", False)
    assert client.value() == b""  # nothing of a head arrived: closed silently


def test_half_a_head_gets_a_408_then_closes() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    w.clock.pump([TICK] * 2)
    assert not client.disconnecting
    w.clock.pump([TICK] * 6)
    code, status, headers = only_status(client)
    assert (code, status["reason"]) == (408, "Timeout")
    assert headers[b"connection"] == b"close" and client.disconnecting


def test_an_idle_keep_alive_connection_is_closed_silently() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert proto.conn.phase == IDLE
    answered = client.value()
    w.clock.pump([TICK] * 2)
    proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # used again: idle anew
    w.clock.pump([TICK] * 3)
    assert not client.disconnecting
    w.clock.pump([TICK] * 4)
    assert client.disconnecting
    assert [r[0] for r in responses(client.value())] == [200, 200]
    assert client.value().startswith(answered[:12])


def test_a_request_in_flight_and_a_watch_are_never_timed_out() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(b"GET " + PREFIX + b"/api/v1/pods?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n")
    w.clock.pump([TICK] * 12)  # connecting upstream (less than its 3 s connect timeout)
    up, _ = w.accept()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    w.clock.pump([TICK] * 40)  # streaming
    assert proto.conn.phase == BUSY and not client.disconnecting
    up.dataReceived(b"5\r\nevent\r\n0\r\n\r\n")
    assert proto.conn.phase == IDLE
    w.clock.pump([TICK] * 8)
    assert client.disconnecting


def test_a_closing_connection_whose_client_reads_nothing_is_aborted() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (
        client.disconnecting
        and proto.conn.phase == CLOSING
        and not getattr(client, "disconnected", False)
    )
    w.clock.pump([TICK] * 8)
    assert getattr(client, "disconnected", False)


def test_the_sweep_stops_with_the_last_connection() -> None:
    w = World()
    assert not w.clock.getDelayedCalls()
    _, proto = w.connect()
    assert len(w.clock.getDelayedCalls()) == 1
    _, other = w.connect()
    assert len(w.clock.getDelayedCalls()) == 1  # one sweep per worker
    proto.connectionLost()
    other.connectionLost()
    assert not [c for c in w.clock.getDelayedCalls() if c.active()]


# -- the connection cap ------------------------------------------------------------------


def test_connections_over_the_cap_are_refused_at_accept_and_logged_once() -> None:
    events: list[dict[str, Any]] = []
    observer = cast(ILogObserver, events.append)
    globalLogPublisher.addObserver(observer)
    try:
        w = World()
        protos = [w.connect()[1] for _ in range(3)]
        for _ in range(5):
            assert w.factory.buildProtocol(None) is None
        protos[0].connectionLost()
        protos[1].connectionLost()
        assert w.factory.buildProtocol(None) is not None
    finally:
        globalLogPublisher.removeObserver(observer)
    lines = [formatEvent(e) for e in events if e.get("log_namespace") == "karpor.front.protocol"]
    assert len(lines) == 2
    assert "limit reached: 3 connections open" in lines[0]
    assert "5 refused" in lines[1]


# -- malformed requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "after_head"),
    [(b"gzip", b"abc"), (b"xchunked", b"3\r\nabc\r\n0\r\n\r\n"), (b"gzip, chunked", b"")],
)
def test_an_unknown_transfer_coding_is_501_and_nothing_goes_upstream(
    coding: bytes, after_head: bytes
) -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(
        b"POST " + PREFIX + b"/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + coding + b"\r\n\r\n"
    )
    proto.dataReceived(after_head)
    code, _, headers = only_status(client)
    assert code == 501 and headers[b"connection"] == b"close" and lingers_then_closes(w, client)
    assert not w.endpoint.attempts


@pytest.mark.parametrize(
    "body",
    [
        b"ffffffffffffffffff1\r\nabc\r\n0\r\n\r\n",  # chunk-size overflow
        b"3\nabc\n0\n\n",  # LF-only chunk lines
        b"3\r\nabc\n0\r\n\r\n",
    ],
)
def test_a_broken_chunked_body_is_400_and_the_upstream_request_dropped(body: bytes) -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(
        b"POST " + PREFIX + b"/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    )
    code, _, headers = only_status(client)
    assert code == 400 and headers[b"connection"] == b"close" and client.disconnecting
    assert proto.forwarder is None


def test_a_broken_body_after_the_response_began_still_drops_the_connection() -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(
        b"POST " + PREFIX + b"/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    up, _ = w.accept()
    up.dataReceived(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
    proto.dataReceived(b"zz\r\n")
    assert getattr(client, "disconnected", False)


@pytest.mark.parametrize(
    ("request_line", "code"),
    [
        (b"GET /healthz\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /healthz HTTP/0.9\r\nHost: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    ],
)
def test_other_http_versions_are_refused(request_line: bytes, code: int) -> None:
    w = World()
    client, proto = w.connect()
    proto.dataReceived(request_line)
    got, _, headers = only_status(client)
    assert got == code and headers[b"connection"] == b"close" and lingers_then_closes(w, client)


def test_connection_naming_content_length_keeps_the_body() -> None:
    request = split_request(
        [(b"Connection", b"Content-Length, X-Hop"), (b"Content-Length", b"3"), (b"X-Hop", b"1")]
    )
    assert request.content_length == 3
    assert request.forward == [(b"Content-Length", b"3")]
    w = World()
    _, proto = w.connect()
    proto.dataReceived(
        b"POST " + PREFIX + b"/x HTTP/1.1\r\nHost: x\r\nConnection: Content-Length\r\n"
        b"Content-Length: 3\r\n\r\nabc"
    )
    _, upstream = w.accept()
    sent = upstream.value()
    assert b"Content-Length: 3\r\n" in sent and sent.endswith(b"\r\n\r\nabc")
