"""Health probes, sans-IO: the requests a probe sends, what answers mean,
when the next probe is due, and the fail-fast decision."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.config.model import Cluster, TokenCredential
from karpor.health.probe import (
    DEFAULT_INTERVAL,
    DEFAULT_TIMEOUT,
    MAX_DETAIL,
    ClusterHealth,
    ClusterStatus,
    Probe,
    ProbeSettings,
    change_line,
    failure_detail,
    parse_version,
    refusal,
    same_access,
)

VERSION_BODY = json.dumps({"major": "1", "minor": "31", "gitVersion": "v1.31.0"}).encode()
KUBE_READYZ_FAILURE = (
    b"[+]ping ok\n[+]log ok\n[-]etcd failed: reason withheld\n[+]informer-sync ok\n"
    b"readyz check failed\n"
)
UNREACHABLE = "cluster 'a' is unreachable: Connection was refused by other side: 111"
SETTINGS = ProbeSettings()


def run(probe: Probe, answers: list[tuple[int, bytes]]) -> list[str]:
    """Answer the probe's requests in turn; the paths it asked for."""
    asked: list[str] = []
    for code, body in answers:
        assert probe.path is not None
        asked.append(probe.path)
        probe.answered(code, body)
    assert probe.done
    return asked


def test_defaults_meet_the_issue_bounds() -> None:
    assert (SETTINGS.interval, SETTINGS.timeout, SETTINGS.fail_fast) == (10.0, 4.0, True)
    assert (DEFAULT_INTERVAL, DEFAULT_TIMEOUT) == (10.0, 4.0)
    assert SETTINGS.retry_interval == 2.5
    # a failure is seen by the next probe plus its timeout; recovery by a
    # failing probe's timeout, the retry interval and a probe
    assert SETTINGS.interval + SETTINGS.timeout <= 15
    assert SETTINGS.timeout + SETTINGS.retry_interval + SETTINGS.timeout <= 15


def test_a_healthy_cluster_readyz_then_version() -> None:
    health = ClusterHealth(SETTINGS)
    probe = health.start()
    assert run(probe, [(200, b"ok"), (200, VERSION_BODY)]) == ["/readyz", "/version"]
    outcome = health.finish(probe, 1_700_000_000.0)
    status = outcome.status
    assert status == ClusterStatus(True, "/readyz: ok", 1_700_000_000.0, "v1.31.0")
    assert status.probe_time == "2023-11-14T22:13:20Z"
    assert outcome.turned and outcome.changed
    assert outcome.delay == SETTINGS.interval
    again = health.start()
    run(again, [(200, b"ok"), (200, VERSION_BODY)])
    later = health.finish(again, 1_700_000_010.0)
    assert not later.turned and not later.changed  # only the probe time moved


def test_readyz_404_falls_back_to_healthz_and_remembers() -> None:
    health = ClusterHealth(SETTINGS)
    probe = health.start()
    asked = run(probe, [(404, b"404 page not found"), (200, b"ok"), (200, VERSION_BODY)])
    assert asked == ["/readyz", "/healthz", "/version"]
    status = health.finish(probe, 0).status
    assert status.healthy and status.message == "/healthz: ok (no /readyz)"
    second = health.start()
    assert second.path == "/healthz"  # no /readyz round trip every time
    run(second, [(500, b"[-]etcd failed: reason withheld\nhealthz check failed")])
    status = health.finish(second, 10).status
    assert not status.healthy
    assert status.message == (
        "GET /healthz: 500 Internal Server Error: [-]etcd failed: reason withheld"
    )
    assert status.version == "v1.31.0"  # the last known version stays
    assert health.start().path == "/readyz"  # no working fallback: ask /readyz again


def test_a_failed_check_is_unhealthy_with_the_failed_checks() -> None:
    health = ClusterHealth(SETTINGS)
    probe = health.start()
    assert run(probe, [(500, KUBE_READYZ_FAILURE)]) == ["/readyz"]  # no /version
    outcome = health.finish(probe, 5)
    assert not outcome.status.healthy
    assert outcome.status.message == (
        "GET /readyz: 500 Internal Server Error: [-]etcd failed: reason withheld"
    )
    assert outcome.status.version == ""
    assert outcome.delay == SETTINGS.retry_interval
    assert outcome.turned


def test_a_status_body_gives_its_message() -> None:
    status = {"kind": "Status", "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    probe = Probe()
    run(probe, [(401, json.dumps(status).encode())])
    assert probe.message == "GET /readyz: 401 Unauthorized: Unauthorized"
    assert probe.healthy is False


def test_a_transport_failure_keeps_the_pool_wording_and_code() -> None:
    probe = Probe()
    probe.failed(UNREACHABLE)
    assert probe.done and probe.healthy is False
    assert probe.message == f"GET /readyz: {UNREACHABLE}"
    assert probe.refusal_code == 503
    tls = Probe()
    tls.failed("cluster 'a': TLS handshake failed: certificate verify failed", 502)
    health = ClusterHealth(SETTINGS)
    assert health.finish(tls, 0).status.refusal_code == 502


def test_a_failed_version_request_leaves_the_health_and_the_last_version() -> None:
    health = ClusterHealth(SETTINGS)
    first = health.start()
    run(first, [(200, b"ok"), (200, VERSION_BODY)])
    health.finish(first, 0)
    probe = health.start()
    probe.answered(200, b"ok")
    assert probe.path == "/version"
    probe.failed("cluster 'a' closed the connection mid-response", 502)
    status = health.finish(probe, 10).status
    assert status.healthy and status.version == "v1.31.0"
    odd = health.start()
    run(odd, [(200, b"ok"), (200, b"not json")])
    assert health.finish(odd, 20).status.version == "v1.31.0"


def test_a_timeout_names_what_was_waited_for() -> None:
    probe = Probe()
    probe.timed_out(4.0)
    assert probe.message == "GET /readyz: no answer within 4s"
    exec_wait = Probe()
    exec_wait.timed_out(2.5, "the exec plugin")
    assert exec_wait.message == "GET /readyz: no answer within 2.5s (the exec plugin)"
    late = Probe()
    late.answered(200, b"ok")
    late.timed_out(4.0)  # while asking /version: still healthy
    assert late.healthy is True


def test_settings_validation() -> None:
    with pytest.raises(ValueError, match=r"timeout \(10s\) must be less than interval \(10s\)"):
        ProbeSettings(interval=10, timeout=10)
    with pytest.raises(ValueError, match="must be less than"):
        ProbeSettings(interval=5, timeout=0)
    assert ProbeSettings(interval=2, timeout=1).retry_interval == 1.0
    assert ProbeSettings(interval=0.5, timeout=0.2).retry_interval == 0.5
    assert ProbeSettings(interval=60, timeout=5).retry_interval == 15.0


def test_refusal_fails_fast_only_for_an_unhealthy_cluster() -> None:
    down = ClusterStatus(False, f"GET /readyz: {UNREACHABLE}", 1_700_000_000.0)
    error = refusal("a", down, SETTINGS)
    assert error is not None
    assert error.code == 503 and error.reason == "ServiceUnavailable"
    assert error.message == (
        f'cluster "a" is unhealthy: GET /readyz: {UNREACHABLE} (probed 2023-11-14T22:13:20Z); '
        "requests to it fail fast until a probe succeeds"
    )
    assert error.details == {
        "name": "a",
        "group": "cluster.karpor.io",
        "kind": "clusters",
        "retryAfterSeconds": 3,
    }
    assert refusal("a", None, SETTINGS) is None  # never probed: healthy-unknown
    assert refusal("a", ClusterStatus(True, "/readyz: ok", 0), SETTINGS) is None
    # "try anyway": the status is known, the request goes on
    assert refusal("a", down, ProbeSettings(fail_fast=False)) is None
    tls = ClusterStatus(False, "GET /readyz: TLS handshake failed", 0, refusal_code=502)
    bad = refusal("a", tls, SETTINGS)
    assert bad is not None and (bad.code, bad.reason) == (502, "BadGateway")


def test_change_lines() -> None:
    assert (
        change_line("a", ClusterStatus(True, "/readyz: ok", 0, "v1.31.0"))
        == "cluster a is healthy (v1.31.0): /readyz: ok"
    )
    assert (
        change_line("a", ClusterStatus(False, "GET /readyz: no answer within 4s", 0))
        == "cluster a is unhealthy: GET /readyz: no answer within 4s"
    )


def test_same_access() -> None:
    a = Cluster(name="a", endpoint="https://10.0.0.1:6443", credential=TokenCredential("t"))
    relabelled = Cluster(
        name="a",
        endpoint="https://10.0.0.1:6443",
        credential=TokenCredential("t"),
        display_name="A",
        source="other.yaml",
    )
    assert same_access(a, a) and same_access(a, relabelled)
    moved = Cluster(name="a", endpoint="https://10.0.0.2:6443", credential=TokenCredential("t"))
    rotated = Cluster(name="a", endpoint="https://10.0.0.1:6443", credential=TokenCredential("u"))
    assert not same_access(a, moved)
    assert not same_access(a, rotated)


def test_parse_version() -> None:
    assert parse_version(VERSION_BODY) == "v1.31.0"
    assert parse_version(b"[]") is None
    assert parse_version(b'{"gitVersion": ""}') is None
    assert parse_version(b'{"gitVersion": "v1\\n2"}') is None
    assert parse_version(b"\xff") is None


@given(st.binary(max_size=5000))
def test_failure_detail_is_one_short_printable_line(body: bytes) -> None:
    detail = failure_detail(body)
    assert len(detail) <= MAX_DETAIL
    assert detail.isprintable()
    assert detail == detail.strip()


@given(
    interval=st.floats(1.0, 600.0),
    timeout_share=st.floats(0.01, 0.99),
    down_at=st.floats(0.0, 1000.0),
    up_after=st.floats(0.0, 1000.0),
    durations=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=50),
)
def test_failure_and_recovery_are_seen_within_the_bounds(
    interval: float, timeout_share: float, down_at: float, up_after: float, durations: list[float]
) -> None:
    """Drive :class:`ClusterHealth` through a timeline: the cluster is down
    from ``down_at`` to ``up_at``; a probe takes up to the timeout (the
    ``durations`` as shares of it, cycled) and sees the cluster as it is
    when it ends.  The down time is seen within ``interval + timeout``; the
    recovery within ``2 * timeout + retry_interval``."""
    settings = ProbeSettings(interval=interval, timeout=interval * timeout_share)
    up_at = down_at + up_after
    health = ClusterHealth(settings)
    now = 0.0
    seen_down: float | None = None
    seen_up: float | None = None
    index = 0
    while seen_up is None:
        duration = durations[index % len(durations)] * settings.timeout
        index += 1
        end = now + duration
        probe = health.start()
        if down_at <= end < up_at:
            probe.failed("cluster 'a' is unreachable: refused")
        else:
            run(probe, [(200, b"ok"), (200, VERSION_BODY)])
        outcome = health.finish(probe, end)
        if end >= down_at and seen_down is None and not outcome.status.healthy:
            seen_down = end
        if end >= up_at and outcome.status.healthy:
            seen_up = end
        now = end + outcome.delay
    if seen_down is None:  # too short an outage to be seen: over before a probe could see it
        assert up_at - down_at <= settings.interval + settings.timeout + 1e-6
        return
    assert seen_down - down_at <= settings.interval + settings.timeout + 1e-6
    assert seen_up - up_at <= 2 * settings.timeout + settings.retry_interval + 1e-6


def test_refusal_carries_the_probe_message_as_a_warning() -> None:
    down = ClusterStatus(False, f"GET /readyz: {UNREACHABLE}", 1_700_000_000.0)
    error = refusal("a", down, SETTINGS)
    assert error is not None
    assert error.headers == (
        (b"warning", f'299 - "cluster \\"a\\" is unhealthy: GET /readyz: {UNREACHABLE}"'.encode()),
    )
