"""``twistd karpor`` with worker processes: the supervisor as a service.

With ``--workers N`` (N ≥ 1; the default is the number of CPUs) the twistd
process serves nothing itself: it prepares the state directory once (the CA
and serving certificate, before any worker could race to create them), then
runs a :class:`~karpor.app.supervisor.Supervisor` whose workers are
``python -m karpor.app.gatewayworker`` processes started with the same
options.  SIGHUP re-reads the ``--config`` file (the worker count and the
drain deadline may change) and rolls the workers one at a time; SIGTERM and
SIGINT drain them (twistd stops the service).

Metrics: before it starts a worker, the supervisor prepares the directory
the workers share their metric values through
(:func:`karpor.metrics.multiprocess.prepare_for`) and names it in the
environment the workers inherit; it counts worker restarts there itself
(:class:`~karpor.metrics.supervisor.SupervisorMetrics`).  With
``metricsAddress`` it serves the merged ``/metrics`` there in plain HTTP
(:mod:`karpor.metrics.listener`; a change needs a restart), and the fleet
status page (:mod:`karpor.app.statuspage`).

Limits: the supervisor creates the table of counts the workers share
(:mod:`karpor.front.limitstable`, ``limits.table`` in the metrics
directory), names it in the workers' environment, and frees an exited
worker's cell (its counts).  The table is made whether or not ``limits``
is set, so a SIGHUP may add limits to a running gateway.

With ``requestHeader.fromCluster`` the supervisor reads the host cluster's
front-proxy ConfigMap once before starting workers
(:func:`karpor.auth.frontproxysource.check`), so a failure ends the process
with its reason instead of every worker failing in turn.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from karpor.app import state, statuspage
from karpor.app.settings import Settings
from karpor.app.supervisor import Supervisor
from karpor.app.tree import Part, ServiceTree, Teardown
from karpor.auth.access import AccessError
from karpor.auth.frontproxysource import check as check_front_proxy
from karpor.front import limitstable
from karpor.metrics import listener, multiprocess
from karpor.metrics.exposition import Exposition
from karpor.metrics.supervisor import SupervisorMetrics
from karpor.net.listener import refuse_if_served

log = Logger(namespace="karpor.supervisor")


def worker_command(
    arguments: Sequence[str], python: str = sys.executable
) -> Callable[[int, int], list[str]]:
    """The argv of the worker process for ``(slot, generation)``."""

    def command(slot: int, generation: int) -> list[str]:
        return [
            python,
            "-m",
            "karpor.app.gatewayworker",
            "--slot",
            str(slot),
            "--generation",
            str(generation),
            "--",
            *arguments,
        ]

    return command


class _WorkerEvents:
    """The supervisor's metrics, and an exited worker's limit counts freed."""

    def __init__(self, metrics: SupervisorMetrics, table: limitstable.CountTable | None) -> None:
        self._metrics = metrics
        self._table = table

    def worker_restarted(self) -> None:
        """A worker died unexpectedly and is being replaced."""
        self._metrics.worker_restarted()

    def rolled(self) -> None:
        """A rolling restart began."""
        self._metrics.rolled()

    def worker_gone(self, pid: int) -> None:
        """Worker ``pid`` exited: its live gauges and its limit counts no longer count."""
        self._metrics.worker_gone(pid)
        if self._table is not None:
            self._table.release_pid(pid)


class ProcessPoolService(ServiceTree):
    """The supervisor of the gateway's worker processes, a
    :class:`~karpor.app.tree.ServiceTree` of parts started in the order of
    :attr:`PARTS` and stopped in reverse: ``state`` (the state directory,
    the front-proxy check and the workers' metrics directory),
    ``supervisor`` (the worker slots: draining them is what stopping waits
    for), ``metrics-listener`` (``metricsAddress``), ``serving``
    (``gateway.json``) and ``sighup`` (the rolling restart's signal
    handler).  Once every worker has drained the process exits 0 and a
    temporary metrics directory is removed."""

    #: the parts, in start order
    PARTS = ("state", "supervisor", "metrics-listener", "serving", "sighup")

    def __init__(
        self,
        settings: Settings,
        worker_arguments: Sequence[str],
        reload_settings: Callable[[], Settings],
        reactor: Any = None,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor  # noqa: PLC0415

            reactor = default_reactor
        self.settings = settings
        self.reactor = reactor
        self._arguments = list(worker_arguments)
        self._reload_settings = reload_settings
        self.supervisor: Supervisor | None = None
        self._state: state.GatewayState | None = None
        #: the workers' shared metrics directory, and whether it is temporary
        self.metrics_dir: Path | None = None
        #: the limits' counts the workers share (:mod:`karpor.front.limitstable`)
        self.limits_table: limitstable.CountTable | None = None
        self._metrics_temporary = False
        starts: dict[str, Callable[[], Teardown | None]] = {
            "state": self._open_state,
            "supervisor": self._start_supervisor,
            "metrics-listener": self._serve_metrics,
            "serving": self._record,
            "sighup": self._handle_hup,
        }
        for name in self.PARTS:
            Part(name, starts[name]).setServiceParent(self)

    def _open_state(self) -> None:
        """``state``: refuse a port another gateway serves (before anything is
        written), prepare the state directory once (before any worker could
        race to), check ``requestHeader.fromCluster`` once (rather than in
        every worker), prepare the workers' metrics directory."""
        settings = self.settings
        refuse_if_served(settings.host, settings.port)
        prepared = self._state = state.prepare_for(settings, log)
        try:
            check_front_proxy(settings.authentication)
        except AccessError as exc:
            raise SystemExit(f"karpor: {exc}") from None
        # before the supervisor copies the environment its workers inherit
        self.metrics_dir = multiprocess.prepare_for(prepared.directory, prepared.read_only)
        self._metrics_temporary = prepared.read_only
        multiprocess.use(self.metrics_dir)
        path = str(self.metrics_dir / limitstable.FILENAME)
        self.limits_table = limitstable.CountTable.create(path, max(settings.workers, 1))
        os.environ[limitstable.ENV] = path

    def _start_supervisor(self) -> Teardown:
        """``supervisor``: open the slots' sockets and start the workers;
        on stop, drain them."""
        settings = self.settings
        supervisor = self.supervisor = Supervisor(
            self.reactor,
            settings.host,
            settings.port,
            settings.workers,
            worker_command(self._arguments),
            drain_timeout=settings.drain_timeout,
            session_drain_timeout=settings.session_drain_timeout,
            metrics=_WorkerEvents(SupervisorMetrics(str(self.metrics_dir)), self.limits_table),
        )
        supervisor.startService()
        return supervisor.stopService

    def _serve_metrics(self) -> Teardown | None:
        """``metrics-listener``: every worker's metrics at ``metricsAddress``,
        and the status page."""
        address, supervisor = self.settings.metrics_address, self.supervisor
        if address is None:
            return None
        assert supervisor is not None
        view = Exposition(directory=str(self.metrics_dir), registry=None, clusters=None)
        page = statuspage.for_supervisor(
            self.reactor,
            view.collect,
            supervisor,
            self._state.directory if self._state is not None else None,
        )
        port = listener.listen(self.reactor, address, view.render, page.resource)
        page.start()

        def stop() -> Any:
            page.stop()
            return port.stopListening()

        return stop

    def _record(self) -> None:
        """``serving``: ``gateway.json`` names the clusters directory and the URL."""
        settings, prepared, supervisor = self.settings, self._state, self.supervisor
        assert settings.clusters_dir is not None
        assert prepared is not None and supervisor is not None
        prepared.record(
            state.GatewayRecord(
                state.absolute(settings.clusters_dir),
                state.default_server(settings.host, supervisor.port),
                settings.host_routing.suffix,
            )
        )

    def _handle_hup(self) -> Teardown:
        """``sighup``: SIGHUP rolls the workers (:meth:`reload`)."""
        previous = signal.signal(signal.SIGHUP, self._on_hup)

        def restore() -> None:
            if previous is not None:
                signal.signal(signal.SIGHUP, previous)

        return restore

    def _on_hup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self) -> defer.Deferred[None]:
        """Re-read the settings and roll the workers one at a time."""
        supervisor = self.supervisor
        if supervisor is None:
            return defer.succeed(None)
        try:
            new = self._reload_settings()
        except usage.UsageError as exc:
            log.error("SIGHUP: settings not reloaded ({why}); rolling with the old ones", why=exc)
            new = self.settings
        if (new.host, new.port) != (self.settings.host, self.settings.port):
            log.warn(
                "SIGHUP: host/port changes need a restart; still serving {host}:{port}",
                host=self.settings.host,
                port=self.settings.port,
            )
            new = dataclasses.replace(new, host=self.settings.host, port=self.settings.port)
        self.settings = new
        supervisor.drain_timeout = new.drain_timeout
        supervisor.session_drain_timeout = new.session_drain_timeout
        log.info("SIGHUP: rolling restart of the workers (pid {pid})", pid=os.getpid())
        d = supervisor.roll()
        if new.workers != supervisor.workers:
            d.addCallback(lambda _: supervisor.resize(new.workers))
        return d

    def stopService(self) -> defer.Deferred[Any]:
        """Stop the parts in reverse; once every worker has drained, exit 0."""
        d = super().stopService()
        if self.supervisor is not None:
            d.addCallback(self._clean_exit)
        return d

    def _clean_exit(self, _: object) -> None:
        # Every worker drained: exit 0, not with the signal that asked us to
        # stop (twistd re-raises it after the reactor stops, from this
        # reactor attribute).  Supervisors (systemd, the kubelet) see a clean stop.
        if hasattr(self.reactor, "_exitSignal"):
            self.reactor._exitSignal = None
        if self.metrics_dir is not None:
            multiprocess.remove_temporary(self.metrics_dir, self._metrics_temporary)
