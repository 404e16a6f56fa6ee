"""What a reload reports while the clusters directory cannot be read: once per change."""

from __future__ import annotations

from karpor.config.clusters import Problem
from karpor.config.readability import Readability, Report

LISTING = Problem("/c", 0, "", "cannot list: Too many open files", None)
FILE = Problem("/c/a.yaml", 0, "", "cannot read: Permission denied", None)
BAD = Problem("/c/b.yaml", 1, "spec", "bad", ())


def test_a_failure_is_told_once_and_the_recovery_once() -> None:
    r = Readability()
    assert r.update((), (BAD,)) == Report(warnings=(str(BAD),))
    assert (r.readable, r.health(2)) == (True, "")
    # the listing fails: one error; the problems it repeats are not warned again
    first = r.update((LISTING,), (LISTING, BAD))
    assert first == Report(errors=(str(LISTING),))
    assert not r.readable
    assert r.health(2) == (
        "/c: cannot list: Too many open files; the last good definitions keep serving (2 clusters)"
    )
    # retried at every poll: nothing to tell
    assert r.update((LISTING,), (LISTING, BAD)) == Report(repeated=True)
    assert r.update((LISTING,), (LISTING, BAD)) == Report(repeated=True)
    # another failure joins: told; a new problem: told
    other = Problem("/c/c.yaml", 2, "", "new", ())
    assert r.update((LISTING, FILE), (LISTING, FILE, BAD, other)) == Report(
        warnings=(str(other),), errors=(str(FILE),)
    )
    assert r.health(1).endswith("(1 cluster)")
    # everything reads again
    assert r.update((), (BAD,)) == Report(recovered=True)
    assert (r.readable, r.health(2)) == (True, "")
    assert r.update((), (BAD,)) == Report(warnings=(str(BAD),))


def test_the_health_line_is_bounded() -> None:
    r = Readability()
    many = [
        Problem(f"/c/{i}.yaml", 0, "", "cannot read: Input/output error", None) for i in range(9)
    ]
    r.update(many, many)
    line = r.health(9)
    assert line.count("cannot read") == 3
    assert "; and 6 more; the last good definitions keep serving (9 clusters)" in line
