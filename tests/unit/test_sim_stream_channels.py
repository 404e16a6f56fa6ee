"""Kubernetes stream protocol helpers (karpor.sim.channels) and attach markers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage
from wsproto.events import Request as WsRequest

from karpor.kube.status import ApiError
from karpor.sim import channels as ch
from karpor.sim.execution import MarkerFilter


def pod(*containers: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {"containers": [{"name": c} for c in containers]},
        "status": {"phase": phase},
    }


def test_negotiation_follows_the_client_order() -> None:
    offered = ch.split_header_values(["v4.channel.k8s.io, v3.channel.k8s.io", "channel.k8s.io"])
    assert offered == ["v4.channel.k8s.io", "v3.channel.k8s.io", "channel.k8s.io"]
    assert ch.negotiate(offered, ch.SPDY_REMOTE_COMMAND_PROTOCOLS) == ch.V4
    assert ch.negotiate(["v9.channel.k8s.io"], ch.SPDY_REMOTE_COMMAND_PROTOCOLS) is None
    assert ch.negotiate([ch.PORT_FORWARD_TUNNEL], ch.WEBSOCKET_PORT_FORWARD_PROTOCOLS)


def test_stream_options() -> None:
    query = {"command": ["sh", "-c", "true"], "stdout": ["true"], "stderr": ["1"], "tty": ["true"]}
    opts = ch.parse_stream_options("exec", query, pod("main"))
    assert opts == ch.StreamOptions(
        stdin=False,
        stdout=True,
        stderr=False,
        tty=True,
        container="main",
        command=("sh", "-c", "true"),
    )


@pytest.mark.parametrize(
    ("kind", "query", "containers", "message"),
    [
        (
            "exec",
            {"stdout": ["1"]},
            ("main",),
            "you must specify at least one command for the container",
        ),
        (
            "exec",
            {"command": ["ls"]},
            ("main",),
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
        (
            "attach",
            {"stdout": ["false"]},
            ("main",),
            "you must specify at least 1 of stdin, stdout, stderr",
        ),
        (
            "exec",
            {"command": ["ls"], "stdout": ["1"], "container": ["x"]},
            ("main",),
            "container x is not valid for pod p",
        ),
        (
            "exec",
            {"command": ["ls"], "stdout": ["1"]},
            ("a", "b"),
            "a container name must be specified for pod p, choose one of: [a b]",
        ),
    ],
)
def test_stream_option_errors(kind, query, containers, message) -> None:
    with pytest.raises(ApiError) as info:
        ch.parse_stream_options(kind, query, pod(*containers))
    assert info.value.code == 400
    assert info.value.reason == "BadRequest"
    assert info.value.message == message


def test_container_running() -> None:
    assert ch.container_running(pod("main"), "main")
    assert not ch.container_running(pod("main", phase="Pending"), "main")


def test_error_channel_payloads_match_the_kubelet() -> None:
    ok = ch.exit_status(["sh", "-c", "true"], 0)
    failed = ch.exit_status(["sh", "-c", "exit 3"], 3)
    assert ch.error_channel_payload(ch.V4, ok) == b'{"metadata":{},"status":"Success"}'
    assert ch.error_channel_payload(ch.V5, failed) == (
        b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: '
        b'error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode",'
        b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
    )
    assert ch.error_channel_payload(ch.V3, ok) == b""
    assert ch.error_channel_payload(ch.V1, failed) == (
        b"command terminated with non-zero exit code: "
        b"error executing command [sh -c exit 3], exit code 3"
    )
    # Go's encoding/json escapes HTML characters.
    html = ch.error_channel_payload(ch.V4, ch.internal_error_status("a<b>&"))
    assert b"a\\u003cb\\u003e\\u0026" in html
    assert json.loads(html)["code"] == 500


sizes = st.lists(st.tuples(st.integers(0, 65535), st.integers(0, 65535)), max_size=5)


@given(sizes, st.data())
def test_resize_stream_split_anywhere(pairs, data) -> None:
    wire = "".join(json.dumps({"Width": w, "Height": h}) + "\n" for w, h in pairs).encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    decoder = ch.ResizeDecoder()
    got = []
    last = 0
    for cut in [*cuts, len(wire)]:
        got += decoder.receive_data(wire[last:cut])
        last = cut
    assert got == [ch.TerminalSize(w, h) for w, h in pairs]


def test_resize_field_names_are_case_insensitive() -> None:
    assert ch.ResizeDecoder().receive_data(b'{"width":80,"height":24}') == [ch.TerminalSize(80, 24)]


@given(st.integers(0, 255), st.binary(max_size=100), st.booleans())
def test_channel_messages_round_trip(channel, payload, b64) -> None:
    if b64 and channel > 9:
        channel %= 10
    message = ch.encode_channel_message(channel, payload, base64_codec=b64)
    assert isinstance(message, str) is b64
    assert ch.decode_channel_message(message, base64_codec=b64) == (channel, payload)


def test_channel_message_examples() -> None:
    assert ch.encode_channel_message(1, b"\n", base64_codec=True) == "1Cg=="
    assert ch.decode_channel_message(b"0Zm9vCg==", base64_codec=True) == (0, b"foo\n")
    assert ch.decode_channel_message(b"", base64_codec=False) is None
    assert ch.decode_channel_message(bytes([255, 0]), base64_codec=False) == (255, b"\x00")
    with pytest.raises(ch.ChannelMessageError):
        ch.decode_channel_message("0!!", base64_codec=True)


#: payload lengths around the limits of the three WebSocket length encodings
frame_lengths = st.one_of(
    st.integers(0, 300),
    st.integers(65535 - 20, 65535 + 20),
    st.integers(0, 200_000),
)


def ws_pair() -> tuple[WSConnection, WSConnection]:
    """A wsproto client and server that completed a handshake, without extensions."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(WsRequest(host="sim", target="/")))
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    list(client.events())
    return client, server


@given(frame_lengths)
def test_websocket_frame_head_is_what_wsproto_frames(length) -> None:
    payload = bytes(range(256)) * (length // 256) + bytes(length % 256)
    head = ch.websocket_frame_head(length)
    _client, server = ws_pair()
    assert head + payload == server.send(BytesMessage(payload))
    assert len(head) == (2 if length <= 125 else 4 if length <= 65535 else 10)


@given(st.integers(0, 255), frame_lengths)
def test_channel_frame_carries_the_channel_message(channel, length) -> None:
    data = b"\xa5" * length
    frame = ch.channel_frame_head(channel, length) + data
    client, server = ws_pair()
    message = ch.encode_channel_message(channel, data, base64_codec=False)
    assert isinstance(message, bytes)
    assert frame == server.send(BytesMessage(message))
    client.receive_data(frame)
    got = b"".join(bytes(e.data) for e in client.events() if isinstance(e, BytesMessage))
    assert ch.decode_channel_message(got, base64_codec=False) == (channel, data)


def test_port_forward_headers() -> None:
    info = ch.parse_port_forward_headers({"streamtype": "data", "port": "80", "requestid": "7"}, 3)
    assert info == ch.PortForwardStream("data", 80, "7")
    assert ch.parse_port_forward_headers({"streamtype": "data", "port": "80"}, 3).request_id == "1"
    for bad in (
        {"streamtype": "data"},
        {"streamtype": "x", "port": "1"},
        {"streamtype": "data", "port": "0"},
    ):
        with pytest.raises(ValueError):
            ch.parse_port_forward_headers(bad, 1)


@given(st.lists(st.one_of(st.binary(max_size=30), st.integers(0, 10**6)), max_size=8), st.data())
def test_marker_filter_split_anywhere(items, data) -> None:
    # Plain chunks must not contain markers themselves; drop '@' to be sure.
    items = [i.replace(b"@", b"") if isinstance(i, bytes) else i for i in items]
    wire = b"".join(i if isinstance(i, bytes) else MarkerFilter.marker(i) for i in items)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=6)))
    f = MarkerFilter()
    out: list[bytes | int] = []
    last = 0
    for cut in [*cuts, len(wire)]:
        out += f.feed(wire[last:cut])
        last = cut
    rest = f.flush()
    assert b"".join(x for x in out if isinstance(x, bytes)) + rest == b"".join(
        i for i in items if isinstance(i, bytes)
    )
    assert [x for x in out if isinstance(x, int)] == [i for i in items if isinstance(i, int)]


@given(st.lists(st.lists(st.integers(1, 65535), min_size=1, max_size=3), min_size=1, max_size=3))
def test_port_forward_ports_repeated_or_comma_separated(groups: list[list[int]]) -> None:
    query = {"ports": [",".join(str(p) for p in group) for group in groups]}
    assert ch.parse_port_forward_ports(query) == [p for group in groups for p in group]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({}, 'query parameter "port" is required'),
        ({"ports": ["http"]}, "unable to parse 'http' as a port"),
        ({"ports": ["80,0"]}, 'port "0" must be > 0'),
        ({"ports": ["70000"]}, 'port "70000" must be > 0'),
        (
            {"ports": [",".join(["80"] * 129)]},
            "at most 128 ports can be forwarded over one WebSocket (asked for 129)",
        ),
    ],
)
def test_port_forward_ports_refused(query: dict[str, list[str]], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        ch.parse_port_forward_ports(query)


def test_older_websocket_port_forward_protocol() -> None:
    assert ch.negotiate(["v4.channel.k8s.io"], ch.WEBSOCKET_PORT_FORWARD_PROTOCOLS) == ch.V4
    offered = [ch.PORT_FORWARD_TUNNEL, ch.V4]
    assert ch.negotiate(offered, ch.WEBSOCKET_PORT_FORWARD_PROTOCOLS) == ch.PORT_FORWARD_TUNNEL
    assert ch.negotiate(["channel.k8s.io"], ch.WEBSOCKET_PORT_FORWARD_PROTOCOLS) is None
    assert ch.port_prefix(8080) == bytes([0x90, 0x1F])
    assert [ch.port_forward_channels(i) for i in range(3)] == [(0, 1), (2, 3), (4, 5)]
