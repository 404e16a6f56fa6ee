"""The tunnel's wire (sans-IO): the upgrade, the gateway's answer, a stream's request."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.http.tunnelwire import (
    MAX_ANSWER_HEAD,
    PROTOCOL,
    SWITCHED_HEADER,
    TUNNEL_PATH,
    UPGRADE_HEADER,
    StreamRequestError,
    SwitchReader,
    TunnelAnswerError,
    agent_request,
    clean_version,
    is_tunnel_request,
    parse_answer,
    switch_response,
    upgrade_request,
)


def test_upgrade_request_names_path_protocol_and_version() -> None:
    head = upgrade_request("gw.example:8443", "1.2.3")
    assert head.startswith(b"GET " + TUNNEL_PATH + b" HTTP/1.1\r\n")
    assert b"\r\nHost: gw.example:8443\r\n" in head
    assert b"\r\nUpgrade: " + PROTOCOL + b"\r\n" in head
    assert b"\r\nKarpor-Agent-Version: 1.2.3\r\n" in head
    assert head.endswith(b"\r\n\r\n")


def test_is_tunnel_request() -> None:
    assert is_tunnel_request(TUNNEL_PATH, PROTOCOL)
    assert is_tunnel_request(TUNNEL_PATH, PROTOCOL.upper())
    assert not is_tunnel_request(TUNNEL_PATH + b"?x=1", PROTOCOL)
    assert not is_tunnel_request(TUNNEL_PATH, b"websocket")
    assert not is_tunnel_request(TUNNEL_PATH, None)
    assert not is_tunnel_request(b"/api", PROTOCOL)


@given(st.binary(max_size=200))
def test_clean_version_is_printable_and_bounded(raw: bytes) -> None:
    version = clean_version(raw)
    assert 0 < len(version) <= 64
    assert all(0x21 <= c < 0x7F for c in version)


@given(
    st.integers(min_value=1, max_value=64).flatmap(
        lambda n: st.tuples(st.integers(0, n - 1), st.just(n))
    ),
    st.binary(max_size=64),
    st.lists(st.integers(min_value=1, max_value=400), max_size=8),
)
def test_switch_reader_any_split(worker: tuple[int, int], rest: bytes, cuts: list[int]) -> None:
    """The answer and the HTTP/2 bytes after it, however the reads split them."""
    data = switch_response(*worker) + rest
    reader = SwitchReader()
    result = None
    position = 0
    for cut in [*sorted(cuts), len(data)]:
        if result is not None or cut <= position:
            continue
        result = reader.feed(data[position:cut])
        position = min(cut, len(data))
    assert result is not None
    answer, after = result
    assert (answer.code, answer.worker, answer.workers) == (101, *worker)
    assert after + data[position:] == rest


def test_refusal_is_read_as_its_code() -> None:
    answer = parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json")
    assert (answer.code, answer.reason) == (404, "Not Found")


@pytest.mark.parametrize(
    "head",
    [
        b"SSH-2.0-x",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: karpor-tunnel.v1\r\nKarpor-Worker: 2/2",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: karpor-tunnel.v1\r\nKarpor-Worker: x",
        b"HTTP/1.1 101 Switching Protocols\r\nno colon here",
    ],
)
def test_bad_answers(head: bytes) -> None:
    with pytest.raises(TunnelAnswerError):
        parse_answer(head)


def test_answer_head_is_bounded() -> None:
    reader = SwitchReader()
    with pytest.raises(TunnelAnswerError, match="too large"):
        for _ in range(MAX_ANSWER_HEAD // 1000 + 2):
            reader.feed(b"x" * 1000)


def test_agent_request_reads_the_stream_head() -> None:
    asked = agent_request(
        [
            (b":method", b"POST"),
            (b":path", b"/api/v1/namespaces/a/pods/p/exec?command=ls"),
            (b":scheme", b"https"),
            (b":authority", b"edge"),
            (b"authorization", b"Bearer not-forwarded"),
            (b"host", b"edge"),
            (b"connection", b"close"),
            (b"x-stream-protocol-version", b"v4.channel.k8s.io"),
            (b"impersonate-user", b"alice"),
            (b"content-length", b"0"),
            (b"x-forwarded-for", b"10.0.0.9"),
            (b"audit-id", b"abc"),
            (UPGRADE_HEADER, b"SPDY/3.1"),
        ]
    )
    assert asked.method == b"POST"
    assert asked.target == b"/api/v1/namespaces/a/pods/p/exec?command=ls"
    assert asked.headers == [
        (b"x-stream-protocol-version", b"v4.channel.k8s.io"),
        (b"impersonate-user", b"alice"),
        (b"content-length", b"0"),
    ]
    assert (asked.forwarded_for, asked.audit_id, asked.upgrade) == (
        b"10.0.0.9",
        b"abc",
        b"SPDY/3.1",
    )
    assert asked.content_length == 0


@given(st.lists(st.tuples(st.binary(max_size=20), st.binary(max_size=20)), max_size=10))
def test_agent_request_never_forwards_a_credential(headers: list[tuple[bytes, bytes]]) -> None:
    try:
        asked = agent_request([(b":method", b"GET"), (b":path", b"/api"), *headers])
    except StreamRequestError:
        return
    names = {name for name, _ in asked.headers}
    assert not names & {b"authorization", b"host", b"connection", UPGRADE_HEADER}
    assert not any(name.startswith(b":") for name in names)


@pytest.mark.parametrize(
    "headers", [[(b":path", b"/api")], [(b":method", b"GET"), (b":path", b"api")], []]
)
def test_agent_request_needs_method_and_path(headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(StreamRequestError):
        agent_request(headers)


def test_switched_marker_is_not_an_upgrade_header() -> None:
    assert SWITCHED_HEADER != UPGRADE_HEADER
