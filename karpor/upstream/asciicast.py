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
terminal's and is left to the caller.  Bytes are decoded as UTF-8 with one
incremental decoder per channel, so a character split across frames is
whole in the recording; undecodable bytes become U+FFFD.  Each payload
costs one decode and one JSON string encoding, by ``orjson`` (SIMD C:
about 20 times ``json.dumps``'s speed on terminal text, which is what
keeps recording's cost a small fraction of the splice's), and no loop per
byte; lines are kept as UTF-8 bytes.

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

_dumps = json.dumps
_string = orjson.dumps


def _decoder() -> codecs.IncrementalDecoder:
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


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
    the epoch (the header's).  Lines accumulate until :meth:`take`.
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
        self._lines = bytearray()
        self._decoders = {STDIN: _decoder(), STDOUT: _decoder(), STDERR: _decoder()}

    @property
    def pending(self) -> int:
        """Bytes of lines held (until :meth:`take`)."""
        return len(self._lines)

    def _ensure_header(self) -> None:
        if not self._header:
            self._header = True
            width, height = self._size or (DEFAULT_WIDTH, DEFAULT_HEIGHT)
            line = header_line(width, height, self._timestamp, self._env, self._title)
            self._lines[:0] = line.encode("utf-8")

    def channel_data(self, from_client: bool, channel: int, data: bytes) -> None:
        """A payload piece of ``channel`` (an event, or nothing for other channels)."""
        if channel in (STDOUT, STDERR):
            code = b'"o",'
        elif channel == STDIN:
            code = b'"i",'
        elif channel == RESIZE:
            self._resize(data)
            return
        else:
            return
        text = self._decoders[channel].decode(data)
        if not text:
            return
        lines = self._lines
        lines += b"[%.6f," % (self._clock() - self._start)
        lines += code
        lines += _string(text)
        lines += b"]\n"

    def _resize(self, data: bytes) -> None:
        size = parse_resize(data)
        if size is None:
            return
        if not self._header and self._size is None:
            self._size = size
            return
        self._lines += b'[%.6f,"r","%dx%d"]\n' % (self._clock() - self._start, *size)

    def finish(self) -> None:
        """The session ended: what the decoders hold (an incomplete character) goes out."""
        for channel, decoder in self._decoders.items():
            text = decoder.decode(b"", final=True)
            if text:
                code = b'"i",' if channel == STDIN else b'"o",'
                self._lines += b"[%.6f,%b%b]\n" % (
                    self._clock() - self._start,
                    code,
                    _string(text),
                )

    def take(self) -> bytes:
        """The lines so far (the header first, at the latest now), as UTF-8."""
        self._ensure_header()
        lines = bytes(self._lines)
        self._lines.clear()
        return lines

    def write_to(self, write: Callable[[memoryview], int]) -> None:
        """Hand the lines so far to ``write`` (``os.write`` of a file: the
        count written) until all are written, without copying them first;
        what ``write`` raises propagates (the lines are then dropped)."""
        self._ensure_header()
        lines = self._lines
        try:
            view = memoryview(lines)
            try:
                while view:
                    view = view[write(view) :]
            finally:
                view.release()
        finally:
            lines.clear()


__all__ = [
    "DEFAULT_HEIGHT",
    "DEFAULT_WIDTH",
    "AsciicastEncoder",
    "header_line",
    "parse_resize",
]
