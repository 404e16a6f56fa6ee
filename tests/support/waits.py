"""Waiting for what a test can observe, never for a fixed time.

:func:`wait_for` polls a predicate until it holds and returns what it
returned; the timeout is a safety net for shared CI machines, never an
assertion about speed: past it the wait fails naming what it waited for.
A test that must show something did *not* happen (a broken file ignored, a
session not cut) first waits for evidence that the gateway handled the
change (its log line, a counter, a reload generation), then asserts.  For a
line a process prints, :meth:`support.procs.Process.wait_for_line` wakes at
the line itself.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

#: seconds between two looks (short: a look costs little next to a process's work)
STEP = 0.05


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    detail: Callable[[], object] | None = None,
    step: float = STEP,
) -> T:
    """What ``predicate`` returns once it is true (looked at every ``step``
    seconds); an :class:`AssertionError` naming ``what`` (and ``detail()``,
    e.g. a process's last output lines) after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > end:
            message = f"never saw {what} within {timeout:g}s"
            if detail is not None:
                message += f":\n{detail()}"
            raise AssertionError(message)
        time.sleep(step)  # the poll of this wait
