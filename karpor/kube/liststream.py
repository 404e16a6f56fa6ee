"""A Kubernetes list (or Table) response read as it arrives, one element at a time (sans-IO).

A fan-out request merges many clusters' lists into one without holding
any of them whole: :class:`ListStream` is fed a JSON list response in
pieces of any size (:meth:`ListStream.feed`) and hands back each element
of its array (``items`` of a ``*List``, ``rows`` of a ``Table``) as soon as
it is complete, decoded (and, if asked, its JSON text as it came:
:attr:`ListStream.texts`, so a merge may pass it on without encoding it
again); the other top-level fields (``kind``,
``apiVersion``, ``metadata``, a Table's ``columnDefinitions``) are kept in
:attr:`ListStream.fields` as they are read.

Memory is bounded by the largest element (plus a read's worth of bytes):
:data:`MAX_PENDING` characters may wait for an element, or for one of the
other fields, to complete; past it the stream is refused (:class:`ListError`).
Elements are decoded by the standard library's C decoder
(:meth:`json.JSONDecoder.raw_decode`), the structure around them by a few
regular expressions: no Python loop runs per character.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from typing import Any

#: the most characters that may wait for one element (or field) to complete
MAX_PENDING = 32 << 20

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
#: the C scanner behind ``raw_decode`` (without its Python frame; it raises
#: StopIteration or JSONDecodeError where raw_decode raises the latter)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]
#: a comma between elements, with the whitespace around it, and another element in view
_COMMA = re.compile(r"[ \t\n\r]*,[ \t\n\r]*(?=[^ \t\n\r\]])")

# states
_START = 0  # before the object's "{"
_KEY = 1  # before a key (or the closing "}")
_COLON = 2  # after a key
_VALUE = 3  # before a value
_ARRAY = 4  # inside the array: before an element (or "]")
_ARRAY_NEXT = 5  # inside the array: after an element
_NEXT = 6  # after a value: "," or "}"
_DONE = 7  # after the closing "}"


class ListError(ValueError):
    """The response is not a JSON list of the expected shape (or too large a piece)."""


class ListStream:
    """One list response, parsed as it arrives (see the module docstring).

    ``array`` names the streamed array: ``items`` (a ``*List``) or ``rows``
    (a ``Table``).
    """

    def __init__(self, array: str = "items", keep_text: bool = False) -> None:
        self.array = array
        #: with ``keep_text``: the JSON text of each element the last
        #: :meth:`feed` returned, in order (else always empty)
        self.texts: list[str] = []
        self._keep_text = keep_text
        #: the top-level fields read so far, but the array
        self.fields: dict[str, Any] = {}
        #: whether the array was seen (a list without one has no elements)
        self.seen_array = False
        self._state = _START
        self._key = ""
        self._buffer = ""
        self._pos = 0
        self._utf8 = codecs.getincrementaldecoder("utf-8")()

    @property
    def done(self) -> bool:
        """Whether the whole object was read."""
        return self._state == _DONE

    def feed(self, data: bytes) -> list[Any]:
        """Read ``data``; return the array's elements it completed, in order."""
        try:
            text = self._utf8.decode(data)
        except UnicodeDecodeError:
            raise ListError("the response is not UTF-8") from None
        if self._pos:
            self._buffer = self._buffer[self._pos :] + text
            self._pos = 0
        else:
            self._buffer += text
        out: list[Any] = []
        if self._keep_text:
            self.texts = []
        self._run(out)
        if len(self._buffer) - self._pos > MAX_PENDING:
            raise ListError(
                f"an element or field of the list is larger than {MAX_PENDING} characters"
            )
        return out

    def end(self) -> None:
        """The response ended: raise :class:`ListError` unless it was one whole object."""
        try:
            self._utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            raise ListError("the response is not UTF-8") from None
        if self._state != _DONE:
            raise ListError("the list response ended early")

    def _run(self, out: list[Any]) -> None:
        buf = self._buffer
        pos = self._pos
        end = len(buf)
        state = self._state
        while True:
            pos = _WS.match(buf, pos).end()  # type: ignore[union-attr]
            if pos >= end:
                break
            ch = buf[pos]
            if state == _ARRAY or (state == _VALUE and self._key == self.array and ch != "["):
                if state == _ARRAY and ch == "]":
                    pos += 1
                    state = _NEXT
                    continue
                if state == _VALUE:
                    raise ListError(f"{self.array} is not a list")
                # the elements one after another, each "," (and the
                # whitespace around it) in one match: most of a list
                texts = self.texts if self._keep_text else None
                wait = False
                while True:
                    try:
                        element, after = _SCAN(buf, pos)
                    except (StopIteration, json.JSONDecodeError):
                        if value_end(buf, pos) is not None:
                            raise ListError("an element of the list is not JSON") from None
                        wait = True  # unfinished: wait for more
                        break
                    if after >= end and isinstance(element, int | float):
                        wait = True  # a number may go on in the next piece
                        break
                    out.append(element)
                    if texts is not None:
                        texts.append(buf[pos:after])
                    pos = after
                    state = _ARRAY_NEXT
                    comma = _COMMA.match(buf, pos)
                    if comma is None:
                        break
                    pos = comma.end()
                    state = _ARRAY
                if wait:
                    break
            elif state == _ARRAY_NEXT:
                if ch == ",":
                    state = _ARRAY
                elif ch == "]":
                    state = _NEXT
                else:
                    raise ListError("the list's array is malformed")
                pos += 1
            elif state == _START:
                if ch != "{":
                    raise ListError("the response is not a JSON object")
                pos += 1
                state = _KEY
            elif state == _KEY:
                if ch == "}":
                    pos += 1
                    state = _DONE
                    continue
                if ch != '"':
                    raise ListError("the response is not a JSON object")
                key_end = value_end(buf, pos)
                if key_end is None:
                    break
                self._key = json.loads(buf[pos:key_end])
                pos = key_end
                state = _COLON
            elif state == _COLON:
                if ch != ":":
                    raise ListError("the response is not a JSON object")
                pos += 1
                state = _VALUE
            elif state == _VALUE:
                if self._key == self.array:  # ch == "["
                    self.seen_array = True
                    pos += 1
                    state = _ARRAY
                    continue
                try:
                    value, after = _DECODER.raw_decode(buf, pos)
                except json.JSONDecodeError:
                    if value_end(buf, pos) is not None:
                        raise ListError("a field of the list is not JSON") from None
                    break
                if after >= end and isinstance(value, int | float):
                    break
                self.fields[self._key] = value
                pos = after
                state = _NEXT
            elif state == _NEXT:
                if ch == ",":
                    state = _KEY
                elif ch == "}":
                    state = _DONE
                else:
                    raise ListError("the response is not a JSON object")
                pos += 1
            else:  # _DONE
                raise ListError("data after the end of the list")
        self._pos = pos
        self._state = state


_SPECIAL = re.compile(r'["{}\[\]]')
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SCALAR = re.compile(r"[^,\]}\s]*")


def value_end(buf: str, pos: int) -> int | None:
    """Where the JSON value starting at ``buf[pos]`` ends (the index after
    it), judged by its structure only (strings skipped whole, brackets
    counted); ``None`` when the buffer ends before it does."""
    first = buf[pos]
    if first == '"':
        m = _STRING.match(buf, pos)
        return m.end() if m is not None else None
    if first not in "{[":
        end = _SCALAR.match(buf, pos).end()  # type: ignore[union-attr]
        return end if end < len(buf) else None
    depth = 0
    i = pos
    while True:
        m = _SPECIAL.search(buf, i)
        if m is None:
            return None
        c = m.group()
        if c == '"':
            string = _STRING.match(buf, m.start())
            if string is None:
                return None
            i = string.end()
            continue
        depth += 1 if c in "{[" else -1
        i = m.end()
        if depth == 0:
            return i
