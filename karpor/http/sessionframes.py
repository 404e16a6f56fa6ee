"""The channels of a spliced exec or attach session, demultiplexed (sans-IO).

A :class:`~karpor.upstream.splice.Splice` copies a session's bytes as
they are; a recording or a session audit line needs what travels on each
channel (stdin 0, stdout 1, stderr 2, error 3, resize 4).  The frames are
followed as they pass, both directions, and every payload piece goes to a
:class:`ChannelSink` with its direction and channel, as it arrives: a frame
split over many reads gives many pieces, never a buffered frame (base64
WebSocket messages, which must be decoded whole, are the one exception,
bounded by :data:`MAX_BASE64_MESSAGE`).

- SPDY/3.1 (:class:`SpdyFrames`): the client opens one stream per channel;
  its SYN_STREAM header block (zlib with the SPDY/3 dictionary, one context
  for the client's direction) names the channel (``streamtype: stdout``…).
  DATA frames of either side are then delivered on their stream's channel;
  control frames of the cluster are skipped.
- WebSocket (:class:`WebSocketFrames`): each message starts with its channel
  byte (``v4``/``v5.channel.k8s.io``, ``channel.k8s.io``) or its ASCII digit
  followed by base64 (``base64.`` protocols).  The client's frames are
  masked (unmasked here in one big-integer XOR per piece, never a loop per
  byte); control frames (ping, pong, close) are skipped; a message may be
  fragmented (its channel is in its first fragment).  v5's close message
  (channel 255) is delivered like any other.

When the frames can no longer be followed (a control frame larger than
:data:`MAX_CONTROL_FRAME`, a header block that does not inflate, a base64
message too large), :attr:`lost` is set and nothing more is delivered.
"""

from __future__ import annotations

import base64
import binascii
import struct
import zlib
from collections.abc import Sequence
from typing import Protocol as TypingProtocol

from karpor.http.spdy import HEADER_DICTIONARY

#: largest SPDY control frame read (a SYN_STREAM's header block)
MAX_CONTROL_FRAME = 1 << 16
#: largest inflated SPDY header block
MAX_HEADER_BLOCK = 1 << 16
#: largest base64 WebSocket message decoded (beyond it the session is lost)
MAX_BASE64_MESSAGE = 1 << 20

STDIN = 0
STDOUT = 1
STDERR = 2
ERROR = 3
RESIZE = 4
#: the channels of the SPDY ``streamtype`` header
STREAM_TYPES = {b"stdin": STDIN, b"stdout": STDOUT, b"stderr": STDERR, b"error": ERROR}
STREAM_TYPES[b"resize"] = RESIZE

_SYN_STREAM = 1
_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")

_BINARY_PROTOCOLS = frozenset({"channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io"})
_BASE64_PROTOCOLS = frozenset({"base64.channel.k8s.io", "v4.base64.channel.k8s.io"})


class ChannelSink(TypingProtocol):
    """Where the demultiplexed pieces go."""

    def channel_data(self, from_client: bool, channel: int, data: bytes) -> None:
        """A piece of a payload on ``channel``, from the client or the cluster
        (a bytes-like object, often a ``memoryview`` of what was read: copy
        what must be kept)."""


class SessionFrames(TypingProtocol):
    """Follows a session's bytes both ways (see the module docstring)."""

    lost: bool

    def from_client(self, data: bytes) -> None:
        """Bytes the client sent."""

    def from_server(self, data: bytes) -> None:
        """Bytes the cluster sent."""


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return ""


def session_frames(
    headers: Sequence[tuple[bytes, bytes]], sink: ChannelSink
) -> SessionFrames | None:
    """The demultiplexer for a ``101`` response's headers (``None``: a
    protocol whose channels are not known here)."""
    upgrade = _header(headers, b"upgrade").lower()
    if upgrade.startswith("spdy/3"):
        return SpdyFrames(sink)
    if upgrade == "websocket":
        protocol = _header(headers, b"sec-websocket-protocol")
        if protocol in _BINARY_PROTOCOLS or protocol in _BASE64_PROTOCOLS:
            return WebSocketFrames(protocol, sink)
    return None


def _stream_type(block: bytes) -> bytes:
    """The ``streamtype`` value of an inflated SPDY/3 name/value block."""
    (count,) = _U32.unpack_from(block, 0)
    pos = 4
    for _ in range(count):
        (n,) = _U32.unpack_from(block, pos)
        key = block[pos + 4 : pos + 4 + n]
        pos += 4 + n
        (m,) = _U32.unpack_from(block, pos)
        if key == b"streamtype":
            return block[pos + 4 : pos + 4 + m]
        pos += 4 + m
    return b""


class SpdyFrames:
    """:class:`SessionFrames` of an SPDY/3.1 remote-command session."""

    def __init__(self, sink: ChannelSink) -> None:
        self._sink = sink
        #: stream id -> channel, from the client's SYN_STREAM frames
        self.channels: dict[int, int] = {}
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS, zdict=HEADER_DICTIONARY)
        #: per direction: frame head bytes so far, payload bytes to go, the
        #: channel of the data frame being read (-1: skipped), the control
        #: frame being collected
        self._head = (bytearray(), bytearray())
        self._remaining = [0, 0]
        self._channel = [-1, -1]
        self._control = bytearray()
        self._collect = False
        self.lost = False

    def from_client(self, data: bytes) -> None:
        """Follow the client's frames: header blocks and data."""
        self._follow(data, 0)

    def from_server(self, data: bytes) -> None:
        """Follow the cluster's frames: data."""
        self._follow(data, 1)

    def _follow(self, data: bytes, side: int) -> None:
        pos, size = 0, len(data)
        view = memoryview(data)  # payload pieces are views: never copied here
        head = self._head[side]
        remaining = self._remaining
        sink = self._sink
        while pos < size and not self.lost:
            left = remaining[side]
            if left:
                take = left if left < size - pos else size - pos
                remaining[side] = left - take
                channel = self._channel[side]
                if channel >= 0:
                    sink.channel_data(side == 0, channel, view[pos : pos + take])  # type: ignore[arg-type]
                elif side == 0 and self._collect:
                    self._control += data[pos : pos + take]
                    if not remaining[side]:
                        self._syn_stream()
                pos += take
                continue
            take = min(8 - len(head), size - pos)
            head += data[pos : pos + take]
            pos += take
            if len(head) < 8:
                continue
            first, second = _U32x2.unpack(head)
            head.clear()
            length = second & 0xFFFFFF
            remaining[side] = length
            self._channel[side] = -1
            if not first & 0x80000000:
                self._channel[side] = self.channels.get(first & 0x7FFFFFFF, -1)
            elif side == 0 and first & 0xFFFF == _SYN_STREAM:
                if length > MAX_CONTROL_FRAME:
                    self.lost = True
                    return
                self._collect = True
                self._control = bytearray()
                if not length:
                    self._syn_stream()

    def _syn_stream(self) -> None:
        self._collect = False
        payload, self._control = bytes(self._control), bytearray()
        try:
            if len(payload) < 10:
                raise ValueError("short SYN_STREAM")
            block = self._inflate.decompress(payload[10:], MAX_HEADER_BLOCK)
            if self._inflate.unconsumed_tail:
                raise ValueError("header block too large")
            kind = STREAM_TYPES.get(_stream_type(block))
        except (zlib.error, struct.error, ValueError):
            self.lost = True
            return
        if kind is not None:
            (stream_id,) = _U32.unpack_from(payload, 0)
            self.channels[stream_id & 0x7FFFFFFF] = kind


def unmask(data: bytes, mask: bytes, offset: int) -> bytes:
    """``data`` XOR the WebSocket ``mask`` starting at byte ``offset`` of it
    (one big-integer operation, no loop per byte)."""
    size = len(data)
    if not size:
        return data
    if offset:
        mask = mask[offset:] + mask[:offset]
    key = (mask * (size // 4 + 1))[:size]
    value = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(size, "little")


class _WsSide:
    """One direction of a WebSocket connection being followed."""

    __slots__ = ("b64", "channel", "data", "fin", "head", "mask", "offset", "remaining")

    def __init__(self) -> None:
        self.head = bytearray()
        self.remaining = 0
        self.mask = b""
        self.offset = 0
        #: the current data frame's payload is delivered (not a control frame)
        self.data = False
        #: the channel of the message being read (-1: its first byte is next)
        self.channel = -1
        #: a base64 message's text so far
        self.b64 = bytearray()
        #: the current frame ends its message
        self.fin = False


class WebSocketFrames:
    """:class:`SessionFrames` of a WebSocket remote-command session with
    subprotocol ``protocol`` (a binary or base64 channel protocol)."""

    def __init__(self, protocol: str, sink: ChannelSink) -> None:
        self.protocol = protocol
        self._base64 = protocol in _BASE64_PROTOCOLS
        self._sink = sink
        self._sides = (_WsSide(), _WsSide())
        self.lost = False

    def from_client(self, data: bytes) -> None:
        """Follow the client's (masked) frames."""
        self._follow(data, self._sides[0], True)

    def from_server(self, data: bytes) -> None:
        """Follow the cluster's frames."""
        self._follow(data, self._sides[1], False)

    def _follow(self, data: bytes, side: _WsSide, from_client: bool) -> None:
        pos, size = 0, len(data)
        view = memoryview(data)  # payload pieces are views: never copied here
        while pos < size and not self.lost:
            left = side.remaining
            if left:
                take = left if left < size - pos else size - pos
                side.remaining = left - take
                if side.data:
                    piece: bytes = view[pos : pos + take]  # type: ignore[assignment]
                    if side.mask:
                        piece = unmask(piece, side.mask, side.offset)
                        side.offset = (side.offset + take) & 3
                    self._payload(side, from_client, piece)
                pos += take
                if not side.remaining and side.data:
                    self._frame_end(side, from_client)
                continue
            head = side.head
            if not head and size - pos >= 14:  # a whole head is here: read it in place
                second = data[pos + 1]
                length = second & 0x7F
                at = pos + 2
                if length == 126:
                    length = int.from_bytes(data[at : at + 2], "big")
                    at += 2
                elif length == 127:
                    length = int.from_bytes(data[at : at + 8], "big")
                    at += 8
                mask = b""
                if second & 0x80:
                    mask = data[at : at + 4]
                    at += 4
                self._frame_start(side, data[pos], length, mask)
                pos = at
            else:
                need = _head_size(head)
                take = min(need - len(head), size - pos)
                head += data[pos : pos + take]
                pos += take
                need = _head_size(head)
                if len(head) < need:
                    continue
                length = head[1] & 0x7F
                at = 2
                if length == 126:
                    length = int.from_bytes(head[2:4], "big")
                    at = 4
                elif length == 127:
                    length = int.from_bytes(head[2:10], "big")
                    at = 10
                mask = bytes(head[at : at + 4]) if head[1] & 0x80 else b""
                self._frame_start(side, head[0], length, mask)
                head.clear()
            if not side.remaining and side.data:
                self._frame_end(side, from_client)

    def _frame_start(self, side: _WsSide, first: int, length: int, mask: bytes) -> None:
        opcode = first & 0x0F
        side.mask = mask
        side.offset = 0
        side.remaining = length
        side.data = opcode < 8
        if opcode in (1, 2):  # a new message (0: a continuation)
            side.channel = -1
            side.b64.clear()
        side.fin = bool(first & 0x80)

    def _payload(self, side: _WsSide, from_client: bool, piece: bytes) -> None:
        if side.channel < 0 and piece:
            first = piece[0]
            if self._base64:
                first -= 0x30  # the ASCII digit
            side.channel = first
            piece = piece[1:]
        if self._base64:
            side.b64 += piece
            if len(side.b64) > MAX_BASE64_MESSAGE:
                self.lost = True
            return
        if piece and side.channel >= 0:
            self._sink.channel_data(from_client, side.channel, piece)

    def _frame_end(self, side: _WsSide, from_client: bool) -> None:
        if self._base64 and side.fin and side.channel >= 0:
            text, side.b64 = bytes(side.b64), bytearray()
            try:
                decoded = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError):
                self.lost = True
                return
            if decoded:
                self._sink.channel_data(from_client, side.channel, decoded)


def _head_size(head: bytearray) -> int:
    if len(head) < 2:
        return 2
    size = 2 + {126: 2, 127: 8}.get(head[1] & 0x7F, 0)
    return size + (4 if head[1] & 0x80 else 0)


__all__ = [
    "ERROR",
    "MAX_BASE64_MESSAGE",
    "MAX_CONTROL_FRAME",
    "RESIZE",
    "STDERR",
    "STDIN",
    "STDOUT",
    "ChannelSink",
    "SessionFrames",
    "SpdyFrames",
    "WebSocketFrames",
    "session_frames",
    "unmask",
]
