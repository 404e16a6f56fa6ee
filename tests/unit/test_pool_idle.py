"""Idle upstream connections: what a busy gateway keeps between requests.

Under load many responses can end in one reactor turn, more than
``max_idle`` of them: the pool keeps the surplus for EXCESS_IDLE_GRACE
seconds (the next turn's requests take them) and only then closes the
least recently used beyond ``max_idle``."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.testing import MemoryReactorClock

from karpor.config.model import Cluster, TokenCredential
from karpor.upstream.pool import EXCESS_IDLE_GRACE, ClusterPool, PoolSettings
from karpor.upstream.request import UpstreamRequest

CLUSTER = Cluster(name="a", endpoint="http://10.0.0.9:6443", credential=TokenCredential(token="t"))


class _Conn:
    """What the pool asks of an upstream connection here."""

    dedicated = False

    def __init__(self, number: int) -> None:
        self.number = number
        self.closed = False
        self.idle_since = 0.0

    def close(self) -> None:
        self.closed = True


def _pool(clock: MemoryReactorClock, max_idle: int) -> ClusterPool:
    settings = PoolSettings(connect_timeout=5, idle_timeout=90, max_idle=max_idle)
    return ClusterPool(CLUSTER, clock, settings, endpoint_factory=lambda creds: None)  # type: ignore[arg-type,return-value]


def test_a_burst_beyond_max_idle_is_kept_for_the_grace_then_trimmed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the connection handed out is noted, not used
    monkeypatch.setattr(
        ClusterPool, "_give", lambda pool, conn, exchange: exchange.taken.append(conn)
    )
    clock = MemoryReactorClock()
    pool = _pool(clock, max_idle=2)
    conns = [_Conn(n) for n in range(5)]
    for conn in conns:
        pool.release(conn)  # type: ignore[arg-type]
    # one turn ended five responses: none closed at once
    assert not any(c.closed for c in conns)
    clock.advance(EXCESS_IDLE_GRACE / 2)
    # the next turn's requests take the most recently used ones back
    taken: list[Any] = []
    for _ in range(2):
        pool.submit(_Exchange(taken))  # type: ignore[arg-type]
    assert [c.number for c in taken] == [4, 3]
    clock.advance(EXCESS_IDLE_GRACE)
    # three idle, max two: the least recently used surplus closed
    assert [c.number for c in conns if c.closed] == [0]
    assert not any(c.closed for c in conns[1:])


def test_the_surplus_of_a_sustained_burst_stays_until_it_idles() -> None:
    clock = MemoryReactorClock()
    pool = _pool(clock, max_idle=1)
    first = [_Conn(n) for n in range(3)]
    for conn in first:
        pool.release(conn)  # type: ignore[arg-type]
    clock.advance(EXCESS_IDLE_GRACE - 0.5)
    late = _Conn(9)
    pool.release(late)  # type: ignore[arg-type]
    clock.advance(0.5)
    # the three idle for the whole grace go, down to max_idle: the one
    # released late is within its grace and stays (it is the one kept)
    assert [c.closed for c in first] == [True, True, True]
    assert not late.closed
    clock.advance(EXCESS_IDLE_GRACE)
    assert not late.closed


class _Exchange:
    """An exchange noting the connection the pool hands it."""

    cancelled = False
    request = UpstreamRequest(b"GET", b"/api")

    def __init__(self, taken: list[Any]) -> None:
        self.taken = taken
