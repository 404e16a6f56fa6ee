"""The supervisor's own metrics (recorded in the twistd process).

The supervisor records into the same multiprocess directory as its workers
(:mod:`karpor.metrics.multiprocess`), so whichever worker answers
``/metrics`` shows them.  It also removes a dead worker's live gauges.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from karpor.metrics import multiprocess


class SupervisorMetrics:
    """What the supervisor counts; ``directory`` is the multiprocess
    directory its workers write to (``None``: none)."""

    def __init__(
        self, directory: str | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self.directory = directory
        self.restarts = Counter(
            "karpor_worker_restarts",
            "Worker processes the supervisor replaced after they died unexpectedly.",
            registry=registry,
        )
        self.rolls = Counter(
            "karpor_worker_rolling_restarts",
            "Rolling restarts of the workers (SIGHUP).",
            registry=registry,
        )

    def worker_restarted(self) -> None:
        """A worker died unexpectedly and is being replaced."""
        self.restarts.inc()

    def rolled(self) -> None:
        """A rolling restart began."""
        self.rolls.inc()

    def worker_gone(self, pid: int) -> None:
        """Worker ``pid`` exited: its live gauges no longer count."""
        if self.directory is not None:
            multiprocess.mark_dead(pid, self.directory)
