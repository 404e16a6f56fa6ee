"""The supervisor: the ``twistd`` process of a multi-worker gateway.

It opens one ``SO_REUSEPORT`` listening socket per worker slot (see
:mod:`karpor.net.listener`), starts one worker process per slot (each slot
a :class:`Slot` service, a child of the :class:`Supervisor`), and:

* refuses to start when anything already listens on the address
  (:func:`~karpor.net.listener.refuse_if_served`): ``SO_REUSEPORT`` would
  otherwise let a second gateway share the port with the first;
* replaces a worker that dies at once (the slot's socket stays open in the
  supervisor, so connections queued meanwhile wait for the replacement instead
  of being reset); a worker that keeps dying young is restarted with an
  exponential back-off and reported as a crash loop;
* while a slot is in that back-off its socket is closed, so the kernel sends
  new connections to the live slots only (the few connections queued on it
  at that moment are reset: the price of a crash loop, taken instead of
  leaving the slot to swallow a share of every new connection); the next
  worker of the slot gets a fresh socket that is bound but not listening,
  and listens once it serves (:class:`~karpor.app.worker.WorkerRuntime`);
* on :meth:`roll` (SIGHUP) replaces the workers one slot at a time: the new
  worker adopts the same socket, and only once it is serving is its
  predecessor told to drain — no connection is refused or reset; the old
  worker's upgraded sessions (exec, attach, port-forward) run on until they
  end or ``session_drain_timeout`` (one hour by default) passes;
* on stop (SIGTERM / SIGINT) tells every worker to drain: stop accepting,
  finish in-flight requests, end long-running streams (sessions included,
  also those of workers draining after a roll) at the drain deadline, exit
  0; stragglers are killed after the deadline and a grace period.

Every change is logged, and the state (pids, generations, restarts) is pushed
to the workers for their health output.  The request path is entirely in the
workers: nothing is shared between them but the metrics directory
(:mod:`karpor.metrics.multiprocess`), where the supervisor counts restarts
and removes each exited worker's live gauges (``metrics``), and the limits'
table of counts in it (:mod:`karpor.front.limitstable`), whose cell of an
exited worker ``metrics.worker_gone`` frees.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet import defer, error
from twisted.internet.interfaces import IProcessTransport
from twisted.internet.protocol import Factory, ProcessProtocol, connectionDone
from twisted.logger import Logger
from twisted.protocols import amp
from twisted.python.failure import Failure

from karpor.app import control
from karpor.app.tree import ServiceTree
from karpor.net.listener import open_listener, refuse_if_served

#: file descriptors of a worker process: the control socket and the listener
CONTROL_FD = 3
LISTEN_FD = 4

log = Logger(namespace="karpor.supervisor")

#: (slot, generation) -> argv of a worker process
WorkerCommand = Callable[[int, int], Sequence[str]]


class PoolMetrics(Protocol):
    """What the supervisor records (:class:`karpor.metrics.supervisor.SupervisorMetrics`)."""

    def worker_restarted(self) -> None:
        """A worker died unexpectedly and is being replaced."""

    def rolled(self) -> None:
        """A rolling restart began."""

    def worker_gone(self, pid: int) -> None:
        """Worker ``pid`` exited."""


@dataclass(eq=False)
class Worker:
    """One worker process as the supervisor tracks it."""

    slot: int
    generation: int
    started: float
    process: IProcessTransport | None = None
    control: SupervisorControl | None = None
    state: str = "starting"  # starting, ready, draining, exited
    ready: defer.Deferred[None] = field(default_factory=defer.Deferred)
    ended: defer.Deferred[None] = field(default_factory=defer.Deferred)
    kill_call: Any = None
    #: seconds its upgraded sessions were given when it was told to drain
    sessions: float | None = None
    #: the process id (kept after the process ended, for the logs)
    pid: int | None = None
    #: the slot service it was started for
    home: Slot | None = None


class SupervisorControl(amp.AMP):
    """The supervisor's end of one worker's control connection."""

    def __init__(self, supervisor: Supervisor, worker: Worker) -> None:
        super().__init__()
        self._supervisor = supervisor
        self._worker = worker

    def makeConnection(self, transport: Any) -> None:
        """Connect without AMP's own log line (the worker's start is logged)."""
        amp.BinaryBoxProtocol.makeConnection(self, transport)

    def connectionMade(self) -> None:
        """Remember the connection on the worker."""
        super().connectionMade()
        self._worker.control = self

    @control.Ready.responder
    def ready(self, pid: int, generation: int) -> dict[str, Any]:
        """The worker serves."""
        self._supervisor._worker_ready(self._worker)
        return {}

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Forget the connection (without AMP's own log line)."""
        amp.BinaryBoxProtocol.connectionLost(self, reason)
        self.transport = None
        self._worker.control = None


class _WorkerProcess(ProcessProtocol):
    def __init__(self, supervisor: Supervisor, worker: Worker) -> None:
        self._supervisor = supervisor
        self._worker = worker

    def processEnded(self, reason: Failure) -> None:
        self._supervisor._worker_exited(self._worker, reason)


def describe_exit(reason: Failure) -> str:
    """``exit status N`` or ``killed by signal N`` for a process-ended reason."""
    value = reason.value
    sig = getattr(value, "signal", None)
    if sig:
        return f"killed by signal {sig}"
    return f"exit status {getattr(value, 'exitCode', None)}"


class Slot(Service):
    """One worker slot, a child service of the :class:`Supervisor`: its
    ``SO_REUSEPORT`` socket and its current worker.

    Started, it opens its socket (unless the supervisor opened it already)
    and starts a worker; a current worker that dies is replaced, with a
    back-off (and the socket closed meanwhile) while it crash-loops.
    Stopped, it tells its worker to drain (every worker of the slot when
    the supervisor stops, those draining after a roll included) and closes
    its socket once they have exited.
    """

    def __init__(self, supervisor: Supervisor, index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.name = f"slot-{index}"
        #: ``None`` while the slot is down (crash-loop back-off)
        self.socket: socket.socket | None = None
        self.current: Worker | None = None
        #: deaths in a row of young workers
        self.failures = 0
        #: workers of the slot that died and were replaced
        self.restarts = 0

    def startService(self) -> None:
        """Open the socket (if not yet open) and start the slot's worker."""
        super().startService()
        if self.socket is None:
            self.socket = open_listener(self.supervisor.host, self.supervisor.port)
        self.current = self.supervisor._spawn(self)

    def stopService(self) -> defer.Deferred[Any]:
        """Drain the slot's worker(s); close the socket once they have exited."""
        super().stopService()
        supervisor = self.supervisor
        if supervisor._stopping:
            workers = [w for w in supervisor._live() if w.home is self]
        else:
            workers = [w for w in (self.current,) if w is not None and w.state != "exited"]
        self.current = None
        ended = [w.ended for w in workers]
        for worker in workers:
            supervisor._drain(worker)
        d: defer.Deferred[Any] = defer.DeferredList(ended, consumeErrors=True)
        d.addCallback(self._close)
        return d

    def _close(self, _: object) -> None:
        sock, self.socket = self.socket, None
        if sock is not None:
            sock.close()

    def listening_socket(self) -> socket.socket:
        """The socket a new worker of the slot adopts; after a crash loop a
        fresh one that takes connections only once its worker listens on it
        (when it serves)."""
        if self.socket is None:
            self.socket = open_listener(self.supervisor.host, self.supervisor.port, listen=False)
        return self.socket

    def close_down(self) -> None:
        """Stop a down slot's socket from taking connections nobody would accept."""
        if self.socket is None:
            return
        self._close(None)
        log.warn(
            "slot {slot} is down: its socket is closed until a worker serves it", slot=self.index
        )


class Supervisor(ServiceTree):
    """Runs and supervises the worker processes of the gateway: a
    :class:`~karpor.app.tree.ServiceTree` of one :class:`Slot` per worker."""

    #: a worker that dies sooner than this after starting counts toward a crash loop
    min_uptime = 5.0
    #: back-off cap between restarts of a crash-looping slot
    max_backoff = 30.0
    #: after the drain deadline, how long a worker gets to exit before SIGKILL
    kill_grace = 5.0

    def __init__(
        self,
        reactor: Any,
        host: str,
        port: int,
        workers: int,
        command: WorkerCommand,
        *,
        drain_timeout: float = 30.0,
        session_drain_timeout: float = 3600.0,
        ready_timeout: float = 30.0,
        env: dict[str, str] | None = None,
        metrics: PoolMetrics | None = None,
    ) -> None:
        self._reactor = reactor
        self._metrics = metrics
        self.host = host
        self.port = port
        self.workers = workers
        self._command = command
        self.drain_timeout = drain_timeout
        #: how long a worker replaced by a roll keeps its upgraded sessions
        self.session_drain_timeout = session_drain_timeout
        self.ready_timeout = ready_timeout
        super().__init__()
        self._env = dict(os.environ if env is None else env)
        #: the slots, in order (children of this service)
        self._slots: list[Slot] = []
        self._all: set[Worker] = set()
        self._restarts = 0
        self._generation = 0
        self._rolls = 0
        self._stopping = False
        self._rolling: defer.Deferred[None] | None = None
        self._roll_again = False

    # -- lifecycle ---------------------------------------------------------

    def startService(self) -> None:
        """Open the slots' listening sockets, then start the slots (their workers)."""
        refuse_if_served(self.host, self.port)
        first = open_listener(self.host, self.port)
        self.port = first.getsockname()[1]
        self._slots = [Slot(self, index) for index in range(self.workers)]
        self._slots[0].socket = first
        for slot in self._slots[1:]:
            slot.socket = open_listener(self.host, self.port)
        log.info(
            "supervisor {pid} listening on {host}:{port} with {n} worker(s)",
            pid=os.getpid(),
            host=self.host,
            port=self.port,
            n=self.workers,
        )
        for slot in self._slots:
            slot.setServiceParent(self)
        super().startService()

    def stopService(self) -> defer.Deferred[Any]:
        """Drain every worker (the slots stop), then close the sockets."""
        self._stopping = True
        log.info(
            "supervisor stopping: draining {n} worker(s) (deadline {d:.0f}s)",
            n=len(self._live()),
            d=self.drain_timeout,
        )
        # workers of slots a resize removed may still be draining: waited for too
        removed = [w.ended for w in self._live() if w.home not in self._slots]
        d: defer.Deferred[Any] = defer.DeferredList(
            [super().stopService(), *removed], consumeErrors=True
        )

        def closed(_: object) -> None:
            log.info("supervisor stopped")

        d.addCallback(closed)
        return d

    def resize(self, workers: int) -> None:
        """Serve with ``workers`` slots: new slots start at once; surplus
        slots stop (their workers drain, and their sockets close once they
        have exited)."""
        if workers == self.workers or self._stopping or workers < 1:
            return
        log.info("worker count {old} -> {new}", old=self.workers, new=workers)
        while len(self._slots) < workers:
            slot = Slot(self, len(self._slots))
            self._slots.append(slot)
            slot.setServiceParent(self)
        for slot in self._slots[workers:]:
            slot.disownServiceParent()
        del self._slots[workers:]
        self.workers = workers
        self._publish()

    def roll(self) -> defer.Deferred[None]:
        """Rolling restart: replace the workers one slot at a time."""
        if self._rolling is not None:
            self._roll_again = True
            return self._rolling
        self._rolling = defer.ensureDeferred(self._roll())
        return self._rolling

    async def _roll(self) -> None:
        try:
            while True:
                self._roll_again = False
                self._rolls += 1
                if self._metrics is not None:
                    self._metrics.rolled()
                log.info("rolling restart {n} of {w} worker(s)", n=self._rolls, w=self.workers)
                for slot in list(self._slots):
                    if self._stopping:
                        return
                    if not slot.running:
                        continue  # removed by a resize meanwhile
                    old = slot.current
                    new = self._spawn(slot)
                    try:
                        await new.ready
                    except Exception as exc:
                        log.error(
                            "rolling restart aborted: the new worker for slot {slot} did not "
                            "start ({why}); the old one keeps serving",
                            slot=slot.index,
                            why=str(exc),
                        )
                        return
                    slot.current = new
                    if old is not None and old.state != "exited":
                        self._drain(old, self.session_drain_timeout)
                    self._publish()
                if not self._roll_again:
                    return
        finally:
            self._rolling = None

    # -- workers -------------------------------------------------------------

    def _live(self) -> list[Worker]:
        return [w for w in self._all if w.state != "exited"]

    def _spawn(self, slot: Slot) -> Worker:
        self._generation += 1
        worker = Worker(
            slot=slot.index, generation=self._generation, started=time.monotonic(), home=slot
        )
        sock = slot.listening_socket()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        devnull = os.open(os.devnull, os.O_RDONLY)
        try:
            argv = list(self._command(slot.index, worker.generation))
            worker.process = self._reactor.spawnProcess(
                _WorkerProcess(self, worker),
                argv[0],
                argv,
                env=self._env,
                childFDs={
                    0: devnull,
                    1: 1,
                    2: 2,
                    CONTROL_FD: child.fileno(),
                    LISTEN_FD: sock.fileno(),
                },
            )
            worker.pid = worker.process.pid if worker.process is not None else None
            self._reactor.adoptStreamConnection(
                parent.fileno(),
                socket.AF_UNIX,
                Factory.forProtocol(lambda: SupervisorControl(self, worker)),
            )
        finally:
            os.close(devnull)
            parent.close()
            child.close()
        self._all.add(worker)
        log.info(
            "worker started: slot {slot} pid {pid} generation {gen}",
            slot=slot.index,
            pid=worker.pid,
            gen=worker.generation,
        )
        worker.kill_call = self._reactor.callLater(
            self.ready_timeout, self._not_ready_in_time, worker
        )
        return worker

    def _not_ready_in_time(self, worker: Worker) -> None:
        worker.kill_call = None
        if worker.state == "starting":
            log.error(
                "worker pid {pid} (slot {slot}) not ready within {t:.0f}s: killing it",
                pid=worker.pid,
                slot=worker.slot,
                t=self.ready_timeout,
            )
            self._kill(worker)

    def _worker_ready(self, worker: Worker) -> None:
        if worker.kill_call is not None and worker.kill_call.active():
            worker.kill_call.cancel()
        worker.kill_call = None
        if worker.state != "starting":
            return
        worker.state = "ready"
        log.info(
            "worker ready: slot {slot} pid {pid} generation {gen}",
            slot=worker.slot,
            pid=worker.pid,
            gen=worker.generation,
        )
        self._reactor.callLater(self.min_uptime, self._uptime_reached, worker)
        worker.ready.callback(None)
        self._publish()

    def _uptime_reached(self, worker: Worker) -> None:
        if worker.state == "ready" and worker.home is not None:
            worker.home.failures = 0

    def _drain(self, worker: Worker, sessions: float | None = None) -> None:
        """Tell ``worker`` to drain: its streams end at the drain deadline, its
        upgraded sessions after ``sessions`` seconds (the drain deadline when
        ``None``).  A worker already draining is told again only to shorten
        its sessions' time (a stop during a roll)."""
        if sessions is None:
            sessions = self.drain_timeout
        if worker.state == "exited":
            return
        if worker.state == "draining":
            if worker.sessions is None or sessions >= worker.sessions:
                return
        else:
            worker.state = "draining"
            log.info(
                "worker draining: slot {slot} pid {pid} generation {gen}",
                slot=worker.slot,
                pid=worker.pid,
                gen=worker.generation,
            )
        worker.sessions = sessions
        if worker.control is not None:
            worker.control.callRemote(
                control.Drain, deadline=self.drain_timeout, sessions=sessions
            ).addErrback(lambda _: None)
        elif worker.process is not None:
            # not connected yet (or any more): SIGTERM asks it to drain too
            self._signal(worker, "TERM")
        if worker.kill_call is not None and worker.kill_call.active():
            worker.kill_call.cancel()
        worker.kill_call = self._reactor.callLater(
            max(self.drain_timeout, sessions) + self.kill_grace, self._kill, worker
        )

    def _signal(self, worker: Worker, name: str) -> None:
        if worker.process is None:
            return
        with contextlib.suppress(error.ProcessExitedAlready, OSError):
            worker.process.signalProcess(name)

    def _kill(self, worker: Worker) -> None:
        worker.kill_call = None
        if worker.state != "exited":
            log.warn("killing worker pid {pid} (slot {slot})", pid=worker.pid, slot=worker.slot)
            self._signal(worker, "KILL")

    def _worker_exited(self, worker: Worker, reason: Failure) -> None:
        was = worker.state
        pid = worker.pid
        worker.state = "exited"
        self._all.discard(worker)
        if worker.kill_call is not None and worker.kill_call.active():
            worker.kill_call.cancel()
        worker.kill_call = None
        status = describe_exit(reason)
        expected = was == "draining"
        (log.info if expected else log.error)(
            "worker exited: slot {slot} pid {pid} generation {gen}: {status}{note}",
            slot=worker.slot,
            pid=pid,
            gen=worker.generation,
            status=status,
            note="" if expected else " (unexpected)",
        )
        if not worker.ready.called:
            worker.ready.errback(RuntimeError(f"worker {status} before it was ready"))
            worker.ready.addErrback(lambda _: None)
        if self._metrics is not None and pid is not None:
            self._metrics.worker_gone(pid)
        worker.ended.callback(None)
        slot = worker.home
        if self._stopping or slot is None or slot.current is not worker:
            self._publish()
            return
        # The slot's current worker died: replace it (its socket stays open).
        self._restarts += 1
        slot.restarts += 1
        if self._metrics is not None:
            self._metrics.worker_restarted()
        young = time.monotonic() - worker.started < self.min_uptime
        failures = slot.failures = slot.failures + 1 if young else 0
        delay = 0.0
        if failures > 1:
            delay = min(0.5 * 2 ** (failures - 2), self.max_backoff)
            log.error(
                "crash loop: slot {slot} failed {n} times in a row; next start in {d:.1f}s",
                slot=worker.slot,
                n=failures,
                d=delay,
            )
            slot.close_down()
        self._reactor.callLater(delay, self._replace, slot, worker)

    def _replace(self, slot: Slot, dead: Worker) -> None:
        if self._stopping or not slot.running or slot.current is not dead:
            return
        slot.current = self._spawn(slot)
        self._publish()

    # -- state -------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """The supervisor's state: what operators see in logs and health output."""
        return {
            "pid": os.getpid(),
            "port": self.port,
            "workers": [
                {
                    "slot": w.slot,
                    "pid": w.pid,
                    "generation": w.generation,
                    "state": w.state,
                    "current": w.home is not None and w.home.current is w,
                    "restarts": w.home.restarts if w.home is not None else 0,
                }
                for w in sorted(self._all, key=lambda w: (w.slot, w.generation))
            ],
            "restarts": self._restarts,
            "rolls": self._rolls,
            "generation": self._generation,
            "crashLooping": [slot.index for slot in self._slots if slot.failures > 1],
        }

    def worker_reports(self) -> defer.Deferred[list[str]]:
        """The status reports of the serving workers (JSON texts,
        :class:`~karpor.app.control.Report`); a worker that does not answer
        is left out."""
        asks = [
            defer.ensureDeferred(_ask_report(w.control))
            for w in sorted(self._live(), key=lambda w: (w.slot, w.generation))
            if w.control is not None and w.state == "ready"
        ]
        d: defer.Deferred[Any] = defer.DeferredList(asks, consumeErrors=True)
        d.addCallback(lambda results: [text for ok, text in results if ok])
        return d

    def _publish(self) -> None:
        text = json.dumps(self.state())
        for worker in self._live():
            if worker.control is not None and worker.state == "ready":
                worker.control.callRemote(control.State, state=text)


#: the most pieces a worker's status report is read in (a bound on its size)
MAX_REPORT_PIECES = 64


async def _ask_report(worker: amp.AMP) -> str:
    """A worker's whole status report, read piece by piece."""
    pieces: list[str] = []
    offset = 0
    while len(pieces) < MAX_REPORT_PIECES:
        answer = await worker.callRemote(control.Report, offset=offset)
        chunk: str = answer["chunk"]
        pieces.append(chunk)
        offset += len(chunk)
        if not chunk or offset >= answer["total"]:
            break
    return "".join(pieces)


__all__ = ["CONTROL_FD", "LISTEN_FD", "Slot", "Supervisor", "Worker", "describe_exit"]
