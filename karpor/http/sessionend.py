"""How a cut upgraded session (exec, attach, port-forward) ends: as a
failure the client sees, sans-IO.

A :class:`~karpor.upstream.splice.Splice` copies bytes without parsing them,
but when the gateway must cut a session (the drain deadline of a stopping
worker, a session outliving ``sessionDrainTimeout``, its cluster removed),
closing both connections is not enough: kubectl's SPDY executor then reads
the end of the error stream as success and exits 0 with its output cut
short.  So the splice keeps a :class:`SessionEnd` for the protocol the
``101`` negotiated (:func:`session_end`), feeds it every byte both ways,
and at a cut writes :meth:`SessionEnd.ending` to the client before closing:

- SPDY/3.1 (``X-Stream-Protocol-Version``): the client opens the streams,
  so the client's SYN_STREAM header blocks name the error stream(s)
  (``streamtype: error``); they are zlib streams primed with the SPDY/3
  dictionary, one context for the client's direction, so every header
  block the client sends is decompressed in order.  The ending is a DATA
  frame with FIN on each error stream the cluster has not finished: a
  ``Failure`` ``Status`` for the ``v4``/``v5.channel.k8s.io`` protocols, the
  plain message for older ones and for port-forward.  DATA frames are not
  compressed, so nothing of the cluster's compression context is needed.
- WebSocket (``Sec-WebSocket-Protocol``): ``v4``/``v5.channel.k8s.io`` get a
  binary message on channel 3 (error) holding the ``Failure`` ``Status``
  (``channel.k8s.io``: the message itself; the ``base64`` variants: a text
  message, ``"3"`` and the base64 of it), then a close frame with code 1000:
  client-go ends every channel at a normal closure and reads the error
  channel to its end, the ``Failure``, whereas any other code is reported as
  a read error instead of the ``Status``.  A session with no error channel
  (port-forward) gets a close frame with code 1011 (internal error).

The ending must start at a frame boundary of what the cluster sent the
client: the cluster's frames are followed (their heads only; payloads are
skipped, not buffered).  Cut in the middle of a data frame, its remaining
payload (up to :data:`MAX_FILL`) is filled with zero bytes first (the
stream's output is spoilt, but the failure follows it); in the middle of
anything else there is no clean ending (:meth:`SessionEnd.ending` returns
``None``) and the splice drops the connection instead, which a WebSocket
client reports as a failure (no close frame); an SPDY client may not.
"""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Sequence
from typing import Protocol as TypingProtocol

from karpor.http.spdy import HEADER_DICTIONARY as SPDY_DICTIONARY
from karpor.kube.status import ApiError

#: Largest SPDY control frame followed (a header block bigger than this stops
#: the tracking: the ending falls back to dropping the connection).
MAX_CONTROL_FRAME = 1 << 20
#: Largest decompressed header block read.
MAX_HEADER_BLOCK = 1 << 20
#: Largest remainder of a data frame filled with zero bytes at a cut (beyond
#: it there is no clean ending: the connection is dropped).
MAX_FILL = 1 << 20

_SYN_STREAM = 1
_SYN_REPLY = 2
_RST_STREAM = 3
_HEADERS = 8
_FLAG_FIN = 0x01
_U32 = struct.Struct(">I")
_U32x2 = struct.Struct(">II")

#: WebSocket close code for a cut session without an error channel (RFC 6455:
#: internal error)
CLOSE_INTERNAL_ERROR = 1011
#: WebSocket close code after the error channel carried the failure
CLOSE_NORMAL = 1000
_ERROR_CHANNEL = 3

_STATUS_PROTOCOLS = frozenset(
    {"v4.channel.k8s.io", "v5.channel.k8s.io", "v4.base64.channel.k8s.io"}
)
_BINARY_CHANNELS = frozenset({"channel.k8s.io", "v4.channel.k8s.io", "v5.channel.k8s.io"})
_BASE64_CHANNELS = frozenset({"base64.channel.k8s.io", "v4.base64.channel.k8s.io"})


class SessionEnd(TypingProtocol):
    """Follows a session's bytes; gives the bytes that end it as a failure."""

    def from_client(self, data: bytes) -> None:
        """Bytes the client sent (on their way to the cluster)."""

    def from_server(self, data: bytes) -> None:
        """Bytes the cluster sent (on their way to the client)."""

    def ending(self, message: str) -> bytes | None:
        """What to write to the client so it sees a failure carrying
        ``message`` (``None``: no clean ending is possible)."""


def failure_status(message: str) -> bytes:
    """A ``Failure`` ``Status`` (500 ``InternalError``) as JSON bytes."""
    return ApiError(500, message, "InternalError").body()


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return ""


def session_end(headers: Sequence[tuple[bytes, bytes]]) -> SessionEnd | None:
    """The :class:`SessionEnd` for a ``101`` response's headers (``None``
    for a protocol the gateway does not know)."""
    upgrade = _header(headers, b"upgrade").lower()
    if upgrade.startswith("spdy/3"):
        version = _header(headers, b"x-stream-protocol-version")
        return SpdyEnd(status=version in _STATUS_PROTOCOLS)
    if upgrade == "websocket":
        return WebSocketEnd(_header(headers, b"sec-websocket-protocol"))
    return None


def _header_values(block: bytes, name: bytes) -> list[bytes]:
    """The values of ``name`` in a decompressed SPDY/3 name/value block."""
    values: list[bytes] = []
    (count,) = _U32.unpack_from(block, 0)
    pos = 4
    for _ in range(count):
        (n,) = _U32.unpack_from(block, pos)
        key = block[pos + 4 : pos + 4 + n]
        pos += 4 + n
        (m,) = _U32.unpack_from(block, pos)
        if key == name:
            values += block[pos + 4 : pos + 4 + m].split(b"\0")
        pos += 4 + m
    return values


class _FrameCursor:
    """Where a byte stream of length-prefixed frames is: inside a frame's
    8-byte head, or inside its payload (``remaining`` bytes to go)."""

    __slots__ = ("head", "remaining")

    def __init__(self) -> None:
        self.head = bytearray()
        self.remaining = 0

    def read_head(self, data: bytes, pos: int) -> tuple[int, tuple[int, int] | None]:
        """Take what ``data[pos:]`` holds of the current frame head: the new
        position, and the head's two 32-bit words once all 8 bytes are in."""
        take = min(8 - len(self.head), len(data) - pos)
        self.head += data[pos : pos + take]
        pos += take
        if len(self.head) < 8:
            return pos, None
        words: tuple[int, int] = _U32x2.unpack(self.head)
        self.head.clear()
        return pos, words


class SpdyEnd:
    """:class:`SessionEnd` of an SPDY/3.1 session (see the module docstring).

    ``status``: the error streams carry a ``Status`` (``v4``/``v5``
    protocols), else a plain message.
    """

    def __init__(self, *, status: bool) -> None:
        self.status = status
        #: the client's error streams, and those the cluster finished
        self.error_streams: list[int] = []
        self.finished: set[int] = set()
        self._inflate = zlib.decompressobj(zlib.MAX_WBITS, zdict=SPDY_DICTIONARY)
        self._client = _FrameCursor()
        self._collect = False
        self._kind = 0
        self._payload = bytearray()
        self._server = _FrameCursor()
        self._server_data = False
        self._server_stream = -1
        self._server_fin = False
        #: the client's frames can no longer be followed (the ending is lost)
        self.lost = False

    # -- the client's direction: find the error streams -------------------------

    def from_client(self, data: bytes) -> None:
        """Follow the client's frames; read the header blocks."""
        cursor = self._client
        pos, size = 0, len(data)
        while pos < size and not self.lost:
            if cursor.remaining:
                take = min(cursor.remaining, size - pos)
                if self._collect:
                    self._payload += data[pos : pos + take]
                cursor.remaining -= take
                pos += take
                if not cursor.remaining and self._collect:
                    self._collect = False
                    payload, self._payload = bytes(self._payload), bytearray()
                    self._client_control(payload)
                continue
            pos, words = cursor.read_head(data, pos)
            if words is None:
                continue
            first, second = words
            length = second & 0xFFFFFF
            kind = first & 0xFFFF
            control = bool(first & 0x80000000)
            if control and kind in (_SYN_STREAM, _SYN_REPLY, _HEADERS):
                if length > MAX_CONTROL_FRAME:
                    self.lost = True
                    return
                self._collect = True
                self._payload = bytearray()
                self._kind = kind
                if length == 0:
                    self._collect = False
                    self._client_control(b"")
            cursor.remaining = length

    def _client_control(self, payload: bytes) -> None:
        skip = 10 if self._kind == _SYN_STREAM else 4
        if len(payload) < skip:
            self.lost = True
            return
        try:
            block = self._inflate.decompress(payload[skip:], MAX_HEADER_BLOCK)
            if self._inflate.unconsumed_tail:
                raise zlib.error("header block too large")
            if self._kind != _SYN_STREAM:
                return
            if b"error" in _header_values(block, b"streamtype"):
                (stream_id,) = _U32.unpack_from(payload, 0)
                self.error_streams.append(stream_id & 0x7FFFFFFF)
        except (zlib.error, struct.error):
            self.lost = True

    # -- the cluster's direction: frame boundaries -------------------------------

    def from_server(self, data: bytes) -> None:
        """Follow the cluster's frames (heads only)."""
        cursor = self._server
        pos, size = 0, len(data)
        while pos < size:
            if cursor.remaining:
                take = min(cursor.remaining, size - pos)
                cursor.remaining -= take
                pos += take
                continue
            pos, words = cursor.read_head(data, pos)
            if words is None:
                continue
            first, second = words
            cursor.remaining = second & 0xFFFFFF
            flags = second >> 24
            self._server_data = not first & 0x80000000
            if self._server_data and flags & _FLAG_FIN:
                self.finished.add(first & 0x7FFFFFFF)
            elif first & 0x80000000 and first & 0xFFFF == _RST_STREAM and size - pos >= 4:
                # the stream id is in the payload: peeked when it is here
                (stream_id,) = _U32.unpack_from(data, pos)
                self.finished.add(stream_id & 0x7FFFFFFF)

    def ending(self, message: str) -> bytes | None:
        """DATA + FIN on each open error stream (see the module docstring)."""
        if self.lost:
            return None
        streams = [s for s in self.error_streams if s not in self.finished]
        if not streams:
            return None
        parts: list[bytes] = []
        cursor = self._server
        if cursor.head:
            return None  # inside a frame head
        if cursor.remaining:
            if not self._server_data or cursor.remaining > MAX_FILL:
                return None
            parts.append(bytes(cursor.remaining))  # finish the data frame
        payload = failure_status(message) if self.status else message.encode()
        for stream_id in streams:
            parts += (
                _U32x2.pack(stream_id & 0x7FFFFFFF, (_FLAG_FIN << 24) | len(payload)),
                payload,
            )
        return b"".join(parts)


def websocket_frame(opcode: int, payload: bytes) -> bytes:
    """One unmasked (server-to-client) WebSocket frame with FIN."""
    size = len(payload)
    if size < 126:
        head = bytes((0x80 | opcode, size))
    elif size < 1 << 16:
        head = bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big")
    return head + payload


class WebSocketEnd:
    """:class:`SessionEnd` of a WebSocket session with subprotocol ``protocol``."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self._head = bytearray()
        self._remaining = 0
        self._data = False
        #: inside a fragmented message (a data frame without FIN was sent)
        self._fragmented = False
        #: the cluster sent its close frame
        self.closed = False

    def from_client(self, data: bytes) -> None:
        """The client's frames need no following."""

    def from_server(self, data: bytes) -> None:
        """Follow the cluster's frames (heads only)."""
        pos, size = 0, len(data)
        while pos < size:
            if self._remaining:
                take = min(self._remaining, size - pos)
                self._remaining -= take
                pos += take
                continue
            head = self._head
            need = self._head_size()
            take = min(need - len(head), size - pos)
            head += data[pos : pos + take]
            pos += take
            need = self._head_size()
            if len(head) < need:
                continue
            opcode = head[0] & 0x0F
            length = head[1] & 0x7F
            if length == 126:
                length = int.from_bytes(head[2:4], "big")
            elif length == 127:
                length = int.from_bytes(head[2:10], "big")
            if opcode < 8:
                self._data = True
                self._fragmented = not head[0] & 0x80
            else:
                self._data = False
                if opcode == 8:
                    self.closed = True
            head.clear()
            self._remaining = length

    def _head_size(self) -> int:
        head = self._head
        if len(head) < 2:
            return 2
        size = 2 + {126: 2, 127: 8}.get(head[1] & 0x7F, 0)
        return size + (4 if head[1] & 0x80 else 0)

    def ending(self, message: str) -> bytes | None:
        """The error channel's message (channel protocols), then a close frame."""
        if self.closed or self._head:
            return None
        parts: list[bytes] = []
        if self._remaining:
            if not self._data or self._remaining > MAX_FILL:
                return None
            parts.append(bytes(self._remaining))  # finish the data frame
        code = CLOSE_INTERNAL_ERROR
        if not self._fragmented:
            error = failure_status(message) if self.protocol in _STATUS_PROTOCOLS else None
            body = error if error is not None else message.encode()
            if self.protocol in _BINARY_CHANNELS:
                parts.append(websocket_frame(0x2, bytes((_ERROR_CHANNEL,)) + body))
                code = CLOSE_NORMAL
            elif self.protocol in _BASE64_CHANNELS:
                parts.append(websocket_frame(0x1, b"3" + base64.b64encode(body)))
                code = CLOSE_NORMAL
        reason = message.encode()[:100].decode("utf-8", "ignore").encode()
        parts.append(websocket_frame(0x8, code.to_bytes(2, "big") + reason))
        return b"".join(parts)


__all__ = [
    "CLOSE_INTERNAL_ERROR",
    "CLOSE_NORMAL",
    "SPDY_DICTIONARY",
    "SessionEnd",
    "SpdyEnd",
    "WebSocketEnd",
    "failure_status",
    "session_end",
    "websocket_frame",
]
