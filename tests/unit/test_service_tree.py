"""Service trees: start in the order children were added, stop in reverse,
and a child that fails to start stops what already started."""

from __future__ import annotations

import dataclasses
import io
import signal
from pathlib import Path
from typing import Any, cast

import pytest
from prometheus_client import values
from support.prometheus import close_value_files
from twisted.application.service import IService, Service
from twisted.internet import defer
from twisted.internet.error import CannotListenError, ProcessDone
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure

from karpor.app import processes
from karpor.app.demo import make_demo_service
from karpor.app.processes import ProcessPoolService
from karpor.app.service import GatewayService, resolve_settings
from karpor.app.settings import Settings
from karpor.app.supervisor import Supervisor
from karpor.app.tree import Part, PeriodicCall, ServiceTree
from karpor.app.worker import WorkerRuntime, WorkerService
from karpor.auth.sections import AuditLogSettings
from karpor.metrics import multiprocess
from karpor.net.tlstransport import TLSPort

CLUSTER = """\
apiVersion: cluster.karpor.io/v1beta1
kind: Cluster
metadata: {name: one}
spec:
  access:
    endpoint: https://127.0.0.1:6443
    insecure: true
    credential: {type: ServiceAccountToken, serviceAccountToken: tok-secret}
"""


class Recorder(Service):
    """Records its start and stop in a shared list; may fail or stop slowly."""

    def __init__(
        self,
        name: str,
        events: list[str],
        fail: bool = False,
        stopped: defer.Deferred[None] | None = None,
    ) -> None:
        self.name = name
        self.events = events
        self.fail = fail
        self.stopped = stopped

    def startService(self) -> None:
        if self.fail:
            raise SystemExit(f"{self.name} cannot start")
        super().startService()
        self.events.append(f"start {self.name}")

    def stopService(self) -> defer.Deferred[None] | None:
        super().stopService()
        self.events.append(f"stop {self.name}")
        return self.stopped


def record(tree: ServiceTree, events: list[str]) -> None:
    """Make every child of ``tree`` note its start and stop in ``events``."""
    for child in tree:
        start, stop = child.startService, child.stopService

        def started(child: IService = child, start: Any = start) -> None:
            start()
            events.append(f"start {child.name}")

        def stopping(child: IService = child, stop: Any = stop) -> Any:
            events.append(f"stop {child.name}")
            return stop()

        child.startService = started
        child.stopService = stopping


def test_children_start_in_order_and_stop_in_reverse_waiting_for_each():
    events: list[str] = []
    slow: defer.Deferred[None] = defer.Deferred()
    tree = ServiceTree()
    children = (Recorder("a", events), Recorder("b", events, stopped=slow), Recorder("c", events))
    for child in children:
        child.setServiceParent(tree)
    tree.startService()
    assert events == ["start a", "start b", "start c"]
    done = tree.stopService()
    assert events[3:] == ["stop c", "stop b", "stop a"]
    assert not done.called  # b still stopping
    slow.callback(None)
    assert done.called


def test_a_child_that_fails_to_start_stops_the_ones_started_before_it():
    events: list[str] = []
    tree = ServiceTree()
    for child in (
        Recorder("a", events),
        Recorder("b", events),
        Recorder("c", events, fail=True),
        Recorder("d", events),
    ):
        child.setServiceParent(tree)
    with pytest.raises(SystemExit, match="c cannot start"):
        tree.startService()
    assert events == ["start a", "start b", "stop b", "stop a"]
    assert not tree.running and not any(child.running for child in tree)


def test_a_part_runs_its_teardown_once():
    calls: list[str] = []
    part = Part("p", lambda: lambda: calls.append("down"))
    part.startService()
    part.stopService()
    part.stopService()
    assert calls == ["down"] and part.name == "p"


def test_a_periodic_call_first_calls_one_interval_after_its_start():
    clock = MemoryReactorClock()
    calls: list[float] = []
    periodic = PeriodicCall(clock, 0.5, lambda: calls.append(clock.seconds()))
    periodic.startService()
    assert calls == []
    clock.advance(0.5)
    clock.advance(0.5)
    periodic.stopService()
    clock.advance(5)
    assert calls == [0.5, 1.0] and not clock.getDelayedCalls()


# -- the gateway ------------------------------------------------------------------


@pytest.fixture
def gateway_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    (clusters / "one.yaml").write_text(CLUSTER)

    def listen(reactor: Any, port: int, factory: Any, context: Any, interface: str = "") -> Any:
        return reactor.listenTCP(port, factory, interface=interface)

    monkeypatch.setattr(TLSPort, "listen", listen)
    settings = resolve_settings(
        None,
        {"clusters_dir": str(clusters), "state_dir": str(tmp_path / "state"), "port": "9443"},
        demo=False,
    )
    return dataclasses.replace(settings, audit_log=AuditLogSettings(str(tmp_path / "audit.log")))


def test_the_gateway_starts_its_parts_in_order_and_stops_them_in_reverse(gateway_settings):
    reactor = MemoryReactorClock()
    gateway = GatewayService(gateway_settings, reactor=reactor)
    assert [child.name for child in gateway] == list(GatewayService.PARTS)
    events: list[str] = []
    record(gateway, events)
    gateway.startService()
    parts = list(GatewayService.PARTS)
    assert events == [f"start {name}" for name in parts]
    assert gateway.serving is not None and gateway.prober is not None
    assert gateway.audit is not None
    assert reactor.tcpServers and reactor.getDelayedCalls()  # listening; timers running
    gateway.stopService()
    assert events[len(parts) :] == [f"stop {name}" for name in reversed(parts)]
    assert gateway.prober is None and gateway.audit is None
    assert not reactor.getDelayedCalls()  # no timer left: probes, polls, samples


def test_a_worker_gateway_has_no_listener(gateway_settings):
    gateway = GatewayService(gateway_settings, reactor=MemoryReactorClock(), listen=False)
    assert [child.name for child in gateway] == [
        name for name in GatewayService.PARTS if name != "listener"
    ]


def test_a_port_that_cannot_be_bound_stops_what_already_started(gateway_settings, monkeypatch):
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise CannotListenError("127.0.0.1", 9443, OSError(98, "Address already in use"))

    monkeypatch.setattr(TLSPort, "listen", refuse)
    reactor = MemoryReactorClock()
    gateway = GatewayService(gateway_settings, reactor=reactor)
    events: list[str] = []
    record(gateway, events)
    refused = r"cannot listen on 127\.0\.0\.1:9443: Address already in use"
    with pytest.raises(SystemExit, match=refused):
        gateway.startService()
    before = list(GatewayService.PARTS)[: GatewayService.PARTS.index("listener")]
    assert events == [
        *(f"start {name}" for name in before),
        *(f"stop {name}" for name in reversed(before)),
    ]
    assert not any(child.running for child in gateway)
    assert gateway.audit is None and gateway.prober is None and gateway.serving is None
    assert not reactor.getDelayedCalls()  # the watcher, the prober, the timers: all stopped


# -- the supervisor ---------------------------------------------------------------


class FakeSupervisor(Service):
    """Stands in for the worker slots: stopping waits for :attr:`drained`."""

    def __init__(self, reactor: Any, host: str, port: int, workers: int, *a: Any, **k: Any):
        self.port = 8443
        self.workers = workers
        self.drained: defer.Deferred[None] = defer.Deferred()

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return self.drained


def test_the_supervisor_exits_cleanly_once_its_workers_drained(gateway_settings, monkeypatch):
    monkeypatch.setattr(processes, "Supervisor", FakeSupervisor)
    monkeypatch.setattr(processes, "refuse_if_served", lambda host, port: None)
    # the supervisor names its metrics directory in the environment: restored after
    monkeypatch.setenv(multiprocess.ENV, "")
    monkeypatch.delenv(multiprocess.ENV)
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    previous = signal.getsignal(signal.SIGHUP)
    reactor = MemoryReactorClock()
    reactor._exitSignal = signal.SIGTERM  # type: ignore[attr-defined]
    settings = dataclasses.replace(gateway_settings, workers=2, audit_log=None)
    pool = ProcessPoolService(settings, [], lambda: settings, reactor=reactor)
    assert [child.name for child in pool] == list(ProcessPoolService.PARTS)
    events: list[str] = []
    record(pool, events)
    pool.startService()
    assert events == [f"start {name}" for name in ProcessPoolService.PARTS]
    assert signal.getsignal(signal.SIGHUP) != previous
    supervisor = pool.supervisor
    assert isinstance(supervisor, FakeSupervisor) and supervisor.running
    done = pool.stopService()
    assert events[len(ProcessPoolService.PARTS) :] == [
        f"stop {name}" for name in reversed(ProcessPoolService.PARTS)
    ]
    assert signal.getsignal(signal.SIGHUP) == previous
    assert not done.called and reactor._exitSignal == signal.SIGTERM
    supervisor.drained.callback(None)
    assert done.called and reactor._exitSignal is None
    close_value_files()


# -- the worker slots -------------------------------------------------------------


class FakeProcess:
    """A worker process as the supervisor sees it: signals are recorded."""

    def __init__(self, protocol: Any, pid: int, signals: list[tuple[int, str]]) -> None:
        self.protocol = protocol
        self.pid = pid
        self._signals = signals

    def signalProcess(self, name: str) -> None:
        self._signals.append((self.pid, name))

    def end(self) -> None:
        self.protocol.processEnded(Failure(ProcessDone(0)))


class ProcessReactor(MemoryReactorClock):
    """A memory reactor that "starts" processes."""

    def __init__(self) -> None:
        super().__init__()
        self.processes: list[FakeProcess] = []
        self.signals: list[tuple[int, str]] = []

    def spawnProcess(self, protocol: Any, executable: str, args: Any, **kw: Any) -> FakeProcess:
        process = FakeProcess(protocol, 100 + len(self.processes), self.signals)
        self.processes.append(process)
        return process


def test_the_supervisor_is_a_tree_of_worker_slots():
    reactor = ProcessReactor()
    supervisor = Supervisor(reactor, "127.0.0.1", 0, 2, lambda slot, gen: ["w", str(slot)])
    supervisor.startService()
    try:
        assert [slot.name for slot in supervisor] == ["slot-0", "slot-1"]
        assert [w["slot"] for w in supervisor.state()["workers"]] == [0, 1]
        supervisor.resize(3)
        assert [slot.name for slot in supervisor] == ["slot-0", "slot-1", "slot-2"]
        assert [p.pid for p in reactor.processes] == [100, 101, 102]
    finally:
        done = supervisor.stopService()
    # the last slot is told first; each worker is asked to drain (SIGTERM: no control yet)
    assert reactor.signals == [(102, "TERM"), (101, "TERM"), (100, "TERM")]
    assert not done.called
    assert all(slot.socket is not None for slot in supervisor)
    for process in reactor.processes:
        process.end()
    assert done.called  # every worker exited: the sockets are closed
    assert all(slot.socket is None for slot in supervisor)


def test_a_slot_removed_by_a_resize_drains_its_worker_and_then_closes_its_socket():
    reactor = ProcessReactor()
    supervisor = Supervisor(reactor, "127.0.0.1", 0, 2, lambda slot, gen: ["w", str(slot)])
    supervisor.startService()
    [first, second] = list(supervisor)
    supervisor.resize(1)
    assert list(supervisor) == [first] and not second.running
    assert reactor.signals == [(101, "TERM")]
    assert second.socket is not None  # until its worker has exited
    reactor.processes[1].end()
    assert second.socket is None and first.socket is not None
    reactor.processes[0].end()  # the current worker dies: the slot starts another
    reactor.advance(0)
    assert len(reactor.processes) == 3 and first.current is not None
    assert first.current.pid == 102
    done = supervisor.stopService()
    reactor.processes[2].end()
    assert done.called and first.socket is None


# -- the worker and the demo ------------------------------------------------------


class FakeRuntime:
    """Stands in for the worker runtime: records its start and drain."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.draining = False

    def start(self, control_fd: int, listen_fd: int) -> None:
        self.events.append(f"runtime start {control_fd} {listen_fd}")

    def drain(self, deadline: float, sessions: float | None = None) -> None:
        self.draining = True
        self.events.append(f"runtime drain {deadline:.0f}")


def test_a_worker_serves_once_its_gateway_started_and_stopping_it_drains(gateway_settings):
    events: list[str] = []
    gateway = GatewayService(gateway_settings, reactor=MemoryReactorClock(), listen=False)
    worker = WorkerService(cast(WorkerRuntime, FakeRuntime(events)), 3, 4)
    gateway.setServiceParent(worker)
    record(gateway, events)
    worker.startService()
    assert events[-2:] == ["start serving", "runtime start 3 4"]
    worker.stopService()
    assert events[-1] == "runtime drain 30"
    assert gateway.running  # until drained: the app stops it then


def test_a_worker_whose_gateway_fails_to_start_never_reports_ready(gateway_settings):
    events: list[str] = []
    settings = dataclasses.replace(
        gateway_settings, audit_log=AuditLogSettings("/nonexistent/dir/audit.log")
    )
    gateway = GatewayService(settings, reactor=MemoryReactorClock(), listen=False)
    worker = WorkerService(cast(WorkerRuntime, FakeRuntime(events)), 3, 4)
    gateway.setServiceParent(worker)
    with pytest.raises(SystemExit, match="auditLog"):
        worker.startService()
    assert events == [] and not any(child.running for child in gateway)


def test_the_demo_starts_the_clusters_their_files_the_gateway_then_the_kubeconfig(
    tmp_path, monkeypatch
):
    def listen(reactor: Any, port: int, factory: Any, context: Any, interface: str = "") -> Any:
        return reactor.listenTCP(port, factory, interface=interface)

    monkeypatch.setattr(TLSPort, "listen", listen)
    out = io.StringIO()
    settings = resolve_settings(None, {"port": "9443"}, demo=True, cwd=str(tmp_path))
    demo = cast(ServiceTree, make_demo_service(settings, reactor=MemoryReactorClock(), out=out))
    names = [type(child).__name__ for child in demo]
    assert names == [
        "SimulatedCluster",
        "SimulatedCluster",
        "ClusterFilesService",
        "GatewayService",
        "AdminKubeconfig",
    ]
    demo.startService()
    try:
        assert "--context sim-1 get pods -A" in out.getvalue()
        assert (tmp_path / "karpor-demo" / "admin.kubeconfig").exists()
        clusters = tmp_path / "karpor-demo" / "clusters"
        assert sorted(p.name for p in clusters.glob("*.yaml")) == ["sim-1.yaml", "sim-2.yaml"]
    finally:
        demo.stopService()
