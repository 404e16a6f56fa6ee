"""The front's HTTP/2 connection, sans-IO (karpor.http.h2server), against
the ``h2`` library as the client."""

from __future__ import annotations

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import hpack
from hyperframe.frame import Frame, GoAwayFrame, PingFrame
from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.http.bounds import BUSY, IDLE
from karpor.http.h2server import (
    DRAIN_PING,
    HEADER_LIST_HARD_FACTOR,
    ConnectionDone,
    Event,
    H2FrontConnection,
    StreamBody,
    StreamEnd,
    StreamGone,
    StreamRequest,
    StreamWritable,
    header_list_size,
    request_head,
    request_refusal,
    upgrade_refusal,
)

_REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM


def client(window: int = 65_535) -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    conn.initiate_connection()
    if window != 65_535:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
    return conn


def headers(
    path: bytes, method: bytes = b"GET", *extra: tuple[bytes, bytes]
) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":path", path),
        (b":scheme", b"https"),
        (b":authority", b"gw.example"),
        *extra,
    ]


def pair(
    max_streams: int = 100, max_header_bytes: int = 1 << 20, window: int = 65_535
) -> tuple[h2.connection.H2Connection, H2FrontConnection]:
    c = client(window)
    s = H2FrontConnection(max_streams, max_header_bytes)
    s.initiate()
    s.receive_data(c.data_to_send())
    c.receive_data(s.data_to_send())
    s.receive_data(c.data_to_send())  # the client's SETTINGS ACK
    return c, s


def frames(data: bytes) -> list[Frame]:
    """The frames in ``data``."""
    found = []
    view = memoryview(data)
    while len(view) >= 9:
        frame, length = Frame.parse_frame_header(view[:9])
        frame.parse_body(view[9 : 9 + length])
        found.append(frame)
        view = view[9 + length :]
    return found


def goaways(data: bytes) -> list[int]:
    """The ``last_stream_id`` of each GOAWAY frame in ``data``."""
    return [f.last_stream_id for f in frames(data) if isinstance(f, GoAwayFrame)]


def pings(data: bytes) -> list[bytes]:
    """The opaque data of each PING (not ACK) in ``data``."""
    return [
        f.opaque_data for f in frames(data) if isinstance(f, PingFrame) and "ACK" not in f.flags
    ]


def test_request_head_from_pseudo_headers() -> None:
    head = request_head(headers(b"/api?x=1", b"POST", (b"content-type", b"a/b")), ended=False)
    assert head.method == b"POST"
    assert head.target == b"/api?x=1"
    assert (b"host", b"gw.example") in head.headers
    # a body of unknown length travels chunked to an HTTP/1.1 cluster
    assert (b"transfer-encoding", b"chunked") in head.headers
    sized = request_head(headers(b"/", b"PUT", (b"content-length", b"3")), ended=False)
    assert (b"transfer-encoding", b"chunked") not in sized.headers
    own_host = request_head(headers(b"/", b"GET", (b"host", b"h")))
    assert [v for n, v in own_host.headers if n == b"host"] == [b"h"]


def test_upgrade_only_subresources_are_refused() -> None:
    for sub in (b"exec", b"attach", b"portforward"):
        error = upgrade_refusal(b"/api/v1/namespaces/d/pods/p/%b?command=ls" % sub)
        assert error is not None and error.code == 400
        assert "HTTP/1.1" in error.message
    assert upgrade_refusal(b"/api/v1/namespaces/d/pods/p/log?follow=true") is None
    assert upgrade_refusal(b"/api/v1/namespaces/exec") is None


def test_requests_http11_could_not_carry_safely_are_refused() -> None:
    ok = request_head(headers(b"/api"))
    assert request_refusal(ok) is None
    for head in (
        request_head(headers(b"/api", b"GET", (b"x-a", b"a\x01b"))),
        request_head(headers(b"/api", b"GET", (b"x(a", b"b"))),
        request_head(headers(b"/api", b"GET /x")),
        request_head(headers(b"/api", b"CONNECT")),
        request_head(headers(b"/api/v1/namespaces/d/pods/p/exec")),
    ):
        refused = request_refusal(head)
        assert refused is not None and refused.code == 400, head


@given(st.binary(max_size=12), st.binary(max_size=12))
def test_what_passes_is_safe_on_an_http11_line(name: bytes, value: bytes) -> None:
    head = request_head(headers(b"/api", b"GET", (name, value)))
    if request_refusal(head) is None:
        for n, v in head.headers:
            assert b"\r" not in v and b"\n" not in v and b"\x00" not in v
            assert n and not set(n) & set(b" :\r\n\x00")


def test_settings_announce_the_bounds() -> None:
    c, _s = pair(max_streams=7, max_header_bytes=8192)
    assert c.remote_settings.max_concurrent_streams == 7
    assert c.remote_settings.max_header_list_size == 8192


def lift_client_limit(c: h2.connection.H2Connection) -> None:
    """Make the client ignore the server's announced stream limit (``h2``
    itself respects it: a misbehaving client is forced)."""
    c.remote_settings = h2.settings.Settings(
        client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1000}
    )


def resets(c: h2.connection.H2Connection, data: bytes) -> dict[int, int]:
    """The streams the server reset in ``data``, with their error codes."""
    return {
        e.stream_id: e.error_code
        for e in c.receive_data(data)
        if isinstance(e, h2.events.StreamReset)
    }


def test_a_stream_past_the_limit_is_refused_and_the_connection_goes_on() -> None:
    c, s = pair(max_streams=2)
    for _ in range(2):
        c.send_headers(c.get_next_available_stream_id(), headers(b"/"), end_stream=True)
    events = s.receive_data(c.data_to_send())
    assert [type(e) for e in events].count(StreamRequest) == 2
    lift_client_limit(c)
    # two more: one with a header new to the HPACK table, one with a body
    # the client sends before it hears of the refusal
    c.send_headers(5, headers(b"/3", b"GET", (b"x-new", b"first seen here")), end_stream=True)
    c.send_headers(7, headers(b"/4", b"POST"), end_stream=False)
    c.send_data(7, b"body", end_stream=True)
    events = s.receive_data(c.data_to_send())
    assert events == [] and not s.done and s.open == {1, 3}
    assert resets(c, s.data_to_send()) == {5: _REFUSED, 7: _REFUSED}
    # a stream ends: the next one is taken, its header decoded from the
    # HPACK table the refused stream's block filled
    s.send_head(1, 200, [], end=True)
    c.receive_data(s.data_to_send())
    c.send_headers(9, headers(b"/5", b"GET", (b"x-new", b"first seen here")), end_stream=True)
    [request, _end] = s.receive_data(c.data_to_send())
    assert isinstance(request, StreamRequest) and request.error is None
    assert (request.stream_id, request.head.target) == (9, b"/5")
    assert (b"x-new", b"first seen here") in request.head.headers


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=1, max_value=3),
    st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=1, max_size=25),
)
def test_any_interleaving_refuses_exactly_the_streams_past_the_limit(
    limit: int, steps: list[tuple[bool, int]]
) -> None:
    c, s = pair(max_streams=limit)
    lift_client_limit(c)
    served: list[int] = []  # taken, not answered yet
    for n, (open_one, pick) in enumerate(steps):
        if open_one or not served:
            sid = c.get_next_available_stream_id()
            # a header value new each time: the HPACK table changes with every block
            c.send_headers(sid, headers(b"/%d" % n, b"GET", (b"x-n", b"v%d" % n)), end_stream=True)
            events = s.receive_data(c.data_to_send())
            refused = resets(c, s.data_to_send())
            if len(served) < limit:
                request = events[0]
                assert isinstance(request, StreamRequest) and request.head.target == b"/%d" % n
                assert (b"x-n", b"v%d" % n) in request.head.headers
                assert not refused
                served.append(sid)
            else:
                assert events == [] and refused == {sid: _REFUSED}
        else:
            sid = served.pop(pick % len(served))
            s.send_head(sid, 200, [], end=True)
            c.receive_data(s.data_to_send())
        assert not s.done and s.open == set(served)


def test_a_header_list_over_max_header_bytes_is_431_on_its_stream() -> None:
    c, s = pair(max_header_bytes=4096)
    big = (b"x-big", b"a" * 5000)
    c.send_headers(1, headers(b"/", b"GET", big), end_stream=True)
    [request, _end] = s.receive_data(c.data_to_send())
    assert isinstance(request, StreamRequest) and request.error is not None
    assert request.error.code == 431 and "4096" in request.error.message
    assert not s.done
    # the connection goes on, its HPACK table whole
    c.send_headers(3, headers(b"/next", b"GET", (big[0], b"small")), end_stream=True)
    [request, _end] = s.receive_data(c.data_to_send())
    assert isinstance(request, StreamRequest) and request.error is None
    assert (request.head.target, request.head.headers[0]) == (b"/next", (b"x-big", b"small"))
    # up to the limit itself, a request passes
    c2, s2 = pair(max_header_bytes=8192)
    c2.send_headers(1, headers(b"/", b"GET", big), end_stream=True)
    request = s2.receive_data(c2.data_to_send())[0]
    assert isinstance(request, StreamRequest) and request.error is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=40), st.binary(max_size=40)), max_size=8))
def test_the_header_list_size_is_http2s(fields: list[tuple[bytes, bytes]]) -> None:
    assert header_list_size(fields) == sum(32 + len(n) + len(v) for n, v in fields)


def test_a_header_block_past_the_hard_bound_ends_the_connection() -> None:
    c, s = pair(max_header_bytes=4096)
    too_big = (b"x-big", b"a" * (4096 * HEADER_LIST_HARD_FACTOR))
    c.send_headers(1, headers(b"/", b"GET", too_big), end_stream=True)
    events = s.receive_data(c.data_to_send())
    assert [type(e) for e in events] == [ConnectionDone]
    assert s.done
    [goaway] = [f for f in frames(s.data_to_send()) if isinstance(f, GoAwayFrame)]
    assert goaway.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM


def test_phase_is_busy_while_a_stream_is_open() -> None:
    c, s = pair()
    assert s.phase == IDLE
    c.send_headers(1, headers(b"/"), end_stream=True)
    s.receive_data(c.data_to_send(), now=5.0)
    assert (s.phase, s.since) == (BUSY, 5.0)
    s.send_head(1, 200, [(b"Content-Type", b"text/plain")], end=False)
    s.send_body(1, b"hi")
    s.end(1, now=9.0)
    assert (s.phase, s.since) == (IDLE, 9.0)
    # a response of a head alone ends at the caller's clock too (never 0: not timed out at once)
    c.send_headers(3, headers(b"/"), end_stream=True)
    s.receive_data(c.data_to_send(), now=12.0)
    s.send_head(3, 204, [], end=True)
    assert (s.phase, s.since) == (IDLE, 12.0)


def test_connection_specific_response_headers_are_dropped() -> None:
    c, s = pair()
    c.send_headers(1, headers(b"/"), end_stream=True)
    s.receive_data(c.data_to_send())
    s.send_head(
        1,
        200,
        [(b"Connection", b"close"), (b"Transfer-Encoding", b"chunked"), (b"X-A", b"1")],
        end=True,
    )
    events = c.receive_data(s.data_to_send())
    got = next(e for e in events if isinstance(e, h2.events.ResponseReceived))
    assert got.headers == [(b":status", b"200"), (b"x-a", b"1")]


def test_request_body_window_is_held_until_acknowledged() -> None:
    c, s = pair()
    c.send_headers(1, headers(b"/", b"POST"))
    for _ in range(4):
        c.send_data(1, b"x" * 15_000)
    events = s.receive_data(c.data_to_send())
    body = [e for e in events if isinstance(e, StreamBody)]
    assert sum(len(e.data) for e in body) == 60_000
    c.receive_data(s.data_to_send())
    assert c.local_flow_control_window(1) == 65_535 - 60_000  # nothing acknowledged yet
    s.acknowledge(1, sum(e.flow for e in body))
    c.receive_data(s.data_to_send())
    assert c.local_flow_control_window(1) == 65_535


def test_a_reset_stream_is_gone() -> None:
    c, s = pair()
    c.send_headers(1, headers(b"/watch"), end_stream=True)
    s.receive_data(c.data_to_send())
    c.reset_stream(1, h2.errors.ErrorCodes.CANCEL)
    events = s.receive_data(c.data_to_send())
    assert [type(e) for e in events] == [StreamGone]
    assert not s.open


def test_drain_is_race_free() -> None:
    c, s = pair()
    c.send_headers(1, headers(b"/a"), end_stream=True)
    s.receive_data(c.data_to_send())
    s.drain()
    sent = s.data_to_send()
    assert goaways(sent) == [2**31 - 1]  # first: every stream still welcome
    # a stream the client opened before it read the GOAWAY is still taken
    c.send_headers(3, headers(b"/b"), end_stream=True)
    early = c.data_to_send()
    assert pings(sent) == [DRAIN_PING]
    # (the h2 library as a client stops at a GOAWAY: its answer is made here)
    pong = PingFrame(0, flags=["ACK"], opaque_data=DRAIN_PING).serialize()
    got = s.receive_data(early + pong)
    assert [e.stream_id for e in got if isinstance(e, StreamRequest)] == [3]
    assert goaways(s.data_to_send()) == [3]  # then: the last stream taken
    # a stream opened past it (a client that ignores the GOAWAY) is refused:
    # never processed, so its client retries it elsewhere
    c.send_headers(5, headers(b"/c"), end_stream=True)
    assert s.receive_data(c.data_to_send()) == []
    resets = [e for e in c.receive_data(s.data_to_send()) if isinstance(e, h2.events.StreamReset)]
    assert [(e.stream_id, e.error_code) for e in resets] == [
        (5, h2.errors.ErrorCodes.REFUSED_STREAM)
    ]
    # the streams taken finish; then the drain is over
    assert not s.finished
    for sid in (1, 3):
        s.send_head(sid, 200, [], end=True)
    assert s.finished


def test_drain_without_an_answer_to_its_ping() -> None:
    _c, s = pair()
    s.drain()
    s.data_to_send()
    s.go_away()
    assert goaways(s.data_to_send()) == [0]
    assert s.finished


def _serve(s: H2FrontConnection, events: list[Event], bodies: dict[int, bytes]) -> None:
    """The server's side of the interleaving test: echo each request's
    path and body once it ended, in pieces."""
    for event in events:
        if isinstance(event, StreamRequest):
            bodies[event.stream_id] = event.head.target
        elif isinstance(event, StreamBody):
            bodies[event.stream_id] += event.data
            s.acknowledge(event.stream_id, event.flow)
        elif isinstance(event, StreamEnd):
            answer = bodies[event.stream_id] * 50  # larger than the client's window
            s.send_head(event.stream_id, 200, [(b"x-stream", b"%d" % event.stream_id)], end=False)
            for i in range(0, len(answer), 700):
                s.send_body(event.stream_id, answer[i : i + 700])
            s.end(event.stream_id)
        else:
            assert isinstance(event, StreamWritable), event


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(st.binary(min_size=1, max_size=300), max_size=4), min_size=1, max_size=6),
    st.randoms(use_true_random=False),
    st.lists(st.integers(min_value=1, max_value=200), min_size=1, max_size=20),
)
def test_any_interleaving_of_streams_yields_each_its_answer(
    bodies: list[list[bytes]], rnd, cuts: list[int]
) -> None:
    c, s = pair(window=1024)  # the client's small window makes responses wait
    expected: dict[int, bytes] = {}
    pieces: list[tuple[int, bytes | None]] = []
    for i, parts in enumerate(bodies):
        sid = c.get_next_available_stream_id()
        path = b"/s/%d" % i
        method = b"POST" if parts else b"GET"
        c.send_headers(sid, headers(path, method), end_stream=not parts)
        expected[sid] = (path + b"".join(parts)) * 50
        pieces += [(sid, p) for p in parts]
        if parts:
            pieces.append((sid, None))
    # the bodies' frames in any order that keeps each stream's own order
    order: list[tuple[int, bytes | None]] = []
    queues = {sid: [p for p in pieces if p[0] == sid] for sid in expected}
    while any(queues.values()):
        sid = rnd.choice([k for k, v in queues.items() if v])
        order.append(queues[sid].pop(0))
    for sid, data in order:
        if data is None:
            c.end_stream(sid)
        else:
            c.send_data(sid, data)
    wire = c.data_to_send()
    seen: dict[int, bytes] = {}
    got: dict[int, bytes] = {sid: b"" for sid in expected}
    ended: set[int] = set()
    # the client's bytes arrive cut anywhere
    at = 0
    for cut in cuts * (len(wire) // max(1, sum(cuts)) + 1):
        if at >= len(wire):
            break
        _serve(s, s.receive_data(wire[at : at + cut]), seen)
        at += cut
    _serve(s, s.receive_data(wire[at:]), seen)
    for _ in range(10_000):
        out = s.data_to_send()
        if not out and len(ended) == len(expected):
            break
        for event in c.receive_data(out):
            if isinstance(event, h2.events.DataReceived):
                got[event.stream_id] += event.data
                c.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, h2.events.StreamEnded):
                ended.add(event.stream_id)
        _serve(s, s.receive_data(c.data_to_send()), seen)
    assert ended == set(expected)
    assert got == expected
    assert not s.open


def test_response_head_is_normalized_as_h2_would() -> None:
    """The response head goes out normalized by karpor (h2's own outbound
    normalization and validation are off, for speed): names lower-cased,
    surrounding blanks stripped, connection-specific headers dropped, a
    credential never indexed by HPACK; 1xx heads alike."""
    c, s = pair()
    c.send_headers(1, headers(b"/api"), end_stream=True)
    s.receive_data(c.data_to_send())
    messy = [
        (b"Content-Type", b" application/json "),
        (b"Connection", b"close"),
        (b"Transfer-Encoding", b"chunked"),
        (b"Keep-Alive", b"timeout=5"),
        (b"Proxy-Authenticate", b"Basic"),
        (b"Authorization", b"Bearer not-for-a-table"),
        (b"Cookie", b"a=b"),
        (b"Warning", b'299 - "x"\t'),
    ]
    s.send_interim(1, 100, [(b"X-Note", b" early ")])
    s.send_head(1, 200, messy, True)
    events = c.receive_data(s.data_to_send())
    early = [e for e in events if isinstance(e, h2.events.InformationalResponseReceived)]
    assert [tuple(h) for h in early[0].headers] == [(b":status", b"100"), (b"x-note", b"early")]
    received = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert len(received) == 1
    block = received[0].headers
    assert [tuple(h) for h in block] == [
        (b":status", b"200"),
        (b"content-type", b"application/json"),
        (b"authorization", b"Bearer not-for-a-table"),
        (b"warning", b'299 - "x"'),
        (b"cookie", b"a=b"),  # the client's h2 moves cookies last
    ]
    never = {h[0] for h in block if isinstance(h, hpack.NeverIndexedHeaderTuple)}
    assert never == {b"authorization", b"cookie"}
