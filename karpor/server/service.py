"""``twistd karpor``: command-line options and the service tree.

::

    twistd -n karpor --clusters-dir DIR --state-dir DIR [--port 8443] [--host 127.0.0.1]
                     [--workers N] [--config FILE]
    twistd -n karpor --demo [--state-dir ./karpor-demo] [--port 8443]

Every setting may also come from the YAML ``--config`` file (keys ``port``,
``host``, ``workers``, ``clustersDir``, ``stateDir``); flags win
(:mod:`karpor.config.settings`).  Bad flags or settings are a usage error.

:class:`GatewayService` is the gateway in this process: on start it opens
the state directory (:mod:`karpor.server.state`: the CA, the serving
certificate), loads the clusters directory into a
:class:`~karpor.config.registry.Registry` (a bad document is logged as
``file: document N: field: message`` and skipped), builds the own API
(:class:`~karpor.api.handler.GatewayApi`), the upstream pools and the front
(:class:`~karpor.server.front.GatewayFactory`), and listens with TLS (ALPN
``http/1.1``).

Access (issue 6): :class:`~karpor.auth.access.Access` is built from the
``authentication`` and ``authorization`` settings (a token, policy,
requestheader CA or revocation file that cannot be used at start is a fatal
error); a timer re-checks the token file, the policy file and the state
directory's ``revoked.json`` every half second (a change holds within 1 s;
a bad file is logged and the last good one stays).  ``auditLog`` opens an
:class:`~karpor.auth.audit.AuditWriter`; clusters with exec-plugin
credentials share one :class:`~karpor.proxy.execcredential.ExecCredentialCache`
(plugins run in the reactor's thread pool, never blocking the reactor: a
worker runs without signal handlers, so ``spawnProcess`` children would
never be reaped).

Replicas on Kubernetes (issue 8): ``servingNames`` / ``--serving-names``
add names to the serving certificate; a read-only state directory
(``stateReadOnly``, or one that cannot be written to) is used as it is and
nothing is written there (:mod:`karpor.server.state`);
``requestHeader.fromCluster`` reads the front-proxy trust from the host
cluster before serving (a failure is fatal) and refreshes it
(:mod:`karpor.auth.frontproxysource`).

Cluster health (issue 8): a :class:`~karpor.health.prober.HealthProber`
probes every cluster through the upstream pools (``healthProbe`` settings,
flags ``--health-probe-interval``, ``--health-probe-timeout``,
``--health-fail-fast``); its verdicts become the clusters' ``status`` in the
own API's catalog, and the front fails requests to unhealthy clusters fast.
Each worker probes on its own.

Client connections (issue 14): the ``clientConnections`` settings (head
size, handshake, head-read and idle timeouts, connections per worker) bound
each worker's front (:mod:`karpor.server.connections`).

``--workers`` is accepted; this version serves in one process.
``--demo`` is :mod:`karpor.server.demo`.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from twisted.application.service import IService, Service
from twisted.internet import defer, threads
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python import usage

from karpor.api.handler import GatewayApi
from karpor.api.health import Health
from karpor.auth.access import Access, AccessError, write_access_record
from karpor.auth.audit import AuditWriter
from karpor.auth.frontproxysource import FrontProxyRefresh, start_refresh
from karpor.auth.revocation import RELOAD_INTERVAL
from karpor.config.directory import DirectoryLoader
from karpor.config.model import Cluster
from karpor.config.readability import Readability, Report
from karpor.config.registry import Registry, Snapshot, changes
from karpor.config.reload import ChangeWatcher
from karpor.config.settings import Settings, SettingsError, load_settings, merge
from karpor.health.prober import HealthProber
from karpor.metrics.process import ProcessMetrics
from karpor.net import implementation
from karpor.proxy.execcredential import (
    ExecCredentialCache,
    ProcessResult,
    Runner,
    subprocess_runner,
)
from karpor.proxy.pool import UpstreamPools
from karpor.server import state
from karpor.server.front import GatewayFactory
from karpor.server.logs import LoggedService
from karpor.tls import server_options
from karpor.tlstransport import TLSPort

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


class GatewayService(Service):
    """The gateway in this process: state, registry, API, pools, TLS listener.

    ``on_serving`` is called once it listens (the demo writes its kubeconfig
    then).  A port that cannot be bound ends the process with a clear message.
    """

    log = Logger()

    def __init__(
        self,
        settings: Settings,
        reactor: Any = None,
        on_serving: Callable[[Serving], None] | None = None,
        *,
        listen: bool = True,
    ) -> None:
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
        #: the front factory (connections arrive through TLS on the socket)
        self.factory: GatewayFactory | None = None
        #: the serving TLS context, built once (:mod:`karpor.tlstransport`)
        self.tls_context: SSL.Context | None = None
        self.front: GatewayFactory | None = None
        self._listen_here = listen
        self._pools: UpstreamPools | None = None
        self._port: IListeningPort | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._watcher: ChangeWatcher | None = None
        self._file_state: dict[str, tuple[tuple[str, int, int, int, int], ...]] = {}
        self.access: Access | None = None
        self.audit: AuditWriter | None = None
        self._exec: ExecCredentialCache | None = None
        self._access_timer: LoopingCall | None = None
        self._front_proxy: FrontProxyRefresh | None = None
        #: the cluster health probes, once started
        self.prober: HealthProber | None = None
        #: this process's metrics (``/metrics``), once started
        self.metrics: ProcessMetrics | None = None

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
        """Prepare the state, load the clusters, watch them, listen (unless a
        worker adopts an inherited socket with :attr:`factory`)."""
        settings = self.settings
        assert settings.clusters_dir is not None and settings.state_dir is not None
        prepared = state.prepare_for(settings, self.log)
        try:
            access = Access.from_settings(
                settings.authentication,
                settings.authorization,
                prepared.ca.cert_pem,
                prepared.directory,
                audit=settings.audit_log is not None,
                serving_cert_pem=prepared.serving.cert_pem,
            )
            # requestHeader.fromCluster: read the host cluster's ConfigMap now, then refresh
            self._front_proxy = start_refresh(settings.authentication, access, self.reactor)
        except AccessError as exc:
            raise SystemExit(f"karpor: {exc}") from None
        if settings.audit_log is not None:
            try:
                self.audit = AuditWriter(settings.audit_log)
            except OSError as exc:
                raise SystemExit(
                    f"karpor: auditLog {settings.audit_log}: {exc.strerror or exc}"
                ) from None
        self.access = access
        if not prepared.read_only:
            write_access_record(prepared.directory, settings.authentication, settings.authorization)
        snapshot = self.load()
        self._files_changed(snapshot)
        self.health.loaded = True
        self.health.notes["clusters-loaded"] = f"{len(snapshot.clusters)} cluster(s)"
        reactor = self.reactor
        self._exec = ExecCredentialCache(reactor, thread_runner(reactor))
        metrics = self.metrics = ProcessMetrics(reactor, lambda: self.clusters().keys())
        metrics.recorder.directory_read(self._readability.readable)
        api = GatewayApi(
            self.clusters,
            reactor,
            health=self.health,
            visible=access.reaches,
            metrics=metrics.render,
            authorize_path=access.authorize_path,
            names=access.names,
            shows_endpoint=access.shows_endpoint,
        )
        self._unsubscribe = self.registry.subscribe(
            lambda old, new: reactor.callFromThread(api.refresh)
        )
        pools = UpstreamPools(
            reactor,
            errors=metrics.recorder,
            response_header_timeout=settings.upstream.response_header_timeout,
        )
        self._pools = pools
        metrics.watch_pools(pools.pools)
        metrics.serve(settings.metrics_address)
        prober = HealthProber(
            reactor,
            pools,
            settings.health_probe,
            exec_credentials=self._exec,
            on_change=metrics.health_listener(api.catalog.set_status),
        )
        self.prober = prober
        factory = GatewayFactory(
            self.clusters,
            api,
            None,
            pools,
            reactor=reactor,
            access=access,
            audit=self.audit,
            exec_credentials=self._exec,
            health_gate=prober.refusal,
            metrics=metrics.recorder,
            connections=settings.client_connections,
        )
        context = server_options(prepared.serving.cert_pem, prepared.serving.key_pem).getContext()
        self.front = factory
        self.factory = factory
        self.tls_context = context
        self._watcher = ChangeWatcher(reactor, settings.clusters_dir, self.reload)
        self._watcher.watch_files(f for c in snapshot.clusters.values() for f in c.files())
        self._watcher.start()
        if not self._readability.readable:
            self._watcher.retry()
        prober.sync(snapshot.clusters)
        timer = LoopingCall(self._poll_access)
        timer.clock = reactor
        timer.start(RELOAD_INTERVAL, now=False)
        self._access_timer = timer
        port = settings.port
        if self._listen_here:
            self._port = self._listen(factory, context)
            port = int(getattr(self._port.getHost(), "port", settings.port))
        url = state.default_server(settings.host, port)
        prepared.record(state.GatewayRecord(state.absolute(settings.clusters_dir), url))
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
        super().startService()
        if self.on_serving is not None:
            self.on_serving(self.serving)

    def _poll_access(self) -> None:
        """Re-check the token, policy and revocation files (a timer)."""
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
        if self.front is None:
            return defer.succeed(None)
        return self.front.drain(deadline, sessions)

    def stopService(self) -> Any:
        """Stop watching and listening; close the upstream pools."""
        super().stopService()
        timer, self._access_timer = self._access_timer, None
        if timer is not None and timer.running:
            timer.stop()
        front_proxy, self._front_proxy = self._front_proxy, None
        if front_proxy is not None:
            front_proxy.stop()
        audit, self.audit = self.audit, None
        if audit is not None:
            audit.close()
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        prober, self.prober = self.prober, None
        if prober is not None:
            prober.stop()
        if self.metrics is not None:
            self.metrics.stop()
        if self._pools is not None:
            self._pools.close()
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None


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


def makeService(options: Options) -> IService:
    """Build the service tree for ``twistd karpor``."""
    settings = options.settings
    implementation.select(settings.tls_implementation)  # warns of a fallback
    if options["demo"]:
        from karpor.server.demo import make_demo_service  # noqa: PLC0415 - only for --demo

        return make_demo_service(settings)
    twistd = getattr(options, "parent", None)  # twistd's own options: --logfile
    service = LoggedService(
        settings.log_format,
        "gateway" if settings.workers == 0 else "supervisor",
        twistd.get("logfile") if twistd is not None else None,
    )
    if settings.workers == 0:
        GatewayService(settings).setServiceParent(service)
        return service
    from karpor.server.processes import ProcessPoolService  # noqa: PLC0415

    config, flags = options["config"], options.flags()
    ProcessPoolService(
        settings,
        options.worker_arguments(),
        lambda: resolve_settings(config, flags, demo=False),
    ).setServiceParent(service)
    return service
