"""``SimulatedCluster``: one simulated kube-apiserver as a Twisted service.

A cluster has its own CA, a serving certificate for ``127.0.0.1``, ``::1``
and ``localhost``, a bearer token, an in-memory :class:`~karpor.sim.store.Store`
with its :class:`~karpor.sim.kubelet.Kubelet` and
:class:`~karpor.sim.controllers.DeploymentController`, and listens with TLS on
a given or free port, speaking HTTP/2 (ALPN ``h2``) and HTTP/1.1 as
kube-apiserver does.  While running it owns a
:class:`~karpor.sim.streaming.StreamServer` for ``exec``, ``attach`` and
``port-forward``, whose pods' scratch directories live in a temporary
directory created on start and removed on stop (with every child process).
It is embeddable (``twistd karpor --demo`` runs two in process under a
``MultiService``) and is what ``karpor sim`` runs.

It binds loopback addresses only.  Binding anything else needs
``allow_non_loopback=True``: the simulator is a test double whose every
authenticated caller may do anything (impersonation included), and
``kubectl exec`` runs real local processes, so exposing it to a network
hands out a shell.  The same flag lets ``sim.karpor.io/port-<N>`` pod
annotations send port-forwards to non-loopback addresses.  Do not set it
unless the network is yours alone.

:meth:`SimulatedCluster.cluster_manifest` renders the karpor ``Cluster``
document (DESIGN.md §1, form 1) the gateway reads;
:meth:`SimulatedCluster.kubeconfig` a kubeconfig to talk straight to the
cluster with its token or with a client certificate from its CA.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from twisted.application.service import Service
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IListeningPort, IReactorTime
from twisted.logger import Logger

from karpor.auth.ca import CertificateAuthority, IssuedCertificate, write_private
from karpor.auth.identity import Identity
from karpor.auth.policy import Policy
from karpor.config.hostnames import url_host
from karpor.net.tls import H2, server_options
from karpor.net.tlstransport import TLSPort
from karpor.sim.auth import DEFAULT_TOKEN_IDENTITY, Authenticator, Authorizer
from karpor.sim.controllers import DeploymentController
from karpor.sim.events import EventRecorder
from karpor.sim.kubelet import DEFAULT_NODE, Kubelet
from karpor.sim.logs import DEFAULT_INTERVAL
from karpor.sim.server import ApiServer, ServerVersion, SimulatorSite
from karpor.sim.store import Store
from karpor.sim.streaming import StreamServer

CLUSTER_API_VERSION = "cluster.karpor.io/v1beta1"
#: the label the simulator puts on the Cluster documents it writes
SIMULATED_LABEL = "karpor.io/simulated"
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})
#: the client certificate identity of :meth:`SimulatedCluster.kubeconfig` by default
DEFAULT_CERT_USER = "sim-admin"
DEFAULT_CERT_GROUPS: tuple[str, ...] = ("system:masters",)


class NonLoopbackAddress(ValueError):
    """A simulated cluster was asked to bind a non-loopback address without the flag."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names a loopback address (``127.0.0.0/8``, ``::1``, ``localhost``)."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class ClusterFiles:
    """What :meth:`SimulatedCluster.write_files` wrote."""

    cluster: Path
    kubeconfig: Path
    cert_kubeconfig: Path


@dataclass
class SimulatedClusterOptions:
    """The tunables of a simulated cluster (all have sensible defaults)."""

    #: seconds between two log lines of a container
    log_interval: float = DEFAULT_INTERVAL
    #: seconds from a pod's creation to it running
    start_delay: float = 0.5
    #: seconds between watch bookmarks
    bookmark_interval: float = 60.0
    #: how many changes the store keeps for watches that resume
    history: int = 10_000
    version: ServerVersion = field(default_factory=ServerVersion)
    node_name: str = DEFAULT_NODE
    token_identity: Identity = DEFAULT_TOKEN_IDENTITY
    access_log: bool = False
    #: the cluster's RBAC, as a karpor policy (``None``: everyone may do everything)
    policy: Policy | None = None


class SimulatedCluster(Service):
    """One simulated kube-apiserver serving HTTPS on ``host:port`` (``port`` 0: a free one).

    ``allow_non_loopback`` must be ``True`` to bind anything but a loopback
    address: see the module documentation for why that is dangerous.
    """

    log = Logger()

    def __init__(
        self,
        name: str,
        *,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        allow_non_loopback: bool = False,
        reactor: Any = None,
        ca: CertificateAuthority | None = None,
        options: SimulatedClusterOptions | None = None,
    ) -> None:
        if not is_loopback(host) and not allow_non_loopback:
            raise NonLoopbackAddress(
                f"refusing to bind the simulated cluster {name!r} to {host!r}: not a loopback "
                "address (pass allow_non_loopback / --allow-non-loopback if you really mean it)"
            )
        if reactor is None:
            from twisted.internet import reactor as default_reactor  # noqa: PLC0415 - lazily

            reactor = default_reactor
        self.setName(name)
        self.host = host
        self.requested_port = port
        self.allow_non_loopback = allow_non_loopback
        self.reactor: IReactorTime = reactor
        self.options = options or SimulatedClusterOptions()
        self._token = token or secrets.token_urlsafe(32)
        self.ca = ca or CertificateAuthority.create(f"karpor-sim-{name}-ca")
        hosts = ["127.0.0.1", "::1", "localhost"]
        if host not in hosts and host not in ("0.0.0.0", "::"):  # noqa: S104 - a name, not a bind
            hosts.append(host)
        self.serving: IssuedCertificate = self.ca.issue_server(f"karpor-sim-{name}", hosts)
        self.store = Store(
            clock=reactor.seconds,
            history=self.options.history,
            node_name=self.options.node_name,
            ca_bundle=self.ca.cert_pem.decode(),
        )
        #: pod lifecycle and controller events, deleted after an hour
        self.events = EventRecorder(self.store, reactor)
        self.kubelet = Kubelet(
            self.store,
            reactor,
            node_name=self.options.node_name,
            start_delay=self.options.start_delay,
            events=self.events,
        )
        self.deployments = DeploymentController(self.store, reactor, events=self.events)
        self.authenticator = Authenticator(
            self._token, [self.ca.cert_pem], self.options.token_identity
        )
        self.api = ApiServer(
            self.store,
            self.authenticator,
            reactor,
            version=self.options.version,
            server_address=f"{url_host(host)}:{port}",
            log_interval=self.options.log_interval,
            bookmark_interval=self.options.bookmark_interval,
            authorizer=Authorizer(self.options.policy, name),
        )
        self.site = SimulatorSite(self.api, access_log=self.options.access_log, reactor=reactor)
        self._listening: IListeningPort | None = None
        #: the exec/attach/port-forward server while running
        self.streams: StreamServer | None = None
        self._scratch: Path | None = None

    def __repr__(self) -> str:
        return f"SimulatedCluster({self.name!r}, endpoint={self.endpoint!r})"

    @property
    def token(self) -> str:
        """The bearer token this cluster accepts (a secret: never log it)."""
        return self._token

    @property
    def port(self) -> int:
        """The port listened on (the requested one until started)."""
        if self._listening is not None:
            address = self._listening.getHost()
            assert isinstance(address, IPv4Address | IPv6Address)
            return address.port
        return self.requested_port

    @property
    def endpoint(self) -> str:
        """``https://host:port``."""
        return f"https://{url_host(self.host)}:{self.port}"

    @property
    def ca_pem(self) -> bytes:
        """The CA certificate clients verify the cluster with."""
        return self.ca.cert_pem

    def startService(self) -> None:
        """Listen, then start the stream server, the kubelet and the controllers."""
        if not is_loopback(self.host):
            self.log.warn(
                "SIMULATED CLUSTER {name} BINDS THE NON-LOOPBACK ADDRESS {host}: anyone who "
                "gets its token or a certificate of its CA controls it",
                name=self.name,
                host=self.host,
            )
        context = server_options(self.serving.cert_pem, self.serving.key_pem, alpn=H2)
        self._listening = TLSPort.listen(
            self.reactor,
            self.requested_port,
            self.site,
            context.getContext(),
            interface=self.host,
        )
        self.api.server_address = f"{url_host(self.host)}:{self.port}"
        self._scratch = Path(tempfile.mkdtemp(prefix=f"karpor-sim-{self.name}-"))
        self.streams = StreamServer(
            self.reactor,
            workdir=self._scratch / "pods",
            allow_remote_targets=self.allow_non_loopback,
        )
        self.api.streams = self.streams
        self.kubelet.startService()
        self.deployments.startService()
        super().startService()

    def stopService(self) -> Any:
        """Stop the controllers and the kubelet, end every stream and child process,
        remove the scratch directory and stop listening (a Deferred firing when closed)."""
        super().stopService()
        self.deployments.stopService()
        self.kubelet.stopService()
        streams, self.streams = self.streams, None
        self.api.streams = None
        if streams is not None:
            streams.stop()
        scratch, self._scratch = self._scratch, None
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        listening, self._listening = self._listening, None
        if listening is not None:
            return listening.stopListening()
        return None

    # -- what clients need -------------------------------------------------

    def issue_client_certificate(
        self, user: str = DEFAULT_CERT_USER, groups: tuple[str, ...] = DEFAULT_CERT_GROUPS
    ) -> IssuedCertificate:
        """A client certificate from this cluster's CA (``CN`` = user, ``O`` = groups)."""
        return self.ca.issue_client(user, groups)

    def cluster_manifest(self) -> dict[str, Any]:
        """The karpor ``Cluster`` document for this cluster (CA bundle and token inline)."""
        return {
            "apiVersion": CLUSTER_API_VERSION,
            "kind": "Cluster",
            "metadata": {"name": self.name, "labels": {SIMULATED_LABEL: "true"}},
            "spec": {
                "provider": "karpor-sim",
                "displayName": f"Simulated cluster {self.name}",
                "description": "A kube-apiserver simulated by karpor sim",
                "access": {
                    "endpoint": self.endpoint,
                    "caBundle": base64.b64encode(self.ca_pem).decode(),
                    "credential": {
                        "type": "ServiceAccountToken",
                        "serviceAccountToken": self._token,
                    },
                },
            },
        }

    def kubeconfig(
        self,
        *,
        client_certificate: IssuedCertificate | None = None,
        namespace: str | None = None,
    ) -> dict[str, Any]:
        """A kubeconfig (one context named after the cluster) talking straight to it.

        With ``client_certificate`` (see :meth:`issue_client_certificate`) the
        user authenticates with it; otherwise with the cluster's token.
        """
        user: dict[str, Any]
        if client_certificate is not None:
            user = {
                "client-certificate-data": base64.b64encode(client_certificate.cert_pem).decode(),
                "client-key-data": base64.b64encode(client_certificate.key_pem).decode(),
            }
        else:
            user = {"token": self._token}
        context: dict[str, Any] = {"cluster": self.name, "user": self.name}
        if namespace:
            context["namespace"] = namespace
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {
                    "name": self.name,
                    "cluster": {
                        "server": self.endpoint,
                        "certificate-authority-data": base64.b64encode(self.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": self.name, "user": user}],
            "contexts": [{"name": self.name, "context": context}],
            "current-context": self.name,
        }

    def write_files(self, directory: Path) -> ClusterFiles:
        """Write ``<name>.yaml`` (the Cluster), ``<name>.kubeconfig`` (token) and
        ``<name>-cert.kubeconfig`` (client certificate) into ``directory``.

        Kubeconfigs do not end in ``.yaml`` so that a gateway reading the
        directory sees each cluster once.  Every file holds a secret and is
        written readable by its owner only.
        """
        directory.mkdir(parents=True, exist_ok=True)
        files = ClusterFiles(
            cluster=directory / f"{self.name}.yaml",
            kubeconfig=directory / f"{self.name}.kubeconfig",
            cert_kubeconfig=directory / f"{self.name}-cert.kubeconfig",
        )
        write_private(files.cluster, _yaml(self.cluster_manifest()))
        write_private(files.kubeconfig, _yaml(self.kubeconfig()))
        cert = self.issue_client_certificate()
        write_private(files.cert_kubeconfig, _yaml(self.kubeconfig(client_certificate=cert)))
        return files


def _yaml(document: dict[str, Any]) -> bytes:
    return yaml.safe_dump(document, sort_keys=False).encode()
