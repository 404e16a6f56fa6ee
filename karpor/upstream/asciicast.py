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
recording; undecodable bytes become U+FFFD.  Each payload costs one
decode (of the piece itself: no copy) and one JSON string encoding, by
``orjson`` (SIMD C: about 20 times ``json.dumps``'s speed on terminal
text), and no loop per byte; each event is kept as three byte strings
(time and code, the JSON string, the end) handed to the file's
``writev`` as they are, so an event's text is never copied in Python
before the kernel copies it to the file.

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
    the epoch (the header's).  Lines accumulate until :meth:`take` or
    :meth:`write_to`, as a list of pieces (an event's time and code, its
    JSON string, its end) so that no event is copied before it is written.
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
        self._pieces: list[bytes] = []
        self._pending = 0
        #: per terminal channel: the bytes of a character not complete yet
        self._rest = {STDIN: b"", STDOUT: b"", STDERR: b""}

    @property
    def pending(self) -> int:
        """Bytes of lines held (until :meth:`take`)."""
        return self._pending

    def _ensure_header(self) -> None:
        if not self._header:
            self._header = True
            width, height = self._size or (DEFAULT_WIDTH, DEFAULT_HEIGHT)
            line = header_line(width, height, self._timestamp, self._env, self._title)
            self._pieces.insert(0, line.encode("utf-8"))

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
        rest = self._rest[channel]
        if rest:
            data = rest + data
        # the incremental decoder's own step, without its copy of every piece
        text, used = _utf8_decode(data, "replace", False)
        self._rest[channel] = bytes(data[used:]) if used < len(data) else b""
        if text:
            self._event(code, text)

    def _event(self, code: bytes, text: str) -> None:
        start = b"[%.6f,%b" % (self._clock() - self._start, code)
        string = _string(text)
        self._pieces += (start, string, b"]\n")
        self._pending += len(start) + len(string) + 2

    def _resize(self, data: bytes) -> None:
        size = parse_resize(data)
        if size is None:
            return
        if not self._header and self._size is None:
            self._size = size
            return
        line = b'[%.6f,"r","%dx%d"]\n' % (self._clock() - self._start, *size)
        self._pieces.append(line)
        self._pending += len(line)

    def finish(self) -> None:
        """The session ended: what the decoders hold (an incomplete character) goes out."""
        for channel, rest in self._rest.items():
            if rest:
                self._rest[channel] = b""
                text = rest.decode("utf-8", "replace")
                self._event(b'"i",' if channel == STDIN else b'"o",', text)

    def take(self) -> bytes:
        """The lines so far (the header first, at the latest now), as UTF-8."""
        self._ensure_header()
        lines = b"".join(self._pieces)
        self._pieces.clear()
        self._pending = 0
        return lines

    def write_to(self, write: Callable[[list[bytes]], int]) -> None:
        """Hand the lines so far to ``write`` (``os.writev`` of a file: the
        count written), at most :data:`MAX_PIECES` pieces a call, until all are
        written, without joining them first; what ``write`` raises propagates
        (the lines are then dropped)."""
        self._ensure_header()
        pieces = self._pieces
        self._pieces = []
        self._pending = 0
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
    "MAX_PIECES",
    "AsciicastEncoder",
    "header_line",
    "parse_resize",
]
