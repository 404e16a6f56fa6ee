"""Workload ``fanout-watch``: one merged watch over 20 clusters beside single-cluster watches.

``karpor sim --clusters 20`` (one process, 20 simulated clusters) behind one
gateway (1 worker, the bench user's client certificate).  In rounds that
alternate the two ways, each with watches of its own (a label only that
round's ConfigMaps carry):

- ``karpor-single``: 20 watches through the gateway, one per cluster
  (``clusters/sim-K/proxy/...``);
- ``karpor-merged``: one fan-out watch over all of them
  (``clusters/*/proxy/...``: :mod:`karpor.front.fanwatch`).

ConfigMaps are then created one at a time straight in the simulator, the
clusters in turn; an event's latency is from just before its create until
the watching client read it.  Reported: p50/p99 per way, and the gateway's
process-tree CPU per event delivered.  Target (issue 18): the merged watch
adds ≤ 50 ms at p99 over the single-cluster watch.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import ssl
import sys
import threading
import time
import uuid
from pathlib import Path

import yaml

from bench.fixture import Workspace
from bench.peers import Karpor, start_karpor
from bench.procs import (
    LOOPBACK,
    BenchError,
    Processes,
    client_context,
    log_contains,
    tree_cpu_seconds,
    wait_for,
)
from bench.results import Results, Row
from bench.simwork import median, stop_quietly

FANOUT_WATCH = "fanout-watch"
CLUSTERS = 20
SINGLE_KEY = "karpor-single"
MERGED_KEY = "karpor-merged"
SINGLE_LABEL = "karpor, one watch per cluster"
MERGED_LABEL = "karpor, one merged watch (clusters/*)"
PREFIX = "/apis/cluster.karpor.io/v1beta1/clusters"
PATH = "/api/v1/namespaces/default/configmaps"
#: seconds an event may take before the round fails
EVENT_TIMEOUT = 10.0


class _Stream:
    """One watch through the gateway, read in a thread: when each object was seen."""

    def __init__(self, gw: Karpor, cluster: str, label: str, seen: dict[str, float]) -> None:
        self._conn = http.client.HTTPSConnection(
            LOOPBACK, gw.port, timeout=60, context=gw.cert_context
        )
        self._seen = seen
        target = f"{PREFIX}/{cluster}/proxy{PATH}?watch=true&labelSelector=bench-fw%3D{label}"
        self._conn.request("GET", target)
        response = self._conn.getresponse()  # the head: every cluster is watched
        if response.status != 200:
            raise BenchError(f"watch {cluster}: {response.status} {response.read()[:200]!r}")
        self._response = response
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            while True:
                line = self._response.readline()
                if not line:
                    return
                now = time.perf_counter()
                event = json.loads(line)
                self._seen.setdefault(event["object"]["metadata"]["name"], now)
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            # closed by the round (http.client drops its socket: AttributeError)
            return

    def close(self) -> None:
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(2)
        self._conn.close()


def _writers(ws: Workspace, out: Path) -> dict[str, http.client.HTTPSConnection]:
    """A connection straight to each simulated cluster (each has a CA of its own)."""
    writers: dict[str, http.client.HTTPSConnection] = {}
    for n in range(1, CLUSTERS + 1):
        name = f"sim-{n}"
        access = yaml.safe_load((out / f"{name}.yaml").read_text())["spec"]["access"]
        ca_file = ws.root / f"fanwatch-{name}-ca.crt"
        ca_file.write_bytes(base64.b64decode(access["caBundle"]))
        port = int(access["endpoint"].rsplit(":", 1)[1])
        context: ssl.SSLContext = client_context(ca_file)
        writers[name] = http.client.HTTPSConnection(LOOPBACK, port, timeout=60, context=context)
    return writers


def _percentile(xs: list[float], q: float) -> float:
    ordered = sorted(xs)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _round(
    gw: Karpor,
    writers: dict[str, http.client.HTTPSConnection],
    token: str,
    merged: bool,
    events: int,
) -> tuple[list[float], float]:
    """One round of one way: the latencies (s) and the gateway's CPU seconds."""
    label = uuid.uuid4().hex[:10]
    seen: dict[str, float] = {}
    names = list(writers)
    streams = (
        [_Stream(gw, "%2A", label, seen)]
        if merged
        else [_Stream(gw, name, label, seen) for name in names]
    )
    latencies: list[float] = []
    try:
        cpu = tree_cpu_seconds(gw.proc.pid)
        for i in range(events):
            cluster = names[i % len(names)]
            name = f"fw-{label}-{i}"
            body = json.dumps(
                {"metadata": {"name": name, "labels": {"bench-fw": label}}, "data": {"i": str(i)}}
            )
            conn = writers[cluster]
            start = time.perf_counter()
            conn.request(
                "POST",
                PATH,
                body=body,
                headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
            )
            response = conn.getresponse()
            response.read()
            if response.status != 201:
                raise BenchError(f"create in {cluster}: {response.status}")
            deadline = start + EVENT_TIMEOUT
            while name not in seen:
                if time.perf_counter() > deadline:
                    raise BenchError(f"no event for {name} within {EVENT_TIMEOUT:g} s")
                time.sleep(0.0002)
            latencies.append(seen[name] - start)
        cpu = tree_cpu_seconds(gw.proc.pid) - cpu
    finally:
        for stream in streams:
            stream.close()
    return latencies, cpu


def run(results: Results, procs: Processes, ws: Workspace, quick: bool) -> None:
    """The workload (see the module docstring): rows ``karpor-single`` and ``karpor-merged``."""
    events, rounds = (40, 1) if quick else (300, 3)
    out = ws.root / "fanwatch-clusters"
    out.mkdir(exist_ok=True)
    token = ws.upstream_token
    sim = procs.start(
        "sim-fanwatch",
        [
            sys.executable,
            "-m",
            "karpor.cli",
            "sim",
            "--clusters",
            str(CLUSTERS),
            "--out",
            str(out),
            "--token",
            token,
            "--history",
            "1000",
        ],
    )
    gw: Karpor | None = None
    writers: dict[str, http.client.HTTPSConnection] = {}
    try:
        wait_for("karpor sim ready", log_contains(sim, "ready:"), 120, sim)
        writers = _writers(ws, out)
        gw = start_karpor(procs, ws, "karpor-fanwatch", out, 1, use_config=False)
        single: list[float] = []
        merged: list[float] = []
        cpu = {SINGLE_KEY: 0.0, MERGED_KEY: 0.0}
        for r in range(rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for is_merged in order:
                latencies, used = _round(gw, writers, token, is_merged, events)
                (merged if is_merged else single).extend(latencies)
                cpu[MERGED_KEY if is_merged else SINGLE_KEY] += used
        params = f"clusters={CLUSTERS}"
        for key, label, latencies in (
            (SINGLE_KEY, SINGLE_LABEL, single),
            (MERGED_KEY, MERGED_LABEL, merged),
        ):
            results.add(
                Row(
                    FANOUT_WATCH,
                    key,
                    label,
                    params,
                    {
                        "p50": median(latencies) * 1000,
                        "p99": _percentile(latencies, 0.99) * 1000,
                        "cpu_us": cpu[key] / len(latencies) * 1e6,
                        "events": float(len(latencies)),
                    },
                )
            )
        results.note(
            FANOUT_WATCH,
            f"{rounds} round(s) per way, {events} events each, the ways alternating; "
            "a ConfigMap created straight in the simulator, the clusters in turn; CPU: the "
            "gateway's process tree ÷ events.",
        )
    finally:
        for conn in writers.values():
            conn.close()
        if gw is not None:
            stop_quietly(procs, gw.proc)
        stop_quietly(procs, sim)
