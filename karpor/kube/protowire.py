"""The protobuf wire format, both ways (sans-IO, standard library only).

Kubernetes speaks protobuf where clients ask for it (kube's own types,
OpenAPI v2 for kubectl, the self-subject reviews kubectl 1.33 sends): these
are the few pieces every such encoder and decoder here shares —
varints, field keys, length-delimited fields (:func:`delimited`,
:func:`text`) and reading a message's fields (:func:`fields`).
"""

from __future__ import annotations

_MASK64 = (1 << 64) - 1

#: wire types
VARINT = 0
FIXED64 = 1
DELIMITED = 2
FIXED32 = 5


def varint(value: int) -> bytes:
    """``value`` as a varint (a negative one as its 64-bit two's complement, as Go writes it)."""
    value &= _MASK64
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    """The key of field ``number`` with wire type ``wire``."""
    return varint(number << 3 | wire)


def delimited(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): bytes, a string or a message."""
    return key(number, DELIMITED) + varint(len(payload)) + payload


def text(number: int, value: str) -> bytes:
    """A string field, left out when empty (proto3's default)."""
    return delimited(number, value.encode()) if value else b""


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``data[at]`` and the index after it; :class:`ValueError`
    when it is cut short or longer than 64 bits."""
    value = shift = 0
    while True:
        if at >= len(data):
            raise ValueError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """``(number, wire type, value)`` of each field of a message, in order: an
    ``int`` for a varint, the bytes otherwise; :class:`ValueError` when the
    message is cut short or uses a wire type protobuf 3 does not have."""
    out: list[tuple[int, int, int | bytes]] = []
    at = 0
    end = len(data)
    while at < end:
        field_key, at = read_varint(data, at)
        number, wire = field_key >> 3, field_key & 7
        if wire == VARINT:
            value, at = read_varint(data, at)
            out.append((number, wire, value))
            continue
        if wire == DELIMITED:
            size, at = read_varint(data, at)
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if at + size > end:
            raise ValueError("truncated field")
        out.append((number, wire, data[at : at + size]))
        at += size
    return out
