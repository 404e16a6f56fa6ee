"""Ages and timestamps as kube-apiserver's table printers write them.

:func:`human_duration` is ``k8s.io/apimachinery/pkg/util/duration.HumanDuration``
(the ``AGE`` column of ``kubectl get``); :func:`age` is the printers'
``translateTimestampSince`` (``<unknown>`` for a missing timestamp).
"""

from __future__ import annotations

import calendar
import re
import time

_SECOND = 1_000_000_000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))$"
)


def human_duration(seconds: float) -> str:
    """Format a duration like Go's ``duration.HumanDuration``.

    It keeps two to three significant figures: ``45s``, ``2m5s``, ``12m``,
    ``5h3m``, ``20h``, ``3d4h``, ``30d``, ``2y15d``, ``9y``.  A small negative
    duration (clock skew under two seconds) prints ``0s``; a larger one
    ``<invalid>``.
    """
    nanos = int(seconds * _SECOND)
    whole_seconds = int(seconds)  # truncates toward zero, like Go's int()
    if whole_seconds < -1:
        return "<invalid>"
    if whole_seconds < 0:
        return "0s"
    if whole_seconds < 60 * 2:
        return f"{whole_seconds}s"
    minutes = nanos // _MINUTE
    if minutes < 10:
        s = (nanos // _SECOND) % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = nanos // _HOUR
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if dy == 0 else f"{years}y{dy}d"
    return f"{hours // 24 // 365}y"


def parse_timestamp(text: str) -> float:
    """Parse an RFC 3339 timestamp (``metav1.Time`` or ``MicroTime``) to epoch seconds.

    Raises :class:`ValueError` for anything else.
    """
    match = _RFC3339.match(text)
    if match is None:
        raise ValueError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(match.group(i)) for i in range(1, 7))
    fraction = float(match.group(7)) if match.group(7) else 0.0
    epoch = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    if match.group(9):
        offset = int(match.group(10)) * 3600 + int(match.group(11)) * 60
        epoch -= offset if match.group(9) == "+" else -offset
    return epoch + fraction


def format_timestamp(epoch: float) -> str:
    """Format epoch seconds as kube does for ``metav1.Time``: UTC, second precision."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(epoch)))


def format_micro_timestamp(epoch: float) -> str:
    """Format epoch seconds as kube does for ``metav1.MicroTime`` (microseconds)."""
    whole = int(epoch)
    micros = round((epoch - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micros:06d}Z"


def age(timestamp: str | None, now: float) -> str:
    """The age of ``timestamp`` at ``now``, as the ``AGE`` column shows it.

    ``<unknown>`` when the timestamp is missing or unparsable (kube's
    ``translateTimestampSince`` of a zero time).
    """
    if not timestamp:
        return "<unknown>"
    try:
        then = parse_timestamp(timestamp)
    except ValueError:
        return "<unknown>"
    return human_duration(now - then)
