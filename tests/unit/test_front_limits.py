"""The limits (``karpor.front.limits``) over the shared count table
(``karpor.front.limitstable``): what is refused, the 429, the token bucket,
counting across processes, the table's bounds."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.app.settings import SettingsError, parse_settings
from karpor.auth.identity import Identity
from karpor.front import limitstable
from karpor.front.limits import (
    USER_BUCKETS,
    ClusterLimits,
    Exemptions,
    Limiter,
    LimitSettings,
    UserLimits,
    open_limiter,
    user_bucket,
)
from karpor.front.limitstable import CountTable, TableFull, key_of, table_size
from karpor.kube.status import ApiError

ALICE = Identity("alice", ("dev",))
BOB = Identity("bob", ("dev",))
ADMIN = Identity("root", ("system:masters",))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Rejections:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def rejected(self, reason: str, cluster: str, bucket: str) -> None:
        self.seen.append((reason, cluster, bucket))


def limits(**user: float) -> LimitSettings:
    return LimitSettings(user=UserLimits(**user))  # type: ignore[arg-type]


def shared(cells: int = 2, users: int = 64, clusters: int = 16) -> list[CountTable]:
    """``cells`` tables over one buffer, each with a cell of its own (workers)."""
    buffer = bytearray(table_size(users, clusters, cells))
    limitstable._write_header(buffer, users, clusters, cells)
    tables = [CountTable(buffer) for _ in range(cells)]
    for pid, table in enumerate(tables, start=1):
        table.cell = pid - 1
        table.pids[pid - 1] = pid
    return tables


def refused(call: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        call()  # type: ignore[operator]
    return info.value


# -- settings -------------------------------------------------------------------------


def test_settings_read_the_issue_example() -> None:
    text = (
        "limits:\n"
        "  user: {inflight: 50, watches: 200, qps: 100, burst: 200}\n"
        "  cluster: {inflight: 400}\n"
        '  exempt: {groups: ["system:masters"]}\n'
    )
    got = parse_settings(text, "karpor.yaml").limits
    assert got == LimitSettings(
        UserLimits(50, 200, 100.0, 200), ClusterLimits(400), Exemptions(("system:masters",))
    )


def test_settings_absent_means_no_limits_and_left_out_fields_are_none() -> None:
    assert parse_settings("port: 8443\n", "k.yaml").limits is None
    got = parse_settings("limits: {user: {qps: 2.5}}\n", "k.yaml").limits
    assert got is not None
    assert got.user == UserLimits(None, None, 2.5, 5)  # burst: twice qps, rounded up
    assert got.cluster.inflight is None


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("limits: {user: {inflight: 0}}", "k.yaml: limits.user.inflight: must be a positive"),
        ("limits: {user: {qps: -1}}", "k.yaml: limits.user.qps: must be a positive number"),
        ("limits: {user: {burst: 3}}", "k.yaml: limits.user: burst needs qps"),
        ("limits: {cluster: {inflights: 3}}", "k.yaml: limits.cluster.inflights: unknown key"),
        ("limits: {exempt: {groups: [1]}}", "k.yaml: limits.exempt.groups[0]: must be"),
    ],
)
def test_settings_problems_name_the_field(text: str, problem: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(text, "k.yaml")
    assert any(line.startswith(problem) for line in info.value.problems), info.value.problems


# -- concurrency ----------------------------------------------------------------------


def test_inflight_over_the_limit_is_a_429_with_retry_after() -> None:
    metrics = Rejections()
    limiter = Limiter(CountTable.in_memory(64, 16), limits(inflight=2), metrics)
    held = [limiter.admit(ALICE, "prod", False) for _ in range(2)]
    error = refused(lambda: limiter.admit(ALICE, "prod", False))
    assert error.code == 429
    status = error.status()
    assert status["reason"] == "TooManyRequests"
    assert status["details"] == {"retryAfterSeconds": 1}
    assert "limits.user.inflight: 2" in status["message"]
    assert (b"Retry-After", b"1") in error.headers
    assert metrics.seen == [("user-inflight", "prod", user_bucket("alice"))]
    # another user is served meanwhile; a release frees a place
    limiter.admit(BOB, "prod", False).release()
    held[0].release()
    held[0].release()  # idempotent
    limiter.admit(ALICE, "prod", False)
    refused(lambda: limiter.admit(ALICE, "prod", False))


def test_watches_count_apart_from_inflight() -> None:
    metrics = Rejections()
    limiter = Limiter(CountTable.in_memory(64, 16), limits(inflight=1, watches=2), metrics)
    limiter.admit(ALICE, "prod", False)
    limiter.admit(ALICE, "prod", True)
    limiter.admit(ALICE, "prod", True)
    error = refused(lambda: limiter.admit(ALICE, "prod", True))
    assert "limits.user.watches: 2" in error.message
    assert metrics.seen[-1][0] == "user-watches"


def test_exempt_groups_are_never_refused_but_count_on_their_cluster() -> None:
    settings_ = LimitSettings(
        UserLimits(inflight=1), ClusterLimits(inflight=2), Exemptions(("system:masters",))
    )
    limiter = Limiter(CountTable.in_memory(64, 16), settings_)
    for _ in range(5):
        limiter.admit(ADMIN, "prod", False)
    assert dict(limiter.inflight(["prod"])) == {"prod": 5}
    refused(lambda: limiter.admit(ALICE, "prod", False))


def test_cluster_inflight_counts_every_user_and_is_freed_on_release() -> None:
    metrics = Rejections()
    table = CountTable.in_memory(64, 16)
    limiter = Limiter(table, LimitSettings(cluster=ClusterLimits(inflight=2)), metrics)
    first = limiter.admit(ALICE, "prod", False)
    limiter.admit(BOB, "prod", True)
    error = refused(lambda: limiter.admit(BOB, "prod", False))
    assert "limits.cluster.inflight: 2" in error.message
    assert metrics.seen == [("cluster-inflight", "prod", user_bucket("bob"))]
    limiter.admit(BOB, "staging", False)  # another cluster is not affected
    first.release()
    limiter.admit(BOB, "prod", False)
    assert dict(limiter.inflight(["prod", "staging", "none"])) == {
        "prod": 2,
        "staging": 1,
        "none": 0,
    }


def test_a_refused_cluster_gives_back_what_the_user_took() -> None:
    settings_ = LimitSettings(UserLimits(inflight=5), ClusterLimits(inflight=1))
    limiter = Limiter(CountTable.in_memory(64, 16), settings_)
    limiter.admit(BOB, "prod", False)
    for _ in range(10):
        refused(lambda: limiter.admit(ALICE, "prod", False))
    for i in range(5):
        limiter.admit(ALICE, f"other-{i}", False)


def test_fanout_counts_the_user_once_and_each_cluster() -> None:
    settings_ = LimitSettings(UserLimits(inflight=1), ClusterLimits(inflight=1))
    limiter = Limiter(CountTable.in_memory(64, 16), settings_)
    busy = limiter.admit(BOB, "b", False)
    fanout = limiter.admit(ALICE, None, False)
    limiter.admit_cluster(fanout, ALICE, "a")
    part = refused(lambda: limiter.admit_cluster(fanout, ALICE, "b"))
    assert part.code == 429
    limiter.admit_cluster(fanout, ALICE, "c")
    assert dict(limiter.inflight("abc")) == {"a": 1, "b": 1, "c": 1}
    refused(lambda: limiter.admit(ALICE, None, False))  # the user's one request
    fanout.release()
    busy.release()
    assert dict(limiter.inflight("abc")) == {"a": 0, "b": 0, "c": 0}
    limiter.admit(ALICE, None, False)


def test_without_limits_nothing_is_refused_but_clusters_are_counted() -> None:
    limiter = Limiter(CountTable.in_memory(64, 16), None)
    held = [limiter.admit(ALICE, "prod", i % 2 == 0) for i in range(100)]
    assert dict(limiter.inflight(["prod"])) == {"prod": 100}
    for admission in held:
        admission.release()
    assert dict(limiter.inflight(["prod"])) == {"prod": 0}


def test_reconfigure_changes_the_limits_of_held_counts() -> None:
    limiter = Limiter(CountTable.in_memory(64, 16), limits(inflight=3))
    for _ in range(3):
        limiter.admit(ALICE, "prod", False)
    refused(lambda: limiter.admit(ALICE, "prod", False))
    limiter.configure(limits(inflight=4))
    limiter.admit(ALICE, "prod", False)
    limiter.configure(None)
    limiter.admit(ALICE, "prod", False)


# -- the token bucket -----------------------------------------------------------------


def test_qps_refusal_says_when_to_retry() -> None:
    clock = Clock()
    metrics = Rejections()
    table = CountTable.in_memory(64, 16)
    limiter = Limiter(table, limits(qps=0.25, burst=2), metrics, clock=clock)
    limiter.admit(ALICE, "prod", False).release()
    limiter.admit(ALICE, "prod", False).release()
    error = refused(lambda: limiter.admit(ALICE, "prod", False))
    assert error.status()["details"] == {"retryAfterSeconds": 4}
    assert (b"Retry-After", b"4") in error.headers
    assert metrics.seen == [("user-qps", "prod", user_bucket("alice"))]
    limiter.admit(BOB, "prod", False)  # bob has a bucket of his own
    clock.now += 4
    limiter.admit(ALICE, "prod", False)


@settings(max_examples=60, deadline=None)
@given(
    qps=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
    burst=st.integers(1, 6),
    gaps=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=60),
    workers=st.integers(1, 3),
)
def test_token_bucket_never_admits_more_than_rate_and_burst(
    qps: float, burst: int, gaps: list[float], workers: int
) -> None:
    """In any window of ``d`` seconds at most ``burst + qps·d`` requests
    pass, whichever worker admits them; and a request refused is one the
    bucket had no token for."""
    clock = Clock()
    tables = shared(cells=workers)
    limiters = [Limiter(t, limits(qps=qps, burst=burst), clock=clock) for t in tables]
    admitted: list[float] = []
    tokens, last = float(burst), clock.now
    for i, gap in enumerate(gaps):
        clock.now += gap
        tokens = min(float(burst), tokens + (clock.now - last) * qps)
        last = clock.now
        try:
            limiters[i % workers].admit(ALICE, "c", False).release()
        except ApiError as error:
            assert error.code == 429
            assert tokens < 1 + 1e-6
            continue
        assert tokens > 1 - 1e-6
        tokens -= 1
        admitted.append(clock.now)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            assert j - i + 1 <= burst + qps * (admitted[j] - start) + 1e-6


# -- across processes -----------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from(["alice", "bob"]), st.booleans()),
        max_size=80,
    ),
    limit=st.integers(1, 4),
)
def test_counts_are_gateway_wide_and_never_drift(
    ops: list[tuple[int, str, bool]], limit: int
) -> None:
    """Three workers over one table: a user's requests in flight never
    exceed the limit wherever they land, and releasing everything leaves
    zero in every cell."""
    tables = shared(cells=3)
    limiters = [Limiter(t, limits(inflight=limit)) for t in tables]
    held: dict[str, list[object]] = {"alice": [], "bob": []}
    for worker, user, release in ops:
        if release and held[user]:
            held[user].pop(0).release()  # type: ignore[attr-defined]
            continue
        try:
            held[user].append(limiters[worker].admit(Identity(user, ()), "c", False))
        except ApiError:
            assert len(held[user]) == limit
        assert len(held[user]) <= limit
    for admissions in held.values():
        for admission in admissions:
            admission.release()  # type: ignore[attr-defined]
    assert not any(tables[0].user_counts)
    assert not any(tables[0].cluster_counts)


def test_a_file_table_is_shared_by_processes(tmp_path: Path) -> None:
    """A table file the supervisor created, opened by another process:
    what that process holds counts here; its exit frees it."""
    path = str(tmp_path / limitstable.FILENAME)
    supervisor = CountTable.create(path, workers=2)
    assert os.stat(path).st_mode & 0o777 == 0o600
    here = CountTable.open(path)
    here.claim(os.getpid())
    limiter = Limiter(here, limits(inflight=3))
    script = (
        "import os, sys\n"
        "from karpor.auth.identity import Identity\n"
        "from karpor.front.limits import Limiter, LimitSettings, UserLimits\n"
        "from karpor.front.limitstable import CountTable\n"
        "t = CountTable.open(sys.argv[1]); t.claim(os.getpid())\n"
        "l = Limiter(t, LimitSettings(UserLimits(inflight=3)))\n"
        "held = [l.admit(Identity('alice', ()), 'c', False) for _ in range(2)]\n"
        "print(os.getpid(), t.cell, flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None
        pid, cell = map(int, child.stdout.readline().split())
        assert cell != here.cell
        limiter.admit(ALICE, "c", False)
        refused(lambda: limiter.admit(ALICE, "c", False))
        assert dict(limiter.inflight(["c"])) == {"c": 3}
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait(30)
    supervisor.release_pid(pid)  # the supervisor saw the worker exit
    limiter.admit(ALICE, "c", False)
    limiter.admit(ALICE, "c", False)
    here.close()
    supervisor.close()


def test_a_dead_process_cell_is_reclaimed_and_cells_run_out() -> None:
    tables = shared(cells=2)
    limiter = Limiter(tables[1], limits(inflight=1))
    limiter.admit(ALICE, "c", False)
    tables[1].pids[1] = 2**22 + 12345  # a pid that does not exist
    newcomer = CountTable(tables[0]._buffer)
    tables[0].pids[0] = os.getpid()
    assert newcomer.claim(os.getppid()) == 1  # the dead one's cell, zeroed
    assert not any(newcomer.user_counts)
    with pytest.raises(TableFull):  # both cells belong to live processes
        CountTable(tables[0]._buffer).claim(1)


def test_open_limiter_falls_back_to_a_table_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(limitstable.ENV, str(tmp_path / "missing"))
    limiter = open_limiter(limits(inflight=1), None)
    assert limiter.table.cells == 1
    limiter.admit(ALICE, "c", False)
    refused(lambda: limiter.admit(ALICE, "c", False))
    monkeypatch.delenv(limitstable.ENV)
    assert open_limiter(None, None).table.cells == 1


# -- bounds ---------------------------------------------------------------------------


def test_users_past_the_bound_share_the_overflow_slot() -> None:
    """A table of 8 users: the 8th and later users active at once share
    slot 0, so together they get one user's limits; an idle user's slot is
    taken again."""
    clock = Clock()
    table = CountTable.in_memory(8, 4)
    limiter = Limiter(table, limits(inflight=1), clock=clock)
    held = [limiter.admit(Identity(f"u{i}", ()), "c", False) for i in range(7)]
    limiter.admit(Identity("late-1", ()), "c", False)
    refused(lambda: limiter.admit(Identity("late-2", ()), "c", False))
    assert table.overflows == 2
    held[0].release()
    clock.now += limitstable.IDLE + 1
    limiter.admit(Identity("late-2", ()), "c", False)  # took u0's idle slot
    assert limiter._users["late-2"].slot != 0


@settings(max_examples=30, deadline=None)
@given(names=st.lists(st.text(min_size=1, max_size=20), min_size=1, max_size=200, unique=True))
def test_many_distinct_users_stay_within_the_table(names: list[str]) -> None:
    table = CountTable.in_memory(32, 4)
    limiter = Limiter(table, limits(inflight=1000))
    held = [limiter.admit(Identity(name, ()), "c", False) for name in names]
    assert len(limiter._users) <= 32
    assert sum(table.user_counts) == len(names)
    for admission in held:
        admission.release()
    assert not any(table.user_counts)


def test_user_buckets_are_few_and_stable() -> None:
    buckets = {user_bucket(f"user-{i}") for i in range(1000)}
    assert buckets == {str(i) for i in range(USER_BUCKETS)}
    assert user_bucket("alice") == user_bucket("alice")
    assert key_of("alice") == key_of("alice") != 0


def test_the_status_body_is_kubernetes_json() -> None:
    limiter = Limiter(CountTable.in_memory(8, 4), limits(inflight=1))
    limiter.admit(ALICE, "c", False)
    body = json.loads(refused(lambda: limiter.admit(ALICE, "c", False)).body())
    assert body["kind"] == "Status" and body["code"] == 429
    assert math.isclose(body["details"]["retryAfterSeconds"], 1)
