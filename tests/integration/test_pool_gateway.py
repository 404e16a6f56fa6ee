"""The gateway as a process pool (issue 5's acceptance), with real processes.

``twistd karpor --workers 2`` in front of the simulator: both workers accept;
a killed worker is replaced and new connections never fail; SIGHUP rolls
every worker under steady load without a failed request; the clusters
directory is hot-reloaded (add, change, remove, break, a ConfigMap-style
``..data`` swap) and a rotated token file is used by the next request.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import signal
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from support.gateway import (
    GatewayRun,
    client_context,
    credentials_of,
    start_gateway,
    twistd_command,
    write_kubeconfig,
)
from support.load import Load
from support.procs import Process
from support.sim import SimRun
from support.waits import wait_for

WORKER = re.compile(rb"\[\+\]worker ok: pid (\d+) generation (\d+)")
#: a worker's log line: its slot
WORKER_LINE = re.compile(r" \[worker-(\d+):")
#: how long a change may take to show before the test gives up (the contract is 1 s;
#: the bound is loose because CI machines are shared: this is not a timing test)
PATIENCE = 30.0


class Pool:
    """A running gateway pool with an admin client context."""

    def __init__(self, run: GatewayRun, kubeconfig: Path) -> None:
        self.run = run
        ca, cert, key = credentials_of(kubeconfig)
        self.context = client_context(ca, cert, key)

    def conn(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.run.port, context=self.context, timeout=30
        )

    def get(self, path: str, conn: http.client.HTTPSConnection | None = None) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or self.conn()
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()

    def worker_pid(self, conn: http.client.HTTPSConnection | None = None) -> int:
        status, body = self.get("/healthz?verbose", conn)
        assert status == 200, body
        match = WORKER.search(body)
        assert match, body
        return int(match[1])

    def cluster_names(self) -> set[str]:
        status, body = self.get("/apis/cluster.karpor.io/v1beta1/clusters")
        assert status == 200, body
        return {item["metadata"]["name"] for item in yaml.safe_load(body)["items"]}

    def wait_for(self, predicate, what: str) -> None:
        wait_for(predicate, PATIENCE, what, detail=lambda: self.run.process.output[-4000:])

    def logged_by_every_worker(self, text: str, since: int) -> bool:
        """Whether every worker slot logged a line with ``text`` after the
        first ``since`` lines of the gateway's output."""
        slots = {
            found[1]
            for line in self.run.process.lines[since:]
            if text in line and (found := WORKER_LINE.search(line))
        }
        return len(slots) == len(self.run.worker_pids())


@pytest.fixture(scope="module")
def pool(sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    base = tmp_path_factory.mktemp("pool")
    clusters = base / "clusters"
    clusters.mkdir()
    for cluster in sim_clusters.clusters:
        shutil.copy(cluster.cluster_file, clusters / cluster.cluster_file.name)
    run = start_gateway(clusters, base / "state", "--workers", "2", "--drain-timeout", "5")
    try:
        kubeconfig = write_kubeconfig(run.state_dir, base / "admin.kubeconfig", run.url)
        p = Pool(run, kubeconfig)
        p.wait_for(lambda: len(run.worker_pids()) == 2 and _all_ready(p), "two ready workers")
        yield p
    finally:
        assert run.stop() == 0, run.process.output[-4000:]


def _all_ready(pool: Pool) -> bool:
    try:
        return len({pool.worker_pid() for _ in range(40)}) == 2
    except (OSError, ssl.SSLError, http.client.HTTPException, AssertionError):
        return False


def _proxied_get(pool: Pool, fresh: bool, state: dict[str, object]) -> int:
    """One request through the gateway to sim-1, on a fresh or a kept connection;
    returns the pid of the worker that answered."""
    if fresh:
        return pool.worker_pid()
    conn = state.get("conn")
    if not isinstance(conn, http.client.HTTPSConnection):
        conn = state["conn"] = pool.conn()
    try:
        return pool.worker_pid(conn)
    except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ssl.SSLError):
        # a draining worker closed this idle keep-alive connection: like any
        # HTTP client (Go's included) retry the idempotent request once
        conn.close()
        conn = state["conn"] = pool.conn()
        return pool.worker_pid(conn)


def test_both_workers_accept(pool: Pool):
    pids = {pool.worker_pid() for _ in range(60)}
    assert pids == set(pool.run.worker_pids())
    assert len(pids) == 2


def test_proxying_works_through_every_worker(pool: Pool):
    for _ in range(20):
        status, body = pool.get(
            "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api/v1/namespaces"
        )
        assert status == 200, body


def test_sighup_rolls_every_worker_with_zero_failed_requests(pool: Pool):
    before = set(pool.run.worker_pids())
    with Load(lambda fresh, state: _proxied_get(pool, fresh, state), threads=4) as load:
        pool.wait_for(lambda: before <= set(load.answers), "the old workers answering the load")
        os.kill(pool.run.pid, signal.SIGHUP)
        pool.wait_for(lambda: before.isdisjoint(pool.run.worker_pids()), "every worker replaced")
        replaced = set(pool.run.worker_pids())
        pool.wait_for(lambda: replaced <= set(load.answers), "the new workers answering the load")
    after = set(pool.run.worker_pids())
    assert load.failures == [], load.failures[:5]
    assert load.ok > 50
    assert before.isdisjoint(after)
    assert len(after) == 2
    assert set(load.answers) & after, "the new workers served during the test"


def test_sighup_fails_no_request_of_clients_that_never_retry(pool: Pool):
    """Keep-alive clients that do not retry (http.client, one connection per
    thread, reconnecting only after a ``Connection: close``) see no failure
    across a rolling restart: a draining worker answers the request in flight
    with ``Connection: close`` and closes an idle connection only after a
    moment of idleness, never under a request already sent."""
    path = "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api/v1/namespaces/default"
    failures: list[str] = []
    done = threading.Event()
    counts = [0] * 4

    def client(index: int) -> None:
        conn = pool.conn()
        while not done.is_set():
            try:
                conn.request("GET", path)
                resp = conn.getresponse()
                resp.read()
                assert resp.status == 200, resp.status
                counts[index] += 1
            except Exception as exc:  # every failure counts: no retry
                failures.append(repr(exc))
                conn.close()
                conn = pool.conn()
        conn.close()

    before = set(pool.run.worker_pids())
    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        pool.wait_for(lambda: all(counts), "every client answered before the roll")
        os.kill(pool.run.pid, signal.SIGHUP)
        pool.wait_for(lambda: before.isdisjoint(pool.run.worker_pids()), "every worker replaced")
        # every client's connection to an old worker is gone: each goes on with a new one
        marks = list(counts)
        pool.wait_for(
            lambda: all(now > mark for now, mark in zip(counts, marks, strict=True)),
            "every client answered by the new workers",
        )
    finally:
        done.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == [], failures[:5]
    assert sum(counts) > 50


def test_a_second_gateway_on_a_served_port_refuses_to_start(pool: Pool, tmp_path: Path):
    """SO_REUSEPORT would let it join the port (and take a share of the first
    gateway's connections, with another CA): it exits with a clear reason."""
    argv = [
        *twistd_command(),
        "-n",
        "--pidfile=",
        "karpor",
        "--clusters-dir",
        str(pool.run.clusters_dir),
        "--state-dir",
        str(tmp_path / "state"),
        "--port",
        str(pool.run.port),
        "--host",
        "127.0.0.1",
        "--workers",
        "1",
    ]
    second = Process(argv, cwd=tmp_path)
    try:
        seen = second.wait_for_line(r"address already in use|karpor gateway serving")
        assert "address already in use" in seen[0], second.output[-3000:]
        assert second.popen.wait(timeout=30) != 0
    finally:
        second.stop()
    assert "karpor gateway serving" not in second.output
    # the first gateway alone serves: every new connection reaches one of its workers
    workers = set(pool.run.worker_pids())
    assert {pool.worker_pid() for _ in range(20)} <= workers


def test_killed_worker_is_replaced_and_new_connections_never_fail(pool: Pool):
    victim = pool.run.worker_pids()[0]
    with Load(lambda fresh, state: pool.worker_pid(), threads=2) as load:
        pool.wait_for(lambda: victim in load.answers, "the victim answering the load")
        os.kill(victim, signal.SIGKILL)
        pool.wait_for(
            lambda: victim not in pool.run.worker_pids() and len(pool.run.worker_pids()) == 2,
            "a replacement worker",
        )
        replacement = set(pool.run.worker_pids()) - {victim}
        pool.wait_for(
            lambda: replacement <= set(load.answers), "the replacement answering the load"
        )
    # every request here is on a fresh connection: none was held by the victim
    # when it died except those in flight at that instant
    assert len(load.failures) <= 2, load.failures
    assert victim not in load.answers or load.answers[victim] > 0
    assert "killed by signal 9" in pool.run.process.output


# --- hot reload ----------------------------------------------------------------


def test_add_change_remove_and_break_a_cluster_file(pool: Pool, sim_clusters: SimRun):
    clusters = pool.run.clusters_dir
    source = yaml.safe_load(sim_clusters["sim-1"].cluster_file.read_text())
    extra = dict(source, metadata={"name": "extra", "labels": {"v": "1"}})
    (clusters / "extra.yaml").write_text(yaml.safe_dump(extra))
    pool.wait_for(lambda: "extra" in pool.cluster_names(), "the added cluster")
    # every worker has it (fresh connections spread over both)
    assert all("extra" in pool.cluster_names() for _ in range(20))

    changed = dict(extra, metadata={"name": "extra", "labels": {"v": "2"}})
    (clusters / "extra.yaml").write_text(yaml.safe_dump(changed))

    def shows_v2() -> bool:
        status, body = pool.get("/apis/cluster.karpor.io/v1beta1/clusters/extra")
        return status == 200 and yaml.safe_load(body)["metadata"]["labels"] == {"v": "2"}

    pool.wait_for(shows_v2, "the changed cluster")

    # broken: the last good definition keeps serving (on every worker), once
    # every worker reloaded and reported the broken document
    since = len(pool.run.process.lines)
    (clusters / "extra.yaml").write_text("apiVersion: cluster.karpor.io/v1beta1\nkind: Cluster\n")
    pool.wait_for(
        lambda: pool.logged_by_every_worker("extra.yaml: document 1", since),
        "every worker reporting the broken file",
    )
    for _ in range(10):
        assert shows_v2()
    status, _ = pool.get("/apis/cluster.karpor.io/v1beta1/clusters/extra/proxy/api/v1/namespaces")
    assert status == 200

    (clusters / "extra.yaml").unlink()
    pool.wait_for(lambda: "extra" not in pool.cluster_names(), "the removed cluster gone")
    status, body = pool.get("/apis/cluster.karpor.io/v1beta1/clusters/extra/proxy/api")
    assert status == 404, body


def test_configmap_data_symlink_swap(pool: Pool, sim_clusters: SimRun):
    clusters = pool.run.clusters_dir
    source = yaml.safe_load(sim_clusters["sim-2"].cluster_file.read_text())

    def publish(version: str, name: str) -> None:
        data = clusters / f"..{version}"
        data.mkdir()
        doc = dict(source, metadata={"name": name})
        (data / "mounted.yaml").write_text(yaml.safe_dump(doc))
        tmp = clusters / "..data_tmp"
        tmp.symlink_to(data.name)
        os.replace(tmp, clusters / "..data")
        link = clusters / "mounted.yaml"
        if not link.is_symlink():
            link.symlink_to("..data/mounted.yaml")

    publish("v1", "mounted-a")
    pool.wait_for(lambda: "mounted-a" in pool.cluster_names(), "the mounted cluster")
    publish("v2", "mounted-b")
    pool.wait_for(
        lambda: {"mounted-b"} <= pool.cluster_names() and "mounted-a" not in pool.cluster_names(),
        "the swapped ConfigMap content",
    )
    (clusters / "mounted.yaml").unlink()
    pool.wait_for(lambda: "mounted-b" not in pool.cluster_names(), "the mounted cluster gone")


def test_token_file_rotation(pool: Pool, sim_clusters: SimRun):
    clusters = pool.run.clusters_dir
    sim = sim_clusters["sim-1"]
    token_file = clusters.parent / "rotating-token"
    token_file.write_text(sim.token)
    doc = yaml.safe_load(sim.cluster_file.read_text())
    doc["metadata"] = {"name": "rotating"}
    doc["spec"]["access"]["credential"] = {
        "type": "ServiceAccountToken",
        "tokenFile": str(token_file),
    }
    (clusters / "rotating.yaml").write_text(yaml.safe_dump(doc))
    path = "/apis/cluster.karpor.io/v1beta1/clusters/rotating/proxy/api/v1/namespaces"
    pool.wait_for(lambda: pool.get(path)[0] == 200, "the token-file cluster serving")
    token_file.write_text("not-the-token")
    pool.wait_for(lambda: all(pool.get(path)[0] == 401 for _ in range(6)), "the new token used")
    token_file.write_text(sim.token)
    pool.wait_for(lambda: all(pool.get(path)[0] == 200 for _ in range(6)), "the token restored")
    (clusters / "rotating.yaml").unlink()


def test_sigterm_ends_open_watches_cleanly_and_exits_zero(
    sim_clusters: SimRun, tmp_path: Path
) -> None:
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    shutil.copy(sim_clusters["sim-1"].cluster_file, clusters / "sim-1.yaml")
    run = start_gateway(clusters, tmp_path / "state", "--workers", "1", "--drain-timeout", "2")
    try:
        pool = Pool(run, write_kubeconfig(run.state_dir, tmp_path / "k", run.url))
        pool.wait_for(lambda: len(run.worker_pids()) == 1 and _ready(pool), "a ready worker")
        conn = pool.conn()
        conn.request(
            "GET",
            "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api/v1/namespaces"
            "?watch=true&timeoutSeconds=600",
        )
        resp = conn.getresponse()
        assert resp.status == 200
        assert resp.getheader("Transfer-Encoding") == "chunked"
        first = resp.readline()
        assert b'"type":"ADDED"' in first
        os.kill(run.pid, signal.SIGTERM)
        # the stream ends with its last chunk (http.client raises
        # IncompleteRead on a stream cut short): a clean end of the watch
        rest = resp.read()
        assert isinstance(rest, bytes)
        conn.close()
        assert run.process.popen.wait(timeout=30) == 0
        assert "supervisor stopped" in run.process.output
    finally:
        run.stop()


def _ready(pool: Pool) -> bool:
    try:
        return pool.get("/readyz")[0] == 200
    except (OSError, ssl.SSLError, http.client.HTTPException):
        return False


def test_sighup_rereads_the_config_file(sim_clusters: SimRun, tmp_path: Path) -> None:
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    shutil.copy(sim_clusters["sim-1"].cluster_file, clusters / "sim-1.yaml")
    config = tmp_path / "karpor.yaml"
    config.write_text("workers: 1\ndrainTimeout: 2\n")
    run = start_gateway(clusters, tmp_path / "state", "--config", str(config))
    try:
        pool = Pool(run, write_kubeconfig(run.state_dir, tmp_path / "k", run.url))
        pool.wait_for(lambda: len(run.worker_pids()) == 1 and _ready(pool), "one worker")
        config.write_text("workers: 2\ndrainTimeout: 2\n")
        os.kill(run.pid, signal.SIGHUP)
        pool.wait_for(lambda: len(run.worker_pids()) == 2, "two workers after SIGHUP")
        pool.wait_for(lambda: len({pool.worker_pid() for _ in range(40)}) == 2, "both serving")
    finally:
        assert run.stop() == 0, run.process.output[-3000:]


def test_removed_cluster_ends_its_open_watch_cleanly(pool: Pool, sim_clusters: SimRun):
    clusters = pool.run.clusters_dir
    doc = yaml.safe_load(sim_clusters["sim-1"].cluster_file.read_text())
    doc["metadata"] = {"name": "leaving"}
    (clusters / "leaving.yaml").write_text(yaml.safe_dump(doc))
    pool.wait_for(
        lambda: all("leaving" in pool.cluster_names() for _ in range(10)), "the cluster added"
    )
    conn = pool.conn()
    conn.request(
        "GET",
        "/apis/cluster.karpor.io/v1beta1/clusters/leaving/proxy/api/v1/namespaces"
        "?watch=true&timeoutSeconds=600",
    )
    resp = conn.getresponse()
    assert resp.status == 200
    assert b'"type":"ADDED"' in resp.readline()
    (clusters / "leaving.yaml").unlink()
    # the stream ends with its last chunk (http.client raises IncompleteRead
    # on a stream cut short), long before its 600 s timeout
    assert isinstance(resp.read(), bytes)
    conn.close()
    status, _ = pool.get("/apis/cluster.karpor.io/v1beta1/clusters/leaving/proxy/api")
    assert status == 404
