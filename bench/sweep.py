"""Workload 7: the cluster count sweep (10 / 100 / 1,000 Cluster files).

For each count a fresh gateway (1 worker) serves a clusters directory of
that many Cluster files, all pointing at the nginx upstream, and the bench
measures:

- start-up: from starting ``twistd`` to ``/readyz`` answering 200;
- first probes: from then until the gateway's cluster list shows every
  cluster probed once (each worker's first health probes open a connection
  to each cluster, spread over the first seconds);
- RSS of the gateway's process tree once ready;
- reload: a new Cluster file is written; the time until the gateway's own
  API (``GET …/clusters/NAME`` with the bench user's client certificate)
  shows it, polled every 20 ms;
- per-request latency, once every cluster was probed: sequential GETs of
  the pod through the first cluster over one keep-alive connection (a
  Python client with a client certificate), p50 and p99, compared with the
  smallest count.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Sequence

import yaml

from bench.fixture import KARPOR_PREFIX, POD_PATH, Workspace
from bench.peers import Peer, start_karpor
from bench.procs import LOOPBACK, BenchError, Processes, https_status, tree_rss_kib
from bench.results import Results, Row

CLUSTERS = "clusters"


def _latencies(port: int, context: ssl.SSLContext, requests: int) -> list[float]:
    conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=10, context=context)
    out: list[float] = []
    try:
        for _ in range(requests):
            started = time.perf_counter()
            conn.request("GET", KARPOR_PREFIX + POD_PATH)
            response = conn.getresponse()
            response.read()
            out.append(time.perf_counter() - started)
            if response.status != 200:
                raise BenchError(f"GET through karpor answered {response.status}")
    finally:
        conn.close()
    return sorted(out)


def _probed_all(port: int, context: ssl.SSLContext, count: int, timeout: float) -> float | None:
    """Seconds until the gateway's cluster list shows every cluster probed
    once (``status.lastProbeTime``), polled every 0.2 s; ``None`` if not
    within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        status, body = https_status(port, "/apis/cluster.karpor.io/v1beta1/clusters", context)
        if status == 200:
            items = json.loads(body).get("items", [])
            probed = sum(1 for item in items if (item.get("status") or {}).get("lastProbeTime"))
            if probed >= count:
                return time.monotonic() - started
        time.sleep(0.2)
    return None


def sweep(
    results: Results,
    procs: Processes,
    ws: Workspace,
    upstream: Peer,
    counts: Sequence[int],
    requests: int,
    reload_timeout: float = 10.0,
    probe_timeout: float = 30.0,
) -> None:
    """Workload 7 for each cluster count."""
    for count in counts:
        name = f"sweep-{count}"
        directory = ws.clusters_dir(name, upstream.port, count)
        params = f"{count} clusters"
        try:
            gw = start_karpor(procs, ws, f"karpor-{name}", directory, 1, use_config=False)
        except BenchError as exc:
            results.add(
                Row(CLUSTERS, "karpor-1", "karpor, 1 worker", params, note=f"not measured: {exc}")
            )
            continue
        try:
            values: dict[str, float] = {
                "startup_s": gw.startup_s,
                "rss_mib": tree_rss_kib(gw.proc.pid) / 1024,
            }
            # per-request cost in the steady state: after every cluster's
            # first health probe (each opens a connection to its cluster)
            probed = _probed_all(gw.port, gw.cert_context, count, probe_timeout)
            if probed is not None:
                values["first_probes_s"] = probed
            lat = _latencies(gw.port, gw.cert_context, requests)
            values["p50"] = lat[len(lat) // 2] * 1000
            values["p99"] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000
            note = ""
            new = "bench-reload"
            doc = ws.cluster_document(new, upstream.port)
            started = time.monotonic()
            (directory / f"{new}.yaml").write_text(yaml.safe_dump(doc))
            path = f"/apis/cluster.karpor.io/v1beta1/clusters/{new}"
            while True:
                status, _ = https_status(gw.port, path, gw.cert_context)
                if status == 200:
                    values["reload_s"] = time.monotonic() - started
                    break
                if time.monotonic() - started > reload_timeout:
                    note = (
                        f"reload not observed within {reload_timeout:.0f} s (GET {path} still "
                        f"{status}): hot reload of the clusters directory not wired yet?"
                    )
                    break
                time.sleep(0.02)
            results.add(Row(CLUSTERS, "karpor-1", "karpor, 1 worker", params, values, note))
            print(f"  karpor {params:16} {values} {note}", flush=True)
        except (OSError, BenchError) as exc:
            results.add(
                Row(CLUSTERS, "karpor-1", "karpor, 1 worker", params, note=f"not measured: {exc}")
            )
        finally:
            procs.stop(gw.proc)
    results.note(
        CLUSTERS,
        f"Per-request latency: {requests} sequential GETs of the pod over one keep-alive TLS "
        "connection from a Python client with a client certificate (the client's own cost is "
        "the same at every count; compare the rows).",
    )
