"""The agent's dialler: keeps one tunnel to every worker of every replica.

:class:`AgentService` resolves the gateway's name (from the credentials
file's ``server``) every :data:`RESOLVE_INTERVAL` seconds and, for each
address it resolves to (a headless Service gives one per replica), keeps
an :class:`_Address`: the tunnels to that address, one per gateway worker
(:class:`~karpor.agent.policy.Coverage`), redialled with jittered back-off
(:class:`~karpor.agent.policy.Backoff`) when they fail.  Every connection
is TLS to the address with the gateway's name checked against the
gateway CA of the credentials (its ``tlsServerName`` when set) and the
agent's client certificate presented; ALPN offers ``http/1.1`` (the
upgrade is HTTP/1.1).

Each tunnel (:class:`~karpor.agent.tunnel.AgentTunnel`) forwards its
streams through one :class:`~karpor.upstream.pool.UpstreamPools` (the
gateway's own upstream pool: pooled HTTP/1.1, HTTP/2 for watches, a
dedicated connection per upgrade) to the cluster the agent serves, with
the agent's own credential.  Every :data:`SWEEP_INTERVAL` seconds the
tunnels are swept (``PING`` when quiet, dropped when dead).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from karpor import __version__
from karpor.agent.credentials import AgentCredentials
from karpor.agent.policy import Backoff, Coverage
from karpor.agent.tunnel import AgentTunnel
from karpor.config.model import Cluster
from karpor.http.tunnelwire import Answer
from karpor.net.tls import client_options
from karpor.net.tlstransport import AddressCollector, ClientTLS, TLSClientEndpoint
from karpor.upstream.connector import connect, describe_failure
from karpor.upstream.pool import ClusterPool, UpstreamPools

log = Logger(namespace="karpor.agent")

#: Seconds between two resolutions of the gateway's name.
RESOLVE_INTERVAL = 30.0
#: Seconds between two sweeps of the tunnels (liveness).
SWEEP_INTERVAL = 1.0
#: Seconds a connection (TCP, TLS, the ``101``) may take.
CONNECT_TIMEOUT = 10.0


def gateway_address(server: str) -> tuple[str, int]:
    """The host and port of the gateway URL ``server`` (``https`` only)."""
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError(f"the gateway URL must be https://HOST[:PORT], not {server!r}")
    return parts.hostname, parts.port or 443


class _Address:
    """The tunnels to one gateway address (see the module docstring)."""

    def __init__(self, service: AgentService, host: str) -> None:
        self.service = service
        self.host = host
        self.coverage = Coverage()
        self.backoff = Backoff()
        self.tunnels: dict[AgentTunnel, int | None] = {}
        self._timer: IDelayedCall | None = None
        self._timeouts: dict[AgentTunnel, IDelayedCall] = {}
        self.stopped = False

    def fill(self) -> None:
        """Start the connections the coverage wants (unless backing off)."""
        if self.stopped or self._timer is not None:
            return
        if self.coverage.stalled():
            self._later("every worker but some already has a tunnel")
            return
        for _ in range(self.coverage.wanted()):
            self._dial()

    def _later(self, why: str) -> None:
        delay = self.backoff.next_delay()
        log.info(
            "gateway {address}: {why}; next attempt in {delay:.1f}s",
            address=self.host,
            why=why,
            delay=delay,
        )
        self._timer = self.service.reactor.callLater(delay, self._retry)

    def _retry(self) -> None:
        self._timer = None
        self.coverage.retry()
        self.fill()

    def _dial(self) -> None:
        service = self.service
        tunnel = AgentTunnel(
            service.host_header,
            __version__,
            service.pool,
            service.reactor,
            self._switched,
            self._ended,
        )
        self.coverage.dialled()
        self.tunnels[tunnel] = None
        self._timeouts[tunnel] = service.reactor.callLater(
            CONNECT_TIMEOUT, tunnel.drop, "no answer in time"
        )
        endpoint = TLSClientEndpoint(
            service.reactor, self.host, service.port, service.tls, CONNECT_TIMEOUT
        )
        connect(endpoint, tunnel).addErrback(self._not_connected, tunnel)

    def _not_connected(self, failure: Failure, tunnel: AgentTunnel) -> None:
        self._ended(tunnel, f"cannot connect: {describe_failure(failure)}")

    def _switched(self, tunnel: AgentTunnel, answer: Answer) -> None:
        timer = self._timeouts.pop(tunnel, None)
        if timer is not None and timer.active():
            timer.cancel()
        if not self.coverage.switched(answer.worker, answer.workers):
            self.tunnels.pop(tunnel, None)
            tunnel.drop("a duplicate (its worker has a tunnel)")
            self.fill()
            return
        self.tunnels[tunnel] = answer.worker
        self.backoff.reset()
        log.info(
            "tunnel to {address} up: worker {worker}/{workers}",
            address=self.host,
            worker=answer.worker,
            workers=answer.workers,
        )
        self.fill()

    def _ended(self, tunnel: AgentTunnel, why: str) -> None:
        timer = self._timeouts.pop(tunnel, None)
        if timer is not None and timer.active():
            timer.cancel()
        if tunnel not in self.tunnels:
            return  # a duplicate, dropped on purpose
        worker = self.tunnels.pop(tunnel)
        if worker is None:
            self.coverage.failed()
            if not self.stopped and self._timer is None:
                self._later(why)
            return
        self.coverage.lost(worker)
        log.info(
            "tunnel to {address} (worker {worker}) down: {why}",
            address=self.host,
            worker=worker,
            why=why,
        )
        self.fill()

    def stop(self) -> None:
        """Close every tunnel; dial no more."""
        self.stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        for tunnel in list(self.tunnels):
            tunnel.drop("the agent is stopping")


class AgentService(Service):
    """The agent (see the module docstring): ``credentials`` say where the
    gateway is and who the agent is; ``cluster`` is the cluster it serves
    (its endpoint and credential, never sent to the gateway)."""

    def __init__(self, credentials: AgentCredentials, cluster: Cluster, reactor: Any) -> None:
        self.credentials = credentials
        self.cluster = cluster
        self.reactor = reactor
        host, self.port = gateway_address(credentials.server)
        self.gateway_host = host
        self.host_header = host if self.port == 443 else f"{host}:{self.port}"
        self.tls: ClientTLS = client_options(
            credentials.tls_server_name or host,
            credentials.ca_pem,
            credentials.certificate_pem,
            credentials.key_pem,
        )
        self.pools = UpstreamPools(reactor)
        self.addresses: dict[str, _Address] = {}
        self._resolver: LoopingCall | None = None
        self._sweeper: LoopingCall | None = None

    def pool(self) -> ClusterPool:
        """The pool of the served cluster."""
        return self.pools.get(self.cluster)

    def startService(self) -> None:
        """Resolve the gateway and dial; sweep the tunnels."""
        super().startService()
        log.info(
            "karpor agent {version} for cluster {cluster}: gateway {server}, API server {api}",
            version=__version__,
            cluster=self.credentials.cluster,
            server=self.credentials.server,
            api=self.cluster.endpoint,
        )
        resolver = self._resolver = LoopingCall(self._resolve)
        resolver.clock = self.reactor
        resolver.start(RESOLVE_INTERVAL, now=True)
        sweeper = self._sweeper = LoopingCall(self._sweep)
        sweeper.clock = self.reactor
        sweeper.start(SWEEP_INTERVAL, now=False)

    def _resolve(self) -> None:
        host = self.gateway_host
        if _is_ip(host):
            self._resolved([host])
            return
        self.reactor.nameResolver.resolveHostName(AddressCollector(self._resolved), host, self.port)

    def _resolved(self, hosts: list[str]) -> None:
        if not self.running:
            return
        if not hosts:
            log.warn("the gateway name {host} resolves to no address", host=self.gateway_host)
        for host in hosts:
            address = self.addresses.get(host)
            if address is None:
                address = self.addresses[host] = _Address(self, host)
                log.info("gateway address {address}", address=host)
            address.fill()

    def _sweep(self) -> None:
        now = self.reactor.seconds()
        for address in self.addresses.values():
            for tunnel in list(address.tunnels):
                tunnel.sweep(now)

    def stopService(self) -> Any:
        """Close every tunnel and the upstream connections."""
        super().stopService()
        for loop in (self._resolver, self._sweeper):
            if loop is not None and loop.running:
                loop.stop()
        for address in self.addresses.values():
            address.stop()
        self.pools.close()
        return None


def _is_ip(host: str) -> bool:
    import ipaddress  # noqa: PLC0415

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
