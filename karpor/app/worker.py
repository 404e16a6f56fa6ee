"""The worker side of the process pool.

A worker process is started by the supervisor with two inherited file
descriptors: the control socket (:data:`~karpor.app.supervisor.CONTROL_FD`)
and its slot's listening socket (:data:`~karpor.app.supervisor.LISTEN_FD`).
:class:`WorkerRuntime` adopts both, serves the :class:`WorkerApp` on the
listener (making it listen first: a slot that was down gets a socket that
is only bound, so it takes connections only from here on), reports
:class:`~karpor.app.control.Ready`, and drains on
:class:`~karpor.app.control.Drain`, on SIGTERM/SIGINT, or when the
supervisor goes away; then it stops the reactor (exit 0).
:class:`WorkerService` is a worker process's top service: what the worker
serves is its child and starts first; stopping it drains.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from types import FrameType
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from karpor.app import control
from karpor.app.tree import ServiceTree
from karpor.net.listener import start_listening

log = Logger(namespace="karpor.worker")

#: the drain deadline when the supervisor did not give one (SIGTERM, lost control)
DEFAULT_DRAIN = 30.0


class WorkerApp(Protocol):
    """What a worker serves."""

    def listen(self, fd: int, family: socket.AddressFamily) -> IListeningPort:
        """Serve on the inherited listening descriptor ``fd`` (TLS included)."""

    def drain(self, deadline: float, sessions: float | None = None) -> defer.Deferred[None]:
        """Finish in-flight work (listening has stopped); fire when done.

        Long-running streams are ended cleanly within ``deadline`` seconds,
        upgraded sessions within ``sessions`` (``deadline`` when ``None``).
        Called again while draining, it only shortens the sessions' time.
        """

    def supervisor_state(self, state: dict[str, Any]) -> None:
        """Take the supervisor's latest state (for the health output)."""

    def status_report(self) -> str:
        """What this worker tells the status page (JSON text, ASCII)."""


class WorkerControl(amp.AMP):
    """The worker's end of the control connection."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        super().__init__()
        self._runtime = runtime
        self._report = ""

    @control.Drain.responder
    def drain(self, deadline: float, sessions: float | None = None) -> dict[str, Any]:
        """The supervisor asks this worker to drain and exit."""
        self._runtime.drain(deadline, sessions)
        return {}

    @control.State.responder
    def supervisor_state(self, state: str) -> dict[str, Any]:
        """The supervisor's state changed."""
        self._runtime.app.supervisor_state(json.loads(state))
        return {}

    @control.Report.responder
    def report(self, offset: int) -> dict[str, Any]:
        """A piece of this worker's status report (a fresh one at offset 0)."""
        if offset <= 0:
            self._report = self._runtime.app.status_report()
            offset = 0
        text = self._report
        return {"chunk": text[offset : offset + control.REPORT_CHUNK], "total": len(text)}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """The supervisor is gone: drain and exit."""
        super().connectionLost(reason)
        self._runtime.control_lost()


class WorkerRuntime:
    """Adopts the inherited sockets, serves, reports readiness, drains."""

    def __init__(self, reactor: Any, app: WorkerApp, generation: int, host: str) -> None:
        self.reactor = reactor
        self.app = app
        self.generation = generation
        self._family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._port: IListeningPort | None = None
        self._control: WorkerControl | None = None
        self.draining = False

    def start(self, control_fd: int, listen_fd: int) -> None:
        """Adopt the sockets (and close the inherited descriptors), then report Ready."""
        sock = socket.socket(fileno=listen_fd)
        try:
            start_listening(sock)
        finally:
            sock.detach()
        self._port = self.app.listen(listen_fd, self._family)
        os.close(listen_fd)
        self.reactor.adoptStreamConnection(
            control_fd, socket.AF_UNIX, Factory.forProtocol(self._make_control)
        )
        os.close(control_fd)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        assert self._control is not None
        self._control.callRemote(
            control.Ready, pid=os.getpid(), generation=self.generation
        ).addErrback(lambda f: log.failure("reporting ready", f))
        log.info("worker {pid} (generation {g}) serving", pid=os.getpid(), g=self.generation)

    def _make_control(self) -> WorkerControl:
        self._control = WorkerControl(self)
        return self._control

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.drain, DEFAULT_DRAIN)

    def control_lost(self) -> None:
        """The control connection dropped."""
        if not self.draining:
            log.warn("worker {pid}: supervisor gone; draining", pid=os.getpid())
            self.drain(DEFAULT_DRAIN)

    def drain(self, deadline: float, sessions: float | None = None) -> None:
        """Stop accepting, let the app finish within ``deadline`` (upgraded
        sessions within ``sessions``), stop the reactor.  Called again while
        draining, it passes a shorter sessions' time on to the app."""
        if self.draining:
            if sessions is not None:
                self.app.drain(deadline, sessions)
            return
        self.draining = True
        log.info(
            "worker {pid} draining (deadline {d:.0f}s, sessions {s:.0f}s)",
            pid=os.getpid(),
            d=deadline,
            s=deadline if sessions is None else sessions,
        )
        stopped: defer.Deferred[Any] = defer.succeed(None)
        if self._port is not None:
            stopped = defer.maybeDeferred(self._port.stopListening)
        stopped.addCallback(lambda _: self.app.drain(deadline, sessions))
        stopped.addErrback(lambda f: log.failure("while draining", f))
        stopped.addBoth(lambda _: self._stop())

    def _stop(self) -> None:
        log.info("worker {pid} drained; exiting", pid=os.getpid())
        if self.reactor.running:
            self.reactor.stop()


class WorkerService(ServiceTree):
    """A worker process's top service: its children (what the worker
    serves: the gateway) start first, then the runtime adopts the inherited
    descriptors and reports ready (:meth:`WorkerRuntime.start`).  Stopping
    it drains (:data:`DEFAULT_DRAIN`) unless it drains already: the app
    finishes in-flight work and stops, then the reactor stops."""

    name = "worker"

    def __init__(self, runtime: WorkerRuntime, control_fd: int, listen_fd: int) -> None:
        super().__init__()
        self.runtime = runtime
        self._fds = (control_fd, listen_fd)

    def startService(self) -> None:
        """Start the children, then adopt the sockets, serve, report Ready
        (if that fails, the children stop again)."""
        super().startService()
        try:
            self.runtime.start(*self._fds)
        except BaseException:
            super().stopService()
            raise

    def stopService(self) -> defer.Deferred[Any]:
        """Drain; the app stops once drained, then the reactor."""
        Service.stopService(self)
        if not self.runtime.draining:
            self.runtime.drain(DEFAULT_DRAIN)
        return defer.succeed(None)
