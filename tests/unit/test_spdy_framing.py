"""SPDY/3.1 framing and connection rules (karpor.sim.spdy)."""

from __future__ import annotations

import hashlib
import itertools
import struct
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.sim import spdy
from karpor.sim.spdy import (
    ConnectionTerminated,
    Data,
    FrameDecoder,
    FrameEncoder,
    GoAway,
    GoAwayStatus,
    HeadersFrame,
    Ping,
    RstStatus,
    RstStream,
    Settings,
    SettingsEntry,
    SpdyConnection,
    SynReply,
    SynStream,
    WindowUpdate,
)

stream_ids = st.integers(min_value=1, max_value=2**31 - 1)
u32 = st.integers(min_value=0, max_value=2**32 - 1)
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=20)
values = st.text(max_size=40)
header_blocks = st.dictionaries(names, values, max_size=6)

frames = st.one_of(
    st.builds(
        SynStream,
        stream_id=stream_ids,
        headers=header_blocks,
        associated_id=st.integers(0, 2**31 - 1),
        priority=st.integers(0, 7),
        slot=st.integers(0, 255),
        fin=st.booleans(),
        unidirectional=st.booleans(),
    ),
    st.builds(SynReply, stream_id=stream_ids, headers=header_blocks, fin=st.booleans()),
    st.builds(HeadersFrame, stream_id=stream_ids, headers=header_blocks, fin=st.booleans()),
    st.builds(RstStream, stream_id=stream_ids, status=st.integers(1, 2**32 - 1)),
    st.builds(
        Settings,
        entries=st.lists(
            st.builds(
                SettingsEntry,
                id=st.integers(0, 2**24 - 1),
                value=u32,
                flags=st.integers(0, 255),
            ),
            max_size=4,
        ).map(tuple),
        clear=st.booleans(),
    ),
    st.builds(Ping, ping_id=u32),
    st.builds(GoAway, last_good_stream_id=st.integers(0, 2**31 - 1), status=u32),
    st.builds(WindowUpdate, stream_id=st.integers(0, 2**31 - 1), delta=st.integers(0, 2**31 - 1)),
    st.builds(Data, stream_id=stream_ids, data=st.binary(max_size=300), fin=st.booleans()),
)


def test_dictionary_is_the_spdy3_dictionary() -> None:
    d = spdy.HEADER_DICTIONARY
    assert len(d) == 1423
    assert hashlib.sha256(d).hexdigest() == (
        "51d27341373f923f3cd88e1eb7162aeaa3723d7585ff2399201dc06498407f02"
    )
    # Length-prefixed words first, then the raw tail.
    assert d.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert d.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


@given(st.lists(frames, max_size=12))
def test_frames_round_trip_in_sequence(sequence: list[spdy.Frame]) -> None:
    """Header blocks share one zlib context per direction across frames."""
    encoder, decoder = FrameEncoder(), FrameDecoder()
    wire = b"".join(encoder.encode(f) for f in sequence)
    assert decoder.receive_data(wire) == sequence


@settings(max_examples=60)
@given(st.lists(frames, min_size=1, max_size=8), st.data())
def test_any_split_gives_the_same_frames(sequence: list[spdy.Frame], data: st.DataObject) -> None:
    encoder = FrameEncoder()
    wire = b"".join(encoder.encode(f) for f in sequence)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(wire)), max_size=10)))
    decoder = FrameDecoder()
    got: list[spdy.Frame] = []
    last = 0
    for cut in [*cuts, len(wire)]:
        got += decoder.receive_data(wire[last:cut])
        last = cut
    assert got == sequence


def test_header_block_is_zlib_with_the_dictionary_and_sync_flush() -> None:
    encoder = FrameEncoder()
    first = encoder.encode(SynReply(1, {"streamtype": "stdout"}))
    second = encoder.encode(SynReply(3, {"streamtype": "stdout"}))
    inflate = zlib.decompressobj(zdict=spdy.HEADER_DICTIONARY)
    block = inflate.decompress(first[12:])
    assert block == (
        struct.pack(">I", 1)
        + struct.pack(">I", 10)
        + b"streamtype"
        + struct.pack(">I", 6)
        + b"stdout"
    )
    # The second block only makes sense in the same context (and is shorter).
    assert inflate.decompress(second[12:]) == block
    assert len(second) < len(first)
    assert first[12:].endswith(b"\x00\x00\xff\xff")  # Z_SYNC_FLUSH marker


def test_large_data_is_split_into_frames() -> None:
    conn = SpdyConnection(server=True)
    client = SpdyConnection(server=False)
    sid = client.send_syn_stream({"streamtype": "stdout"})
    conn.receive_data(client.data_to_send())
    conn.send_syn_reply(sid)
    payload = b"x" * (spdy.MAX_DATA_LENGTH + 10)
    conn.send_data(sid, payload, fin=True)
    events = client.receive_data(conn.data_to_send())
    data = [e for e in events if isinstance(e, Data)]
    assert len(data) == 2
    assert b"".join(d.data for d in data) == payload
    assert data[-1].fin


def test_ping_from_peer_is_echoed_and_own_ping_is_not() -> None:
    server, client = SpdyConnection(server=True), SpdyConnection(server=False)
    pid = client.send_ping()
    assert pid % 2 == 1
    assert server.receive_data(client.data_to_send()) == [Ping(pid)]
    assert client.receive_data(server.data_to_send()) == [Ping(pid)]
    assert client.data_to_send() == b""


def test_syn_stream_with_wrong_parity_is_reset() -> None:
    server = SpdyConnection(server=True)
    wire = FrameEncoder().encode(SynStream(2, {}))
    assert server.receive_data(wire) == []
    assert FrameDecoder().receive_data(server.data_to_send()) == [
        RstStream(2, RstStatus.PROTOCOL_ERROR)
    ]


def test_data_after_fin_is_reset() -> None:
    server, client = SpdyConnection(server=True), SpdyConnection(server=False)
    sid = client.send_syn_stream({"streamtype": "stdin"})
    server.receive_data(client.data_to_send())
    enc = FrameEncoder()
    enc.encode(SynStream(sid, {"streamtype": "stdin"}))  # keep the zlib contexts aligned
    wire = enc.encode(Data(sid, b"a", fin=True)) + enc.encode(Data(sid, b"b"))
    assert server.receive_data(wire) == [Data(sid, b"a", fin=True)]
    assert FrameDecoder().receive_data(server.data_to_send()) == [
        RstStream(sid, RstStatus.STREAM_ALREADY_CLOSED)
    ]


def test_malformed_frame_terminates_with_goaway() -> None:
    server = SpdyConnection(server=True)
    bad = struct.pack(">HHI", 0x8000 | 3, 6, 3) + b"abc"  # PING must be 4 bytes
    events = server.receive_data(bad)
    assert len(events) == 1
    assert isinstance(events[0], ConnectionTerminated)
    assert FrameDecoder().receive_data(server.data_to_send()) == [
        GoAway(0, GoAwayStatus.PROTOCOL_ERROR)
    ]
    assert server.receive_data(b"more") == []


def test_upper_case_header_name_is_a_protocol_error() -> None:
    raw = struct.pack(">I", 1) + struct.pack(">I", 1) + b"A" + struct.pack(">I", 0)
    deflate = zlib.compressobj(zdict=spdy.HEADER_DICTIONARY)
    block = deflate.compress(raw) + deflate.flush(zlib.Z_SYNC_FLUSH)
    frame = struct.pack(">HHI", 0x8000 | 3, 2, 4 + len(block)) + struct.pack(">I", 1) + block
    events = SpdyConnection(server=False).receive_data(frame)
    assert isinstance(events[0], ConnectionTerminated)


def test_full_exchange_between_the_two_roles() -> None:
    server, client = SpdyConnection(server=True), SpdyConnection(server=False)
    a = client.send_syn_stream({"streamtype": "error"})
    b = client.send_syn_stream({"streamtype": "stdout"})
    events = server.receive_data(client.data_to_send())
    assert [e.stream_id for e in events if isinstance(e, SynStream)] == [a, b]
    server.send_syn_reply(a)
    server.send_syn_reply(b)
    server.send_data(b, b"hello", fin=True)
    server.send_data(a, b'{"status":"Success"}', fin=True)
    events = client.receive_data(server.data_to_send())
    assert events == [
        SynReply(a, {}),
        SynReply(b, {}),
        Data(b, b"hello", fin=True),
        Data(a, b'{"status":"Success"}', fin=True),
    ]
    assert not server.is_open_locally(b)


def payload_sizes() -> st.SearchStrategy[int]:
    edge = spdy.SEPARATE_PAYLOAD
    return st.one_of(st.integers(0, 100), st.integers(edge - 2, edge + 2), st.integers(0, 200_000))


sends = st.lists(
    st.one_of(
        st.tuples(st.just("data"), payload_sizes(), st.booleans()),
        st.tuples(st.just("ping"), st.just(0), st.just(False)),
        st.tuples(st.just("headers"), st.integers(0, 3), st.just(False)),
    ),
    max_size=10,
)


@settings(max_examples=60)
@given(sends)
def test_pieces_are_the_bytes_without_copies_of_large_payloads(
    ops: list[tuple[str, int, bool]],
) -> None:
    client = SpdyConnection(server=False)
    sid = client.send_syn_stream({"streamtype": "stdout"})
    opening = client.data_to_send()
    joined, pieced = SpdyConnection(server=True), SpdyConnection(server=True)
    large: list[bytes] = []
    expected: list[spdy.Event] = [SynReply(sid, {})]
    for conn in (joined, pieced):
        conn.receive_data(opening)
        conn.send_syn_reply(sid)
    for i, (kind, size, fin) in enumerate(ops):
        if not joined.is_open_locally(sid):
            break
        if kind == "data":
            payload = bytes([i % 251]) * size
            if size >= spdy.SEPARATE_PAYLOAD:
                large.append(payload)
            for conn in (joined, pieced):
                conn.send_data(sid, payload, fin=fin)
            if size or fin:
                expected.append(Data(sid, payload, fin))
        elif kind == "ping":
            for conn in (joined, pieced):
                conn.send_ping()
        else:
            headers = {f"h{n}": "v" for n in range(size)}
            for conn in (joined, pieced):
                conn.send_headers(sid, headers)
            expected.append(HeadersFrame(sid, headers))
    wire = joined.data_to_send()
    pieces = pieced.pieces_to_send()
    assert b"".join(pieces) == wire
    assert pieced.data_to_send() == b""
    # every large payload is a piece of its own, the caller's object itself;
    # the bytes between them are joined into one piece
    own = [any(p is q for q in large) for p in pieces]
    assert [p for p, mine in zip(pieces, own, strict=True) if mine] == large
    assert not any(not a and not b for a, b in itertools.pairwise(own))
    events = [e for e in client.receive_data(wire) if not isinstance(e, Ping)]
    assert events == expected


def test_pieces_of_a_payload_larger_than_a_frame() -> None:
    conn = SpdyConnection(server=True)
    client = SpdyConnection(server=False)
    sid = client.send_syn_stream({"streamtype": "stdout"})
    conn.receive_data(client.data_to_send())
    conn.send_syn_reply(sid)
    conn.data_to_send()
    payload = bytes(range(256)) * ((spdy.MAX_DATA_LENGTH + 300) // 256)
    conn.send_data(sid, payload, fin=True)
    pieces = conn.pieces_to_send()
    head = FrameEncoder.data_head
    rest = len(payload) - spdy.MAX_DATA_LENGTH
    assert [len(p) for p in pieces] == [8, spdy.MAX_DATA_LENGTH, 8 + rest]
    assert pieces[0] == head(sid, spdy.MAX_DATA_LENGTH)
    assert pieces[2][:8] == head(sid, rest, fin=True)
    events = client.receive_data(b"".join(pieces))
    assert events == [
        Data(sid, payload[: spdy.MAX_DATA_LENGTH]),
        Data(sid, payload[spdy.MAX_DATA_LENGTH :], fin=True),
    ]
