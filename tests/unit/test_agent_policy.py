"""The agent's dialling policy (sans-IO): jittered back-off, worker coverage."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.agent.policy import MAX_DUPLICATES_FACTOR, Backoff, Coverage


@given(st.integers(min_value=0, max_value=80), st.randoms(use_true_random=False))
def test_backoff_grows_within_its_cap(failures: int, rng: random.Random) -> None:
    backoff = Backoff(base=0.25, cap=30.0, uniform=rng.uniform)
    delays = [backoff.next_delay() for _ in range(failures + 1)]
    for n, delay in enumerate(delays):
        ceiling = min(30.0, 0.25 * 2**n)
        assert ceiling / 2 <= delay <= ceiling
    backoff.reset()
    assert backoff.next_delay() <= 0.25


def test_backoff_needs_sane_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(base=0, cap=1)
    with pytest.raises(ValueError):
        Backoff(base=2, cap=1)


@given(
    st.integers(min_value=1, max_value=16),
    st.randoms(use_true_random=False),
)
def test_coverage_dials_until_every_worker_has_one_tunnel(workers: int, rng: random.Random) -> None:
    """Whatever worker the kernel hands each connection to, the agent ends
    with exactly one kept tunnel per worker, never more under way than missing."""
    coverage = Coverage()
    kept: list[int] = []
    for _ in range(10_000):
        if coverage.complete:
            break
        if coverage.stalled():
            coverage.retry()  # the back-off elapsed
        wanted = coverage.wanted()
        assert wanted >= 0
        for _ in range(wanted):
            coverage.dialled()
        assert coverage.dialling <= max(1, workers)
        if coverage.dialling == 0:
            continue
        worker = rng.randrange(workers)
        if coverage.switched(worker, workers):
            kept.append(worker)
    assert coverage.complete
    assert sorted(kept) == list(range(workers))
    assert coverage.wanted() == 0


def test_duplicates_in_a_row_stall_until_retried() -> None:
    coverage = Coverage()
    coverage.dialled()
    assert coverage.switched(0, 2)
    for _ in range(MAX_DUPLICATES_FACTOR * 2):
        coverage.dialled()
        assert not coverage.switched(0, 2)
    assert coverage.stalled() and coverage.wanted() == 0
    coverage.retry()
    assert coverage.wanted() == 1


def test_a_lost_tunnel_is_dialled_again() -> None:
    coverage = Coverage()
    coverage.dialled()
    assert coverage.switched(0, 1)
    assert coverage.wanted() == 0
    coverage.lost(0)
    assert coverage.wanted() == 1


def test_a_new_worker_count_is_followed() -> None:
    coverage = Coverage()
    coverage.dialled()
    assert coverage.switched(3, 4)
    coverage.dialled()
    assert coverage.switched(0, 2)  # the gateway restarted with 2 workers
    assert coverage.covered == {0}
    assert coverage.wanted() == 1


def test_before_any_answer_one_connection_at_a_time() -> None:
    coverage = Coverage()
    assert coverage.wanted() == 1
    coverage.dialled()
    assert coverage.wanted() == 0
    coverage.failed()
    assert coverage.wanted() == 1
