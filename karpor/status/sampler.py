"""The status page's sampler: every few seconds, one observation into the board.

A thin Twisted driver of :class:`~karpor.status.board.StatusBoard`: each
round (:data:`~karpor.status.board.SAMPLE_INTERVAL` seconds) it asks the
workers for their reports (over the supervisor's control connections, or
this process's own gateway), reads the aggregated metrics (the very view
``/metrics`` renders) and the gateway's facts, and hands them to the board.
A round still waiting for a worker when the next is due is not doubled.
Nothing here touches the request path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from karpor.status.board import SAMPLE_INTERVAL, StatusBoard
from karpor.status.clusters import WorkerReport, merge
from karpor.status.gateway import GatewayFacts
from karpor.status.sample import MetricFamily, read_sample

log = Logger(namespace="karpor.status")


class StatusSampler:
    """Feeds ``board`` every ``interval`` seconds (see the module docstring).

    ``families()``: the aggregated metric families; ``reports()``: the
    workers' reports (or a Deferred of them); ``facts()``: the gateway's facts.
    """

    def __init__(
        self,
        clock: Any,
        board: StatusBoard,
        families: Callable[[], Iterable[MetricFamily]],
        reports: Callable[[], Sequence[WorkerReport] | defer.Deferred[Sequence[WorkerReport]]],
        facts: Callable[[], GatewayFacts],
        interval: float = SAMPLE_INTERVAL,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.board = board
        self._families = families
        self._reports = reports
        self._facts = facts
        self._interval = interval
        self._now = now
        self._busy = False
        self._loop = LoopingCall(self.sample)
        self._loop.clock = clock

    def start(self) -> None:
        """Sample now and every interval."""
        self._loop.start(self._interval, now=True)

    def stop(self) -> None:
        """Stop sampling."""
        if self._loop.running:
            self._loop.stop()

    def sample(self) -> defer.Deferred[None]:
        """One round (skipped while the previous one waits)."""
        if self._busy:
            return defer.succeed(None)
        self._busy = True
        d: defer.Deferred[Any] = defer.maybeDeferred(self._reports)
        d.addCallback(self._observe)
        d.addErrback(lambda f: log.failure("status page: sampling failed", f))

        def done(_: object) -> None:
            self._busy = False

        d.addBoth(done)
        return d

    def _observe(self, reports: Sequence[WorkerReport]) -> None:
        sample = read_sample(self._families(), self._now())
        self.board.observe(sample, merge(reports), self._facts())
