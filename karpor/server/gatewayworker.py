"""A gateway worker process: ``python -m karpor.server.gatewayworker``.

Started by the supervisor (:mod:`karpor.server.supervisor`) with its slot's
listening socket and a control socket inherited as file descriptors, and the
``twistd karpor`` options the supervisor was given.  It builds the gateway
in-process (:class:`~karpor.server.service.GatewayService`, without a
listener of its own), adopts the socket (:class:`~karpor.server.worker.WorkerRuntime`)
and serves until told to drain.  Each worker loads and watches the clusters
directory itself: nothing is shared on the request path but its metric
values, written to the directory the supervisor names in its environment
(``PROMETHEUS_MULTIPROC_DIR``, :mod:`karpor.metrics.multiprocess`), so any
worker's ``/metrics`` shows every worker's.  Its log lines leave out
Twisted's own chatter (:func:`karpor.server.logs.start_logging`).  Its
event loop is :class:`karpor.server.reactor.GatewayReactor` (Twisted's stock
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

from karpor.net import implementation
from karpor.server import reactor as event_loop
from karpor.server.logs import start_logging
from karpor.server.service import GatewayService, Options
from karpor.server.supervisor import CONTROL_FD, LISTEN_FD
from karpor.server.worker import WorkerRuntime

log = Logger(namespace="karpor.worker")


class GatewayWorkerApp:
    """The :class:`~karpor.server.worker.WorkerApp` of a gateway worker."""

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
    service.health.worker = f"pid {os.getpid()} generation {generation}"
    runtime = WorkerRuntime(reactor, GatewayWorkerApp(service), generation, settings.host)

    def start() -> None:
        try:
            service.startService()
        except BaseException:
            log.failure("worker {pid} failed to start", pid=os.getpid())
            reactor.stop()
            return
        runtime.start(CONTROL_FD, LISTEN_FD)
        # what start-up built (modules, the configuration, contexts) lives
        # as long as the worker: keep the collector from scanning it again
        # and again while requests churn short-lived objects
        gc.freeze()

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
