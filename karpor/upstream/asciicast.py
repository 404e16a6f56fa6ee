"""A terminal session as asciicast v2 lines (sans-IO).

The asciicast v2 format (asciinema's): a first line holding the header
object ``{"version": 2, "width": W, "height": H, "timestamp": T, "env":
{...}, "title": "..."}``, then one line per event, a JSON array ``[time,
code, data]``: ``time`` in seconds since the start (a float), ``code``
``"o"`` (output), ``"i"`` (input) or ``"r"`` (resize, data ``"WxH"``).

:class:`AsciicastEncoder` turns a session's channel payloads into those
lines (:class:`~karpor.http.sessionframes.ChannelSink`): stdout and
stderr are output, stdin input, the resize channel's
``{"Width": W, "Height": H}`` a resize; the error channel is not a
terminal's and is left to the caller.  Bytes are decoded as UTF-8
incrementally per channel (the few bytes of a character split across
frames wait for the next piece), so such a character is whole in the
recording; undecodable bytes become U+FFFD.  Each event costs one
decode (of the piece itself when alone: no copy) and one JSON string
encoding, by ``orjson`` (SIMD C: about 20 times ``json.dumps``'s speed on
terminal text), and no loop per byte.  Small pieces of one channel coming within
:data:`HOLD_SECONDS` of the first (at most :data:`HOLD_BYTES` together)
are held and made one event, at the first one's time (timing kept to
10 ms, finer than a player's frames); a piece that large is an event of
its own, decoded where it lies.  Lines are copied into one buffer per
session reused from write to write (no allocation per event lives until
the write: freed at once, the next event's memory is the same, still in
the cache) and handed to the file's ``writev`` as a view.

The header is written with the first lines handed out
(:meth:`AsciicastEncoder.take`, :meth:`AsciicastEncoder.write_to`): the
first resize that comes before then sets its size (kubectl sends the
terminal's size as the session starts; the output that may precede it
is shown at that size), otherwise it says :data:`DEFAULT_WIDTH` by
:data:`DEFAULT_HEIGHT`; later resizes are ``"r"`` events.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Callable

import orjson

from karpor.http.sessionframes import RESIZE, STDERR, STDIN, STDOUT

DEFAULT_WIDTH = 80
DEFAULT_HEIGHT = 24
#: largest resize message read (a JSON object of two numbers)
MAX_RESIZE = 256

#: small pieces of one channel coming within this many seconds of the
#: first are one event (asciinema shows at most 60 frames a second)
HOLD_SECONDS = 0.01
#: most bytes of pieces held for one event; a piece this large is an event
#: of its own
HOLD_BYTES = 16 * 1024
#: the line buffer's first size, and its largest (a line that does not fit
#: is kept as it is, after the buffer)
MIN_BUFFER = 4 * 1024
MAX_BUFFER = 128 * 1024
#: most pieces handed to one write (``os.writev``'s limit is 1024)
MAX_PIECES = 512

_dumps = json.dumps
_string = orjson.dumps
_utf8_decode = codecs.utf_8_decode


def header_line(width: int, height: int, timestamp: int, env: dict[str, str], title: str) -> str:
    """The header line (newline-terminated)."""
    header = {
        "version": 2,
        "width": width,
        "height": height,
        "timestamp": timestamp,
        "env": env,
        "title": title,
    }
    return _dumps(header, separators=(",", ":")) + "\n"


def parse_resize(payload: bytes) -> tuple[int, int] | None:
    """``(width, height)`` of a resize message, or ``None`` when it is not one."""
    if len(payload) > MAX_RESIZE:
        return None
    try:
        size = json.loads(payload)
        width, height = int(size["Width"]), int(size["Height"])
    except (ValueError, TypeError, KeyError):
        return None
    if not (0 < width < 1 << 16 and 0 < height < 1 << 16):
        return None
    return width, height


class AsciicastEncoder:
    """One session's asciicast lines (see the module docstring).

    ``clock`` gives monotonic seconds; the session starts at ``clock()``
    when the encoder is made; ``timestamp`` is the start in seconds since
    the epoch (the header's).  Lines accumulate (in the line buffer, at
    most :data:`MAX_BUFFER` bytes, then as they are) until :meth:`take` or
    :meth:`write_to`; held pieces are an event by then at the latest.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        timestamp: int,
        env: dict[str, str],
        title: str,
    ) -> None:
        self._clock = clock
        self._start = clock()
        self._timestamp = timestamp
        self._env = env
        self._title = title
        #: the header was handed out
        self._header = False
        #: the header's size: the first resize before it was handed out
        self._size: tuple[int, int] | None = None
        #: the lines: in a buffer reused from flush to flush (no allocation
        #: per event), then those that did not fit in it
        self._buf = bytearray(MIN_BUFFER)
        self._fill = 0
        self._more: list[bytes] = []
        self._more_bytes = 0
        #: per terminal channel: the bytes of a character not complete yet
        self._rest = {STDIN: b"", STDOUT: b"", STDERR: b""}
        #: the small pieces held to make one event: their channel (-1:
        #: none), the time of the first, their bytes
        self._held_channel = -1
        self._held_at = 0.0
        self._held = bytearray()

    @property
    def pending(self) -> int:
        """Bytes of lines (and of output held for an event) held (until :meth:`take`)."""
        return self._fill + self._more_bytes + len(self._held)

    def _header_line(self) -> bytes:
        """The header line when it has not been handed out yet, else ``b""``."""
        if self._header:
            return b""
        self._header = True
        width, height = self._size or (DEFAULT_WIDTH, DEFAULT_HEIGHT)
        return header_line(width, height, self._timestamp, self._env, self._title).encode()

    def _line(self, part: bytes) -> None:
        """Add ``part`` of a line: copied into the buffer when it fits (the
        buffer grows up to :data:`MAX_BUFFER`), else kept after it."""
        size = len(part)
        fill = self._fill
        end = fill + size
        buf = self._buf
        if end > len(buf) and not self._more and end <= MAX_BUFFER:
            grown = bytearray(max(end, min(2 * len(buf), MAX_BUFFER)))
            grown[:fill] = buf[:fill]
            buf = self._buf = grown
        if end <= len(buf) and not self._more:
            buf[fill:end] = part  # the same length: no resize
            self._fill = end
        else:
            self._more.append(part)
            self._more_bytes += size

    def channel_data(self, from_client: bool, channel: int, data: bytes) -> None:
        """A payload piece of ``channel`` (an event, or nothing for other channels)."""
        if channel > STDERR:
            if channel == RESIZE:
                self._release()
                self._resize(data)
            return
        now = self._clock()
        held = self._held
        if self._held_channel == channel:
            if now - self._held_at < HOLD_SECONDS and len(held) + len(data) <= HOLD_BYTES:
                held += data
                return
            self._release()
        elif self._held_channel >= 0:
            self._release()
        if len(data) >= HOLD_BYTES:  # a large piece is an event of its own, not copied
            self._encode(channel, data, now)
        else:
            held += data
            self._held_channel = channel
            self._held_at = now

    def _release(self) -> None:
        """The held pieces, as one event."""
        channel = self._held_channel
        if channel >= 0:
            self._held_channel = -1
            self._encode(channel, self._held, self._held_at)
            self._held.clear()

    def _encode(self, channel: int, data: bytes | bytearray, at: float) -> None:
        rest = self._rest[channel]
        if rest:
            data = rest + data
        # the incremental decoder's own step, without its copy of every piece
        text, used = _utf8_decode(data, "replace", False)
        self._rest[channel] = bytes(data[used:]) if used < len(data) else b""
        if text:
            self._event(b'"i",' if channel == STDIN else b'"o",', text, at)

    def _event(self, code: bytes, text: str, at: float) -> None:
        self._line(b"[%.6f,%b" % (at - self._start, code))
        self._line(_string(text))
        self._line(b"]\n")

    def _resize(self, data: bytes) -> None:
        size = parse_resize(data)
        if size is None:
            return
        if not self._header and self._size is None:
            self._size = size
            return
        line = b'[%.6f,"r","%dx%d"]\n' % (self._clock() - self._start, *size)
        self._line(line)

    def finish(self) -> None:
        """The session ended: what is held (pieces, an incomplete character) goes out."""
        self._release()
        now = self._clock()
        for channel, rest in self._rest.items():
            if rest:
                self._rest[channel] = b""
                text = rest.decode("utf-8", "replace")
                self._event(b'"i",' if channel == STDIN else b'"o",', text, now)

    def take(self) -> bytes:
        """The lines so far (the header first, at the latest now), as UTF-8."""
        self._release()
        lines = b"".join((self._header_line(), self._buf[: self._fill], *self._more))
        self._fill = 0
        self._more, self._more_bytes = [], 0
        return lines

    def write_to(self, write: Callable[[list[bytes]], int]) -> None:
        """Hand the lines so far to ``write`` (``os.writev`` of a file: the
        count written), at most :data:`MAX_PIECES` pieces a call (the buffer
        is one), until all are written, without joining them first; what
        ``write`` raises propagates (the lines are then dropped)."""
        self._release()
        header = self._header_line()
        view = memoryview(self._buf)[: self._fill]
        pieces: list[bytes] = [header] if header else []
        if view:
            pieces.append(view)  # type: ignore[arg-type]
        pieces += self._more
        self._fill = 0
        self._more, self._more_bytes = [], 0
        try:
            _write_all(write, pieces)
        finally:
            view.release()


def _write_all(write: Callable[[list[bytes]], int], pieces: list[bytes]) -> None:
    """Hand ``pieces`` to ``write`` until all are written (short writes go on)."""
    start = 0
    while start < len(pieces):
        batch = pieces[start : start + MAX_PIECES]
        written = write(batch)
        for piece in batch:
            if written < len(piece):
                break
            written -= len(piece)
            start += 1
        if written:  # a short write ended inside a piece: the rest of it next
            pieces[start] = pieces[start][written:]


__all__ = [
    "DEFAULT_HEIGHT",
    "DEFAULT_WIDTH",
    "HOLD_BYTES",
    "HOLD_SECONDS",
    "MAX_BUFFER",
    "MAX_PIECES",
    "MIN_BUFFER",
    "AsciicastEncoder",
    "header_line",
    "parse_resize",
]
