"""The agent's dialler: every address the gateway's name resolves to gets
its own tunnels, one per worker; failures back off, duplicates are closed."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock

from karpor.agent import dialer
from karpor.agent.credentials import AgentCredentials
from karpor.agent.dialer import AgentService, gateway_address
from karpor.agent.tunnel import AgentTunnel
from karpor.auth.ca import CertificateAuthority
from karpor.config.model import Cluster
from karpor.http.tunnelwire import Answer


class Dials:
    """Records each connection attempt (address, the tunnel, its Deferred)."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, AgentTunnel, Deferred[Any]]] = []

    def endpoint(self, reactor: Any, host: str, port: int, tls: Any, timeout: float) -> str:
        return host

    def connect(self, endpoint: str, tunnel: AgentTunnel) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((endpoint, tunnel, d))
        return d

    def to(self, host: str) -> list[AgentTunnel]:
        return [t for h, t, _ in self.attempts if h == host]


@pytest.fixture
def dials(monkeypatch: pytest.MonkeyPatch) -> Dials:
    recorded = Dials()
    monkeypatch.setattr(dialer, "TLSClientEndpoint", recorded.endpoint)
    monkeypatch.setattr(dialer, "connect", recorded.connect)
    return recorded


def service(clock: Clock) -> AgentService:
    ca = CertificateAuthority.create("test CA")
    issued = ca.issue_client("system:karpor:agent:edge", ["system:karpor:agents"])
    credentials = AgentCredentials(
        cluster="edge",
        server="https://gateway.example:8443",
        ca_pem=ca.cert_pem,
        certificate_pem=issued.cert_pem,
        key_pem=issued.key_pem,
        tls_server_name=None,
    )
    cluster = Cluster("edge", "https://10.1.0.1:6443")
    agent = AgentService(credentials, cluster, clock)
    agent.running = True
    return agent


def switch(tunnel: AgentTunnel, worker: int, workers: int) -> None:
    tunnel._switched(tunnel, Answer(101, worker, workers, "Switching Protocols"))


def test_gateway_address() -> None:
    assert gateway_address("https://gw.example") == ("gw.example", 443)
    assert gateway_address("https://10.0.0.1:8443/") == ("10.0.0.1", 8443)
    with pytest.raises(ValueError):
        gateway_address("http://gw.example")


def test_every_replica_gets_one_tunnel_per_worker(dials: Dials) -> None:
    clock = Clock()
    agent = service(clock)
    agent._resolved(["10.0.0.1", "10.0.0.2"])
    first = dials.to("10.0.0.1")
    assert len(first) == 1 and len(dials.to("10.0.0.2")) == 1  # one at a time before a 101
    switch(first[0], 0, 2)
    assert len(dials.to("10.0.0.1")) == 2  # one more for the other worker
    duplicate = dials.to("10.0.0.1")[1]
    duplicate.drop = lambda why: None  # type: ignore[method-assign]
    switch(duplicate, 0, 2)  # landed on the covered worker: closed, dialled again
    assert len(dials.to("10.0.0.1")) == 3
    switch(dials.to("10.0.0.1")[2], 1, 2)
    assert agent.addresses["10.0.0.1"].coverage.complete
    assert len(dials.to("10.0.0.1")) == 3  # covered: no more
    switch(dials.to("10.0.0.2")[0], 0, 1)
    assert agent.addresses["10.0.0.2"].coverage.complete


def test_a_failed_dial_backs_off_and_retries(dials: Dials) -> None:
    clock = Clock()
    agent = service(clock)
    agent._resolved(["10.0.0.1"])
    tunnel = dials.to("10.0.0.1")[0]
    tunnel._ended(tunnel, "cannot connect: refused")
    assert len(dials.to("10.0.0.1")) == 1
    clock.advance(0.3)  # the first back-off is at most 0.25 s
    assert len(dials.to("10.0.0.1")) == 2


def test_a_lost_tunnel_is_redialled_at_once(dials: Dials) -> None:
    clock = Clock()
    agent = service(clock)
    agent._resolved(["10.0.0.1"])
    tunnel = dials.to("10.0.0.1")[0]
    switch(tunnel, 0, 1)
    tunnel._ended(tunnel, "the connection closed")
    assert len(dials.to("10.0.0.1")) == 2
