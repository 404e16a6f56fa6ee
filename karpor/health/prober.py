"""The health probes of one gateway process, on the reactor.

:class:`HealthProber` keeps one slot per cluster of the registry
(:meth:`HealthProber.sync`, called on start and after every reload): a
cluster added is probed at once, a removed one is forgotten (its timer and
any probe in flight cancelled), one whose endpoint, TLS or credential
changed starts over as never probed.  Each slot has either a timer or one
probe in flight, never both, so probes never pile up.  It is a
:class:`~twisted.application.service.Service` (the gateway's ``prober``
part): stopping it ends every timer and probe in flight.

A probe (:class:`~karpor.health.probe.Probe`) sends its requests one after
the other as :class:`~karpor.health.exchange.ProbeExchange`\\ s submitted
to the cluster's :class:`~karpor.upstream.pool.ClusterPool`, the path every
request takes: the pool adds the credential (an exec plugin's token from
the shared :class:`~karpor.upstream.execcredential.ExecCredentialCache`,
dropped on a 401) and carries it on its pooled connections with its TLS
options.  A timer bounds the whole probe
(``timeout``); at its end the verdict goes to ``on_change(name, status)``
(every probe: the catalog keeps the probe time; ``None`` when a changed
definition makes the cluster unknown again) and a turn to healthy or
unhealthy is logged, one line, without a secret.

:meth:`HealthProber.refusal` is what the front asks per request
(:func:`~karpor.health.probe.refusal`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karpor.config.model import Cluster
from karpor.health.exchange import ProbeExchange, probe_request
from karpor.health.probe import (
    ClusterHealth,
    ClusterStatus,
    Probe,
    ProbeSettings,
    change_line,
    refusal,
    same_access,
)
from karpor.kube.status import ApiError
from karpor.upstream.execcredential import ExecCredentialCache
from karpor.upstream.pool import UpstreamPools
from karpor.upstream.request import UNRESOLVED

log = Logger()

#: told every probe's verdict, and ``None`` when a cluster is unknown again
#: (its endpoint, TLS or credential changed)
StatusListener = Callable[[str, ClusterStatus | None], None]


def _ignore(name: str, status: ClusterStatus | None) -> None:
    pass


#: seconds between the first probes of clusters added together (1,000
#: clusters: 5 s; one cluster: probed at once)
FIRST_PROBE_SPACING = 0.005


class _Run:
    """One probe in flight."""

    __slots__ = ("deadline", "exchange", "over", "probe")

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self.deadline: IDelayedCall | None = None
        self.exchange: ProbeExchange | None = None
        self.over = False


class _Slot:
    """One cluster: its definition, its health, and its timer or probe in flight."""

    __slots__ = ("cluster", "health", "run", "timer")

    def __init__(self, cluster: Cluster, settings: ProbeSettings) -> None:
        self.cluster = cluster
        self.health = ClusterHealth(settings)
        self.timer: IDelayedCall | None = None
        self.run: _Run | None = None


class HealthProber(Service):
    """Probes every cluster of the registry (see the module docstring);
    ``exec_credentials``, when given, is handed to ``pools`` (which
    resolve the credentials).  As a service, stopping it ends every timer
    and probe in flight."""

    def __init__(
        self,
        reactor: IReactorTime,
        pools: UpstreamPools,
        settings: ProbeSettings,
        *,
        exec_credentials: ExecCredentialCache | None = None,
        on_change: StatusListener = _ignore,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._reactor = reactor
        self._pools = pools
        self.settings = settings
        if exec_credentials is not None:
            pools.use_exec_credentials(exec_credentials)
        self._on_change = on_change
        self._now = now
        self._slots: dict[str, _Slot] = {}
        self._stopped = False

    # -- what the gateway asks ------------------------------------------------

    def status(self, name: str) -> ClusterStatus | None:
        """The last verdict on cluster ``name`` (``None``: never probed, or unknown)."""
        slot = self._slots.get(name)
        return slot.health.status if slot is not None else None

    def refusal(self, cluster: Cluster) -> ApiError | None:
        """The ``Status`` a request to ``cluster`` gets at once (it is
        unhealthy and requests fail fast), or ``None`` to forward it."""
        slot = self._slots.get(cluster.name)
        if slot is None:
            return None
        if cluster.tunnel:
            tunnels = self._pools.tunnels
            if tunnels is not None and tunnels.status(cluster.name).connected:
                return None  # an agent connected since the last verdict: try it
        status = slot.health.status
        if status is None or status.healthy or not self.settings.fail_fast:
            return None
        if slot.cluster is not cluster and not same_access(slot.cluster, cluster):
            return None  # a new definition, not probed yet
        return refusal(cluster.name, status, self.settings)

    # -- the clusters -----------------------------------------------------------

    def sync(self, clusters: Mapping[str, Cluster]) -> None:
        """Probe the clusters of a (new) registry snapshot."""
        if self._stopped:
            return
        for name in [n for n in self._slots if n not in clusters]:
            # forgotten: the catalog drops a removed cluster's status itself
            self._halt(self._slots.pop(name))
        added = 0
        for name, cluster in clusters.items():
            slot = self._slots.get(name)
            if slot is None:
                slot = self._slots[name] = _Slot(cluster, self.settings)
                # many clusters at once (a start, a big reload): their first
                # probes are spread out, so they never come as one burst (and
                # neither do the later ones, each an interval after its last)
                self._schedule(slot, self._first_delay(added))
                added += 1
                continue
            if slot.cluster is cluster:
                continue
            if not same_access(slot.cluster, cluster):
                self._halt(slot)
                slot.health = ClusterHealth(self.settings)
                self._on_change(name, None)
                self._schedule(slot, 0.0)
            slot.cluster = cluster

    def probe_now(self, name: str) -> None:
        """Probe cluster ``name`` at once (its agent just connected), unless
        a probe of it is under way."""
        slot = self._slots.get(name)
        if slot is None or slot.run is not None or self._stopped:
            return
        timer, slot.timer = slot.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        self._schedule(slot, 0.0)

    def _first_delay(self, index: int) -> float:
        """When the ``index``-th cluster added by one sync is first probed:
        :data:`FIRST_PROBE_SPACING` apart, all within one interval."""
        return (index * FIRST_PROBE_SPACING) % self.settings.interval

    def startService(self) -> None:
        """Probe the clusters given to :meth:`sync` (again, after a stop)."""
        super().startService()
        self._stopped = False

    def stopService(self) -> None:
        """Stop probing (:meth:`stop`)."""
        super().stopService()
        self.stop()

    def stop(self) -> None:
        """Stop probing: every timer and probe in flight ends."""
        self._stopped = True
        slots, self._slots = self._slots, {}
        for slot in slots.values():
            self._halt(slot)

    def _halt(self, slot: _Slot) -> None:
        timer, slot.timer = slot.timer, None
        if timer is not None and timer.active():
            timer.cancel()
        run, slot.run = slot.run, None
        if run is not None:
            self._end(run)

    def _end(self, run: _Run) -> None:
        run.over = True
        deadline, run.deadline = run.deadline, None
        if deadline is not None and deadline.active():
            deadline.cancel()
        exchange, run.exchange = run.exchange, None
        if exchange is not None:
            exchange.cancel()

    def _schedule(self, slot: _Slot, delay: float) -> None:
        slot.timer = self._reactor.callLater(delay, self._due, slot)

    # -- one probe ----------------------------------------------------------------

    def _due(self, slot: _Slot) -> None:
        slot.timer = None
        run = _Run(slot.health.start())
        slot.run = run
        run.deadline = self._reactor.callLater(self.settings.timeout, self._timed_out, slot, run)
        self._step(slot, run)

    def _current(self, slot: _Slot, run: _Run) -> bool:
        return not run.over and slot.run is run

    def _step(self, slot: _Slot, run: _Run) -> None:
        """Send the probe's next request, or end it."""
        path = run.probe.path
        if path is None:
            self._finish(slot, run)
            return

        def done(code: int | None, body: bytes, error: ApiError | None) -> None:
            self._answered(slot, run, code, body, error)

        exchange = ProbeExchange(probe_request(path.encode()), done)
        run.exchange = exchange
        self._pools.get(slot.cluster).submit(exchange)

    def _answered(
        self, slot: _Slot, run: _Run, code: int | None, body: bytes, error: ApiError | None
    ) -> None:
        if not self._current(slot, run):
            return
        run.exchange = None
        if error is not None or code is None:
            failure = error or ApiError(502, "no answer")
            run.probe.failed(failure.message, failure.code)
        else:
            run.probe.answered(code, body)
        self._step(slot, run)

    def _timed_out(self, slot: _Slot, run: _Run) -> None:
        run.deadline = None
        if not self._current(slot, run):
            return
        exchange, run.exchange = run.exchange, None
        waiting_for = ""
        if exchange is not None:
            if exchange.credential is UNRESOLVED:
                waiting_for = "the exec plugin"
            exchange.cancel()
        run.probe.timed_out(self.settings.timeout, waiting_for)
        self._finish(slot, run)

    def _finish(self, slot: _Slot, run: _Run) -> None:
        self._end(run)
        slot.run = None
        name = slot.cluster.name
        outcome = slot.health.finish(run.probe, self._now())
        status = outcome.status
        if outcome.turned:
            if status.healthy:
                log.info("{line}", line=change_line(name, status), cluster=name, healthy=True)
            else:
                log.warn("{line}", line=change_line(name, status), cluster=name, healthy=False)
        try:
            self._on_change(name, status)
        except Exception:
            log.failure("recording the health of cluster {cluster} failed", cluster=name)
        if not self._stopped and self._slots.get(name) is slot:
            self._schedule(slot, outcome.delay)
