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
``http/1.1``).  ``--workers`` is accepted; this version serves in one
process.  ``--demo`` is :mod:`karpor.server.demo`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IReactorTCP
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage

from karpor.api.handler import GatewayApi
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.config.directory import load_directory
from karpor.config.model import Cluster
from karpor.config.registry import Registry, Snapshot
from karpor.config.settings import Settings, SettingsError, load_settings, merge
from karpor.proxy.pool import UpstreamPools
from karpor.server import state
from karpor.server.front import GatewayFactory
from karpor.tls import server_options

#: the demo's state directory when none is given (in the working directory)
DEMO_STATE_DIR = "karpor-demo"

_FLAGS = {
    "port": "port",
    "host": "host",
    "workers": "workers",
    "clusters-dir": "clusters_dir",
    "state-dir": "state_dir",
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
        ["workers", None, None, "Worker processes (accepted; this version serves in one)."],
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
        self.settings = resolve_settings(
            self["config"], {attr: self[flag] for flag, attr in _FLAGS.items()}, self["demo"]
        )


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
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor  # noqa: PLC0415

            reactor = default_reactor
        assert settings.clusters_dir is not None and settings.state_dir is not None
        self.settings = settings
        self.reactor = reactor
        self.on_serving = on_serving
        self.registry = Registry()
        self.serving: Serving | None = None
        self._pools: UpstreamPools | None = None
        self._port: IListeningPort | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def clusters(self) -> Mapping[str, Cluster]:
        """The current snapshot's clusters by name."""
        return self.registry.current.clusters

    def load(self) -> Snapshot:
        """Load the clusters directory into the registry, logging every problem."""
        assert self.settings.clusters_dir is not None
        result = load_directory(self.settings.clusters_dir)
        for problem in result.problems:
            self.log.warn("{problem}", problem=str(problem))
        return self.registry.load(result)

    def startService(self) -> None:
        """Prepare the state, load the clusters, listen."""
        settings = self.settings
        assert settings.clusters_dir is not None and settings.state_dir is not None
        prepared = state.GatewayState.prepare(Path(settings.state_dir), settings.host)
        if prepared.serving.issued_because is not None:
            self.log.info(
                "issued the serving certificate for {hosts} ({reason})",
                hosts=", ".join(prepared.serving.hosts),
                reason=prepared.serving.issued_because,
            )
        snapshot = self.load()
        reactor = self.reactor
        api = GatewayApi(self.clusters, reactor)
        self._unsubscribe = self.registry.subscribe(
            lambda old, new: reactor.callFromThread(api.refresh)
        )
        pools = UpstreamPools(reactor)
        self._pools = pools
        factory = GatewayFactory(
            self.clusters,
            api,
            CertificateAuthenticator([prepared.ca.cert_pem]),
            pools,
            reactor=reactor,
        )
        tls = TLSMemoryBIOFactory(
            server_options(prepared.serving.cert_pem, prepared.serving.key_pem), False, factory
        )
        self._port = self._listen(tls)
        address = self._port.getHost()
        port = int(getattr(address, "port", settings.port))
        url = state.default_server(settings.host, port)
        state.write_record(
            prepared.directory,
            state.GatewayRecord(state.absolute(settings.clusters_dir), url),
        )
        if settings.workers != 1:
            self.log.info(
                "workers={workers} requested: this version serves in one process",
                workers=settings.workers,
            )
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

    def _listen(self, factory: TLSMemoryBIOFactory) -> IListeningPort:
        tcp: IReactorTCP = self.reactor
        try:
            return tcp.listenTCP(
                self.settings.port,
                factory,  # type: ignore[arg-type]
                interface=self.settings.host,
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

    def stopService(self) -> Any:
        """Stop listening; close the upstream pools."""
        super().stopService()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._pools is not None:
            self._pools.close()
        port, self._port = self._port, None
        if port is not None:
            return port.stopListening()
        return None


def makeService(options: Options) -> IService:
    """Build the service tree for ``twistd karpor``."""
    settings = options.settings
    if options["demo"]:
        from karpor.server.demo import make_demo_service  # noqa: PLC0415 - only for --demo

        return make_demo_service(settings)
    service = MultiService()
    GatewayService(settings).setServiceParent(service)
    return service
