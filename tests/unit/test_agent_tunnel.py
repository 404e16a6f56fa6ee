"""The agent's end of a tunnel: the upgrade, the gateway's answer, liveness."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from karpor.agent.tunnel import DEAD_AFTER, PING_INTERVAL, AgentTunnel
from karpor.http.tunnelwire import TUNNEL_PATH, Answer, switch_response


class Transport:
    def __init__(self) -> None:
        self.data = b""
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def abortConnection(self) -> None:
        self.aborted = True

    def getPeer(self) -> Any:
        return None


def tunnel(clock: Clock) -> tuple[AgentTunnel, Transport, list[Answer], list[str]]:
    switched: list[Answer] = []
    ended: list[str] = []

    def no_pool() -> Any:
        raise AssertionError("no stream in these tests")

    agent = AgentTunnel(
        "gw.example:8443",
        "1.0",
        no_pool,
        clock,
        lambda t, answer: switched.append(answer),
        lambda t, why: ended.append(why),
    )
    transport = Transport()
    agent.makeConnection(transport)
    return agent, transport, switched, ended


def test_upgrade_then_the_agent_serves_http2() -> None:
    agent, transport, switched, _ = tunnel(Clock())
    assert transport.data.startswith(b"GET " + TUNNEL_PATH + b" HTTP/1.1\r\n")
    transport.data = b""
    agent.dataReceived(switch_response(1, 2))
    assert switched == [Answer(101, 1, 2, "Switching Protocols")]
    assert transport.data.startswith(b"\x00\x00")  # the server's SETTINGS frame, no preface


def test_a_refusal_drops_the_connection() -> None:
    agent, transport, switched, _ = tunnel(Clock())
    agent.dataReceived(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    assert switched == [] and transport.aborted


def test_a_silent_gateway_is_pinged_then_dropped() -> None:
    clock = Clock()
    agent, transport, _, _ = tunnel(clock)
    agent.dataReceived(switch_response(0, 1))
    agent.sweep(clock.seconds())
    sent = len(transport.data)
    clock.advance(PING_INTERVAL)
    agent.sweep(clock.seconds())
    assert b"\x00\x00\x08\x06\x00" in transport.data[sent:]  # a PING frame
    assert not transport.aborted
    clock.advance(DEAD_AFTER - PING_INTERVAL)
    agent.sweep(clock.seconds())
    assert transport.aborted
