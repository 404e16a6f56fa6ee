"""Requests waiting for a free upstream connection (all ``max_connections``
busy) wait no longer than their response-head limit: then a ``504``, and
nothing is sent."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from karpor.config.model import Cluster, TokenCredential
from karpor.kube.status import ApiError
from karpor.upstream.pool import ClusterPool, PoolSettings
from karpor.upstream.request import UpstreamRequest

CLUSTER = Cluster(name="a", endpoint="http://10.0.0.9:6443", credential=TokenCredential(token="t"))


class _Exchange:
    request = UpstreamRequest(b"GET", b"/api")

    def __init__(self, head_timeout: float | None = 10.0) -> None:
        self.head_timeout = head_timeout
        self.cancelled = False
        self.given: list[Any] = []
        self.failed: list[ApiError] = []

    def upstream_failed(self, error: ApiError) -> None:
        self.failed.append(error)


class _Conn:
    dedicated = False
    closed = False


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> tuple[ClusterPool, MemoryReactorClock]:
    def connect(pool: ClusterPool, exchange: Any, dedicated: bool = False) -> None:
        pool._open += 1
        exchange.given.append("new")

    monkeypatch.setattr(ClusterPool, "_connect", connect)
    monkeypatch.setattr(ClusterPool, "_give", lambda pool, conn, ex: ex.given.append(conn))
    clock = MemoryReactorClock()
    settings = PoolSettings(max_connections=1, response_header_timeout=10.0)
    return ClusterPool(CLUSTER, clock, settings, endpoint_factory=lambda c: None), clock  # type: ignore[arg-type,return-value]


def test_a_queued_request_fails_after_its_head_timeout(
    pool: tuple[ClusterPool, MemoryReactorClock],
) -> None:
    p, clock = pool
    first, second, third = _Exchange(), _Exchange(), _Exchange()
    p.submit(first)  # type: ignore[arg-type]
    assert first.given == ["new"]
    p.submit(second)  # type: ignore[arg-type]
    clock.advance(4)
    p.submit(third)  # type: ignore[arg-type]
    clock.advance(5.9)
    assert not second.failed and not third.failed
    conn = _Conn()
    p.release(conn)  # type: ignore[arg-type]
    assert second.given == [conn]  # in time: it got the connection
    clock.advance(0.2)
    assert not second.failed and not third.failed
    clock.advance(3.9)  # the third waited 10 s
    [error] = third.failed
    assert error.code == 504 and error.reason == "Timeout"
    assert 'cluster "a"' in error.message and "within 10s" in error.message
    assert third.given == []
    assert not clock.getDelayedCalls()  # nothing waits: no timer left


def test_cancelled_and_long_running_waiters(pool: tuple[ClusterPool, MemoryReactorClock]) -> None:
    p, clock = pool
    busy, gone, watch = _Exchange(), _Exchange(), _Exchange(head_timeout=None)
    p.submit(busy)  # type: ignore[arg-type]
    p.submit(gone)  # type: ignore[arg-type]
    p.submit(watch)  # type: ignore[arg-type]
    gone.cancelled = True
    clock.advance(60)
    assert not gone.failed and not watch.failed  # dropped quietly; no head limit
    conn = _Conn()
    p.release(conn)  # type: ignore[arg-type]
    assert watch.given == [conn]
