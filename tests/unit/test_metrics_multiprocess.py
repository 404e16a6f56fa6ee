"""Multiprocess mode: two processes (two fake pids writing to one tmp
directory) show as one view, whichever renders it; a dead process's live
gauges go, its counters stay; the directory is prepared and named."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import values
from prometheus_client.parser import text_string_to_metric_families
from support.prometheus import close_value_files

from karpor.metrics import multiprocess
from karpor.metrics.exposition import Exposition
from karpor.metrics.gateway import GatewayMetrics, PoolSizes
from karpor.metrics.supervisor import SupervisorMetrics


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A multiprocess directory for this test; the value class is restored after."""
    path = tmp_path / "metrics"
    path.mkdir()
    monkeypatch.setenv(multiprocess.ENV, str(path))
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)
    _classes.clear()
    yield path
    close_value_files()


_classes: dict[int, Any] = {}


def as_process(pid: int) -> None:
    """Make the values made from now on (metrics, and children made on
    first use) write as process ``pid``: call it before each process's turn."""
    if pid not in _classes:
        _classes[pid] = values.MultiProcessValue(lambda: pid)
    values.ValueClass = _classes[pid]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[s.name, tuple(sorted(s.labels.items()))] = s.value
    return out


def render(directory: Path, clusters: tuple[str, ...] = ("sim-1", "sim-2")) -> str:
    exposition = Exposition(directory=str(directory), registry=None, clusters=lambda: clusters)
    content_type, body = exposition.render()
    assert content_type.startswith(b"text/plain; version=0.0.4")
    return body.decode()


def test_two_processes_are_one_view(directory: Path) -> None:
    as_process(101)
    first = GatewayMetrics()
    for _ in range(3):
        first.request_done("sim-1", "list", 200, 0.004, 100, 1000)
    first.stream_started("watch")
    first.pool_sizes([PoolSizes("sim-1", http1=2, idle=1)])
    as_process(102)
    second = GatewayMetrics()
    second.request_done("sim-1", "list", 200, 0.3, 100, 1000)
    second.request_done("sim-2", "get", 404, 0.001, 50, 70)
    second.stream_started("watch")
    second.stream_started("exec")
    second.pool_sizes([PoolSizes("sim-1", http1=3)])
    seen = samples(render(directory))
    assert (
        seen["karpor_requests_total", (("cluster", "sim-1"), ("code", "200"), ("verb", "list"))]
        == 4
    )
    assert (
        seen["karpor_requests_total", (("cluster", "sim-2"), ("code", "404"), ("verb", "get"))] == 1
    )
    sim1 = (("cluster", "sim-1"), ("verb", "list"))
    assert seen["karpor_request_duration_seconds_count", sim1] == 4
    assert (
        seen["karpor_request_duration_seconds_bucket", (*sim1[:1], ("le", "0.005"), sim1[1])] == 3
    )
    assert seen["karpor_request_duration_seconds_bucket", (*sim1[:1], ("le", "0.5"), sim1[1])] == 4
    assert seen["karpor_request_bytes_total", (("cluster", "sim-1"),)] == 400
    assert seen["karpor_long_running_requests", (("kind", "watch"),)] == 2
    assert seen["karpor_long_running_requests", (("kind", "exec"),)] == 1
    assert seen["karpor_upstream_connections", (("cluster", "sim-1"), ("protocol", "http1"))] == 5
    # the same bytes whichever process renders: rendering reads the files only
    assert render(directory) == render(directory)


def test_a_dead_processs_live_gauges_go_and_its_counters_stay(directory: Path) -> None:
    as_process(201)
    dead = GatewayMetrics()
    dead.request_done("sim-1", "get", 200, 0.01, 1, 1)
    dead.stream_started("watch")
    dead.pool_sizes([PoolSizes("sim-1", http1=4)])
    as_process(202)
    GatewayMetrics().stream_started("watch")
    as_process(200)
    supervisor = SupervisorMetrics(str(directory))
    supervisor.worker_restarted()
    supervisor.worker_gone(201)
    seen = samples(render(directory))
    assert seen["karpor_long_running_requests", (("kind", "watch"),)] == 1
    assert (
        "karpor_upstream_connections",
        (("cluster", "sim-1"), ("protocol", "http1")),
    ) not in seen
    assert (
        seen["karpor_requests_total", (("cluster", "sim-1"), ("code", "200"), ("verb", "get"))] == 1
    )
    assert seen["karpor_worker_restarts_total", ()] == 1


def test_state_gauges_of_clusters_gone_are_left_out(directory: Path) -> None:
    as_process(301)
    metrics = GatewayMetrics()
    metrics.cluster_health("sim-1", True)
    metrics.cluster_health("old", False)
    metrics.pool_sizes([PoolSizes("old", http1=1), PoolSizes("sim-1", http1=1)])
    metrics.request_done("old", "get", 200, 0.01, 1, 1)
    seen = samples(render(directory, clusters=("sim-1",)))
    assert seen["karpor_cluster_healthy", (("cluster", "sim-1"),)] == 1
    assert ("karpor_cluster_healthy", (("cluster", "old"),)) not in seen
    assert ("karpor_upstream_connections", (("cluster", "old"), ("protocol", "http1"))) not in seen
    # totals keep the history
    assert (
        seen["karpor_requests_total", (("cluster", "old"), ("code", "200"), ("verb", "get"))] == 1
    )


def test_health_is_the_most_recent_verdict_of_any_process(directory: Path) -> None:
    as_process(401)
    one = GatewayMetrics()
    one.cluster_health("sim-1", True)
    as_process(402)
    GatewayMetrics().cluster_health("sim-1", False)
    assert samples(render(directory))["karpor_cluster_healthy", (("cluster", "sim-1"),)] == 0
    as_process(401)
    one.cluster_health("sim-1", True)
    assert samples(render(directory))["karpor_cluster_healthy", (("cluster", "sim-1"),)] == 1


def test_openmetrics_when_asked(directory: Path) -> None:
    as_process(501)
    GatewayMetrics().request_done("sim-1", "get", 200, 0.01, 1, 1)
    exposition = Exposition(directory=str(directory), registry=None, clusters=lambda: ())
    content_type, body = exposition.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith(b"application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_prepare_empties_and_prepare_for_a_read_only_state_is_temporary(tmp_path: Path) -> None:
    path = multiprocess.prepare_for(tmp_path, read_only=False)
    assert path == tmp_path / "metrics" and path.is_dir()
    assert oct(path.stat().st_mode & 0o777) == "0o700"
    (path / "counter_1.db").write_bytes(b"x")
    (path / "keep.txt").write_text("not ours")
    multiprocess.prepare_for(tmp_path, read_only=False)
    assert sorted(p.name for p in path.iterdir()) == ["keep.txt"]
    temporary = multiprocess.prepare_for(tmp_path, read_only=True)
    assert temporary.is_dir() and not temporary.is_relative_to(tmp_path)
    multiprocess.remove_temporary(temporary, read_only=True)
    assert not temporary.exists()
    multiprocess.remove_temporary(path, read_only=False)
    assert path.exists()


def test_use_names_the_directory_and_switches_the_value_class(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # recorded, so that what use() sets is undone after the test
    monkeypatch.setenv(multiprocess.ENV, "")
    monkeypatch.delenv(multiprocess.ENV)
    monkeypatch.setattr(values, "ValueClass", values.MutexValue)
    assert multiprocess.directory() is None
    try:
        multiprocess.use(tmp_path)
        assert os.environ[multiprocess.ENV] == str(tmp_path)
        assert multiprocess.directory() == str(tmp_path)
        assert values.ValueClass is not values.MutexValue
        GatewayMetrics().reloaded(0)
        assert any(p.name.startswith("counter_") for p in tmp_path.iterdir())
    finally:
        close_value_files()


def test_the_process_id_naming_metric_files_follows_a_fork() -> None:
    """Values are written to files named by the process id, known without a
    system call per update: a forked child must see its own."""
    pid_of = multiprocess._pid.value
    assert pid_of() == os.getpid()
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.write(write_end, b"%d %d" % (pid_of(), os.getpid()))
        os._exit(0)
    os.close(write_end)
    seen, actual = os.read(read_end, 100).split()
    os.close(read_end)
    os.waitpid(child, 0)
    assert seen == actual and int(seen) == child
    assert pid_of() == os.getpid()
