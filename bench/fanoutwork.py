"""Workload ``fanout``: one LIST across many clusters vs the slowest single-cluster LIST.

One gateway (1 worker) serves N Cluster files (N = 10, 20, 100; labels say
which count a cluster belongs to, so the fan-out names its clusters with a
label selector) that all point at one small HTTPS server playing the
clusters (:mod:`bench.fanoutclusters`):

- ``/api/v1/pods``: a PodList of :data:`PODS` pods (~32 kB) answered after
  :data:`DELAY` s, as a remote cluster's LIST takes time: the fan-out's time
  shows its concurrency (N lists one after another would take N times as
  long);
- ``/api/v1/namespaces``: the same list at once: the fan-out's own cost
  (reading, annotating and writing N lists) with nothing to wait for.

Side by side, in rounds: the fan-out LIST (``clusters/gN=y/proxy/...``,
time to its last byte) and, one after another, a LIST of each of the N
clusters through the same gateway; the figure of a round's singles is its
slowest (the issue's yardstick), with the median of all beside it.  CPU per
request is the gateway's process-tree CPU time ÷ the requests of that phase.

Then the memory bound: one fan-out LIST over 20 clusters of 10 MB lists each
(``/api/v1/configmaps``, 1,000 items of 10 kB, at once), read in 64 KiB
pieces; the gateway tree's RSS sampled every 20 ms, its growth over the
baseline reported.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from bench.fixture import Workspace
from bench.peers import start_karpor
from bench.procs import (
    LOOPBACK,
    BenchError,
    Processes,
    RssSampler,
    client_context,
    free_port,
    https_status,
    tree_cpu_seconds,
    tree_rss_kib,
    wait_for,
)
from bench.results import Results, Row

FANOUT = "fanout"
FANOUT_RSS = "fanout-rss"
#: the cluster counts of a full run, and of --quick
COUNTS = (10, 20, 100)
QUICK_COUNTS = (10, 20)
#: pods in each cluster's list (~32 kB), and how long a cluster takes to answer it
PODS = 100
DELAY = 0.1
#: the memory bound's clusters, and items of ITEM bytes per cluster (10 MB)
RSS_CLUSTERS = 20
RSS_ITEMS = 1000
ITEM = 10_000
PREFIX = "/apis/cluster.karpor.io/v1beta1/clusters"
SINGLE_KEY = "single"
FANOUT_KEY = "fanout"
SINGLE_LABEL = "slowest single-cluster LIST (through karpor)"
FANOUT_LABEL = "fan-out LIST (clusters/SELECTOR/proxy)"
#: the two kinds of list: path, what the params say
KINDS = (("/api/v1/pods", "100 ms lists"), ("/api/v1/namespaces", "instant lists"))


def _pod_list(count: int) -> bytes:
    items = [
        {
            "metadata": {
                "name": f"pod-{i:04d}",
                "namespace": "default",
                "uid": f"00000000-0000-0000-0000-{i:012d}",
                "resourceVersion": str(1000 + i),
                "labels": {"app": "bench", "index": str(i)},
            },
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": f"10.0.{i // 250}.{i % 250}"},
        }
        for i in range(count)
    ]
    doc = {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "5000"}}
    return json.dumps({**doc, "items": items}).encode()


def _config_map_list(count: int, size: int) -> bytes:
    filler = "x" * size
    items = [
        {"metadata": {"name": f"cm-{i:05d}", "namespace": "default"}, "data": {"blob": filler}}
        for i in range(count)
    ]
    doc = {"kind": "ConfigMapList", "apiVersion": "v1", "metadata": {"resourceVersion": "9"}}
    return json.dumps({**doc, "items": items}).encode()


def start_clusters(procs: Processes, ws: Workspace) -> int:
    """The server playing every cluster (:mod:`bench.fanoutclusters`; see the
    module docstring); its port."""
    www = ws.root / "fanout-www"
    www.mkdir(exist_ok=True)
    (www / "pods.json").write_bytes(_pod_list(PODS))
    (www / "configmaps.json").write_bytes(_config_map_list(RSS_ITEMS, ITEM))
    port = free_port()
    proc = procs.start(
        "fanout-clusters",
        [
            sys.executable,
            "-m",
            "bench.fanoutclusters",
            str(port),
            str(ws.root / "upstream.crt"),
            str(ws.root / "upstream.key"),
            ws.upstream_token,
            f"/api/v1/pods={www / 'pods.json'}:{DELAY}",
            f"/api/v1/namespaces={www / 'pods.json'}:0",
            f"/api/v1/configmaps={www / 'configmaps.json'}:0",
        ],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    context = client_context(ws.upstream_ca)
    headers = {"Authorization": f"Bearer {ws.upstream_token}"}

    def serving() -> bool:
        try:
            return https_status(port, "/readyz", context, headers)[0] == 200
        except OSError:
            return False

    wait_for("the clusters' server serving", serving, 30, proc)
    return port


def clusters_dir(ws: Workspace, port: int, most: int) -> Path:
    """``most`` Cluster files ``fan-000`` … for the server at ``port``; a cluster
    of index i has the label ``gN=y`` for every count N > i."""
    directory = ws.root / "fanout-clusters"
    directory.mkdir(exist_ok=True)
    ca = base64.b64encode(ws.upstream_ca.read_bytes()).decode()
    for index in range(most):
        name = f"fan-{index:03d}"
        labels = {f"g{n}": "y" for n in (*COUNTS, RSS_CLUSTERS) if index < n}
        doc: dict[str, Any] = {
            "apiVersion": "cluster.karpor.io/v1beta1",
            "kind": "Cluster",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "access": {
                    "endpoint": f"https://{LOOPBACK}:{port}",
                    "caBundle": ca,
                    "credential": {
                        "type": "ServiceAccountToken",
                        "serviceAccountToken": ws.upstream_token,
                    },
                }
            },
        }
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(doc))
    return directory


class _Client:
    """One keep-alive HTTPS connection to the gateway."""

    def __init__(self, port: int, context: ssl.SSLContext) -> None:
        self._port = port
        self._context = context
        self._conn: http.client.HTTPSConnection | None = None

    def get(self, path: str) -> tuple[float, int, str]:
        """Seconds to the last byte, bytes read, the ``Warning`` headers."""
        if self._conn is None:
            self._conn = http.client.HTTPSConnection(
                LOOPBACK, self._port, timeout=300, context=self._context
            )
        started = time.monotonic()
        self._conn.request("GET", path)
        response = self._conn.getresponse()
        got = 0
        while chunk := response.read(1 << 16):
            got += len(chunk)
        seconds = time.monotonic() - started
        warnings = ", ".join(response.headers.get_all("Warning") or [])
        if response.status != 200:
            raise BenchError(f"GET {path} answered {response.status}")
        return seconds, got, warnings

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _rounds(
    results: Results, client: _Client, pid: int, count: int, path: str, kind: str, rounds: int
) -> None:
    names = [f"fan-{i:03d}" for i in range(count)]
    fan_path = f"{PREFIX}/g{count}%3Dy/proxy{path}"
    fan_times: list[float] = []
    slowest: list[float] = []
    singles: list[float] = []
    fan_cpu = single_cpu = 0.0
    fan_bytes = 0
    warned = ""
    for _ in range(rounds):
        cpu = tree_cpu_seconds(pid)
        seconds, fan_bytes, warned = client.get(fan_path)
        fan_cpu += tree_cpu_seconds(pid) - cpu
        fan_times.append(seconds)
        cpu = tree_cpu_seconds(pid)
        times = [client.get(f"{PREFIX}/{name}/proxy{path}")[0] for name in names]
        single_cpu += tree_cpu_seconds(pid) - cpu
        slowest.append(max(times))
        singles += times
    params = f"n={count}, {kind}"
    fan = statistics.median(fan_times)
    single = statistics.median(slowest)
    results.add(
        Row(
            FANOUT,
            SINGLE_KEY,
            SINGLE_LABEL,
            params,
            {
                "seconds": single,
                "p50": statistics.median(singles) * 1000,
                "cpu_ms": single_cpu / len(singles) * 1000,
            },
        )
    )
    results.add(
        Row(
            FANOUT,
            FANOUT_KEY,
            FANOUT_LABEL,
            params,
            {
                "seconds": fan,
                "mbytes": fan_bytes / 1e6,
                "cpu_ms": fan_cpu / rounds * 1000,
                "cpu_ms_cluster": fan_cpu / rounds / count * 1000,
            },
            note=f"warnings: {warned[:200]}" if warned else "",
        )
    )
    if warned:
        print(f"  {params}: {warned[:300]}", flush=True)
    print(
        f"  {params:28} fan-out {fan * 1000:8.1f} ms (CPU {fan_cpu / rounds * 1000:.1f} ms)"
        f"   slowest single {single * 1000:7.1f} ms (CPU {single_cpu / len(singles) * 1000:.2f}"
        f" ms each)   ratio {fan / single:.2f}x",
        flush=True,
    )


def _memory(results: Results, client: _Client, pid: int) -> None:
    path = f"{PREFIX}/g{RSS_CLUSTERS}%3Dy/proxy/api/v1/configmaps"
    client.get(path)  # warm: every pool's connection open, the code paths run once
    baseline = tree_rss_kib(pid)
    with RssSampler(pid) as sampler:
        seconds, got, warned = client.get(path)
    values = {
        "seconds": seconds,
        "mbytes": got / 1e6,
        "mb_s": got / seconds / 1e6,
        "rss_growth_mib": (sampler.peak_kib - baseline) / 1024,
        "rss_peak_mib": sampler.peak_kib / 1024,
    }
    params = f"{RSS_CLUSTERS} clusters x {RSS_ITEMS * ITEM / 1e6:.0f} MB"
    note = f"warnings: {warned[:300]}" if warned else ""
    results.add(Row(FANOUT_RSS, FANOUT_KEY, FANOUT_LABEL, params, values, note=note))
    print(f"  memory {params}: {values} {note}", flush=True)


def run(results: Results, procs: Processes, ws: Workspace, quick: bool) -> None:
    """Run the workload (see the module docstring); rows in ``results``."""
    counts = QUICK_COUNTS if quick else COUNTS
    rounds = 2 if quick else 5
    port = start_clusters(procs, ws)
    directory = clusters_dir(ws, port, max((*counts, RSS_CLUSTERS)))
    gw = start_karpor(procs, ws, "karpor-fanout", directory, 1, use_config=False)
    pid = gw.proc.pid
    client = _Client(gw.port, gw.cert_context)
    try:
        # warm-up: every cluster's pool connected, the health probes' first round done
        client.get(f"{PREFIX}/g{max(counts)}%3Dy/proxy/api/v1/namespaces")
        for count in counts:
            for path, kind in KINDS:
                _rounds(results, client, pid, count, path, kind, rounds)
        _memory(results, client, pid)
    finally:
        client.close()
    results.note(
        FANOUT,
        "Every cluster is one small HTTPS server (Python asyncio, its own process); a "
        f"cluster's list is {PODS} pods ({len(_pod_list(PODS)) / 1e3:.0f} kB), answered "
        f"after {DELAY * 1000:.0f} ms (a remote cluster's LIST takes time) or at "
        f"once; {rounds} rounds, medians; a round's single-cluster figure is its slowest of "
        "the N clusters' LISTs made one after another (p50 ms: the median of all of them). "
        "CPU ms: the gateway tree's CPU per request (fan-out: per fan-out request; "
        "per cluster: ÷ N).",
    )
    results.note(
        FANOUT_RSS,
        f"One fan-out LIST over {RSS_CLUSTERS} clusters each answering {RSS_ITEMS} "
        f"ConfigMaps of {ITEM / 1e3:.0f} kB at once, read in 64 KiB pieces; the gateway "
        "tree's VmRSS sampled every 20 ms (after one warm-up LIST of the same).",
    )
