"""The upstream response-header timeout: which requests get it, the
reusable timer, and what happens to the carrier (an HTTP/1.1 connection is
dropped, an HTTP/2 stream reset) and to the caller (a 504 Status)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.channel import RecordingChannel as Client
from twisted.internet.testing import MemoryReactorClock, StringTransport

from karpor.app.settings import SettingsError, UpstreamSettings, parse_settings
from karpor.config.model import Cluster, TokenCredential
from karpor.kube.requestinfo import long_running, long_running_target, parse_request_info
from karpor.upstream.deadline import DEFAULT_RESPONSE_HEADER_TIMEOUT, HeadDeadline
from karpor.upstream.forward import Forwarder
from karpor.upstream.http1 import UpstreamConnection
from karpor.upstream.pool import ClusterPool, PoolSettings
from karpor.upstream.request import UpstreamRequest

CLUSTER = Cluster(name="slow", endpoint="http://10.0.0.9:6443", credential=TokenCredential("t"))

# -- which requests ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "expected"),
    [
        (b"GET", b"/api/v1/namespaces/d/pods/p", False),
        (b"GET", b"/api/v1/pods?limit=500", False),
        (b"POST", b"/api/v1/namespaces/d/configmaps", False),
        (b"GET", b"/version", False),
        (b"GET", b"/api/v1/pods?watch=true", True),
        (b"GET", b"/api/v1/pods?watch=false", False),
        (b"GET", b"/api/v1/watch/namespaces/d/pods", True),
        (b"GET", b"/api/v1/namespaces/d/pods/p/log", True),
        (b"GET", b"/api/v1/namespaces/d/pods/p/lo%67?follow=true", True),
        (b"POST", b"/api/v1/namespaces/d/pods/p/exec?command=sh", True),
        (b"GET", b"/api/v1/namespaces/d/pods/p/attach", True),
        (b"POST", b"/api/v1/namespaces/d/pods/p/portforward", True),
        (b"GET", b"/api/v1/namespaces/d/services/s/proxy/healthz", True),
        (b"GET", b"/api/v1/namespaces/d/configmaps/watchlog", False),
        (b"GET", b"/logs/kube-apiserver.log", False),
        (b"GET", b"/api/v1/watch", False),  # kube refuses it: an ordinary request here
    ],
)
def test_long_running_as_kube_classifies_it(method: bytes, target: bytes, expected: bool) -> None:
    assert long_running_target(method, target) is expected


_segment = st.sampled_from(
    ["api", "apis", "v1", "apps", "namespaces", "d", "pods", "p", "log", "exec", "attach",
     "portforward", "proxy", "watch", "status", "lo%67", "w%61tch", "x"]
)  # fmt: skip
_query = st.sampled_from(["", "?watch=true", "?watch=0", "?follow=1", "?limit=1", "?watch"])


@given(st.lists(_segment, max_size=8), _query, st.sampled_from([b"GET", b"POST", b"DELETE"]))
def test_the_shortcut_agrees_with_parsing(segments: list[str], query: str, method: bytes) -> None:
    target = ("/" + "/".join(segments) + query).encode()
    path, _, raw_query = target.partition(b"?")
    try:
        info = parse_request_info(method.decode(), path.decode(), raw_query.decode())
    except ValueError:
        expected = False
    else:
        expected = long_running(info)
    assert long_running_target(method, target) is expected


def test_the_pool_times_only_requests_that_are_not_long_running() -> None:
    settings = PoolSettings(response_header_timeout=0.5)
    pool = ClusterPool(CLUSTER, MemoryReactorClock(), settings, endpoint_factory=lambda c: None)  # type: ignore[arg-type,return-value]
    assert pool.head_timeout(b"GET", b"/api/v1/pods") == 0.5
    assert pool.head_timeout(b"GET", b"/api/v1/pods?watch=1") is None


def test_the_setting() -> None:
    assert UpstreamSettings().response_header_timeout == DEFAULT_RESPONSE_HEADER_TIMEOUT == 60
    parsed = parse_settings("upstream: {responseHeaderTimeout: 0.5}\n", "k.yaml")
    assert parsed.upstream.response_header_timeout == 0.5
    with pytest.raises(SettingsError, match=r"upstream\.responseHeaderTimeout: must be a positive"):
        parse_settings("upstream: {responseHeaderTimeout: 0}\n", "k.yaml")
    with pytest.raises(SettingsError, match="unknown key"):
        parse_settings("upstream: {responseTimeout: 1}\n", "k.yaml")


# -- the timer ------------------------------------------------------------------------


def test_one_delayed_call_serves_many_waits() -> None:
    clock = MemoryReactorClock()
    fired: list[float] = []
    deadline = HeadDeadline(clock, fired.append)
    for _ in range(1000):  # requests answered at once
        deadline.start(60.0)
        clock.advance(0.01)
        deadline.stop()
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(60)  # the pending call finds nothing waiting: gone
    assert clock.getDelayedCalls() == [] and fired == []


def test_the_pending_call_follows_the_latest_wait() -> None:
    clock = MemoryReactorClock()
    fired: list[float] = []
    deadline = HeadDeadline(clock, fired.append)
    deadline.start(1.0)
    clock.advance(0.5)
    deadline.stop()
    deadline.start(1.0)  # ends at 1.5
    clock.advance(0.6)  # the first call fires at 1.0 and re-arms
    assert fired == [] and deadline.waiting
    clock.advance(0.5)
    assert fired == [1.0] and not deadline.waiting
    deadline.start(5.0)
    deadline.start(0.2)  # a shorter wait than the pending call's
    clock.advance(0.2)
    assert fired == [1.0, 0.2]
    deadline.start(1.0)
    deadline.cancel()
    assert clock.getDelayedCalls() == []


# -- HTTP/1.1: the connection is dropped ------------------------------------------------------


class _Pool:
    """What an UpstreamConnection asks of its pool."""

    def __init__(self, clock: MemoryReactorClock) -> None:
        self.reactor = clock
        self.cluster = CLUSTER
        self.released: list[UpstreamConnection] = []
        self.lost: list[UpstreamConnection] = []

    def connection_ready(self, conn: UpstreamConnection) -> None: ...

    def release(self, conn: UpstreamConnection) -> None:
        self.released.append(conn)

    def connection_lost(self, conn: UpstreamConnection, reason: Any, was_ready: bool) -> None:
        self.lost.append(conn)


def _get(client: Client, timeout: float | None) -> Forwarder:
    return Forwarder(
        client,
        UpstreamRequest(b"GET", b"/api/v1/pods"),
        head_timeout=timeout,
    )


def _connection() -> tuple[UpstreamConnection, StringTransport, _Pool, MemoryReactorClock]:
    clock = MemoryReactorClock()
    pool = _Pool(clock)
    conn = UpstreamConnection(pool, tls=False)  # type: ignore[arg-type]
    transport = StringTransport()
    conn.makeConnection(transport)
    return conn, transport, pool, clock


def _carry(conn: UpstreamConnection, forwarder: Forwarder) -> None:
    conn.start(forwarder)
    forwarder.attach(conn)


def test_no_head_in_time_is_a_504_and_the_connection_goes() -> None:
    conn, transport, pool, clock = _connection()
    client = Client()
    _carry(conn, _get(client, 0.5))
    clock.advance(0.4)
    assert client.errors == [] and not transport.disconnecting
    clock.advance(0.2)
    [error] = client.errors
    assert error.code == 504 and error.reason == "Timeout"
    assert 'cluster "slow"' in error.message and "0.5s" in error.message
    body = error.body()
    assert b'"kind":"Status"' in body.replace(b" ", b"")
    assert transport.disconnecting  # aborted: it still owes a response
    conn.connectionLost()
    assert pool.lost == [conn] and client.errors == [error]
    assert clock.getDelayedCalls() == []


def test_a_head_in_time_stops_the_wait_and_the_connection_is_reused() -> None:
    conn, transport, pool, clock = _connection()
    for _ in range(3):
        client = Client()
        _carry(conn, _get(client, 0.5))
        clock.advance(0.3)
        conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        clock.advance(0.3)
        assert client.errors == [] and client.finished == [False]
    assert pool.released == [conn, conn, conn] and not transport.disconnecting
    # a slow body after the head is not the head timeout's business
    client = Client()
    _carry(conn, _get(client, 0.5))
    conn.dataReceived(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nok")
    clock.advance(5)
    assert client.errors == [] and not transport.disconnecting


def test_an_interim_100_is_not_the_head() -> None:
    conn, transport, _, clock = _connection()
    client = Client()
    _carry(conn, _get(client, 0.5))
    conn.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
    clock.advance(0.6)
    assert [e.code for e in client.errors] == [504] and transport.disconnecting


def test_an_untimed_request_waits() -> None:
    conn, transport, _, clock = _connection()
    client = Client()
    _carry(conn, _get(client, None))
    clock.advance(3600)
    assert client.errors == [] and not transport.disconnecting
    assert clock.getDelayedCalls() == []
