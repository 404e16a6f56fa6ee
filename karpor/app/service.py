"""``twistd karpor``: command-line options and the service tree.

::

    twistd -n karpor --clusters-dir DIR --state-dir DIR [--port 8443] [--host 127.0.0.1]
                     [--workers N] [--config FILE]
    twistd -n karpor --demo [--state-dir ./karpor-demo] [--port 8443]

Every setting may also come from the YAML ``--config`` file (keys ``port``,
``host``, ``workers``, ``clustersDir``, ``stateDir``); flags win
(:mod:`karpor.app.settings`).  Bad flags or settings are a usage error.

The twistd process runs :class:`~karpor.app.logs.LoggedService` holding
either a :class:`GatewayService` (``--workers 0``) or the supervisor of
worker processes (:class:`~karpor.app.processes.ProcessPoolService`; each
worker runs a :class:`GatewayService` of its own, :mod:`karpor.app.gatewayworker`).
``--demo`` is :mod:`karpor.app.demo`; :mod:`karpor.app.plugin` chooses.

:class:`GatewayService` is the gateway in one process, a
:class:`~karpor.app.tree.ServiceTree` of parts started in this order and
stopped in reverse (one that fails to start stops those before it):

``state``
    the state directory (:mod:`karpor.app.state`: the CA, the serving
    certificate, ``servingNames``; a read-only one is used as it is) and the
    serving TLS context, built once.
``access``
    :class:`~karpor.auth.access.Access` from the ``authentication`` and
    ``authorization`` settings (a token, policy, requestheader CA or
    revocation file that cannot be used is a fatal error);
    ``requestHeader.fromCluster`` reads the front-proxy trust from the host
    cluster (a failure is fatal) and refreshes it
    (:mod:`karpor.auth.frontproxysource`).
``audit``
    the ``auditLog`` :class:`~karpor.auth.audit.AuditWriter`, closed on stop.
``metrics``
    this process's metrics (:class:`~karpor.metrics.process.ProcessMetrics`),
    served at ``metricsAddress`` too when set, with the fleet status page
    (:mod:`karpor.app.statuspage`).
``clusters``
    the clusters directory loaded into a
    :class:`~karpor.config.registry.Registry` (a bad document is logged as
    ``file: document N: field: message`` and skipped), and the
    :class:`~karpor.config.reload.ChangeWatcher` that reloads it.
``upstream``
    the limits (:func:`~karpor.front.limits.open_limiter`: the
    supervisor's shared count table, or one of this process), the upstream pools, and one
    :class:`~karpor.upstream.execcredential.ExecCredentialCache` shared by
    the clusters with exec-plugin credentials (plugins run in the reactor's
    thread pool, never blocking the reactor: a worker runs without signal
    handlers, so ``spawnProcess`` children would never be reaped).
``api``
    the gateway's own API (:class:`~karpor.gatewayapi.handler.GatewayApi`).
``prober``
    the :class:`~karpor.health.prober.HealthProber` (``healthProbe``
    settings, flags ``--health-probe-interval``, ``--health-probe-timeout``,
    ``--health-fail-fast``): its verdicts become the clusters' ``status`` in
    the own API's catalog, and the front fails requests to unhealthy
    clusters fast.
``front``
    the :class:`~karpor.front.protocol.GatewayFactory`, bounded by the
    ``clientConnections`` settings (:mod:`karpor.http.bounds`).
``access-reload``
    every half second the token file, the policy file and the state
    directory's ``revoked.json`` are checked again (a change holds within
    1 s; a bad file is logged and the last good one stays).
``listener``
    the TLS port (ALPN ``h2`` and ``http/1.1``, or ``http/1.1`` alone
    when ``clientConnections.http2`` is off); a worker has none, it serves the
    socket the supervisor hands it.
``serving``
    ``gateway.json`` in the state directory, and the start-up log line.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.application.service import IService
from twisted.internet import defer, threads
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.python import usage

from karpor.app import state, statuspage
from karpor.app.logs import LoggedService
from karpor.app.settings import Settings, SettingsError, load_settings, merge
from karpor.app.tree import Part, PeriodicCall, ServiceTree, Teardown
from karpor.auth.access import Access, AccessError, write_access_record
from karpor.auth.audit import AuditWriter
from karpor.auth.frontproxysource import start_refresh
from karpor.auth.oidcfetch import KeyFetcher
from karpor.auth.revocation import RELOAD_INTERVAL
from karpor.config.directory import DirectoryLoader
from karpor.config.model import Cluster
from karpor.config.readability import Readability, Report
from karpor.config.registry import Registry, Snapshot, changes
from karpor.config.reload import ChangeWatcher
from karpor.front.limits import Limiter, open_limiter
from karpor.front.protocol import GatewayFactory
from karpor.gatewayapi.handler import GatewayApi
from karpor.gatewayapi.health import Health
from karpor.health.prober import HealthProber
from karpor.metrics.process import ProcessMetrics
from karpor.net.tls import H2, HTTP11, server_options
from karpor.net.tlstransport import TLSPort
from karpor.status.clusters import WorkerReport, worker_report
from karpor.upstream.execcredential import (
    ExecCredentialCache,
    ProcessResult,
    Runner,
    subprocess_runner,
)
from karpor.upstream.pool import UpstreamPools
from karpor.upstream.recordings import Recordings
from karpor.upstream.tunnel import Tunnels

#: the demo's state directory when none is given (in the working directory)
DEMO_STATE_DIR = "karpor-demo"

_FLAGS = {
    "port": "port",
    "host": "host",
    "workers": "workers",
    "clusters-dir": "clusters_dir",
    "state-dir": "state_dir",
    "drain-timeout": "drain_timeout",
    "session-drain-timeout": "session_drain_timeout",
    "log-format": "log_format",
    "metrics-address": "metrics_address",
    "serving-names": "serving_names",
    "health-probe-interval": "health_probe.interval",
    "health-probe-timeout": "health_probe.timeout",
    "health-fail-fast": "health_probe.fail_fast",
}


class Options(usage.Options):
    """Options of ``twistd karpor``."""

    synopsis = "--clusters-dir DIR --state-dir DIR [--port 8443] [options] | --demo"
    longdesc = (
        "Karpor, a multi-cluster Kubernetes API gateway: serves every cluster of the "
        "clusters directory at https://HOST:PORT/apis/cluster.karpor.io/v1beta1/clusters/"
        "NAME/proxy/ to holders of a client certificate from the gateway CA "
        "(see `karpor kubeconfig`).  Every option may also come from the YAML --config "
        "file (port, host, workers, clustersDir, stateDir); options given here win."
    )
    optFlags = [
        [
            "demo",
            None,
            "Start two simulated clusters in process, serve them, write an admin "
            "kubeconfig (state dir: ./karpor-demo unless --state-dir).",
        ]
    ]
    optParameters = [
        ["clusters-dir", None, None, "Directory of Cluster files and kubeconfigs to serve."],
        ["state-dir", None, None, "Directory of the gateway CA and serving certificate."],
        ["port", "p", None, "HTTPS port to serve on [default: 8443]."],
        ["host", None, None, "Address to bind [default: 127.0.0.1]."],
        [
            "workers",
            None,
            None,
            "Worker processes [default: the number of CPUs]; 0 serves in the twistd "
            "process itself (no supervisor).",
        ],
        [
            "drain-timeout",
            None,
            None,
            "Seconds a draining worker gives long-running streams (watch, logs -f, exec) "
            "before ending them [default: 30].",
        ],
        [
            "session-drain-timeout",
            None,
            None,
            "Seconds upgraded sessions (exec, attach, port-forward) of a worker replaced "
            "by a rolling restart (SIGHUP) may run on before they are cut [default: 3600].",
        ],
        [
            "log-format",
            None,
            None,
            "Log lines of every process (workers and the supervisor): text or json "
            "[default: text].",
        ],
        [
            "serving-names",
            None,
            None,
            "Extra DNS names or IP addresses the serving certificate covers, comma-separated.",
        ],
        [
            "health-probe-interval",
            None,
            None,
            "Seconds between health probes of a healthy cluster [default: 10].",
        ],
        [
            "health-probe-timeout",
            None,
            None,
            "Seconds a health probe may take before it fails [default: 4].",
        ],
        [
            "health-fail-fast",
            None,
            None,
            "true: requests to an unhealthy cluster fail at once with 503; "
            "false: try anyway [default: true].",
        ],
        [
            "metrics-address",
            None,
            None,
            "HOST:PORT where /metrics is served in plain HTTP without authentication "
            "(for a scraper on a trusted network) [default: none].",
        ],
        [
            "config",
            "c",
            None,
            "YAML settings file (keys: port, host, workers, clustersDir, stateDir).",
        ],
    ]

    settings: Settings

    def postOptions(self) -> None:
        """Merge the ``--config`` file and the flags; check what the mode needs."""
        self.settings = resolve_settings(self["config"], self.flags(), self["demo"])

    def flags(self) -> dict[str, Any]:
        """The settings given as flags (``None`` where not given)."""
        return {attr: self[flag] for flag, attr in _FLAGS.items()}

    def worker_arguments(self) -> list[str]:
        """The options a worker process is started with: these, as given."""
        args: list[str] = []
        if self["config"]:
            args += ["--config", os.path.abspath(self["config"])]
        for flag in _FLAGS:
            if self[flag] is not None:
                args += [f"--{flag}", str(self[flag])]
        return args


def resolve_settings(
    config: str | None, flags: Mapping[str, Any], demo: bool, cwd: str | None = None
) -> Settings:
    """The settings to run with; :class:`usage.UsageError` with every problem."""
    cwd = cwd or os.getcwd()
    try:
        file_settings = load_settings(config) if config else Settings()
        settings = merge(file_settings, flags, base_dir=cwd)
    except SettingsError as exc:
        raise usage.UsageError("; ".join(exc.problems)) from None
    if demo:
        if settings.clusters_dir:
            raise usage.UsageError(
                "--demo writes its own clusters directory (STATE_DIR/clusters): "
                "drop --clusters-dir (and clustersDir)"
            )
        state_dir = settings.state_dir or os.path.join(cwd, DEMO_STATE_DIR)
        return dataclasses.replace(settings, state_dir=state_dir)
    missing = [
        flag
        for flag, value in (
            ("--clusters-dir", settings.clusters_dir),
            ("--state-dir", settings.state_dir),
        )
        if not value
    ]
    if missing:
        raise usage.UsageError(
            f"{' and '.join(missing)} required (as options or in the --config file), or --demo"
        )
    assert settings.clusters_dir is not None
    if not os.path.isdir(settings.clusters_dir):
        raise usage.UsageError(f"--clusters-dir {settings.clusters_dir}: not a directory")
    return settings


@dataclass(frozen=True)
class Serving:
    """Where a started gateway serves (for the demo and the start log line)."""

    url: str
    port: int
    state: state.GatewayState
    clusters: int


class GatewayService(ServiceTree):
    """The gateway in this process, a :class:`~karpor.app.tree.ServiceTree`
    of its parts (see the module docstring): they start in the order of
    :attr:`PARTS` and stop in reverse.

    ``on_serving`` is called once it serves.  A port that cannot be bound
    ends the process with a clear message.  With ``listen=False`` (a
    worker) the tree has no ``listener``: the worker serves an inherited
    socket (:meth:`listen_adopted`).
    """

    #: the parts, in start order
    PARTS = (
        "state",
        "access",
        "audit",
        "metrics",
        "clusters",
        "upstream",
        "api",
        "prober",
        "front",
        "access-reload",
        "listener",
        "serving",
    )

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor: Any = None,
        on_serving: Callable[[Serving], None] | None = None,
        *,
        listen: bool = True,
    ) -> None:
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor as default_reactor  # noqa: PLC0415

            reactor = default_reactor
        assert settings.clusters_dir is not None and settings.state_dir is not None
        self.settings = settings
        self.reactor = reactor
        self.on_serving = on_serving
        self.registry = Registry()
        self._loader = DirectoryLoader()
        self._readability = Readability()
        #: what the last load had to tell (:meth:`load`)
        self._report = Report()
        self.health = Health()
        self.serving: Serving | None = None
        #: the state directory, once prepared
        self._state: state.GatewayState | None = None
        #: the front factory (connections arrive through TLS on the socket)
        self.factory: GatewayFactory | None = None
        #: the serving TLS context, built once (:mod:`karpor.net.tlstransport`)
        self.tls_context: SSL.Context | None = None
        self.front: GatewayFactory | None = None
        self.api: GatewayApi | None = None
        self._pools: UpstreamPools | None = None
        #: this worker's index and the worker count (told to agents)
        self.worker_slot = (0, 1)
        #: the agents' tunnels of this worker (:mod:`karpor.upstream.tunnel`)
        self.tunnels: Tunnels | None = None
        self._port: IListeningPort | None = None
        self._watcher: ChangeWatcher | None = None
        self._file_state: dict[str, tuple[tuple[str, int, int, int, int], ...]] = {}
        self.access: Access | None = None
        self.audit: AuditWriter | None = None
        self._exec: ExecCredentialCache | None = None
        #: the cluster health probes, once started
        self.prober: HealthProber | None = None
        #: this process's metrics (``/metrics``), once started
        self.metrics: ProcessMetrics | None = None
        #: the limits on forwarded requests (:mod:`karpor.front.limits`), once started
        self.limiter: Limiter | None = None
        starts: dict[str, Callable[[], Teardown | None]] = {
            "state": self._open_state,
            "access": self._open_access,
            "audit": self._open_audit,
            "metrics": self._start_metrics,
            "clusters": self._load_clusters,
            "upstream": self._open_upstream,
            "api": self._open_api,
            "prober": self._start_prober,
            "front": self._make_front,
            "listener": self._start_listening,
            "serving": self._announce,
        }
        for name in self.PARTS:
            if name == "access-reload":
                # the token, policy and revocation files (a change holds within 1 s)
                reload = PeriodicCall(reactor, RELOAD_INTERVAL, self._poll_access)
                reload.setName(name)
                reload.setServiceParent(self)
            elif name != "listener" or listen:
                Part(name, starts[name]).setServiceParent(self)

    def clusters(self) -> Mapping[str, Cluster]:
        """The current snapshot's clusters by name."""
        return self.registry.current.clusters

    def load(self) -> Snapshot:
        """Load the clusters directory into the registry, logging every problem.

        On a reload the last good definition of a cluster whose document
        broke keeps serving (:func:`karpor.config.registry.merge`), and so do
        the last good definitions of a directory that cannot be listed or a
        file that cannot be read: an error logged once, a warning in
        ``/healthz?verbose``, the gauge ``karpor_config_directory_readable``
        at 0, and another reload at every poll until it reads
        (:mod:`karpor.config.readability`).
        """
        directory = self.settings.clusters_dir
        assert directory is not None
        result = self._loader.load(directory)
        snapshot = self.registry.load(result)
        readability = self._readability
        report = self._report = readability.update(result.unreadable, snapshot.errors)
        for line in report.warnings:
            self.log.warn("{problem}", problem=line)
        for line in report.errors:
            self.log.error(
                "{problem}: its last good definitions keep serving; reloading at every poll "
                "until it can be read",
                problem=line,
            )
        if report.recovered:
            self.log.info("clusters directory {dir} can be read again", dir=directory)
        self.health.clusters_directory = readability.health(len(snapshot.clusters))
        if self.metrics is not None:
            self.metrics.recorder.directory_read(readability.readable)
        if self._watcher is not None and not readability.readable:
            self._watcher.retry()
        return snapshot

    def reload(self) -> Snapshot:
        """Reload after a change in the clusters directory or a file it names."""
        old = self.registry.current
        snapshot = self.load()
        diff = changes(old, snapshot)
        stale = self._files_changed(snapshot)
        if self._pools is not None:
            # removed clusters' pools drain; a definition whose named files
            # (CA, token, certificate) changed gets fresh connections
            self._pools.forget(set(diff.removed) | stale)
        if self._exec is not None:
            self._exec.forget(sorted(set(diff.removed) | stale))
        if self.front is not None:
            # a removed cluster's open watches (and exec sessions) end cleanly
            self.front.end_cluster_streams(frozenset(diff.removed))
        if self.tunnels is not None:
            # agents of clusters no longer tunnelled (removed ones went above)
            tunnelled = {n for n, c in snapshot.clusters.items() if c.tunnel}
            untunnelled = {link.name for link in self.tunnels.links()} - tunnelled
            self.tunnels.cut(frozenset(untunnelled), "the cluster is no longer a tunnel cluster")
        if self.prober is not None:
            self.prober.sync(snapshot.clusters)
        if self._watcher is not None:
            self._watcher.watch_files(f for c in snapshot.clusters.values() for f in c.files())
        if self._report.repeated and not (diff.added or diff.removed or diff.changed or stale):
            return snapshot  # a retry while something cannot be read: nothing new
        if self.metrics is not None:
            self.metrics.recorder.reloaded(len(snapshot.errors))
        self.log.info(
            "clusters reloaded (generation {gen}): {n} serving; added {added}, removed "
            "{removed}, changed {changed}, files changed {files}; {problems} problem(s)",
            gen=snapshot.generation,
            n=len(snapshot.clusters),
            added=sorted(diff.added) or "none",
            removed=sorted(diff.removed) or "none",
            changed=sorted(diff.changed) or "none",
            files=sorted(stale) or "none",
            problems=len(snapshot.errors),
        )
        return snapshot

    def status_report(self) -> WorkerReport:
        """What this process knows of its clusters, for the status page
        (:mod:`karpor.status.clusters`: no credential)."""
        api, tunnels, snapshot = self.api, self.tunnels, self.registry.current

        def status(name: str) -> Any:
            entry = api.catalog.get(name) if api is not None else None
            return entry.status if entry is not None else None

        problems = [str(p) for p in snapshot.errors]
        if self.health.clusters_directory:
            problems.insert(0, self.health.clusters_directory)
        return worker_report(
            snapshot.clusters,
            status,
            tunnels.status if tunnels is not None else None,
            snapshot.generation,
            problems,
        )

    def _files_changed(self, snapshot: Snapshot) -> set[str]:
        """Names of clusters whose named files changed since last seen."""
        state = {
            name: fingerprint_files(cluster.files()) for name, cluster in snapshot.clusters.items()
        }
        changed = {
            name for name, prints in state.items() if self._file_state.get(name, prints) != prints
        }
        self._file_state = state
        return changed

    def startService(self) -> None:
        """Start the parts in order; once serving, tell ``on_serving``."""
        super().startService()
        if self.on_serving is not None and self.serving is not None:
            self.on_serving(self.serving)

    # -- the parts, in start order; each returns its teardown ------------------------

    def _open_state(self) -> None:
        """``state``: the CA and the serving certificate; the serving TLS context."""
        prepared = self._state = state.prepare_for(self.settings, self.log)
        alpn = H2 if self.settings.client_connections.http2 else HTTP11
        self.tls_context = server_options(
            prepared.serving.cert_pem, prepared.serving.key_pem, alpn=alpn
        ).getContext()

    def _open_access(self) -> Teardown | None:
        """``access``: authentication and authorization as the settings say
        (unusable files end the process); ``requestHeader.fromCluster`` is
        read now and refreshed until the part stops."""
        settings, prepared = self.settings, self._state
        assert prepared is not None
        try:
            access = Access.from_settings(
                settings.authentication,
                settings.authorization,
                prepared.ca.cert_pem,
                prepared.directory,
                audit=settings.audit_log is not None,
                serving_cert_pem=prepared.serving.cert_pem,
            )
            front_proxy = start_refresh(settings.authentication, access, self.reactor)
        except AccessError as exc:
            raise SystemExit(f"karpor: {exc}") from None
        self.access = access
        if not prepared.read_only:
            write_access_record(prepared.directory, settings.authentication, settings.authorization)
        keys = None
        if access.oidc is not None:
            # the OpenID providers' keys: fetched now and kept fresh, never awaited
            keys = KeyFetcher(access.oidc, self.reactor)
            keys.start()
            self.health.oidc_issuers = access.oidc.states

        def stop() -> None:
            if front_proxy is not None:
                front_proxy.stop()
            if keys is not None:
                keys.stop()

        return stop

    def _open_audit(self) -> Teardown | None:
        """``audit``: the ``auditLog`` writer (one that cannot be opened ends the process)."""
        settings = self.settings.audit_log
        if settings is None:
            return None
        try:
            self.audit = AuditWriter(
                settings.path,
                max_bytes=settings.max_size_mb * 1024 * 1024,
                max_backups=settings.max_backups,
                stdout=settings.stdout,
            )
        except OSError as exc:
            raise SystemExit(f"karpor: auditLog {settings.path}: {exc.strerror or exc}") from None

        def close() -> None:
            audit, self.audit = self.audit, None
            if audit is not None:
                audit.close()

        return close

    def _start_metrics(self) -> Teardown:
        """``metrics``: this process's metrics, served at ``metricsAddress``
        too when set; on stop what is pending is recorded."""
        metrics = self.metrics = ProcessMetrics(self.reactor, lambda: self.clusters().keys())
        page = None
        if self.settings.metrics_address is not None:
            page = statuspage.in_process(
                self.reactor,
                metrics.collect,
                self.status_report,
                lambda: self._state.directory if self._state is not None else None,
            )
        metrics.serve(self.settings.metrics_address, page.resource if page else None)
        if self.access is not None and self.access.oidc is not None:
            self.access.oidc.watch(metrics.recorder.oidc_issuer)
        if page is None:
            return metrics.stop
        page.start()

        def stop() -> None:
            page.stop()
            metrics.stop()

        return stop

    def _load_clusters(self) -> Teardown:
        """``clusters``: load the clusters directory and watch it (and the
        files its clusters name) until the part stops."""
        directory = self.settings.clusters_dir
        assert directory is not None
        snapshot = self.load()
        self._files_changed(snapshot)
        self.health.loaded = True
        self.health.notes["clusters-loaded"] = f"{len(snapshot.clusters)} cluster(s)"
        watcher = self._watcher = ChangeWatcher(self.reactor, directory, self.reload)
        watcher.watch_files(f for c in snapshot.clusters.values() for f in c.files())
        watcher.start()
        if not self._readability.readable:
            watcher.retry()

        def stop() -> None:
            watcher, self._watcher = self._watcher, None
            if watcher is not None:
                watcher.stop()

        return stop

    def _open_upstream(self) -> Teardown:
        """``upstream``: the exec-credential cache and the upstream pools
        (sampled by the metrics); closed on stop."""
        reactor, metrics = self.reactor, self.metrics
        assert metrics is not None
        self._exec = ExecCredentialCache(reactor, thread_runner(reactor))
        worker, workers = self.worker_slot
        tunnels = self.tunnels = Tunnels(
            reactor, worker=worker, workers=workers, metrics=metrics.recorder
        )
        pools = self._pools = UpstreamPools(
            reactor,
            errors=metrics.recorder,
            response_header_timeout=self.settings.upstream.response_header_timeout,
            tunnels=tunnels,
        )
        limiter = self.limiter = open_limiter(self.settings.limits, metrics.recorder)

        def inflight() -> Any:
            limiter.note_overflows()
            return limiter.inflight(self.clusters()).items()

        metrics.watch_pools(pools.pools, inflight)

        def close() -> None:
            tunnels.close()
            pools.close()
            self.limiter = None
            limiter.close()

        return close

    def _open_api(self) -> Teardown:
        """``api``: the gateway's own API, refreshed after every reload."""
        access, metrics, reactor = self.access, self.metrics, self.reactor
        assert access is not None and metrics is not None
        api = self.api = GatewayApi(
            self.clusters,
            reactor,
            health=self.health,
            visible=access.reaches,
            metrics=metrics.render,
            authorize_path=access.authorize_path,
            names=access.names,
            shows_endpoint=access.shows_endpoint,
            policy=lambda: access.policy,
            agents=self.tunnels.status if self.tunnels is not None else None,
        )
        return self.registry.subscribe(lambda old, new: reactor.callFromThread(api.refresh))

    def _start_prober(self) -> Teardown:
        """``prober``: the cluster health probes (a service of their own),
        probing the clusters loaded."""
        api, metrics, pools = self.api, self.metrics, self._pools
        assert api is not None and metrics is not None and pools is not None
        prober = self.prober = HealthProber(
            self.reactor,
            pools,
            self.settings.health_probe,
            exec_credentials=self._exec,
            on_change=metrics.health_listener(api.catalog.set_status),
        )
        prober.startService()
        prober.sync(self.clusters())
        if self.tunnels is not None:
            self.tunnels.on_connect = prober.probe_now

        def stop() -> Any:
            self.prober = None
            return prober.stopService()

        return stop

    def _make_front(self) -> None:
        """``front``: the protocol factory every client connection is served by."""
        api, prober, pools = self.api, self.prober, self._pools
        assert api is not None and prober is not None and pools is not None
        assert self.metrics is not None
        self.front = self.factory = GatewayFactory(
            self.clusters,
            api,
            None,
            pools,
            reactor=self.reactor,
            access=self.access,
            audit=self.audit,
            exec_credentials=self._exec,
            health_gate=prober.refusal,
            metrics=self.metrics.recorder,
            connections=self.settings.client_connections,
            host_routing=self.settings.host_routing,
            limiter=self.limiter,
            recordings=self._recordings(),
        )

    def _recordings(self) -> Recordings | None:
        """The ``sessionRecording`` directory (``None``: nothing recorded), in
        the health report and the metrics."""
        settings = self.settings.session_recording
        if settings is None:
            return None
        assert self.metrics is not None
        recordings = Recordings(settings, self.reactor, self.metrics.recorder)
        self.health.recordings = recordings.health
        return recordings

    def _start_listening(self) -> Teardown:
        """``listener``: the TLS port (not in a worker); it stops listening on stop."""
        assert self.factory is not None and self.tls_context is not None
        port = self._port = self._listen(self.factory, self.tls_context)

        def stop() -> Any:
            self._port = None
            return port.stopListening()

        return stop

    def _announce(self) -> None:
        """``serving``: record where the gateway serves and log it."""
        settings, prepared = self.settings, self._state
        assert settings.clusters_dir is not None and prepared is not None
        port = settings.port
        if self._port is not None:
            port = int(getattr(self._port.getHost(), "port", settings.port))
        url = state.default_server(settings.host, port)
        prepared.record(
            state.GatewayRecord(
                state.absolute(settings.clusters_dir), url, settings.host_routing.suffix
            )
        )
        snapshot = self.registry.current
        count = len(snapshot.clusters)
        problems = len(snapshot.errors)
        self.log.info(
            "karpor gateway serving {url} on {host}:{port}: {count} cluster{s} loaded from "
            "{clusters_dir}{problems}; state in {state_dir}",
            url=url,
            host=settings.host,
            port=port,
            count=count,
            s="" if count == 1 else "s",
            clusters_dir=settings.clusters_dir,
            problems=f" ({problems} problem{'' if problems == 1 else 's'} logged above)"
            if problems
            else "",
            state_dir=settings.state_dir,
        )
        self.serving = Serving(url, port, prepared, count)

    def _poll_access(self) -> None:
        """Re-check the token, policy and revocation files (``access-reload``)."""
        if self.access is None:
            return
        for level, message in self.access.poll(self.reactor.seconds()):
            if level == "warn":
                self.log.warn("{message}", message=message)
            else:
                self.log.info("{message}", message=message)

    def listen_adopted(self, fd: int, family: socket.AddressFamily) -> IListeningPort:
        """Serve on a listening descriptor inherited from the supervisor."""
        assert self.factory is not None and self.tls_context is not None
        return TLSPort.adopt(self.reactor, fd, family, self.factory, self.tls_context)

    def _listen(self, factory: GatewayFactory, context: SSL.Context) -> IListeningPort:
        try:
            return TLSPort.listen(
                self.reactor, self.settings.port, factory, context, interface=self.settings.host
            )
        except CannotListenError as exc:
            reason = getattr(exc.socketError, "strerror", None) or str(exc.socketError)
            hint = (
                " (is another gateway running? choose another --port)" if "in use" in reason else ""
            )
            raise SystemExit(
                f"karpor: cannot listen on {self.settings.host}:{self.settings.port}: "
                f"{reason}{hint}"
            ) from None

    def drain(self, deadline: float, sessions: float | None = None) -> defer.Deferred[None]:
        """Turn not ready, then finish in-flight requests; long-running
        streams end cleanly at ``deadline`` seconds, upgraded sessions at
        ``sessions`` (see the front)."""
        self.health.draining = True
        if self.tunnels is not None:
            # agents redial at once and land on the workers that serve on
            self.tunnels.close()
        if self.front is None:
            return defer.succeed(None)
        return self.front.drain(deadline, sessions)


def thread_runner(reactor: Any) -> Runner:
    """An exec-plugin runner that runs each plugin with :mod:`subprocess`
    in the reactor's thread pool (never in the reactor thread)."""
    blocking = subprocess_runner()

    def call(argv: Sequence[str], env: Mapping[str, str]) -> ProcessResult:
        box: list[Any] = []
        blocking(argv, env).addBoth(box.append)
        result = box[0]
        if not isinstance(result, ProcessResult):
            result.raiseException()
        done: ProcessResult = result
        return done

    def run(argv: Sequence[str], env: Mapping[str, str]) -> defer.Deferred[ProcessResult]:
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), call, argv, env)

    return run


def fingerprint_files(paths: Sequence[str]) -> tuple[tuple[str, int, int, int, int], ...]:
    """``stat`` facts (device, inode, size, mtime) of each file, for change detection."""
    out = []
    for path in paths:
        try:
            st = os.stat(path)
            out.append((path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append((path, 0, 0, -1, 0))
    return tuple(out)


def make_gateway_service(options: Options) -> IService:
    """The gateway's service tree for ``twistd karpor`` (not ``--demo``:
    :mod:`karpor.app.plugin`)."""
    settings = options.settings
    twistd = getattr(options, "parent", None)  # twistd's own options: --logfile
    service = LoggedService(
        settings.log_format,
        "gateway" if settings.workers == 0 else "supervisor",
        twistd.get("logfile") if twistd is not None else None,
    )
    if settings.workers == 0:
        GatewayService(settings).setServiceParent(service)
        return service
    from karpor.app.processes import ProcessPoolService  # noqa: PLC0415

    config, flags = options["config"], options.flags()
    ProcessPoolService(
        settings,
        options.worker_arguments(),
        lambda: resolve_settings(config, flags, demo=False),
    ).setServiceParent(service)
    return service
