"""Checks an asciicast v2 recording against the format (asciinema's spec),
without asciinema: a header object with ``version`` 2, ``width`` and
``height`` (positive integers), ``timestamp`` (an integer), ``env`` (an
object of strings) and ``title`` (a string); then events, each a JSON
array ``[time, code, data]`` with ``time`` a non-negative number that never
decreases, ``code`` one of ``o``, ``i``, ``r``, ``m`` and ``data`` a
string (``WxH`` for ``r``)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_RESIZE = re.compile(r"^[1-9][0-9]*x[1-9][0-9]*$")


@dataclass
class Cast:
    """A parsed recording."""

    header: dict[str, Any]
    events: list[tuple[float, str, str]]

    def output(self) -> str:
        """Every output event's data, joined."""
        return "".join(data for _, code, data in self.events if code == "o")

    def input(self) -> str:
        """Every input event's data, joined."""
        return "".join(data for _, code, data in self.events if code == "i")

    def resizes(self) -> list[str]:
        """The resize events' sizes."""
        return [data for _, code, data in self.events if code == "r"]


def parse_cast(text: str) -> Cast:
    """The recording ``text``; raises ``AssertionError`` where it breaks the format."""
    assert text.endswith("\n"), "the last line is not complete"
    lines = text.split("\n")[:-1]
    assert lines, "no header"
    header = json.loads(lines[0])
    assert isinstance(header, dict), header
    assert header.get("version") == 2, header
    for key in ("width", "height"):
        assert isinstance(header.get(key), int) and header[key] > 0, header
    assert isinstance(header.get("timestamp"), int), header
    env = header.get("env")
    assert isinstance(env, dict) and all(isinstance(v, str) for v in env.values()), header
    assert isinstance(header.get("title"), str), header
    events: list[tuple[float, str, str]] = []
    last = 0.0
    for line in lines[1:]:
        event = json.loads(line)
        assert isinstance(event, list) and len(event) == 3, line
        time, code, data = event
        assert isinstance(time, int | float) and time >= last, line
        assert code in ("o", "i", "r", "m"), line
        assert isinstance(data, str), line
        if code == "r":
            assert _RESIZE.match(data), line
        last = float(time)
        events.append((float(time), code, data))
    return Cast(header, events)


def read_cast(path: Path) -> Cast:
    """The recording at ``path``, checked."""
    return parse_cast(path.read_text(encoding="utf-8"))
