"""The status page's periodic driver and the workers' reports read in pieces
(karpor.status.sampler, karpor.app.supervisor, karpor.app.worker)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from karpor.app import control
from karpor.app.supervisor import _ask_report
from karpor.app.worker import WorkerControl
from karpor.status.board import StatusBoard
from karpor.status.clusters import ClusterInfo, WorkerReport
from karpor.status.gateway import GatewayFacts
from karpor.status.sampler import StatusSampler


def test_one_observation_per_round_and_none_doubled() -> None:
    clock = Clock()
    board = StatusBoard()
    pending: list[defer.Deferred[Sequence[WorkerReport]]] = []

    def reports() -> defer.Deferred[Sequence[WorkerReport]]:
        d: defer.Deferred[Sequence[WorkerReport]] = defer.Deferred()
        pending.append(d)
        return d

    sampler = StatusSampler(
        clock, board, lambda: [], reports, lambda: GatewayFacts(pid=1), now=clock.seconds
    )
    sampler.start()
    assert len(pending) == 1
    clock.advance(5)  # the first round still waits for a worker: not doubled
    assert len(pending) == 1
    pending[0].callback([WorkerReport(clusters=[ClusterInfo(name="a")])])
    assert [c.name for c in board.fleet.clusters] == ["a"]
    clock.advance(5)
    assert len(pending) == 2
    pending[1].errback(RuntimeError("worker gone"))  # logged, the next round runs
    clock.advance(5)
    assert len(pending) == 3
    sampler.stop()


class _App:
    def __init__(self, text: str) -> None:
        self.text = text
        self.asked = 0

    def status_report(self) -> str:
        self.asked += 1
        return self.text


class _Runtime:
    def __init__(self, app: _App) -> None:
        self.app = app


class _Loop:
    """``callRemote`` straight into a worker's responder."""

    def __init__(self, worker: WorkerControl) -> None:
        self.worker = worker

    def callRemote(self, command: Any, **kw: Any) -> defer.Deferred[dict[str, Any]]:
        assert command is control.Report
        return defer.succeed(self.worker.report(**kw))


def test_a_long_report_is_read_in_pieces_from_one_snapshot() -> None:
    text = "x" * (control.REPORT_CHUNK * 2 + 7)
    app = _App(text)
    worker = WorkerControl(_Runtime(app))  # type: ignore[arg-type]
    d = defer.ensureDeferred(_ask_report(_Loop(worker)))  # type: ignore[arg-type]
    assert d.result == text
    assert app.asked == 1  # later pieces read the same report
