"""The simulator's request head limit: Go's 1 MiB (plus 4 KiB), answered with a bare 431."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from karpor.sim.auth import Authenticator
from karpor.sim.headlimit import (
    CLOSE_DELAY,
    HEAD_READ_LIMIT,
    MAX_HEADER_BYTES,
    TOO_LARGE_RESPONSE,
    HeadBudget,
)
from karpor.sim.http2 import MAX_HEADER_LIST_SIZE, H2ServerConnection
from karpor.sim.server import ApiServer, SimulatorSite
from karpor.sim.store import Store

TOKEN = "unit-token"


@given(st.lists(st.integers(min_value=1, max_value=400), max_size=40), st.integers(100, 5000))
def test_budget_refuses_exactly_past_the_limit(lengths: list[int], limit: int) -> None:
    budget = HeadBudget(limit)
    used = 0
    for length in lengths:
        used += length + 2
        assert budget.line(b"x" * length) is (used <= limit)
        if used > limit:
            return


def test_budget_starts_again_after_each_head() -> None:
    budget = HeadBudget(100)
    for _ in range(5):
        assert budget.line(b"x" * 60)
        assert budget.line(b"")
    assert budget.line(b"x" * 60)
    assert not budget.line(b"x" * 60)


def test_limit_is_go_default() -> None:
    assert MAX_HEADER_BYTES == 1 << 20
    assert HEAD_READ_LIMIT == MAX_HEADER_BYTES + 4096


def _connection() -> tuple[Clock, StringTransport, object]:
    clock = Clock()
    store = Store(clock=clock.seconds)
    site = SimulatorSite(ApiServer(store, Authenticator(TOKEN, []), clock), reactor=clock)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    return clock, transport, protocol


def _head(extra: int) -> bytes:
    return (
        b"GET /version HTTP/1.1\r\nHost: sim\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\nX-Big: "
        + b"a" * extra
        + b"\r\n\r\n"
    )


def test_a_100k_header_is_served() -> None:
    _, transport, protocol = _connection()
    head = _head(100 * 1024)
    for start in range(0, len(head), 16384):  # as TLS records bring it
        protocol.dataReceived(head[start : start + 16384])  # type: ignore[attr-defined]
    assert transport.value().startswith(b"HTTP/1.1 200 ")


def test_many_headers_are_served() -> None:
    _, transport, protocol = _connection()
    head = b"".join(f"X-H{i}: v\r\n".encode() for i in range(1000))
    protocol.dataReceived(  # type: ignore[attr-defined]
        b"GET /version HTTP/1.1\r\nAuthorization: Bearer "
        + TOKEN.encode()
        + b"\r\n"
        + head
        + b"\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 200 ")


def test_a_head_past_the_limit_is_431_then_closed() -> None:
    clock, transport, protocol = _connection()
    head = _head(MAX_HEADER_BYTES + 4096)
    for start in range(0, len(head), 16384):
        protocol.dataReceived(head[start : start + 16384])  # type: ignore[attr-defined]
    assert transport.value() == TOO_LARGE_RESPONSE
    assert not transport.disconnecting
    protocol.dataReceived(b"more of the client's bytes")  # type: ignore[attr-defined]
    clock.advance(CLOSE_DELAY)
    assert transport.disconnecting
    assert transport.value() == TOO_LARGE_RESPONSE


def test_many_lines_past_the_limit_are_431() -> None:
    _, transport, protocol = _connection()
    line = b"X-Line: " + b"b" * 1000 + b"\r\n"
    protocol.dataReceived(b"GET /version HTTP/1.1\r\n")  # type: ignore[attr-defined]
    for _ in range(HEAD_READ_LIMIT // len(line) + 1):
        protocol.dataReceived(line)  # type: ignore[attr-defined]
    assert transport.value() == TOO_LARGE_RESPONSE


def test_http2_header_lists_up_to_go_limit() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds)
    site = SimulatorSite(ApiServer(store, Authenticator(TOKEN, []), clock), reactor=clock)
    server = H2ServerConnection(site)
    transport = StringTransport()
    server.makeConnection(transport)
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    events: list[h2.events.Event] = []

    def pump() -> None:
        for _ in range(50):
            out = client.data_to_send()
            if out:
                server.dataReceived(out)
            data = transport.value()
            if data:
                transport.clear()
                events.extend(client.receive_data(data))
            if not out and not data:
                return

    pump()
    assert client.remote_settings.max_header_list_size == MAX_HEADER_LIST_SIZE
    sid = client.get_next_available_stream_id()
    client.send_headers(
        sid,
        [
            (b":method", b"GET"),
            (b":path", b"/version"),
            (b":scheme", b"https"),
            (b":authority", b"sim"),
            (b"authorization", b"Bearer " + TOKEN.encode()),
            (b"x-big", b"a" * (100 * 1024)),
        ],
        end_stream=True,
    )
    pump()
    statuses = [
        dict(e.headers or [])[b":status"]
        for e in events
        if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid
    ]
    assert statuses == [b"200"]
