"""Whether the clusters directory could be read, from one reload to the next.

A reload that cannot list the directory, or cannot read a cluster file in
it, keeps the last good definitions (:class:`~karpor.config.directory.DirectoryLoader`)
and is tried again at every poll until everything reads.  :class:`Readability`
(sans-IO) decides what each load reports, so that a failure is told once per
change of state, not once per poll: the lines of what cannot be read when it
first cannot (errors), the other problems as usual but not again while
something cannot be read, the recovery once; and the line
``/healthz?verbose`` shows while something cannot be read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from karpor.config.clusters import Problem

#: how many unreadable paths the health line names (then "and N more")
HEALTH_SHOWN = 3


@dataclass(frozen=True)
class Report:
    """What one load should log."""

    #: problem lines to log as warnings (bad documents, duplicate names…)
    warnings: tuple[str, ...] = ()
    #: what cannot be read and could at the last load: log as errors
    errors: tuple[str, ...] = ()
    #: everything reads again, after a load that could not read everything
    recovered: bool = False
    #: a retry that found what could not be read as it was, and nothing new:
    #: the reload need not be reported
    repeated: bool = False


class Readability:
    """The state of the last load: what could not be read (problem lines)."""

    def __init__(self) -> None:
        self._unreadable: tuple[str, ...] = ()
        self._logged: frozenset[str] = frozenset()
        self._lines: tuple[str, ...] = ()

    @property
    def readable(self) -> bool:
        """Whether the last load could list the directory and read every file."""
        return not self._unreadable

    @property
    def unreadable(self) -> tuple[str, ...]:
        """What the last load could not read (problem lines: path and OS error)."""
        return self._unreadable

    def update(self, unreadable: Iterable[Problem], problems: Iterable[Problem]) -> Report:
        """Take a load's ``unreadable`` problems and all its ``problems``
        (``unreadable`` among them); what to log for it."""
        now = tuple(dict.fromkeys(str(p) for p in unreadable))
        lines = tuple(dict.fromkeys(str(p) for p in problems))
        retrying = bool(self._unreadable)
        # while something cannot be read, the problems of the last load come
        # again with the last good definitions: told once is enough
        skipped = set(now) | (self._logged if retrying or now else set())
        report = Report(
            warnings=tuple(line for line in lines if line not in skipped),
            errors=tuple(line for line in now if line not in self._unreadable),
            recovered=retrying and not now,
            repeated=retrying and now == self._unreadable and lines == self._lines,
        )
        self._unreadable = now
        self._logged = frozenset(lines)
        self._lines = lines
        return report

    def health(self, serving: int) -> str:
        """The ``/healthz?verbose`` detail while something cannot be read
        (empty when everything reads); ``serving``: how many clusters serve."""
        if not self._unreadable:
            return ""
        shown = "; ".join(self._unreadable[:HEALTH_SHOWN])
        more = len(self._unreadable) - HEALTH_SHOWN
        if more > 0:
            shown += f"; and {more} more"
        return (
            f"{shown}; the last good definitions keep serving "
            f"({serving} cluster{'' if serving == 1 else 's'})"
        )
