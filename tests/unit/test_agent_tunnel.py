"""The agent's end of a tunnel: the upgrade, the gateway's answer, liveness."""

from __future__ import annotations

from typing import Any, cast

import h2.config
import h2.connection
from twisted.internet.task import Clock

from karpor.agent.tunnel import (
    DEAD_AFTER,
    MAX_FRAME_SIZE,
    PING_INTERVAL,
    SESSION_WINDOW,
    AgentTunnel,
)
from karpor.http.tunnelwire import TUNNEL_PATH, UPGRADE_HEADER, Answer, switch_response
from karpor.upstream.pool import ClusterPool


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


class _WaitingPool:
    """A pool that takes a stream and leaves it waiting for a connection."""

    error = None

    def head_timeout(self, method: bytes, target: bytes) -> None:
        return None

    def submit(self, stream: Any) -> None:
        return None


def test_large_frames_on_an_upgrade_stream_are_taken() -> None:
    """The agent announces MAX_FRAME_SIZE (larger than HTTP/2's 16 KiB) and
    takes frames that large; an upgrade stream's window is SESSION_WINDOW."""
    ended: list[str] = []
    agent = AgentTunnel(
        "gw",
        "1.0",
        lambda: cast(ClusterPool, _WaitingPool()),
        Clock(),
        lambda t, a: None,
        lambda t, why: ended.append(why),
    )
    transport = Transport()
    agent.makeConnection(transport)
    transport.data = b""  # the upgrade request
    agent.dataReceived(switch_response(0, 1))
    gateway = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    gateway.initiate_connection()
    gateway.receive_data(transport.data)
    transport.data = b""
    assert gateway.max_outbound_frame_size == MAX_FRAME_SIZE
    request = [(b":method", b"POST"), (b":path", b"/exec"), (b":scheme", b"https")]
    request += [(b":authority", b"c"), (UPGRADE_HEADER, b"websocket")]
    gateway.send_headers(1, request)
    agent.dataReceived(gateway.data_to_send())
    gateway.receive_data(transport.data)
    transport.data = b""
    assert gateway.local_flow_control_window(1) == SESSION_WINDOW
    gateway.send_data(1, b"x" * MAX_FRAME_SIZE)
    agent.dataReceived(gateway.data_to_send())
    assert not transport.aborted, ended
    assert 1 in agent.streams
