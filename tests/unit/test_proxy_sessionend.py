"""The endings of cut upgraded sessions (karpor.http.sessionend), checked
against the simulator's own SPDY and WebSocket codecs (what kubectl speaks)."""

from __future__ import annotations

import json
from typing import Any

import wsproto.frame_protocol as wsframes
from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.http.sessionend import (
    MAX_FILL,
    SPDY_DICTIONARY,
    SpdyEnd,
    WebSocketEnd,
    session_end,
    websocket_frame,
)
from karpor.sim import spdy

MESSAGE = "the gateway is shutting down: the session was cut"


def client_frames(error_id: int = 1) -> list[bytes]:
    """What kubectl's SPDY executor sends first: one SYN_STREAM per stream
    (the error stream first), each header block in the same zlib context."""
    encoder = spdy.FrameEncoder()
    kinds = ["error", "stdin", "stdout", "stderr", "resize"]
    frames = []
    for offset, kind in enumerate(kinds):
        stream_id = error_id + 2 * offset
        frames.append(
            encoder.encode(
                spdy.SynStream(stream_id, {"streamtype": kind, "x-some-header": "v" * offset})
            )
        )
    frames.append(encoder.encode(spdy.Data(error_id + 2, b"stdin bytes")))
    return frames


def server_frames() -> list[bytes]:
    encoder = spdy.FrameEncoder()
    out = [encoder.encode(spdy.SynReply(i, {})) for i in (1, 3, 5, 7, 9)]
    out.append(encoder.encode(spdy.Data(5, b"output line\n")))
    return out


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for point in points:
        pieces.append(data[last:point])
        last = point
    pieces.append(data[last:])
    return pieces


def decode_spdy(data: bytes) -> list[Any]:
    decoder = spdy.FrameDecoder()
    return decoder.receive_data(data)


def test_the_dictionary_is_the_spdy3_one() -> None:
    assert SPDY_DICTIONARY is spdy.HEADER_DICTIONARY  # one copy, in karpor.http.spdy
    assert len(SPDY_DICTIONARY) == 1423  # draft 3, section 2.6.10.1


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0), max_size=8), st.lists(st.integers(0), max_size=8))
def test_spdy_ending_is_a_failure_status_on_the_error_stream(
    client_cuts: list[int], server_cuts: list[int]
) -> None:
    end = session_end(
        [(b"Upgrade", b"SPDY/3.1"), (b"X-Stream-Protocol-Version", b"v4.channel.k8s.io")]
    )
    assert isinstance(end, SpdyEnd)
    for piece in split(b"".join(client_frames(error_id=3)), client_cuts):
        end.from_client(piece)
    sent = b"".join(server_frames())
    for piece in split(sent, server_cuts):
        end.from_server(piece)
    assert end.error_streams == [3]
    ending = end.ending(MESSAGE)
    assert ending is not None
    frames = decode_spdy(ending)
    assert len(frames) == 1
    frame = frames[0]
    assert isinstance(frame, spdy.Data) and frame.stream_id == 3 and frame.fin
    status = json.loads(frame.data)
    assert status["kind"] == "Status" and status["status"] == "Failure"
    assert status["message"] == MESSAGE
    # what the client reads is a valid SPDY stream: the server's frames, then ours
    assert len(decode_spdy(sent + ending)) == len(server_frames()) + 1


def test_spdy_ending_mid_data_frame_fills_it_first() -> None:
    end = SpdyEnd(status=False)
    for frame in client_frames():
        end.from_client(frame)
    data = spdy.FrameEncoder().encode(spdy.Data(5, b"0123456789"))
    end.from_server(data[:12])  # the head and 4 of 10 payload bytes
    ending = end.ending(MESSAGE)
    assert ending is not None
    frames = decode_spdy(data[:12] + ending)
    assert frames[0] == spdy.Data(5, b"0123\0\0\0\0\0\0")
    assert frames[1] == spdy.Data(1, MESSAGE.encode(), fin=True)  # old protocols: the text


def test_no_ending_inside_a_huge_data_frame() -> None:
    spdy_end = SpdyEnd(status=True)
    for frame in client_frames():
        spdy_end.from_client(frame)
    spdy_end.from_server(spdy.FrameEncoder.data_head(5, MAX_FILL + 2) + b"x")
    assert spdy_end.ending(MESSAGE) is None
    ws_end = WebSocketEnd("v5.channel.k8s.io")
    ws_end.from_server(bytes((0x82, 127)) + (1 << 40).to_bytes(8, "big") + b"\x01")
    assert ws_end.ending(MESSAGE) is None


def test_spdy_no_ending_inside_a_control_frame_or_a_frame_head() -> None:
    end = SpdyEnd(status=True)
    for frame in client_frames():
        end.from_client(frame)
    reply = spdy.FrameEncoder().encode(spdy.SynReply(1, {"a": "b"}))
    end.from_server(reply[:5])
    assert end.ending(MESSAGE) is None
    end.from_server(reply[5:9])
    assert end.ending(MESSAGE) is None
    end.from_server(reply[9:])
    assert end.ending(MESSAGE) is not None


def test_spdy_error_stream_the_cluster_finished_gets_nothing() -> None:
    end = SpdyEnd(status=True)
    for frame in client_frames():
        end.from_client(frame)
    end.from_server(spdy.FrameEncoder().encode(spdy.Data(1, b"{}", fin=True)))
    assert end.ending(MESSAGE) is None


def test_spdy_port_forward_error_streams_all_get_the_message() -> None:
    encoder = spdy.FrameEncoder()
    end = SpdyEnd(status=False)
    for i, kind in ((1, "error"), (3, "data"), (5, "error"), (7, "data")):
        end.from_client(encoder.encode(spdy.SynStream(i, {"streamtype": kind, "port": "80"})))
    ending = end.ending(MESSAGE)
    assert ending is not None
    assert [f.stream_id for f in decode_spdy(ending)] == [1, 5]


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300), st.lists(st.integers(0), max_size=6))
def test_garbage_never_raises(client: bytes, server: bytes, cuts: list[int]) -> None:
    for end in (SpdyEnd(status=True), WebSocketEnd("v5.channel.k8s.io")):
        for piece in split(client, cuts):
            end.from_client(piece)
        for piece in split(server, cuts):
            end.from_server(piece)
        ending = end.ending(MESSAGE)
        assert ending is None or isinstance(ending, bytes)


def test_a_huge_client_control_frame_stops_the_tracking() -> None:
    end = SpdyEnd(status=True)
    end.from_client(b"\x80\x03\x00\x01\x00\xff\xff\xff")  # a 16 MiB SYN_STREAM
    end.from_client(b"x" * 1000)
    assert end.lost and end.ending(MESSAGE) is None


def ws_server_messages() -> bytes:
    return b"".join(
        [
            websocket_frame(0x2, b"\x01" + b"stdout " * 40),  # 16-bit length
            websocket_frame(0x9, b"ping"),
            websocket_frame(0x2, b"\x02" + b"e" * 70000),  # 64-bit length
        ]
    )


def read_ws(data: bytes) -> list[wsframes.Frame]:
    proto = wsframes.FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    return list(proto.received_frames())


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0), max_size=8))
def test_websocket_v5_ending_is_the_error_channel_then_a_normal_close(cuts: list[int]) -> None:
    end = session_end(
        [(b"Upgrade", b"websocket"), (b"Sec-WebSocket-Protocol", b"v5.channel.k8s.io")]
    )
    assert isinstance(end, WebSocketEnd)
    sent = ws_server_messages()
    for piece in split(sent, cuts):
        end.from_server(piece)
    ending = end.ending(MESSAGE)
    assert ending is not None
    frames = read_ws(sent + ending)
    error, close = frames[-2:]
    assert error.opcode == wsframes.Opcode.BINARY and error.payload[:1] == b"\x03"
    assert isinstance(error.payload, bytes | bytearray)  # wsproto 1.2: a bytearray
    status = json.loads(error.payload[1:])
    assert status["status"] == "Failure" and status["message"] == MESSAGE
    # client-go reads its channels to their end only at a normal closure
    assert close.opcode == wsframes.Opcode.CLOSE
    assert close.payload[0] == 1000


def test_websocket_base64_and_port_forward_endings() -> None:
    end = WebSocketEnd("v4.base64.channel.k8s.io")
    [error, close] = read_ws(end.ending(MESSAGE) or b"")
    assert error.opcode == wsframes.Opcode.TEXT
    assert isinstance(error.payload, str) and error.payload.startswith("3")
    forward = WebSocketEnd("SPDY/3.1+portforward.k8s.io")
    [close] = read_ws(forward.ending(MESSAGE) or b"")
    assert close.opcode == wsframes.Opcode.CLOSE and close.payload[0] == 1011


def test_websocket_mid_frame_and_fragmented_message() -> None:
    end = WebSocketEnd("v5.channel.k8s.io")
    frame = websocket_frame(0x2, b"\x01hello")
    end.from_server(frame[:4])
    ending = end.ending(MESSAGE)
    assert ending is not None
    frames = read_ws(frame[:4] + ending)
    assert frames[0].payload == b"\x01h\0\0\0\0"
    assert frames[-1].opcode == wsframes.Opcode.CLOSE
    # inside a fragmented message no new message can start: the close only
    fragmented = WebSocketEnd("v5.channel.k8s.io")
    fragmented.from_server(bytes((0x02, 3)) + b"\x01ab")  # no FIN
    [close] = read_ws(fragmented.ending(MESSAGE) or b"")
    assert close.opcode == wsframes.Opcode.CLOSE
    # a frame head cut short, or after the cluster's close: no clean ending
    end = WebSocketEnd("v5.channel.k8s.io")
    end.from_server(b"\x82")
    assert end.ending(MESSAGE) is None
    end = WebSocketEnd("v5.channel.k8s.io")
    end.from_server(websocket_frame(0x8, b"\x03\xe8"))
    assert end.ending(MESSAGE) is None


def test_unknown_upgrade_has_no_ending() -> None:
    assert session_end([(b"Upgrade", b"h2c")]) is None
