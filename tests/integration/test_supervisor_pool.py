"""The supervisor against real worker processes (fake app, real runtime).

Connections spread over both workers; a killed worker is replaced and new
connections never fail meanwhile; a rolling restart under load fails no
request and changes every pid; SIGTERM drains and exits 0.
"""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from support.waits import wait_for

TESTS = Path(__file__).resolve().parents[1]
#: how long a worker may take to start or be replaced (a safety net, not a timing assertion)
PATIENCE = 30.0


class Pool:
    def __init__(self, workers: int, drain: float = 5.0, **extra_env: str) -> None:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]), **extra_env)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "support.fakepool", str(workers), str(drain)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        assert self.proc.stdout is not None
        self.lines: list[str] = []
        for line in self.proc.stdout:
            self.lines.append(line)
            if "PORT " in line:
                self.port = int(line.split("PORT ")[1])
                break
        else:
            raise AssertionError("".join(self.lines))
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def get(self, conn: http.client.HTTPConnection | None = None) -> int:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200
            return int(body)
        finally:
            if own:
                conn.close()

    def worker_pids(self, tries: int = 400) -> set[int]:
        return {self.get() for _ in range(tries)}

    def wait_for(self, predicate: Callable[[], object], what: str) -> None:
        wait_for(predicate, PATIENCE, what, detail=lambda: "".join(self.lines))

    def wait_ready(self, count: int) -> None:
        self.wait_for(
            lambda: sum("worker ready" in line for line in self.lines) >= count,
            f"{count} workers ready",
        )

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise


@pytest.fixture
def pool():
    p = Pool(2)
    p.wait_ready(2)
    yield p
    p.stop()


class Load:
    """Requests in a loop from several threads: new connections and keep-alive ones."""

    def __init__(self, pool: Pool, threads: int = 4) -> None:
        self.pool = pool
        self.ok = 0
        self.failures: list[str] = []
        self.pids: Counter[int] = Counter()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            for i in range(threads)
        ]
        self._lock = threading.Lock()

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, keepalive: bool) -> None:
        conn = None
        while not self._stop.is_set():
            try:
                if keepalive:
                    conn = conn or http.client.HTTPConnection(
                        "127.0.0.1", self.pool.port, timeout=10
                    )
                    try:
                        pid = self.pool.get(conn)
                    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                        # the server closed an idle keep-alive connection (a drain):
                        # like any HTTP client, retry once on a new connection
                        conn.close()
                        conn = http.client.HTTPConnection("127.0.0.1", self.pool.port, timeout=10)
                        pid = self.pool.get(conn)
                else:
                    pid = self.pool.get()
                with self._lock:
                    self.ok += 1
                    self.pids[pid] += 1
            except Exception as exc:
                with self._lock:
                    self.failures.append(repr(exc))
                if conn is not None:
                    conn.close()
                    conn = None
                time.sleep(0.01)  # not a wait: a failing client backs off before it retries


def test_both_workers_accept(pool):
    assert len(pool.worker_pids()) == 2


def test_killed_worker_is_replaced_without_failed_new_connections(pool):
    before = pool.worker_pids()
    victim = min(before)
    with Load(pool, threads=2) as load:
        pool.wait_for(lambda: victim in load.pids, "the victim answering the load")
        os.kill(victim, signal.SIGKILL)
        pool.wait_for(lambda: set(load.pids) - before, "the replacement answering the load")
    after = pool.worker_pids()
    assert victim not in after
    assert len(after) == 2
    # Only connections the dead worker held may fail: at most the one each load
    # thread had in flight at the kill. Connections arriving afterwards queue on
    # the slot's socket until the replacement adopts it, so none of them fails.
    assert len(load.failures) <= 2, load.failures
    assert any("killed by signal 9" in line for line in pool.lines)


def test_rolling_restart_under_load_fails_nothing(pool):
    before = pool.worker_pids()
    with Load(pool, threads=4) as load:
        pool.wait_for(lambda: before <= set(load.pids), "the old workers answering the load")
        pool.proc.send_signal(signal.SIGHUP)
        pool.wait_ready(4)
        pool.wait_for(lambda: len(set(load.pids) - before) == 2, "both new workers answering")
    after = pool.worker_pids()
    assert load.ok > 100
    assert load.failures == [], load.failures
    assert before.isdisjoint(after)
    assert len(after) == 2


def test_sigterm_drains_and_exits_zero():
    p = Pool(2)
    p.wait_ready(2)
    assert len(p.worker_pids(50)) >= 1
    assert p.stop() == 0
    assert any("supervisor stopped" in line for line in p.lines)


def test_a_crash_looping_slot_takes_no_new_connections():
    """While a slot's worker crash-loops, its socket is closed: every new
    connection goes to the live worker (none hangs on a queue nobody accepts)."""
    p = Pool(2, FAKE_CRASH_SLOT="1")
    try:
        p.wait_ready(1)
        p.wait_for(lambda: any("crash loop: slot 1" in line for line in p.lines), "a crash loop")
        answered: list[int | str] = []
        for _ in range(20):
            conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=2)
            try:
                answered.append(p.get(conn))
            except OSError as exc:
                answered.append(repr(exc))
            finally:
                conn.close()
        assert all(isinstance(a, int) for a in answered), answered
        assert any("slot 1 is down: its socket is closed" in line for line in p.lines)
    finally:
        p.stop()
