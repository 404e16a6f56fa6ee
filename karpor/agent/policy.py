"""The agent's dialling policy (sans-IO): back-off and worker coverage.

:class:`Backoff` is the delay before the next connection attempt after a
failure: exponential from ``base`` up to ``cap`` seconds, each delay drawn
uniformly from its upper half (jitter: agents restarted together do not
dial in step); a tunnel that switched resets it, so an agent restarted
beside a running gateway dials at once.

:class:`Coverage` is what the agent knows of one gateway address: the
gateway runs ``workers`` worker processes sharing its port
(``SO_REUSEPORT``: the kernel, not the agent, picks the worker of each
connection) and tells in each ``101`` which worker took the tunnel.  The
agent keeps exactly one tunnel per worker: :meth:`Coverage.switched` says
whether a new tunnel is kept (its worker was not covered) or closed (a
duplicate), and :meth:`Coverage.wanted` how many more connections to have
under way.  Duplicates in a row are bounded
(:data:`MAX_DUPLICATES_FACTOR` times the workers): past that the agent backs off
before trying again (a gateway whose workers do not all take connections
must not be hammered).
"""

from __future__ import annotations

import random
from collections.abc import Callable

#: Seconds of the first retry delay, and the largest one.
BACKOFF_BASE = 0.25
BACKOFF_CAP = 30.0
#: Duplicates in a row allowed per worker before backing off.
MAX_DUPLICATES_FACTOR = 8


class Backoff:
    """Jittered exponential back-off (see the module docstring)."""

    def __init__(
        self,
        base: float = BACKOFF_BASE,
        cap: float = BACKOFF_CAP,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        if not 0 < base <= cap:
            raise ValueError("need 0 < base <= cap")
        self.base = base
        self.cap = cap
        self._uniform = uniform
        self.failures = 0

    def next_delay(self) -> float:
        """The delay before the next attempt (a failure just happened)."""
        ceiling = min(self.cap, self.base * (2 ** min(self.failures, 32)))
        self.failures += 1
        return self._uniform(ceiling / 2, ceiling)

    def reset(self) -> None:
        """An attempt succeeded: the next failure starts from ``base`` again."""
        self.failures = 0


class Coverage:
    """The workers of one gateway address the agent has a tunnel to (see
    the module docstring)."""

    def __init__(self) -> None:
        #: the gateway's worker count (``None``: no ``101`` seen yet)
        self.workers: int | None = None
        self.covered: set[int] = set()
        #: connections under way (dialled, no answer yet)
        self.dialling = 0
        self.duplicates = 0

    def wanted(self) -> int:
        """How many more connections to start now."""
        if self.workers is None:
            return 1 - self.dialling if self.dialling < 1 else 0
        if self.duplicates >= MAX_DUPLICATES_FACTOR * self.workers:
            return 0
        missing = self.workers - len(self.covered)
        return max(0, missing - self.dialling)

    def dialled(self) -> None:
        """A connection was started."""
        self.dialling += 1

    def failed(self) -> None:
        """A connection under way failed before its ``101``."""
        self.dialling = max(0, self.dialling - 1)

    def switched(self, worker: int, workers: int) -> bool:
        """A connection got its ``101`` from worker ``worker`` of
        ``workers``: whether to keep it (``False``: a duplicate, close it)."""
        self.dialling = max(0, self.dialling - 1)
        if workers != self.workers:
            # the gateway was restarted with another worker count
            self.workers = workers
            self.covered = {w for w in self.covered if w < workers}
        if worker in self.covered:
            self.duplicates += 1
            return False
        self.covered.add(worker)
        self.duplicates = 0
        return True

    def lost(self, worker: int) -> None:
        """The kept tunnel of ``worker`` closed."""
        self.covered.discard(worker)

    def stalled(self) -> bool:
        """Whether too many duplicates came in a row (back off, then
        :meth:`retry`)."""
        return self.workers is not None and self.duplicates >= MAX_DUPLICATES_FACTOR * self.workers

    def retry(self) -> None:
        """After a back-off: allow duplicates again."""
        self.duplicates = 0

    @property
    def complete(self) -> bool:
        """Whether every worker has a tunnel."""
        return self.workers is not None and len(self.covered) >= self.workers
