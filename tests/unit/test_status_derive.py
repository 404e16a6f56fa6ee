"""Rates and latency quantiles between two samples (karpor.status.derive)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.status.derive import bucket_increase, increase, quantile, window
from karpor.status.sample import BOUNDS, ClusterCounts

_counts = st.lists(st.integers(0, 1000), min_size=len(BOUNDS), max_size=len(BOUNDS))


def cumulative(per_bucket: list[int]) -> list[float]:
    out, total = [], 0.0
    for n in per_bucket:
        total += n
        out.append(total)
    return out


def test_increase_treats_a_drop_as_a_reset() -> None:
    assert increase(5, 8) == 3
    assert increase(8, 2) == 2  # the metrics directory was emptied: counted from 0
    assert increase(4, 4) == 0


def test_quantiles_interpolate_inside_the_bucket() -> None:
    # 10 observations in (0.1, 0.25]: the median is halfway
    per_bucket = [0] * len(BOUNDS)
    per_bucket[BOUNDS.index(0.25)] = 10
    c = cumulative(per_bucket)
    assert math.isclose(quantile(0.5, c) or 0, 0.175)
    assert math.isclose(quantile(0.99, c) or 0, 0.1 + (0.25 - 0.1) * 0.99)


def test_quantiles_of_nothing_and_of_the_inf_bucket() -> None:
    assert quantile(0.5, cumulative([0] * len(BOUNDS))) is None
    per_bucket = [0] * len(BOUNDS)
    per_bucket[-1] = 3  # slower than the last finite bound
    assert quantile(0.99, cumulative(per_bucket)) == BOUNDS[-2]


@settings(max_examples=50)
@given(_counts, st.floats(0, 1), st.floats(0, 1))
def test_quantiles_are_ordered_and_within_the_bounds(
    per_bucket: list[int], q1: float, q2: float
) -> None:
    c = cumulative(per_bucket)
    a, b = quantile(min(q1, q2), c), quantile(max(q1, q2), c)
    if c[-1] == 0:
        assert a is None and b is None
        return
    assert a is not None and b is not None
    assert 0 <= a <= b <= BOUNDS[-2]


@settings(max_examples=50)
@given(_counts, _counts)
def test_bucket_increases_are_never_negative_and_stay_cumulative(
    old: list[int], new: list[int]
) -> None:
    out = bucket_increase(cumulative(old), cumulative(new))
    assert all(x >= 0 for x in out)
    assert out == sorted(out)


@settings(max_examples=50)
@given(_counts, _counts, st.floats(0.1, 3600))
def test_a_window_of_growing_counters_counts_the_difference(
    first: list[int], more: list[int], seconds: float
) -> None:
    old_b = cumulative(first)
    new_b = [a + b for a, b in zip(old_b, cumulative(more), strict=True)]
    old = ClusterCounts(old_b[-1], 1.0, tuple(old_b))
    new = ClusterCounts(new_b[-1], 1.0 + more[-1], tuple(new_b))
    w = window(old, new, seconds)
    assert w.requests == sum(more)
    assert math.isclose(w.rate, sum(more) / seconds)
    assert w.errors == more[-1]
    assert (w.p50 is None) == (sum(more) == 0)
