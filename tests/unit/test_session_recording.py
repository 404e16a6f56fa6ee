"""Session recording, sans-IO: the channel demultiplexers (SPDY and
WebSocket), the asciicast encoder, the session facts of a request, and the
recording files."""

from __future__ import annotations

import itertools
import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.asciicast import Cast, parse_cast
from twisted.internet.task import Clock

from karpor.config.model import Cluster
from karpor.config.recording import SessionRecordingSettings, parse_session_recording
from karpor.config.validation import FileProblems, parse_value
from karpor.http.sessionframes import session_frames, unmask
from karpor.kube.execsession import (
    SessionOutcome,
    SessionRequest,
    bounded_command,
    exit_code,
    is_copy_command,
    session_request,
)
from karpor.sim.spdy import Data, FrameEncoder, SynStream
from karpor.upstream.asciicast import HOLD_BYTES, MAX_PIECES, AsciicastEncoder
from karpor.upstream.recordings import FULL, NOT_WRITABLE, RecordingRefused, Recordings
from karpor.upstream.sessiontap import SessionTap

SUCCESS = b'{"metadata":{},"status":"Success"}'
EXIT_3 = json.dumps(
    {
        "metadata": {},
        "status": "Failure",
        "message": "command terminated with non-zero exit code",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
).encode()
WS_HEADERS = [(b"Upgrade", b"websocket"), (b"Sec-WebSocket-Protocol", b"v5.channel.k8s.io")]
SPDY_HEADERS = [(b"Upgrade", b"SPDY/3.1"), (b"X-Stream-Protocol-Version", b"v4.channel.k8s.io")]


def ws_frame(payload: bytes, *, opcode: int = 2, mask: bytes = b"", fin: bool = True) -> bytes:
    size = len(payload)
    first = (0x80 if fin else 0) | opcode
    flag = 0x80 if mask else 0
    if size < 126:
        head = bytes((first, flag | size))
    elif size < 1 << 16:
        head = bytes((first, flag | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, flag | 127)) + size.to_bytes(8, "big")
    if mask:
        return head + mask + unmask(payload, mask, 0)
    return head + payload


class Events:
    """A sink collecting ``(from_client, channel, data)`` merged per run."""

    def __init__(self) -> None:
        self.pieces: list[tuple[bool, int, bytes]] = []

    def channel_data(self, from_client: bool, channel: int, data: bytes) -> None:
        data = bytes(data)
        if self.pieces and self.pieces[-1][:2] == (from_client, channel):
            self.pieces[-1] = (from_client, channel, self.pieces[-1][2] + data)
        else:
            self.pieces.append((from_client, channel, data))


def websocket_session() -> tuple[bytes, bytes, list[tuple[bool, int, bytes]]]:
    """The client's and the cluster's bytes of a v5 session, and what they carry."""
    mask = b"\x01\x80\xff\x37"
    client = (
        ws_frame(b'\x04{"Width":101,"Height":33}', mask=mask)
        + ws_frame(b"\x00ls -l\r", mask=mask)
        + ws_frame(b"", opcode=9, mask=mask)  # a ping
        + ws_frame(b"\x00\xc3", mask=mask, fin=False)  # a fragmented message
        + ws_frame(b"\xa9\n", opcode=0, mask=mask)
    )
    big = "é".encode() * 40000  # a long frame (64-bit length)
    server = (
        ws_frame(b"\x01hello \xe2\x82")  # the euro sign, split over two frames
        + ws_frame(b"\x01\xac world\r\n")
        + ws_frame(b"", opcode=10)  # a pong
        + ws_frame(b"\x02oops\n")
        + ws_frame(b"\x01" + big)
        + ws_frame(b"\x03" + EXIT_3)
    )
    expected = [
        (True, 4, b'{"Width":101,"Height":33}'),
        (True, 0, b"ls -l\r\xc3\xa9\n"),
        (False, 1, b"hello \xe2\x82\xac world\r\n"),
        (False, 2, b"oops\n"),
        (False, 1, big),
        (False, 3, EXIT_3),
    ]
    return client, server, expected


def spdy_session() -> tuple[bytes, bytes, list[tuple[bool, int, bytes]]]:
    """The client's and the cluster's bytes of an SPDY v4 session."""
    encoder = FrameEncoder()
    names = {1: "error", 3: "stdin", 5: "stdout", 7: "stderr", 9: "resize"}
    client = b"".join(
        encoder.encode(SynStream(i, {"streamtype": kind})) for i, kind in names.items()
    )
    client += encoder.encode(Data(9, b'{"Width":80,"Height":20}'))
    client += encoder.encode(Data(3, b"echo hi\n"))
    server = (
        encoder.encode(Data(5, b"hi\n"))
        + encoder.encode(Data(7, b"warn\n"))
        + encoder.encode(Data(1, SUCCESS, fin=True))
    )
    expected = [
        (True, 4, b'{"Width":80,"Height":20}'),
        (True, 0, b"echo hi\n"),
        (False, 1, b"hi\n"),
        (False, 2, b"warn\n"),
        (False, 3, SUCCESS),
    ]
    return client, server, expected


def feed(headers: list[tuple[bytes, bytes]], client: bytes, server: bytes, cuts: list[int]):
    """Feed the client's bytes, then the cluster's, each split at ``cuts``."""
    events = Events()
    frames = session_frames(headers, events)
    assert frames is not None
    for data, side in ((client, frames.from_client), (server, frames.from_server)):
        points = sorted({c % (len(data) + 1) for c in cuts})
        start = 0
        for point in [*points, len(data)]:
            side(data[start:point])
            start = point
    assert not frames.lost
    return events.pieces


@pytest.mark.parametrize("kind", ["websocket", "spdy"])
def test_the_demultiplexer_delivers_every_channel(kind: str) -> None:
    client, server, expected = websocket_session() if kind == "websocket" else spdy_session()
    headers = WS_HEADERS if kind == "websocket" else SPDY_HEADERS
    assert feed(headers, client, server, []) == expected


@settings(max_examples=60, deadline=None)
@given(
    st.sampled_from(["websocket", "spdy"]),
    st.lists(st.integers(min_value=0, max_value=200_000), max_size=40),
)
def test_any_split_of_the_bytes_gives_the_same_channels_and_recording(
    kind: str, cuts: list[int]
) -> None:
    client, server, expected = websocket_session() if kind == "websocket" else spdy_session()
    headers = WS_HEADERS if kind == "websocket" else SPDY_HEADERS
    assert feed(headers, client, server, cuts) == expected


def encode(pieces: list[tuple[bool, int, bytes]]) -> str:
    encoder = AsciicastEncoder(lambda: 0.0, 1700000000, {"TERM": "xterm-256color"}, "t")
    for from_client, channel, data in pieces:
        encoder.channel_data(from_client, channel, data)
    encoder.finish()
    return encoder.take().decode()


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200), st.lists(st.integers(min_value=0, max_value=800), max_size=20))
def test_a_character_split_across_frames_is_recorded_whole(text: str, cuts: list[int]) -> None:
    data = text.encode()
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    cast = parse_cast(encode([(False, 1, p) for p in pieces]))
    assert cast.output() == text


def test_the_recording_is_asciicast_v2() -> None:
    _, _, expected = websocket_session()
    cast = parse_cast(encode(expected))
    # the first resize, before any output, is the header's size
    assert (cast.header["width"], cast.header["height"]) == (101, 33)
    assert cast.header["timestamp"] == 1700000000
    assert cast.input() == "ls -l\ré\n"
    assert cast.output() == "hello € world\r\noops\n" + "é" * 40000
    # the first resize before the header went out sets it, even after output
    # (SPDY: the pod's first output may pass the client's resize); a resize
    # after it is an event; bad bytes become U+FFFD; the error channel is not recorded
    encoder = AsciicastEncoder(lambda: 0.0, 1700000000, {}, "t")
    encoder.channel_data(False, 1, b"a")
    encoder.channel_data(True, 4, b'{"Width":90,"Height":10}')
    first = encoder.take().decode()
    encoder.channel_data(True, 4, b'{"Width":70,"Height":20}\n')
    encoder.channel_data(False, 1, b"\xff")
    encoder.channel_data(False, 3, b"{}")
    cast = parse_cast(first + encoder.take().decode())
    assert (cast.header["width"], cast.header["height"]) == (90, 10)
    assert cast.resizes() == ["70x20"] and cast.output() == "a\ufffd"
    assert parse_cast(encode([(False, 1, b"x")])).header["width"] == 80  # no resize: 80x24


def test_small_pieces_close_in_time_are_one_event() -> None:
    """Pieces of one channel within ``HOLD_SECONDS`` of the first are one
    event at the first's time; another channel, a resize, a large piece,
    a flush (``take``) or the end releases what is held, so order is kept."""
    now = [0.0]
    encoder = AsciicastEncoder(lambda: now[0], 1700000000, {}, "t")
    encoder.channel_data(False, 1, b"ab")
    now[0] = 0.005
    encoder.channel_data(False, 1, b"cd")
    assert encoder.pending == 4  # held, not yet an event
    encoder.channel_data(False, 2, b"err")  # another channel: "abcd" goes out
    now[0] = 0.5
    encoder.channel_data(False, 2, b"more")  # past the window: a new event
    encoder.channel_data(True, 4, b'{"Width":70,"Height":20}')
    encoder.channel_data(True, 4, b'{"Width":71,"Height":20}')
    now[0] = 0.6
    encoder.channel_data(True, 0, b"x")
    encoder.channel_data(False, 1, b"L" * HOLD_BYTES)  # large: its own event
    encoder.channel_data(False, 1, b"y")
    first = parse_cast(encoder.take().decode())
    now[0] = 0.7
    encoder.channel_data(False, 1, b"z")
    encoder.finish()
    events = first.events + parse_cast(first_header(first) + encoder.take().decode()).events
    assert events == [
        (0.0, "o", "abcd"),
        (0.005, "o", "err"),
        (0.5, "o", "more"),
        (0.5, "r", "71x20"),  # the first resize set the header's size
        (0.6, "i", "x"),
        (0.6, "o", "L" * HOLD_BYTES),
        (0.6, "o", "y"),  # released by take (the flush)
        (0.7, "o", "z"),  # released by finish
    ]


def first_header(cast: Cast) -> str:
    """The header line of ``cast`` (to parse the lines that follow it)."""
    return json.dumps(cast.header) + "\n"


def _events(texts: list[str]) -> AsciicastEncoder:
    ticks = itertools.count()  # a second between pieces: an event each
    encoder = AsciicastEncoder(lambda: float(next(ticks)), 1700000000, {}, "t")
    for text in texts:
        encoder.channel_data(False, 1, text.encode())
    return encoder


@settings(max_examples=40, deadline=None)
@given(
    st.one_of(st.lists(st.text(max_size=40), max_size=30), st.just(["x"] * 400)),
    st.integers(min_value=1, max_value=1 << 16),
)
def test_short_writes_write_every_line_once(texts: list[str], most: int) -> None:
    """``write_to`` hands pieces (at most ``MAX_PIECES`` a call) to a write
    that may write less than asked (at most ``most`` bytes a call): the file
    gets the lines ``take`` would give, once, in order."""
    encoder, lines = _events(texts), _events(texts).take()
    written = bytearray()

    def write(pieces: list[bytes]) -> int:
        assert 0 < len(pieces) <= MAX_PIECES
        data = b"".join(pieces)[:most]
        written.extend(data)
        return len(data)

    encoder.write_to(write)
    assert encoder.pending == 0
    assert bytes(written) == lines


def test_session_request_and_copy_commands() -> None:
    target = (
        b"/api/v1/namespaces/ns/pods/box/exec?container=c&command=sh&command=-c"
        b"&command=exit%203&stdin=true&tty=true"
    )
    request = session_request(target)
    assert request is not None
    assert (request.namespace, request.pod, request.subresource, request.container) == (
        "ns",
        "box",
        "exec",
        "c",
    )
    assert request.command == ("sh", "-c", "exit 3") and request.tty and request.stdin
    assert request.terminal
    forward = session_request(b"/api/v1/namespaces/ns/pods/box/portforward?ports=80")
    assert forward is not None and not forward.terminal and forward.ports == ("80",)
    assert session_request(b"/api/v1/namespaces/ns/pods/box/log") is None
    assert session_request(b"/api/v1/namespaces/ns/pods") is None
    # kubectl cp's shapes, and nothing else
    assert is_copy_command(["tar", "cf", "-", "/tmp/foo"])
    assert is_copy_command(["tar", "--no-same-permissions", "--no-same-owner", "-xmf", "-"])
    assert is_copy_command(["tar", "-xmf", "-", "-C", "/tmp"])
    assert is_copy_command(["/bin/tar", "xf", "-"])
    assert not is_copy_command(["tar", "cf", "-", "--checkpoint-action=exec=sh"])
    assert not is_copy_command(["tar", "-xmf", "-", "--to-command=sh"])
    assert not is_copy_command(["tar", "cf", "-"])
    assert not is_copy_command(["sh", "-c", "tar cf - /"])
    assert not is_copy_command([])
    long = bounded_command(["a" * 3000, "b" * 3000, "c"])
    assert sum(len(a) for a in long) < 4200 and long[-1].endswith("[truncated 1905 characters]")


def test_exit_codes() -> None:
    assert exit_code(SUCCESS, True) == SessionOutcome(0)
    assert exit_code(EXIT_3, True) == SessionOutcome(
        3, "command terminated with non-zero exit code"
    )
    assert exit_code(b"", True).exit_code is None  # cut: nothing said
    assert exit_code(b"", False) == SessionOutcome(0)  # old protocols say nothing on success
    assert exit_code(b"boom", False) == SessionOutcome(None, "boom")
    assert exit_code(b"{not json", True).exit_code is None
    failure = b'{"status":"Failure","message":"no such container","reason":"InternalError"}'
    assert exit_code(failure, True) == SessionOutcome(None, "no such container")


def test_settings() -> None:
    parsed = parse_value(
        parse_session_recording,
        {"dir": "rec", "clusters": ["prod-*", "env=prod"]},
        "sessionRecording",
        "/var/lib/karpor",
    )
    assert parsed.dir == "/var/lib/karpor/rec"
    assert parsed.records(Cluster("prod-east", "https://x"))
    assert parsed.records(Cluster("east", "https://x", labels={"env": "prod"}))
    assert not parsed.records(Cluster("east", "https://x", labels={"env": "dev"}))
    default = parse_value(parse_session_recording, {"dir": "/r"}, "sessionRecording")
    assert default.records(Cluster("anything", "https://x"))
    with pytest.raises(FileProblems, match="dir: is required"):
        parse_value(parse_session_recording, {"clusters": ["*"]}, "sessionRecording")
    with pytest.raises(FileProblems, match=r"clusters\[0\]: not a label selector"):
        parse_value(parse_session_recording, {"dir": "/r", "clusters": ["a=(b"]}, "x")


class Failures:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.writable: list[bool] = []

    def recording_failed(self, cluster: str) -> None:
        self.failed.append(cluster)

    def recording_writable(self, writable: bool) -> None:
        self.writable.append(writable)


def recordings(directory: Path, **kwargs: object) -> tuple[Recordings, Clock, Failures]:
    clock, events = Clock(), Failures()
    return (
        Recordings(SessionRecordingSettings(str(directory)), clock, events, **kwargs),  # type: ignore[arg-type]
        clock,
        events,
    )


def _request() -> SessionRequest:
    request = session_request(b"/api/v1/namespaces/ns/pods/box/exec?command=sh&tty=1")
    assert request is not None
    return request


REQUEST = _request()


def test_a_recording_is_written_as_the_session_runs(tmp_path: Path) -> None:
    recs, clock, events = recordings(tmp_path / "rec")
    recording = recs.open("sim-1", REQUEST, "a/b id", "alice")
    assert recording.name.endswith("_sim-1_ns_box_a_b_id.cast")
    path = tmp_path / "rec" / recording.name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    tap = SessionTap(REQUEST, recording, "")
    cuts: list[str] = []
    assert tap.switched(WS_HEADERS, cuts.append)
    client, server, _ = websocket_session()
    tap.from_client(client)
    assert path.read_text() == ""  # held until the timer
    clock.advance(1.0)
    assert parse_cast(path.read_text()).input() == "ls -l\ré\n"
    tap.from_server(server)  # more than FLUSH_BYTES: written at once
    assert parse_cast(path.read_text()).output().startswith("hello € world")
    summary = tap.finish()
    assert summary is not None and summary.outcome.exit_code == 3
    assert summary.recording == recording.name and not summary.not_recorded
    assert (summary.bytes_from_client, summary.bytes_to_client) == (len(client), len(server))
    assert parse_cast(path.read_text()).header["title"] == "alice@sim-1: ns/box -- sh"
    assert events.failed == [] and cuts == []
    assert not clock.getDelayedCalls()  # the timer stops with the last recording


def test_a_refused_upgrade_leaves_no_recording(tmp_path: Path) -> None:
    recs, _, _ = recordings(tmp_path)
    recording = recs.open("sim-1", REQUEST, "id", "alice")
    assert SessionTap(REQUEST, recording, "").finish() is None
    assert os.listdir(tmp_path) == []


def test_an_unwritable_or_full_directory_refuses_the_session(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    recs, _, events = recordings(tmp_path / "file")  # a file, not a directory
    with pytest.raises(RecordingRefused) as refused:
        recs.open("sim-1", REQUEST, "id", "alice")
    assert refused.value.reason == NOT_WRITABLE and str(tmp_path) not in NOT_WRITABLE
    assert events.failed == ["sim-1"] and events.writable[-1] is False
    assert recs.health().startswith("warning: the session recording directory is not writable")
    recs, _, events = recordings(tmp_path, min_free=1 << 62)
    with pytest.raises(RecordingRefused) as refused:
        recs.open("sim-1", REQUEST, "id", "alice")
    assert refused.value.reason == FULL


def test_a_write_that_fails_cuts_the_session(tmp_path: Path) -> None:
    recs, clock, events = recordings(tmp_path)
    recording = recs.open("sim-1", REQUEST, "id", "alice")
    tap = SessionTap(REQUEST, recording, "")
    cuts: list[str] = []
    tap.switched(WS_HEADERS, cuts.append)
    os.close(recording._fd)
    recording._fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    tap.from_server(ws_frame(b"\x01hello"))
    clock.advance(1.0)
    assert cuts == [f"{FULL}: the session was cut"] and events.failed == ["sim-1"]
    summary = tap.finish()
    assert summary is not None and "could not be written" in summary.not_recorded
