"""The sans-IO front connection (karpor.http.connection): bytes in, request
events out, its states, its protocol errors (the adapter over it answering
pipelined requests in order is tested in test_front_gateway.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.http1 import encode, requests_strategy, splits

from karpor.http.bounds import BUSY, HANDSHAKE, HEAD, IDLE, LINGER_BYTES, Linger
from karpor.http.connection import (
    CLOSING_STATE,
    DRAINING,
    END,
    ERROR,
    IDLE_STATE,
    PAUSED,
    READING_BODY,
    READING_HEAD,
    SWITCHED,
    UPGRADE,
    Event,
    FrontConnection,
    ProtocolError,
    RequestHead,
)

LIMIT = 4096


def conn() -> FrontConnection:
    c = FrontConnection(LIMIT)
    c.handshake_completed(0.0)
    return c


def take(c: FrontConnection) -> list[Event]:
    return c.take_events()


# -- requests as bytes --------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.lists(requests_strategy, min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=20),
    st.integers(min_value=0, max_value=3),
)
def test_any_split_of_pipelined_requests_yields_them_in_order(
    requests: list[tuple[bytes, bytes, str, bytes, int]], cuts: list[int], answer_after: int
) -> None:
    """Each request's head, body and end come in order, one request at a
    time: the next head only once the previous response ended (answered
    ``answer_after`` reads after its end, or at once)."""
    c = conn()
    data = b"".join(encode(r) for r in requests)
    seen: list[tuple[bytes, bytes, bytes]] = []
    current: list[Any] = []
    waiting = -1  # reads left before the current request is answered

    def handle(events: list[Event]) -> None:
        nonlocal waiting
        for event in events:
            if isinstance(event, RequestHead):
                assert not current, "a head before the previous response ended"
                current[:] = [event.method, event.target, b""]
            elif isinstance(event, bytes):
                current[2] += event
            elif event is END:
                seen.append((current[0], current[1], current[2]))
                waiting = answer_after
            else:
                raise AssertionError(event)

    def answer() -> None:
        nonlocal waiting
        waiting = -1
        current.clear()
        assert not c.end_response(False, 0.0)
        handle(take(c))

    for piece in splits(data, cuts):
        c.receive_data(piece, 0.0)
        handle(take(c))
        while waiting == 0:
            answer()
        if waiting > 0:
            waiting -= 1
            assert c.holding == (c.state == PAUSED and c._queue is not None)
    while waiting >= 0:
        answer()
    assert seen == [(m, p, b if f != "none" else b"") for m, p, f, b, _ in requests]
    assert c.state == IDLE_STATE and not c.holding
    assert c.received == len(data)


# -- states ---------------------------------------------------------------------------


def test_the_states_of_one_request_with_a_body() -> None:
    c = FrontConnection(LIMIT)
    assert c.phase == HANDSHAKE and c.state == IDLE_STATE
    c.handshake_completed(5.0)
    assert (c.phase, c.since) == (HEAD, 5.0)
    c.receive_data(b"POST /x HTTP/1.1\r\nContent-Length: 4\r\n", 6.0)
    assert c.state == READING_HEAD and take(c) == []
    c.receive_data(b"\r\nab", 7.0)
    head, data = take(c)
    assert isinstance(head, RequestHead) and head.method == b"POST" and head.target == b"/x"
    assert head.http11 and head.keep_alive and not head.upgrade
    assert data == b"ab" and c.state == READING_BODY and (c.phase, c.since) == (BUSY, 7.0)
    c.receive_data(b"cd", 8.0)
    assert take(c) == [b"cd", END] and c.state == PAUSED and c.busy
    assert not c.end_response(False, 9.0)
    assert c.state == IDLE_STATE and (c.phase, c.since) == (IDLE, 9.0) and c.answered == 1
    c.receive_data(b"G", 10.0)
    assert c.state == READING_HEAD and (c.phase, c.since) == (HEAD, 10.0)


def test_a_pipelined_request_is_held_until_the_response_ends() -> None:
    c = conn()
    c.receive_data(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 0.0)
    first = take(c)
    assert [type(e) for e in first] == [RequestHead, type(END)]
    assert c.state == PAUSED and c.holding and take(c) == []
    assert not c.end_response(False, 1.0)
    second = take(c)
    assert isinstance(second[0], RequestHead) and second[0].target == b"/b"
    assert not c.holding and c.state == PAUSED


def test_a_request_answered_before_its_body_ends_reads_the_body_on() -> None:
    c = conn()
    c.receive_data(b"PUT /a HTTP/1.1\r\nContent-Length: 3\r\n\r\na", 0.0)
    assert len(take(c)) == 2
    assert not c.end_response(False, 0.0)  # e.g. a 401 at once
    assert c.state == READING_BODY
    c.receive_data(b"bcGET /b HTTP/1.1\r\n\r\n", 0.0)
    events = take(c)
    assert events[:2] == [b"bc", END] and isinstance(events[2], RequestHead)


def test_an_upgrade_holds_what_follows_then_switches() -> None:
    c = conn()
    c.receive_data(
        b"GET /exec HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\nraw", 0.0
    )
    head = take(c)[0]
    assert isinstance(head, RequestHead) and head.upgrade
    assert c.state == UPGRADE and c.holding
    c.receive_data(b" bytes", 0.0)
    assert take(c) == []
    assert c.switched() == b"raw bytes"
    assert c.state == SWITCHED and not c.holding
    c.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    assert take(c) == []


def test_an_upgrade_answered_without_switching_reads_http_again() -> None:
    c = conn()
    c.receive_data(
        b"GET /exec HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nGET /next HTTP/1.1\r\n",
        0.0,
    )
    take(c)
    c.receive_data(b"\r\n", 0.0)
    assert take(c) == [] and c.state == UPGRADE
    assert not c.end_response(False, 0.0)
    head, end = take(c)
    assert isinstance(head, RequestHead) and head.target == b"/next" and end is END
    assert not c.holding


def test_draining_makes_the_last_response_close_but_after_pipelined_ones() -> None:
    c = conn()
    c.draining = True
    assert c.state == DRAINING and c.last_response()
    c.receive_data(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 0.0)
    take(c)
    assert not c.last_response()  # /b was received: it gets the Connection: close
    c.end_response(False, 0.0)
    take(c)
    assert c.last_response()


def test_close_and_the_close_decision() -> None:
    c = conn()
    c.receive_data(b"GET /a HTTP/1.0\r\n\r\n", 0.0)
    [head, _] = take(c)
    assert isinstance(head, RequestHead) and not head.keep_alive and not head.http11
    assert c.end_response(True, 3.0)  # the response said Connection: close
    assert c.close(3.0) and not c.close(4.0)
    assert c.state == CLOSING_STATE and c.since == 3.0
    c.receive_data(b"GET /b HTTP/1.1\r\n\r\n", 5.0)
    assert take(c) == []


# -- protocol errors -------------------------------------------------------------------


def error_of(c: FrontConnection) -> ProtocolError:
    events = take(c)
    assert isinstance(events[-1], ProtocolError)
    return events[-1]


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"GET /healthz\r\n\r\n", 400),  # HTTP/0.9
        (b"GET /healthz HTTP/0.9\r\nHost: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", 505),
        (b"GET /healthz HTTP/1.2\r\nHost: x\r\n\r\n", 400),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
        (b"GET / HTTP/1.1\r\nBad Header\r\n\r\n", 400),
        (b"GET /" + b"u" * (2 * LIMIT) + b" HTTP/1.1\r\n\r\n", 414),
        (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (2 * LIMIT) + b"\r\n\r\n", 431),
    ],
)
def test_each_refused_head_maps_to_its_status(data: bytes, code: int) -> None:
    c = conn()
    c.receive_data(data, 0.0)
    error = error_of(c)
    assert error.error.code == code and not error.in_body
    assert c.state == ERROR and c.failed and c.busy
    c.receive_data(b"GET / HTTP/1.1\r\n\r\n", 0.0)
    assert take(c) == []  # nothing is parsed after it
    assert c.end_response(False, 0.0)  # the connection closes after its answer
    assert c.refused_head  # and lingers: the client may still be sending the head


def test_a_broken_chunked_body_is_a_400_in_the_body() -> None:
    c = conn()
    c.receive_data(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 0.0)
    error = error_of(c)
    assert error.error.code == 400 and error.in_body
    assert not c.refused_head  # its head was answered: the close does not linger


def test_an_ordinary_close_does_not_linger() -> None:
    c = conn()
    c.receive_data(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0.0)
    take(c)
    assert c.end_response(True, 0.0) and not c.refused_head


@settings(max_examples=50, deadline=None)
@given(st.integers(min_value=1, max_value=1 << 20), st.lists(st.integers(0, 1 << 17)))
def test_a_linger_drops_its_budget_then_stops(limit: int, reads: list[int]) -> None:
    linger = Linger(limit)
    budget = max(limit, LINGER_BYTES)  # another head's worth, at least LINGER_BYTES
    dropped = 0
    for size in reads:
        dropped += size
        assert linger.discard(size) == (dropped < budget)


def test_a_head_is_bounded_whatever_the_reads() -> None:
    c = conn()
    data = b"GET / HTTP/1.1\r\nX-Big: " + b"a" * (2 * LIMIT)
    for at in range(0, len(data), 1000):
        c.receive_data(data[at : at + 1000], 0.0)
        if c.failed:
            break
    assert error_of(c).error.code == 431
    assert c.received <= LIMIT + 1000


def test_a_refused_pipelined_head_waits_its_turn() -> None:
    c = conn()
    c.receive_data(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/2.0\r\n\r\n", 0.0)
    assert [type(e) for e in take(c)] == [RequestHead, type(END)]
    assert c.holding
    assert not c.end_response(False, 0.0)
    [error] = take(c)
    assert isinstance(error, ProtocolError) and error.error.code == 505
    assert c.end_response(False, 0.0)


# -- responses ----------------------------------------------------------------------


def read_one(c: FrontConnection, data: bytes) -> RequestHead:
    c.receive_data(data, 0.0)
    head = take(c)[0]
    assert isinstance(head, RequestHead)
    return head


def test_a_complete_response_keeps_alive_and_drops_framing_headers() -> None:
    c = conn()
    head = read_one(c, b"GET /a HTTP/1.1\r\n\r\n")
    data, close = c.respond(
        head, 200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"99")], b"ok"
    )
    assert not close
    assert data == (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")


def test_a_response_closes_when_asked_without_keep_alive_or_unread() -> None:
    c = conn()
    head = read_one(c, b"HEAD /a HTTP/1.0\r\n\r\n")
    data, close = c.respond(head, 404, [], b"body")
    assert close and data.endswith(b"Content-Length: 4\r\nConnection: close\r\n\r\n")
    c = conn()
    head = read_one(c, b"GET /a HTTP/1.1\r\n\r\n")
    assert c.respond(head, 400, [], b"", close=True)[1]
    assert c.respond(None, 408, [], b"x")[0].endswith(b"Connection: close\r\n\r\nx")


def test_the_drain_rule_closes_the_last_response_only() -> None:
    c = conn()
    c.receive_data(b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n", 0.0)
    first = take(c)[0]
    assert isinstance(first, RequestHead)
    c.draining = True
    _, close = c.respond(first, 200, [], b"")
    assert not close  # /b was received: it is answered first
    c.end_response(close, 0.0)
    second = take(c)[0]
    assert isinstance(second, RequestHead)
    data, close = c.respond(second, 200, [], b"")
    assert close and b"Connection: close\r\n" in data


def test_a_streamed_response_is_chunked_over_http11_else_ends_with_the_close() -> None:
    c = conn()
    head = read_one(c, b"GET /w HTTP/1.1\r\n\r\n")
    assert c.start_response(head, 200, [(b"Transfer-Encoding", b"gzip")]) == (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    assert c.send_body(b"hello") == b"5\r\nhello\r\n"
    assert c.finish_body() == (b"0\r\n\r\n", False)
    c = conn()
    head = read_one(c, b"GET /w HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    assert c.start_response(head, 200, []) == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"
    assert c.send_body(b"hello") == b"hello"
    assert c.finish_body() == (b"", True)


# -- a relayed response (a cluster's) -------------------------------------------------


def test_a_relayed_head_keeps_the_clusters_length_and_reason() -> None:
    c = conn()
    head = read_one(c, b"GET /p HTTP/1.1\r\n\r\n")
    data, body = c.relay_head(head, 200, b"Fine", [(b"Content-Length", b"2")], 2)
    assert body and data == b"HTTP/1.1 200 Fine\r\nContent-Length: 2\r\n\r\n"
    assert c.send_body(b"ok") == b"ok"
    assert c.finish_body() == (b"", False)
    assert not c.chunked


def test_a_relayed_body_of_unknown_length_is_chunked_or_ends_with_the_close() -> None:
    c = conn()
    head = read_one(c, b"GET /w HTTP/1.1\r\n\r\n")
    data, body = c.relay_head(head, 200, b"OK", [], None)
    assert body and data == b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    assert c.chunked and c.send_body(b"e") == b"1\r\ne\r\n"
    assert c.finish_body() == (b"0\r\n\r\n", False)
    c = conn()
    head = read_one(c, b"GET /w HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
    data, body = c.relay_head(head, 200, b"OK", [], None)
    assert data == b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" and not c.chunked
    assert c.finish_body() == (b"", True)


@pytest.mark.parametrize(
    ("request_line", "code"),
    [(b"HEAD /p HTTP/1.1", 200), (b"GET /p HTTP/1.1", 204), (b"GET /p HTTP/1.1", 304)],
)
def test_a_relayed_response_without_a_body_is_not_chunked(request_line: bytes, code: int) -> None:
    c = conn()
    head = read_one(c, request_line + b"\r\n\r\n")
    data, body = c.relay_head(head, code, b"X", [], None)
    assert not body and b"Transfer-Encoding" not in data and b"Connection" not in data


def test_a_relayed_response_closes_on_drain_or_without_keep_alive() -> None:
    c = conn()
    head = read_one(c, b"GET /p HTTP/1.1\r\n\r\n")
    c.draining = True
    data, _ = c.relay_head(head, 200, b"OK", [(b"Content-Length", b"0")], 0)
    assert data.endswith(b"Connection: close\r\n\r\n") and c.finish_body() == (b"", True)
    c = conn()
    head = read_one(c, b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert c.relay_head(head, 200, b"OK", [], 0)[0].endswith(b"Connection: close\r\n\r\n")


def test_interim_and_switch_heads() -> None:
    c = conn()
    head = read_one(c, b"PUT /p HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n")
    assert c.interim_head(head, 100, b"Continue", []) == b"HTTP/1.1 100 Continue\r\n\r\n"
    c = conn()
    old = read_one(c, b"PUT /p HTTP/1.0\r\nContent-Length: 1\r\n\r\n")
    assert c.interim_head(old, 100, b"Continue", []) == b""
    assert FrontConnection.switch_head(b"Switching Protocols", [(b"Upgrade", b"SPDY/3.1")]) == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\n\r\n"
    )
