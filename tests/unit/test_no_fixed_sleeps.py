"""Tests wait for what they can observe, not for a fixed time.

Every ``sleep(`` left in the tests is either the poll of a wait (a comment
saying ``the poll of this wait``) or the subject of its test (a comment
saying ``not a wait:`` and why: a client idling past a timeout the test set,
an upstream answering late, a failing client backing off).  Anything else
is a fixed delay: wait instead with :func:`support.waits.wait_for`,
:meth:`support.procs.Process.wait_for_line` or the like.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
SLEEP = re.compile(r"\bsleep\(")
MARKERS = ("the poll of this wait", "not a wait:")


def unexplained_sleeps(text: str) -> list[int]:
    """The line numbers of the ``sleep(`` calls of ``text`` that no marker
    comment explains (on the line itself or in the comment lines just above)."""
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        code = line.split("#", 1)[0]
        if not SLEEP.search(code):
            continue
        said = [line]
        above = index - 1
        while above >= 0 and lines[above].lstrip().startswith("#"):
            said.append(lines[above])
            above -= 1
        if not any(marker in part for part in said for marker in MARKERS):
            found.append(index + 1)
    return found


def test_the_check_finds_a_fixed_delay() -> None:
    assert unexplained_sleeps("x = 1\ntime.sleep(1.5)\n") == [2]
    assert unexplained_sleeps("time.sleep(1)  # settle\n") == [1]
    explained = "# not a wait: idles past the timeout\n# (two sweeps)\ntime.sleep(3)\n"
    assert unexplained_sleeps(explained) == []
    assert unexplained_sleeps("await asyncio.sleep(0.1)  # the poll of this wait\n") == []


def test_no_test_sleeps_for_a_fixed_time() -> None:
    unexplained = {
        f"{path.relative_to(TESTS)}:{line}"
        for path in TESTS.rglob("*.py")
        if path.name != Path(__file__).name
        for line in unexplained_sleeps(path.read_text())
    }
    assert not unexplained, sorted(unexplained)
