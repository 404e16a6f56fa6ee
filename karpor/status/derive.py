"""Rates and latency quantiles from two samples of cumulative metrics (sans-IO).

A counter's increase between two samples is the difference, or, when it
went down (the metrics directory was emptied: a counter reset), its new
value, as Prometheus's ``increase()`` takes it.  A latency quantile is
Prometheus's ``histogram_quantile()`` over the bucket increases: linear
interpolation inside the bucket that holds the rank; the highest finite
bound when the rank falls in the ``+Inf`` bucket; ``None`` without
observations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from karpor.status.sample import BOUNDS, ClusterCounts

_NONE = ClusterCounts()


def increase(old: float, new: float) -> float:
    """How much a counter grew from ``old`` to ``new`` (a drop is a reset)."""
    return new - old if new >= old else new


def bucket_increase(old: Sequence[float], new: Sequence[float]) -> list[float]:
    """The increase of cumulative bucket counts (a drop in any: a reset),
    kept cumulative (never decreasing from one bucket to the next)."""
    reset = any(n < o for o, n in zip(old, new, strict=True))
    out: list[float] = []
    floor = 0.0
    for o, n in zip(old, new, strict=True):
        floor = max(floor, n if reset else n - o)
        out.append(floor)
    return out


def quantile(
    q: float, cumulative: Sequence[float], bounds: Sequence[float] = BOUNDS
) -> float | None:
    """The ``q`` quantile (0 ≤ q ≤ 1) of observations counted in cumulative
    ``buckets`` with upper ``bounds`` (``+Inf`` last); ``None`` when empty."""
    if not cumulative:
        return None
    total = cumulative[-1]
    if total <= 0:
        return None
    rank = q * total
    for i, count in enumerate(cumulative):
        if count >= rank and count > 0:
            upper = bounds[i]
            if math.isinf(upper):
                finite = [b for b in bounds if not math.isinf(b)]
                return finite[-1] if finite else None
            lower = bounds[i - 1] if i > 0 else 0.0
            below = cumulative[i - 1] if i > 0 else 0.0
            inside = count - below
            if inside <= 0:
                return upper
            return lower + (upper - lower) * (rank - below) / inside
    return None


@dataclass(frozen=True, slots=True)
class Window:
    """What a cluster did between two samples."""

    #: seconds between the samples
    seconds: float
    #: requests answered, and of those 5xx
    requests: float
    errors: float
    #: latency quantiles (seconds; ``None``: no request)
    p50: float | None
    p99: float | None

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_rate(self) -> float:
        """5xx answers per second."""
        return self.errors / self.seconds if self.seconds > 0 else 0.0

    @property
    def error_ratio(self) -> float | None:
        """The share of requests answered 5xx (``None``: no request)."""
        return self.errors / self.requests if self.requests > 0 else None


def window(old: ClusterCounts | None, new: ClusterCounts | None, seconds: float) -> Window:
    """What happened between ``old`` and ``new`` (``None``: no series yet),
    ``seconds`` apart."""
    old = old or _NONE
    new = new or _NONE
    buckets = bucket_increase(old.buckets, new.buckets)
    return Window(
        seconds=max(seconds, 0.0),
        requests=increase(old.requests, new.requests),
        errors=increase(old.errors, new.errors),
        p50=quantile(0.5, buckets),
        p99=quantile(0.99, buckets),
    )
