"""SPDY/3.1 framing and connection state, sans-IO, for both roles.

This is the wire protocol that kubectl, client-go and the kubelet speak for
``exec``, ``attach`` and ``port-forward`` after an ``Upgrade: SPDY/3.1``
(Go's ``moby/spdystream``). Like h11 and h2, nothing here does I/O:

* :class:`FrameDecoder` turns bytes into frame objects and
  :class:`FrameEncoder` turns frame objects into bytes. Header blocks
  (SYN_STREAM, SYN_REPLY, HEADERS) are zlib streams primed with the SPDY/3
  preset dictionary (draft 3, section 2.6.10.1): one compression context per
  direction that lives as long as the connection, each block ending in a
  ``Z_SYNC_FLUSH``.
* :class:`SpdyConnection` adds the connection rules on top:
  ``receive_data(bytes) -> list[frame]``, ``send_*`` methods and
  ``data_to_send() -> bytes``. It answers the peer's PINGs itself, checks
  stream identifiers, and reports errors as protocol frames: a malformed
  frame queues ``GOAWAY(PROTOCOL_ERROR)`` and yields a
  :class:`ConnectionTerminated` event, an invalid frame for a stream queues
  ``RST_STREAM``. :meth:`SpdyConnection.pieces_to_send` gives the same
  bytes as ``data_to_send`` without copying large DATA payloads (their
  frame heads are separate pieces), for transports that take several writes.

Flow control: spdystream, which every Kubernetes peer uses, neither sends
WINDOW_UPDATE nor honours it (it drops WINDOW_UPDATE and SETTINGS frames as
"unhandled"), so enforcing the 64 KiB initial window on what we send would
stall a long stream forever. Like spdystream, this module therefore does not
limit what it sends and does not require window updates from the peer;
WINDOW_UPDATE and SETTINGS frames are decoded and handed to the caller, and
:meth:`SpdyConnection.send_window_update` exists for peers that want them.
Backpressure comes from the transport (TCP) instead.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field

from karpor.http.spdy import HEADER_DICTIONARY

__all__ = [
    "FLAG_FIN",
    "FLAG_UNIDIRECTIONAL",
    "HEADER_DICTIONARY",
    "MAX_DATA_LENGTH",
    "SEPARATE_PAYLOAD",
    "SPDY_VERSION",
    "ConnectionTerminated",
    "Data",
    "Event",
    "Frame",
    "FrameDecoder",
    "FrameEncoder",
    "FrameError",
    "FrameType",
    "GoAway",
    "GoAwayStatus",
    "Headers",
    "HeadersFrame",
    "Ping",
    "RstStatus",
    "RstStream",
    "Settings",
    "SettingsEntry",
    "SpdyConnection",
    "SynReply",
    "SynStream",
    "WindowUpdate",
    "header_values",
]

#: The protocol version carried in every control frame.
SPDY_VERSION = 3

#: The largest payload of one DATA frame (24-bit length field).
MAX_DATA_LENGTH = (1 << 24) - 1

#: DATA payloads from this size on are pieces of their own in
#: :meth:`SpdyConnection.pieces_to_send` (written apart from the frame head
#: rather than copied after it).
SEPARATE_PAYLOAD = 64 * 1024

#: Control-frame flag: the sender will send nothing more on this stream.
FLAG_FIN = 0x01

#: SYN_STREAM flag: the recipient must not send on this stream.
FLAG_UNIDIRECTIONAL = 0x02

#: SETTINGS flag: clear previously persisted settings.
FLAG_SETTINGS_CLEAR = 0x01

#: Largest decompressed header block accepted (a guard against zlib bombs).
MAX_HEADER_BLOCK = 1 << 20


class FrameType(enum.IntEnum):
    """Control frame types of SPDY/3."""

    SYN_STREAM = 1
    SYN_REPLY = 2
    RST_STREAM = 3
    SETTINGS = 4
    NOOP = 5
    PING = 6
    GOAWAY = 7
    HEADERS = 8
    WINDOW_UPDATE = 9
    CREDENTIAL = 10


class RstStatus(enum.IntEnum):
    """Status codes of RST_STREAM."""

    PROTOCOL_ERROR = 1
    INVALID_STREAM = 2
    REFUSED_STREAM = 3
    UNSUPPORTED_VERSION = 4
    CANCEL = 5
    INTERNAL_ERROR = 6
    FLOW_CONTROL_ERROR = 7
    STREAM_IN_USE = 8
    STREAM_ALREADY_CLOSED = 9
    INVALID_CREDENTIALS = 10
    FRAME_TOO_LARGE = 11


class GoAwayStatus(enum.IntEnum):
    """Status codes of GOAWAY."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class FrameError(Exception):
    """A frame that cannot be decoded; the connection cannot go on."""


Headers = dict[str, str]
"""A decoded header block: lower-case names to values.

A value holding several values keeps them separated by NUL bytes, as on the
wire; :func:`header_values` splits them.
"""


def header_values(value: str) -> list[str]:
    """Split a header value into its NUL-separated values."""
    return value.split("\x00")


@dataclass(frozen=True)
class SynStream:
    """SYN_STREAM: the sender opens a stream."""

    stream_id: int
    headers: Headers
    associated_id: int = 0
    priority: int = 0
    slot: int = 0
    fin: bool = False
    unidirectional: bool = False


@dataclass(frozen=True)
class SynReply:
    """SYN_REPLY: the recipient of a SYN_STREAM accepts it."""

    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class RstStream:
    """RST_STREAM: abnormal termination of a stream."""

    stream_id: int
    status: int


@dataclass(frozen=True)
class SettingsEntry:
    """One ID/value pair of a SETTINGS frame."""

    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class Settings:
    """SETTINGS: connection parameters (ignored by Kubernetes peers)."""

    entries: tuple[SettingsEntry, ...] = ()
    clear: bool = False


@dataclass(frozen=True)
class Ping:
    """PING: a round-trip probe; the recipient echoes the same ID."""

    ping_id: int


@dataclass(frozen=True)
class GoAway:
    """GOAWAY: the sender accepts no new streams after ``last_good_stream_id``."""

    last_good_stream_id: int
    status: int = GoAwayStatus.OK


@dataclass(frozen=True)
class HeadersFrame:
    """HEADERS: more headers for an open stream."""

    stream_id: int
    headers: Headers
    fin: bool = False


@dataclass(frozen=True)
class WindowUpdate:
    """WINDOW_UPDATE: the recipient may send ``delta`` more bytes on a stream."""

    stream_id: int
    delta: int


@dataclass(frozen=True)
class Data:
    """DATA: payload bytes of a stream; ``fin`` half-closes the sender's side."""

    stream_id: int
    data: bytes
    fin: bool = False


Frame = (
    SynStream | SynReply | RstStream | Settings | Ping | GoAway | HeadersFrame | WindowUpdate | Data
)
"""Every frame the codec knows."""


@dataclass(frozen=True)
class ConnectionTerminated:
    """Not a frame: the connection failed (a GOAWAY has been queued)."""

    status: int
    message: str


Event = Frame | ConnectionTerminated
"""What :meth:`SpdyConnection.receive_data` returns."""


_CONTROL = struct.Struct(">HHI")
_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")


def _encode_header_block(headers: Headers) -> bytes:
    parts = [_U32.pack(len(headers))]
    for name, value in headers.items():
        n = name.lower().encode("utf-8")
        v = value.encode("utf-8")
        parts += [_U32.pack(len(n)), n, _U32.pack(len(v)), v]
    return b"".join(parts)


def _decode_header_block(block: bytes) -> Headers:
    try:
        (count,) = _U32.unpack_from(block, 0)
        pos = 4
        headers: Headers = {}
        for _ in range(count):
            (n,) = _U32.unpack_from(block, pos)
            name = block[pos + 4 : pos + 4 + n]
            pos += 4 + n
            (m,) = _U32.unpack_from(block, pos)
            value = block[pos + 4 : pos + 4 + m]
            pos += 4 + m
            if len(name) != n or len(value) != m:
                raise FrameError("truncated header block")
            if not name:
                raise FrameError("empty header name")
            key = name.decode("utf-8")
            if key != key.lower():
                raise FrameError(f"header name not lower case: {key!r}")
            if key in headers:
                raise FrameError(f"duplicate header: {key!r}")
            headers[key] = value.decode("utf-8")
    except (struct.error, UnicodeDecodeError) as e:
        raise FrameError(f"bad header block: {e}") from e
    if pos != len(block):
        raise FrameError("trailing bytes after header block")
    return headers


class FrameEncoder:
    """Serialises frames; owns the sending direction's zlib context."""

    def __init__(self) -> None:
        self._zlib = zlib.compressobj(
            zlib.Z_BEST_COMPRESSION, zlib.DEFLATED, zlib.MAX_WBITS, zdict=HEADER_DICTIONARY
        )

    def _headers(self, headers: Headers) -> bytes:
        raw = _encode_header_block(headers)
        return self._zlib.compress(raw) + self._zlib.flush(zlib.Z_SYNC_FLUSH)

    @staticmethod
    def _control(kind: int, flags: int, payload: bytes) -> bytes:
        if len(payload) > MAX_DATA_LENGTH:
            raise ValueError("control frame too large")
        return _CONTROL.pack(0x8000 | SPDY_VERSION, kind, (flags << 24) | len(payload)) + payload

    @staticmethod
    def data_head(stream_id: int, length: int, fin: bool = False) -> bytes:
        """The 8 bytes that precede ``length`` payload bytes in a DATA frame."""
        if not 0 < stream_id < 1 << 31:
            raise ValueError("bad stream id")
        if not 0 <= length <= MAX_DATA_LENGTH:
            raise ValueError("DATA frame too large")
        return _U32x2.pack(stream_id, ((FLAG_FIN if fin else 0) << 24) | length)

    def encode(self, frame: Frame) -> bytes:
        """The bytes of ``frame`` (compressing its header block, if any)."""
        if isinstance(frame, Data):
            return self.data_head(frame.stream_id, len(frame.data), frame.fin) + frame.data
        if isinstance(frame, SynStream):
            flags = (FLAG_FIN if frame.fin else 0) | (
                FLAG_UNIDIRECTIONAL if frame.unidirectional else 0
            )
            payload = (
                _U32x2.pack(frame.stream_id & 0x7FFFFFFF, frame.associated_id & 0x7FFFFFFF)
                + bytes([(frame.priority & 7) << 5, frame.slot & 0xFF])
                + self._headers(frame.headers)
            )
            return self._control(FrameType.SYN_STREAM, flags, payload)
        if isinstance(frame, SynReply):
            payload = _U32.pack(frame.stream_id & 0x7FFFFFFF) + self._headers(frame.headers)
            return self._control(FrameType.SYN_REPLY, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, HeadersFrame):
            payload = _U32.pack(frame.stream_id & 0x7FFFFFFF) + self._headers(frame.headers)
            return self._control(FrameType.HEADERS, FLAG_FIN if frame.fin else 0, payload)
        if isinstance(frame, RstStream):
            return self._control(
                FrameType.RST_STREAM, 0, _U32x2.pack(frame.stream_id & 0x7FFFFFFF, frame.status)
            )
        if isinstance(frame, Settings):
            body = b"".join(
                _U32x2.pack(((e.flags & 0xFF) << 24) | (e.id & 0xFFFFFF), e.value)
                for e in frame.entries
            )
            return self._control(
                FrameType.SETTINGS,
                FLAG_SETTINGS_CLEAR if frame.clear else 0,
                _U32.pack(len(frame.entries)) + body,
            )
        if isinstance(frame, Ping):
            return self._control(FrameType.PING, 0, _U32.pack(frame.ping_id))
        if isinstance(frame, GoAway):
            return self._control(
                FrameType.GOAWAY,
                0,
                _U32x2.pack(frame.last_good_stream_id & 0x7FFFFFFF, frame.status),
            )
        if isinstance(frame, WindowUpdate):
            return self._control(
                FrameType.WINDOW_UPDATE,
                0,
                _U32x2.pack(frame.stream_id & 0x7FFFFFFF, frame.delta & 0x7FFFFFFF),
            )
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameDecoder:
    """Parses frames out of a byte stream split anywhere.

    Owns the receiving direction's zlib context: header blocks must be
    decoded in the order they were sent, which :meth:`receive_data` does.
    Unknown control frame types (NOOP, CREDENTIAL, future ones) are skipped,
    as SPDY/3 asks.
    """

    def __init__(self) -> None:
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS, zdict=HEADER_DICTIONARY)
        self._buf = bytearray()
        self._pos = 0

    def _headers(self, block: bytes) -> Headers:
        try:
            raw = self._zlib.decompress(block, MAX_HEADER_BLOCK + 1)
        except zlib.error as e:
            raise FrameError(f"bad compressed header block: {e}") from e
        if len(raw) > MAX_HEADER_BLOCK or self._zlib.unconsumed_tail:
            raise FrameError("header block too large")
        return _decode_header_block(raw)

    def receive_data(self, data: bytes) -> list[Frame]:
        """Add bytes; return every frame now complete.

        Raises :class:`FrameError` for a malformed frame; the decoder is
        unusable afterwards.
        """
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        while len(buf) - self._pos >= 8:
            pos = self._pos
            first, second = _U32x2.unpack_from(buf, pos)
            length = second & 0xFFFFFF
            flags = second >> 24
            end = pos + 8 + length
            if len(buf) < end:
                break
            payload = bytes(buf[pos + 8 : end])
            self._pos = end
            frame = self._parse(first, flags, payload)
            if frame is not None:
                frames.append(frame)
        if self._pos > 65536 or self._pos == len(buf):
            del buf[: self._pos]
            self._pos = 0
        return frames

    def _parse(self, first: int, flags: int, payload: bytes) -> Frame | None:
        if not first & 0x80000000:
            stream_id = first & 0x7FFFFFFF
            if stream_id == 0:
                raise FrameError("DATA frame for stream 0")
            return Data(stream_id, payload, bool(flags & FLAG_FIN))
        version = (first >> 16) & 0x7FFF
        kind = first & 0xFFFF
        if version != SPDY_VERSION:
            raise FrameError(f"unsupported SPDY version {version}")
        if kind == FrameType.SYN_STREAM:
            if len(payload) < 10:
                raise FrameError("short SYN_STREAM")
            sid, assoc = _U32x2.unpack_from(payload, 0)
            return SynStream(
                stream_id=self._stream_id(sid),
                associated_id=assoc & 0x7FFFFFFF,
                priority=payload[8] >> 5,
                slot=payload[9],
                headers=self._headers(payload[10:]),
                fin=bool(flags & FLAG_FIN),
                unidirectional=bool(flags & FLAG_UNIDIRECTIONAL),
            )
        if kind in (FrameType.SYN_REPLY, FrameType.HEADERS):
            if len(payload) < 4:
                raise FrameError("short SYN_REPLY/HEADERS")
            (sid,) = _U32.unpack_from(payload, 0)
            sid = self._stream_id(sid)
            headers = self._headers(payload[4:])
            fin = bool(flags & FLAG_FIN)
            if kind == FrameType.SYN_REPLY:
                return SynReply(sid, headers, fin)
            return HeadersFrame(sid, headers, fin)
        if kind == FrameType.RST_STREAM:
            if len(payload) != 8:
                raise FrameError("RST_STREAM must be 8 bytes")
            sid, status = _U32x2.unpack(payload)
            if status == 0:
                raise FrameError("RST_STREAM with status 0")
            return RstStream(self._stream_id(sid), status)
        if kind == FrameType.SETTINGS:
            if len(payload) < 4:
                raise FrameError("short SETTINGS")
            (count,) = _U32.unpack_from(payload, 0)
            if len(payload) != 4 + 8 * count:
                raise FrameError("SETTINGS length does not match its count")
            entries = []
            for i in range(count):
                key, value = _U32x2.unpack_from(payload, 4 + 8 * i)
                entries.append(SettingsEntry(key & 0xFFFFFF, value, key >> 24))
            return Settings(tuple(entries), bool(flags & FLAG_SETTINGS_CLEAR))
        if kind == FrameType.PING:
            if len(payload) != 4:
                raise FrameError("PING must be 4 bytes")
            return Ping(_U32.unpack(payload)[0])
        if kind == FrameType.GOAWAY:
            if len(payload) != 8:
                raise FrameError("GOAWAY must be 8 bytes")
            last, status = _U32x2.unpack(payload)
            return GoAway(last & 0x7FFFFFFF, status)
        if kind == FrameType.WINDOW_UPDATE:
            if len(payload) != 8:
                raise FrameError("WINDOW_UPDATE must be 8 bytes")
            sid, delta = _U32x2.unpack(payload)
            return WindowUpdate(sid & 0x7FFFFFFF, delta & 0x7FFFFFFF)
        return None

    @staticmethod
    def _stream_id(raw: int) -> int:
        sid = raw & 0x7FFFFFFF
        if sid == 0:
            raise FrameError("stream id 0")
        return sid


@dataclass
class _Stream:
    local_open: bool = True
    remote_open: bool = True
    replied: bool = False


@dataclass
class SpdyConnection:
    """One SPDY/3.1 session, client or server side, without I/O.

    The server side (the role of the kubelet) accepts odd stream IDs from the
    client and opens even ones itself; the client side the reverse. Stream
    bookkeeping is deliberately as lenient as spdystream's: frames for streams
    that are gone are ignored rather than fatal, except where the stream ID
    itself is invalid.
    """

    server: bool = True
    _encoder: FrameEncoder = field(default_factory=FrameEncoder)
    _decoder: FrameDecoder = field(default_factory=FrameDecoder)
    _out: list[bytes] = field(default_factory=list)
    _streams: dict[int, _Stream] = field(default_factory=dict)
    _last_remote_id: int = 0
    _next_local_id: int = 0
    _next_ping_id: int = 0
    _terminated: bool = False
    _goaway_sent: bool = False

    def __post_init__(self) -> None:
        self._next_local_id = 2 if self.server else 1
        self._next_ping_id = 2 if self.server else 1

    # -- receiving -----------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Feed bytes from the peer; return the events they complete.

        PINGs from the peer are answered here (the answer is queued in
        :meth:`data_to_send`) and still reported.
        """
        if self._terminated:
            return []
        try:
            frames = self._decoder.receive_data(data)
        except FrameError as e:
            self._terminated = True
            self._queue_goaway(GoAwayStatus.PROTOCOL_ERROR)
            return [ConnectionTerminated(GoAwayStatus.PROTOCOL_ERROR, str(e))]
        events: list[Event] = []
        for frame in frames:
            if self._accept(frame):
                events.append(frame)
        return events

    def _remote_parity(self, stream_id: int) -> bool:
        return stream_id % 2 == (1 if self.server else 0)

    def _accept(self, frame: Frame) -> bool:
        if isinstance(frame, SynStream):
            sid = frame.stream_id
            if not self._remote_parity(sid) or sid <= self._last_remote_id:
                self._queue(RstStream(sid, RstStatus.PROTOCOL_ERROR))
                return False
            if self._goaway_sent:
                self._queue(RstStream(sid, RstStatus.REFUSED_STREAM))
                return False
            self._last_remote_id = sid
            self._streams[sid] = _Stream(
                local_open=not frame.unidirectional, remote_open=not frame.fin
            )
            return True
        if isinstance(frame, Ping):
            if frame.ping_id % 2 != self._next_ping_id % 2:
                self._queue(frame)
            return True
        if isinstance(frame, Data):
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                if self._remote_parity(frame.stream_id) and frame.stream_id > self._last_remote_id:
                    self._queue(RstStream(frame.stream_id, RstStatus.INVALID_STREAM))
                return False
            if not stream.remote_open:
                self._queue(RstStream(frame.stream_id, RstStatus.STREAM_ALREADY_CLOSED))
                return False
            if frame.fin:
                stream.remote_open = False
                self._forget(frame.stream_id)
            return True
        if isinstance(frame, SynReply | HeadersFrame):
            stream = self._streams.get(frame.stream_id)
            if stream is None:
                return False
            if isinstance(frame, SynReply):
                if stream.replied:
                    self._queue(RstStream(frame.stream_id, RstStatus.STREAM_IN_USE))
                    return False
                stream.replied = True
            if frame.fin:
                stream.remote_open = False
                self._forget(frame.stream_id)
            return True
        if isinstance(frame, RstStream):
            self._streams.pop(frame.stream_id, None)
            return True
        return True

    def _forget(self, stream_id: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.local_open and not stream.remote_open:
            del self._streams[stream_id]

    # -- sending -------------------------------------------------------

    def _queue(self, frame: Frame) -> None:
        self._out.append(self._encoder.encode(frame))

    def _queue_goaway(self, status: int) -> None:
        if not self._goaway_sent:
            self._goaway_sent = True
            self._queue(GoAway(self._last_remote_id, status))

    def _local(self, stream_id: int) -> _Stream:
        stream = self._streams.get(stream_id)
        if stream is None or not stream.local_open:
            raise ValueError(f"stream {stream_id} is not open for sending")
        return stream

    def send_syn_stream(
        self, headers: Headers, *, fin: bool = False, unidirectional: bool = False
    ) -> int:
        """Open a stream; return its ID."""
        sid = self._next_local_id
        self._next_local_id += 2
        self._streams[sid] = _Stream(local_open=not fin, remote_open=not unidirectional)
        self._queue(SynStream(sid, headers, fin=fin, unidirectional=unidirectional))
        return sid

    def send_syn_reply(
        self, stream_id: int, headers: Headers | None = None, *, fin: bool = False
    ) -> None:
        """Accept a stream the peer opened."""
        stream = self._local(stream_id)
        self._queue(SynReply(stream_id, headers or {}, fin))
        if fin:
            stream.local_open = False
            self._forget(stream_id)

    def send_headers(self, stream_id: int, headers: Headers, *, fin: bool = False) -> None:
        """Send more headers on an open stream."""
        stream = self._local(stream_id)
        self._queue(HeadersFrame(stream_id, headers, fin))
        if fin:
            stream.local_open = False
            self._forget(stream_id)

    def send_data(self, stream_id: int, data: bytes, *, fin: bool = False) -> None:
        """Send payload on a stream (split into frames as needed).

        Each DATA frame is queued as its head and its payload: ``data``
        itself if it fits in one frame (it is kept, not copied: see
        :meth:`pieces_to_send`).
        """
        stream = self._local(stream_id)
        head = self._encoder.data_head
        offset = 0
        while len(data) - offset > MAX_DATA_LENGTH:
            self._out.append(head(stream_id, MAX_DATA_LENGTH))
            self._out.append(data[offset : offset + MAX_DATA_LENGTH])
            offset += MAX_DATA_LENGTH
        if offset:
            data = data[offset:]
        if data or fin:
            self._out.append(head(stream_id, len(data), fin))
            if data:
                self._out.append(data)
        if fin:
            stream.local_open = False
            self._forget(stream_id)

    def end_stream(self, stream_id: int) -> None:
        """Half-close our side of a stream (an empty DATA frame with FIN).

        A no-op if our side is already closed or the stream is gone.
        """
        stream = self._streams.get(stream_id)
        if stream is not None and stream.local_open:
            self.send_data(stream_id, b"", fin=True)

    def send_rst_stream(self, stream_id: int, status: int = RstStatus.CANCEL) -> None:
        """Abort a stream in both directions."""
        self._streams.pop(stream_id, None)
        self._queue(RstStream(stream_id, status))

    def send_ping(self) -> int:
        """Send a PING with a fresh ID of our parity; return the ID."""
        pid = self._next_ping_id
        self._next_ping_id += 2
        self._queue(Ping(pid))
        return pid

    def send_settings(self, entries: tuple[SettingsEntry, ...] = ()) -> None:
        """Send a SETTINGS frame."""
        self._queue(Settings(entries))

    def send_window_update(self, stream_id: int, delta: int) -> None:
        """Grant the peer ``delta`` more bytes on a stream."""
        self._queue(WindowUpdate(stream_id, delta))

    def send_goaway(self, status: int = GoAwayStatus.OK) -> None:
        """Tell the peer no new streams will be accepted (sent once)."""
        self._queue_goaway(status)

    def is_open_locally(self, stream_id: int) -> bool:
        """Whether we may still send on ``stream_id``."""
        stream = self._streams.get(stream_id)
        return stream is not None and stream.local_open

    def data_to_send(self) -> bytes:
        """Bytes queued for the peer since the last call."""
        out = b"".join(self._out)
        self._out.clear()
        return out

    def pieces_to_send(self) -> list[bytes]:
        """:meth:`data_to_send`, in pieces that need no copy of large payloads.

        Every DATA payload of at least :data:`SEPARATE_PAYLOAD` bytes (the
        very object given to :meth:`send_data` when it fit in one frame) and
        any other frame that large is a piece of its own; the bytes between
        such pieces are joined into one piece each. Written in order, the
        pieces are :meth:`data_to_send`.
        """
        pieces: list[bytes] = []
        run: list[bytes] = []
        for chunk in self._out:
            if len(chunk) >= SEPARATE_PAYLOAD:
                if run:
                    pieces.append(b"".join(run))
                    run.clear()
                pieces.append(chunk)
            else:
                run.append(chunk)
        if run:
            pieces.append(b"".join(run))
        self._out.clear()
        return pieces
