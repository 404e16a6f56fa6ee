"""An HPACK encoder that indexes nothing and compresses nothing (sans-IO).

``hpack``'s :class:`~hpack.hpack.Encoder` (what ``h2`` uses) searches the
static and dynamic tables for every header, adds each new one to the
dynamic table (evicting older ones) and Huffman-codes every literal, all
in Python: on an agent's tunnel, where each request and each response is
an HTTP/2 HEADERS frame, that was the largest single cost of a small
request at both ends.  :class:`PlainEncoder` emits what is cheap to make
and to read back, all of it plain RFC 7541 that any decoder takes:

- a header equal to a static-table entry (``:method: GET``,
  ``:status: 200``, ``:scheme: https``) as that entry's index (one byte);
- any other header as a *literal without indexing* (§6.2.2), its name as a
  static-table index where the table has that name, else as a literal;
  never Huffman-coded;
- a dynamic table size update (§6.3) first, when the peer's
  ``SETTINGS_HEADER_TABLE_SIZE`` changed (nothing is ever added to the
  table, so any size is consistent).

The header block grows (no compression); on a tunnel that is a few
hundred bytes per request, against tens of microseconds of Python saved
at each end.

:class:`PlainDecoder` reads such blocks back on a fast path (no Huffman,
no dynamic table: nothing in the decoder's state changes), with the
decoder's ``max_header_list_size`` enforced as ``hpack`` does; a block
with anything else (Huffman strings, indexing, a table size update, an
index beyond the static table, a truncated block) is decoded from its
start by ``hpack`` itself, errors included.  Install both with
:func:`use_plain_hpack`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import h2.connection
from hpack.exceptions import OversizedHeaderListError
from hpack.hpack import Decoder, Encoder
from hpack.table import HeaderTable

from karpor.net import framerepr

#: exact static-table entries: their one-byte indexed representation
_INDEXED: dict[tuple[bytes, bytes], bytes] = {}
#: static-table names: the first index of each
_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _INDEXED.setdefault((_name, _value), bytes((0x80 | _index,)))
    _NAMES.setdefault(_name, _index)
del _index, _name, _value


def _integer(value: int, prefix_bits: int, first: int) -> bytes:
    """``value`` as an HPACK integer with an N-bit prefix (§5.1), the
    first byte's high bits ``first``."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((first | value,))
    out = bytearray((first | limit,))
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(data: bytes) -> bytes:
    """A string literal, not Huffman-coded (§5.2)."""
    size = len(data)
    if size < 127:
        return bytes((size,)) + data
    return _integer(size, 7, 0) + data


def encode_plain(headers: Iterable[Any]) -> bytes:
    """The header block of ``headers`` (``(name, value)`` pairs of bytes,
    pseudo-headers first), as the module docstring says."""
    indexed = _INDEXED
    names = _NAMES
    out: list[bytes] = []
    append = out.append
    for header in headers:
        name, value = header[0], header[1]
        if type(name) is not bytes:
            name = str(name).encode("utf-8")
        if type(value) is not bytes:
            value = str(value).encode("utf-8")
        hit = indexed.get((name, value))
        if hit is not None:
            append(hit)
            continue
        index = names.get(name)
        if index is None:
            append(b"\x00" + _string(name) + _string(value))
        elif index < 15:
            append(bytes((index,)) + _string(value))
        else:
            append(_integer(index, 4, 0) + _string(value))
    return b"".join(out)


class _NotPlain(Exception):
    """The block needs ``hpack``'s full decoder."""


_STATIC = HeaderTable.STATIC_TABLE
_STATIC_SIZE = len(_STATIC)


def _read_integer(data: bytes, pos: int, prefix_bits: int) -> tuple[int, int]:
    """An HPACK integer at ``data[pos]`` (§5.1) and the position after it."""
    limit = (1 << prefix_bits) - 1
    value = data[pos] & limit
    pos += 1
    if value < limit:
        return value, pos
    shift = 0
    while True:
        if pos >= len(data) or shift > 28:
            raise _NotPlain
        byte = data[pos]
        pos += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _read_string(data: bytes, pos: int) -> tuple[bytes, int]:
    if pos >= len(data):
        raise _NotPlain
    size = data[pos]
    if size & 0x80:  # Huffman-coded
        raise _NotPlain
    if size < 0x7F:
        pos += 1
    else:
        size, pos = _read_integer(data, pos, 7)
    end = pos + size
    if end > len(data):
        raise _NotPlain
    return data[pos:end], end


def decode_plain(data: bytes, limit: int) -> list[tuple[bytes, bytes]]:
    """The headers of a block made only of static-table indexes and
    literals without indexing, not Huffman-coded (what :func:`encode_plain`
    makes); raises :class:`~hpack.exceptions.OversizedHeaderListError` past
    ``limit`` (names, values and 32 bytes per header, RFC 7541 §4.1) and
    :class:`_NotPlain` at anything else."""
    out: list[tuple[bytes, bytes]] = []
    pos = 0
    size = len(data)
    total = 0
    while pos < size:
        first = data[pos]
        if first & 0x80:  # indexed (a static index is one byte)
            index = first & 0x7F
            if not 0 < index <= _STATIC_SIZE:
                raise _NotPlain
            pos += 1
            name, value = _STATIC[index - 1]
        elif first & 0xF0 == 0:  # literal without indexing
            if first < 0x0F:
                index = first
                pos += 1
            else:
                index, pos = _read_integer(data, pos, 4)
            if index == 0:
                name, pos = _read_string(data, pos)
            elif index <= _STATIC_SIZE:
                name = _STATIC[index - 1][0]
            else:
                raise _NotPlain
            value, pos = _read_string(data, pos)
        else:
            raise _NotPlain
        total += len(name) + len(value) + 32
        if total > limit:
            raise OversizedHeaderListError(f"a header list larger than {limit} bytes")
        out.append((name, value))
    return out


class PlainDecoder(Decoder):
    """``hpack``'s decoder with :func:`decode_plain` as the fast path of
    its ``decode`` (raw bytes, as ``h2`` asks)."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        """The headers of the block ``data``."""
        if raw:
            try:
                return decode_plain(data, self.max_header_list_size)
            except _NotPlain:
                pass
        return super().decode(data, raw)


class PlainEncoder(Encoder):
    """``hpack``'s encoder with :func:`encode_plain` as its ``encode``
    (``h2`` keeps setting its ``header_table_size``)."""

    def encode(self, headers: Any, huffman: bool = True) -> bytes:
        """The header block of ``headers`` (``huffman`` is ignored)."""
        block = encode_plain(headers)
        if self.header_table.resized:
            self.header_table.resized = False
            return self._encode_table_size_change() + block
        return block


def use_plain_hpack(conn: h2.connection.H2Connection) -> None:
    """Make ``conn`` encode its header blocks with a :class:`PlainEncoder`
    and decode them with a :class:`PlainDecoder` (before it sends or
    receives any), and the frames it receives cheap to ``repr``
    (:func:`karpor.net.framerepr.install`)."""
    framerepr.install()
    encoder = PlainEncoder()
    encoder.header_table_size = conn.encoder.header_table_size
    encoder.header_table.resized = False
    encoder.table_size_changes = []
    conn.encoder = encoder
    old = conn.decoder
    decoder = PlainDecoder(old.max_header_list_size)
    decoder.max_allowed_table_size = old.max_allowed_table_size
    conn.decoder = decoder


__all__ = [
    "PlainDecoder",
    "PlainEncoder",
    "decode_plain",
    "encode_plain",
    "use_plain_hpack",
]
