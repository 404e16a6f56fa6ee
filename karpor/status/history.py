"""The last hour of samples, in two bounded rings (sans-IO).

A fine ring keeps every sample of the last :data:`FINE_SPAN` seconds (the
5-minute figures and charts); a coarse ring keeps one sample per
:data:`COARSE_STEP` seconds of the last :data:`COARSE_SPAN` (the 60-minute
ones).  Both are bounded by count as well as by age, so a clock that jumps
or a fast sampler cannot make them grow: at most :data:`FINE_POINTS` and
:data:`COARSE_POINTS` samples.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from karpor.status.sample import Sample

#: seconds the fine ring covers, and the longest window it answers
FINE_SPAN = 300.0
#: seconds the coarse ring covers
COARSE_SPAN = 3600.0
#: seconds between two samples of the coarse ring
COARSE_STEP = 60.0
#: the most samples each ring keeps
FINE_POINTS = 121
COARSE_POINTS = 62


class History:
    """The samples of the last hour (see the module docstring)."""

    def __init__(
        self,
        fine_span: float = FINE_SPAN,
        coarse_span: float = COARSE_SPAN,
        coarse_step: float = COARSE_STEP,
    ) -> None:
        self.fine_span = fine_span
        self.coarse_span = coarse_span
        self.coarse_step = coarse_step
        self._fine: deque[Sample] = deque(maxlen=FINE_POINTS)
        self._coarse: deque[Sample] = deque(maxlen=COARSE_POINTS)

    def add(self, sample: Sample) -> None:
        """Keep ``sample`` (the newest), dropping what is too old."""
        self._fine.append(sample)
        if not self._coarse or sample.time - self._coarse[-1].time >= self.coarse_step:
            self._coarse.append(sample)
        _trim(self._fine, sample.time - self.fine_span)
        _trim(self._coarse, sample.time - self.coarse_span)

    @property
    def latest(self) -> Sample | None:
        """The newest sample."""
        return self._fine[-1] if self._fine else None

    def __len__(self) -> int:
        return len(self._fine) + len(self._coarse)

    def window(self, seconds: float) -> list[Sample]:
        """The samples of the last ``seconds``, oldest first, ending with the
        newest (from the fine ring when it covers them, else the coarse one)."""
        latest = self.latest
        if latest is None:
            return []
        ring: Sequence[Sample] = self._fine if seconds <= self.fine_span else self._coarse
        start = latest.time - seconds
        out = [s for s in ring if s.time >= start - 1e-9]
        if not out or out[-1] is not latest:
            out.append(latest)
        return out


def _trim(ring: deque[Sample], oldest: float) -> None:
    # keep one sample at or before ``oldest``: a full window has a start
    while len(ring) > 2 and ring[1].time <= oldest:
        ring.popleft()
