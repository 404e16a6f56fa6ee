"""A gateway worker process: ``python -m karpor.app.gatewayworker``.

Started by the supervisor (:mod:`karpor.app.supervisor`) with its slot's
listening socket and a control socket inherited as file descriptors, and the
``twistd karpor`` options the supervisor was given.  It builds the gateway
in-process and adopts the socket: its top service is a
:class:`~karpor.app.worker.WorkerService` whose child is the
:class:`~karpor.app.service.GatewayService` (without a listener of its
own); it serves the gateway on the inherited socket until told to drain.  Each worker loads and
watches the clusters directory itself: nothing is shared on the request
path but its metric values, written to the directory the supervisor names
in its environment (``PROMETHEUS_MULTIPROC_DIR``,
:mod:`karpor.metrics.multiprocess`), so any worker's ``/metrics`` shows
every worker's.  Its log lines leave out
Twisted's own chatter (:func:`karpor.app.logs.start_logging`).  Its
event loop is :class:`karpor.net.reactor.GatewayReactor` (Twisted's stock
epoll reactor with ``tlsImplementation: twisted``, or where the installed
Twisted lacks what it needs: :mod:`karpor.net.implementation`).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage

from karpor.app.logs import start_logging
from karpor.app.service import GatewayService, Options
from karpor.app.supervisor import CONTROL_FD, LISTEN_FD
from karpor.app.worker import WorkerRuntime, WorkerService
from karpor.net import implementation
from karpor.net import reactor as event_loop

log = Logger(namespace="karpor.worker")


class GatewayWorkerApp:
    """The :class:`~karpor.app.worker.WorkerApp` of a gateway worker."""

    def __init__(self, service: GatewayService) -> None:
        self.service = service

    def listen(self, fd: int, family: socket.AddressFamily) -> IListeningPort:
        """The gateway's TLS port on the inherited descriptor."""
        return self.service.listen_adopted(fd, family)

    def drain(self, deadline: float, sessions: float | None = None) -> defer.Deferred[None]:
        """Drain the gateway, then stop its service (called again: only
        shortens the upgraded sessions' time)."""
        if self.service.health.draining:
            self.service.drain(deadline, sessions)
            return defer.succeed(None)
        d = self.service.drain(deadline, sessions)
        d.addBoth(lambda _: self.service.stopService())
        return d

    def supervisor_state(self, state: dict[str, Any]) -> None:
        """Shown in the health output (``/healthz?verbose``)."""
        self.service.health.supervisor = state

    def status_report(self) -> str:
        """What this worker knows of its clusters (the status page)."""
        return self.service.status_report().to_text()


def parse(argv: Sequence[str]) -> tuple[int, int, Options]:
    """``--slot S --generation G -- <twistd karpor options>``."""
    parser = argparse.ArgumentParser(prog="karpor-worker")
    parser.add_argument("--slot", type=int, required=True)
    parser.add_argument("--generation", type=int, required=True)
    parser.add_argument("options", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    rest = list(args.options)
    if rest[:1] == ["--"]:
        rest = rest[1:]
    options = Options()
    options.parseOptions(rest)
    return args.slot, args.generation, options


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker until it has drained."""
    try:
        slot, generation, options = parse(sys.argv[1:] if argv is None else argv)
    except usage.UsageError as exc:
        print(f"karpor worker: {exc}", file=sys.stderr)
        return 2
    # the supervisor warned of any fallback already
    choice = implementation.select(options.settings.tls_implementation, warn=False)
    reactor = event_loop.install(choice.gateway_reactor)
    start_logging(options.settings.log_format, f"worker-{slot}")
    # the supervisor serves metricsAddress; a worker serves its own listener only
    settings = dataclasses.replace(options.settings, workers=0, metrics_address=None)
    service = GatewayService(settings, reactor, listen=False)
    service.worker_slot = (slot, max(1, options.settings.workers, slot + 1))
    service.health.worker = f"pid {os.getpid()} generation {generation}"
    runtime = WorkerRuntime(reactor, GatewayWorkerApp(service), generation, settings.host)
    worker = WorkerService(runtime, CONTROL_FD, LISTEN_FD)
    service.setServiceParent(worker)

    def start() -> None:
        try:
            worker.startService()
        except BaseException:
            log.failure("worker {pid} failed to start", pid=os.getpid())
            reactor.stop()
            return
        # what start-up built (modules, the configuration, contexts) lives
        # as long as the worker: keep the collector from scanning it again
        # and again while requests churn short-lived objects
        gc.freeze()

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
