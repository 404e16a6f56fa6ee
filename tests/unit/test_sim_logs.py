"""karpor.sim.logs: log lines as a function of the clock, options, following."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock

from karpor.kube.status import ApiError
from karpor.sim.logs import (
    ContainerLog,
    LogFollower,
    LogOptions,
    format_rfc3339_nano,
    parse_time,
    render_lines,
    resolve,
)

T0 = 1_700_000_000.0


def _pod(phase: str = "Running", containers: tuple[str, ...] = ("app",)) -> dict[str, Any]:
    statuses = [
        {"name": c, "state": {"running": {"startedAt": "2023-11-14T22:13:20Z"}}} for c in containers
    ]
    return {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"containers": [{"name": c} for c in containers]},
        "status": {"phase": phase, "containerStatuses": statuses if phase == "Running" else []},
    }


def test_times() -> None:
    assert parse_time("2023-11-14T22:13:20Z") == T0
    assert parse_time("2023-11-14T23:13:20+01:00") == T0
    assert format_rfc3339_nano(T0 + 0.5) == "2023-11-14T22:13:20.5Z"
    assert format_rfc3339_nano(T0) == "2023-11-14T22:13:20Z"


def test_lines_tail_since_limit_timestamps() -> None:
    log = ContainerLog("ns", "p", "app", T0, 1.0)
    assert log.count_at(T0 - 1) == 0
    assert log.count_at(T0 + 4.5) == 5
    everything = render_lines(log, LogOptions(), T0 + 4.5).decode().splitlines()
    assert everything == [f"ns/p/app line {i}" for i in range(5)]
    tail = render_lines(log, LogOptions(tail_lines=2), T0 + 4.5).decode().splitlines()
    assert tail == ["ns/p/app line 3", "ns/p/app line 4"]
    since = render_lines(log, LogOptions(since_seconds=2), T0 + 4.5).decode().splitlines()
    assert since == ["ns/p/app line 3", "ns/p/app line 4"]
    assert render_lines(log, LogOptions(limit_bytes=5), T0 + 4.5) == b"ns/p/"
    stamped = render_lines(log, LogOptions(timestamps=True, tail_lines=1), T0 + 4.5)
    assert stamped == b"2023-11-14T22:13:24Z ns/p/app line 4\n"


def test_options_from_query() -> None:
    options = LogOptions.from_query(
        {"follow": ["true"], "tailLines": ["3"], "container": ["c"], "timestamps": ["1"]}
    )
    assert options == LogOptions(container="c", follow=True, timestamps=True, tail_lines=3)
    with pytest.raises(ApiError) as bad:
        LogOptions.from_query({"tailLines": ["x"]})
    assert bad.value.code == 400
    with pytest.raises(ApiError) as invalid:
        LogOptions.from_query({"tailLines": ["-1"]})
    assert invalid.value.code == 422


def test_resolve_errors_as_kube() -> None:
    assert resolve(_pod(), LogOptions(), 1.0).container == "app"
    with pytest.raises(ApiError, match="a container name must be specified"):
        resolve(_pod(containers=("a", "b")), LogOptions(), 1.0)
    with pytest.raises(ApiError, match="container nope is not valid for pod p"):
        resolve(_pod(), LogOptions(container="nope"), 1.0)
    with pytest.raises(ApiError, match="is waiting to start: ContainerCreating"):
        resolve(_pod(phase="Pending"), LogOptions(), 1.0)
    with pytest.raises(ApiError, match="previous terminated container"):
        resolve(_pod(), LogOptions(previous=True), 1.0)


def test_follower_streams_until_pod_gone() -> None:
    clock = Clock()
    clock.advance(T0 + 1.5)
    written: list[bytes] = []
    finished: list[bool] = []
    alive = {"value": True}
    follower = LogFollower(
        ContainerLog("ns", "p", "app", T0, 1.0),
        LogOptions(follow=True, tail_lines=1),
        clock,
        written.append,
        lambda: finished.append(True),
        lambda: alive["value"],
    )
    follower.start()
    assert written == [b"ns/p/app line 1\n"]
    clock.advance(1.0)
    assert written[-1] == b"ns/p/app line 2\n"
    clock.advance(2.0)
    assert written[-2:] == [b"ns/p/app line 3\n", b"ns/p/app line 4\n"]
    alive["value"] = False
    clock.advance(1.0)
    assert finished == [True]
    assert not clock.getDelayedCalls()


def test_follower_limit_bytes_and_stop() -> None:
    clock = Clock()
    clock.advance(T0)
    written: list[bytes] = []
    finished: list[bool] = []
    follower = LogFollower(
        ContainerLog("ns", "p", "app", T0, 1.0),
        LogOptions(follow=True, limit_bytes=20),
        clock,
        written.append,
        lambda: finished.append(True),
        lambda: True,
    )
    follower.start()
    clock.advance(1.0)
    assert b"".join(written) == b"ns/p/app line 0\nns/p"
    assert finished == [True]
    other = LogFollower(
        ContainerLog("ns", "p", "app", T0, 1.0),
        LogOptions(follow=True),
        clock,
        written.append,
        lambda: finished.append(True),
        lambda: True,
    )
    other.start()
    other.stop()
    assert not clock.getDelayedCalls()
