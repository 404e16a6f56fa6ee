"""``hyperframe``'s frame ``repr`` without hex-dumping whole payloads.

``h2`` logs every frame it receives with ``logger.trace("Received frame:
%s", repr(frame))``: the ``repr`` is built even though nothing logs it, and
a DATA frame's ``repr`` hex-encodes its whole payload
(``hyperframe.frame._raw_data_repr``) only to keep the first 20 hex
digits.  On an agent's tunnel carrying an exec session (64 KiB frames)
that was an eighth of the gateway's CPU.  :func:`install` replaces that
function with one that encodes the first 10 bytes only: the same text.
"""

from __future__ import annotations

import binascii

import hyperframe.frame

#: the payload bytes the ``repr`` shows (20 hex digits)
_SHOWN = 10


def raw_data_repr(data: bytes | None) -> str:
    """What ``hyperframe.frame._raw_data_repr`` returns, from the first
    :data:`_SHOWN` bytes only."""
    if not data:
        return "None"
    shown = binascii.hexlify(data[:_SHOWN]).decode("ascii")
    if len(data) > _SHOWN:
        shown += "..."
    return "<hex:" + shown + ">"


def install() -> None:
    """Use :func:`raw_data_repr` in ``hyperframe`` (idempotent)."""
    if getattr(hyperframe.frame, "_raw_data_repr", None) is not raw_data_repr:
        hyperframe.frame._raw_data_repr = raw_data_repr


__all__ = ["install", "raw_data_repr"]
