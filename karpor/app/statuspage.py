"""The fleet status page assembled for the process serving ``metricsAddress``.

:class:`StatusPage` holds a :class:`~karpor.status.board.StatusBoard`, its
:class:`~karpor.status.sampler.StatusSampler` and the resource served at
the listener's other paths (:mod:`karpor.status.resource`).  Two shapes:

* :func:`for_supervisor`: the twistd process of a worker pool; the metrics
  are the merged view of the multiprocess directory, the clusters come from
  every serving worker (:meth:`karpor.app.supervisor.Supervisor.worker_reports`),
  the workers from the supervisor's state;
* :func:`in_process`: the gateway in this process (``workers: 0``, the
  demo); its own metrics and its own report.

Both read the expiry of ``serving.crt`` and ``ca.crt`` in the state directory.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer

from karpor.app.state import SERVING_CERT_FILE
from karpor.app.supervisor import Supervisor
from karpor.auth.ca import CA_CERT_FILE
from karpor.status.board import StatusBoard
from karpor.status.clusters import WorkerReport
from karpor.status.gateway import (
    CertificateExpiry,
    GatewayFacts,
    WorkerFacts,
    certificate_expiry,
    read_rss,
    workers_from_state,
)
from karpor.status.resource import StatusResource
from karpor.status.sample import MetricFamily
from karpor.status.sampler import StatusSampler


def certificates(state_dir: Path | None) -> list[CertificateExpiry]:
    """The expiry of the serving certificate and of the CA in ``state_dir``."""
    if state_dir is None:
        return []
    return [
        certificate_expiry("serving", state_dir / SERVING_CERT_FILE),
        certificate_expiry("ca", state_dir / CA_CERT_FILE),
    ]


class StatusPage:
    """The board, its sampler and its resource (start and stop the sampler)."""

    def __init__(
        self,
        reactor: Any,
        families: Callable[[], Iterable[MetricFamily]],
        reports: Callable[[], Sequence[WorkerReport] | defer.Deferred[Sequence[WorkerReport]]],
        facts: Callable[[], GatewayFacts],
    ) -> None:
        self.board = StatusBoard()
        self.sampler = StatusSampler(reactor, self.board, families, reports, facts)
        self.resource = StatusResource(self.board)

    def start(self) -> None:
        """Sample now and every few seconds."""
        self.sampler.start()

    def stop(self) -> None:
        """Stop sampling."""
        self.sampler.stop()


def for_supervisor(
    reactor: Any,
    families: Callable[[], Iterable[MetricFamily]],
    supervisor: Supervisor,
    state_dir: Path | None,
) -> StatusPage:
    """The page of a worker pool's supervisor."""

    def reports() -> defer.Deferred[Sequence[WorkerReport]]:
        d = supervisor.worker_reports()
        return d.addCallback(lambda texts: [WorkerReport.from_text(t) for t in texts])

    def facts() -> GatewayFacts:
        state = supervisor.state()
        return GatewayFacts(
            pid=os.getpid(),
            mode="supervisor",
            workers=workers_from_state(state),
            rolls=int(state.get("rolls", 0)),
            crash_looping=frozenset(state.get("crashLooping", ())),
            certificates=certificates(state_dir),
        )

    return StatusPage(reactor, families, reports, facts)


def in_process(
    reactor: Any,
    families: Callable[[], Iterable[MetricFamily]],
    report: Callable[[], WorkerReport],
    state_dir: Callable[[], Path | None],
) -> StatusPage:
    """The page of a gateway serving in this process."""

    def facts() -> GatewayFacts:
        pid = os.getpid()
        return GatewayFacts(
            pid=pid,
            mode="single",
            workers=[WorkerFacts(0, pid, 0, "in-process", 0, read_rss(pid))],
            certificates=certificates(state_dir()),
        )

    return StatusPage(reactor, families, lambda: [report()], facts)
