"""Workloads 1, 2 and 6: a small GET through every peer, driven by wrk.

1. ``latency``: concurrency 1, p50 / p90 / p99 / p99.9;
2. ``throughput``: requests/s and p99 at each concurrency (1, 16, 64, 256);
6. ``workers``: karpor's throughput with 1 and N workers (from workload 2's
   runs when they were made, else its own runs at concurrency 64).
"""

from __future__ import annotations

import http.client
import ssl
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from bench import wrk
from bench.peers import Peer
from bench.procs import LOOPBACK, tree_cpu_seconds
from bench.results import Results, Row

LATENCY = "latency"
LATENCY_PY = "latency-py"
THROUGHPUT = "throughput"
WORKERS = "workers"


def _values(runs: Sequence[wrk.WrkResult], cpu_us: Sequence[float]) -> dict[str, float]:
    """The medians of ``runs`` (alternating rounds of one peer at one
    concurrency): requests/s, each percentile and the CPU time per request
    (``cpu_us``, one figure per run, when the peer's process tree is known);
    requests and errors summed."""
    values = {
        "rps": statistics.median(r.rps for r in runs),
        "requests": float(sum(r.requests for r in runs)),
        "errors": float(sum(r.errors + r.non_2xx for r in runs)),
    }
    for q in runs[0].percentiles_ms:
        values[f"p{q:g}"] = statistics.median(r.percentiles_ms.get(q, 0.0) for r in runs)
    if cpu_us:
        values["cpu_us"] = statistics.median(cpu_us)
    return values


def _measured_run(
    wrk_bin: str, peer: Peer, script: Path, connections: int, duration: float
) -> tuple[wrk.WrkResult, float | None]:
    """One wrk run against ``peer`` and the CPU time its whole process tree
    spent per request during it (µs; None when the peer has no process here)."""
    root = peer.proc.pid if peer.proc is not None else None
    before = tree_cpu_seconds(root) if root is not None else 0.0
    result = wrk.run(wrk_bin, peer.url, script, connections, duration)
    if root is None or not result.requests:
        return result, None
    return result, (tree_cpu_seconds(root) - before) / result.requests * 1e6


def _note(runs: Sequence[wrk.WrkResult]) -> str:
    if all(r.ok for r in runs):
        return ""
    errors = sum(r.errors for r in runs)
    non_2xx = sum(r.non_2xx for r in runs)
    requests = sum(r.requests for r in runs)
    return f"{errors} socket errors/timeouts and {non_2xx} non-2xx answers of {requests} requests"


def measure_peers(
    results: Results,
    wrk_bin: str,
    workdir: Path,
    peers: Sequence[Peer],
    concurrencies: Sequence[int],
    duration: float,
    workloads: Sequence[str],
    rounds: int = 1,
) -> None:
    """Run wrk against every peer at each concurrency, ``rounds`` times in
    turn (each round in a rotated order), so that the machine's changes of
    speed (it is shared) fall on every peer alike; rows for ``workloads``
    hold the medians of the rounds."""
    ready: list[tuple[Peer, Path]] = []
    for peer in peers:
        if peer.unavailable:
            for workload in workloads:
                params = "c=1" if workload == LATENCY else "all"
                results.add(Row(workload, peer.key, peer.label, params, note=peer.unavailable))
            continue
        script = wrk.lua_script(workdir / f"wrk-{peer.key}.lua", peer.headers())
        # warm up: connections, TLS sessions, upstream pools, caches
        try:
            wrk.run(wrk_bin, peer.url, script, 16, 1)
        except (ValueError, OSError) as exc:
            for workload in workloads:
                results.add(Row(workload, peer.key, peer.label, "", note=f"not measured: {exc}"))
            continue
        ready.append((peer, script))
    for c in concurrencies:
        runs: dict[str, list[wrk.WrkResult]] = {peer.key: [] for peer, _ in ready}
        cpu: dict[str, list[float]] = {peer.key: [] for peer, _ in ready}
        problems: dict[str, str] = {}
        for r in range(rounds):
            turn = ready[r % len(ready) :] + ready[: r % len(ready)] if ready else []
            for peer, script in turn:
                if peer.key in problems:
                    continue
                try:
                    result, cpu_us = _measured_run(wrk_bin, peer, script, c, duration)
                except (ValueError, OSError) as exc:
                    problems[peer.key] = f"not measured: {exc}"
                    continue
                runs[peer.key].append(result)
                if cpu_us is not None:
                    cpu[peer.key].append(cpu_us)
        for peer, _ in ready:
            done = runs[peer.key]
            if peer.key in problems or not done:
                values: dict[str, float] = {}
                note = problems.get(peer.key, "not measured")
            else:
                values = _values(done, cpu[peer.key])
                note = _note(done)
            for workload in workloads:
                if workload == LATENCY and c != 1:
                    continue
                results.add(Row(workload, peer.key, peer.label, f"c={c}", dict(values), note))
            print(
                f"  {peer.label:32} c={c:<4} "
                + (
                    f"{values['rps']:9.0f} req/s  p50 {values['p50']:7.2f} ms  "
                    f"p99 {values['p99']:7.2f} ms"
                    + (f"  CPU {values['cpu_us']:6.0f} µs/req" if "cpu_us" in values else "")
                    if values
                    else note
                ),
                flush=True,
            )


def worker_rows(results: Results, peers: Sequence[Peer]) -> None:
    """Workload 6 from workload 2's karpor rows (every concurrency measured)."""
    for peer in peers:
        if not peer.key.startswith("karpor"):
            continue
        for row in [r for r in results.rows if r.workload == THROUGHPUT and r.peer == peer.key]:
            results.add(Row(WORKERS, peer.key, peer.label, row.params, dict(row.values), row.note))


class _Client:
    """One keep-alive connection of the Python client to one peer, one way
    of authenticating, and what its measured requests cost."""

    def __init__(
        self, peer: Peer, key: str, label: str, context: ssl.SSLContext | None, token: str | None
    ) -> None:
        self.peer = peer
        self.key = key
        self.label = label
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        #: connections opened (http.client opens a new one when the peer closed the last)
        self.connections = 0
        self.samples: list[float] = []
        self.cpu_s = 0.0
        self.note = ""
        self.conn: http.client.HTTPConnection
        if context is None:
            self.conn = http.client.HTTPConnection(LOOPBACK, peer.port, timeout=10)
        else:
            self.conn = http.client.HTTPSConnection(
                LOOPBACK, peer.port, timeout=10, context=context
            )
        connect = self.conn.connect

        def counted() -> None:
            self.connections += 1
            connect()

        self.conn.connect = counted  # type: ignore[method-assign]

    def get(self, requests: int, measured: bool) -> None:
        """``requests`` sequential GETs; timed (and their CPU counted) when ``measured``."""
        root = self.peer.proc.pid if self.peer.proc is not None else None
        before = tree_cpu_seconds(root) if measured and root is not None else 0.0
        try:
            for _ in range(requests):
                started = time.perf_counter()
                self.conn.request("GET", self.peer.path, headers=self.headers)
                response = self.conn.getresponse()
                response.read()
                if response.status != 200:
                    self.note = f"not measured: answered {response.status}"
                    return
                if measured:
                    self.samples.append(time.perf_counter() - started)
        except OSError as exc:
            self.note = f"not measured: {exc}"
        finally:
            if measured and root is not None:
                self.cpu_s += tree_cpu_seconds(root) - before


def _clients(peers: Sequence[Peer]) -> list[_Client]:
    """The Python client's ways to every peer: karpor with its client
    certificate and (``karpor-1``) also with the static token of the token
    file, the OIDC peer with its ID token, the others as wrk reaches them."""
    clients: list[_Client] = []
    for peer in peers:
        if not peer.port:
            continue
        if peer.cert_context is not None:
            clients.append(
                _Client(
                    peer, peer.key, peer.label + " (client certificate)", peer.cert_context, None
                )
            )
            if peer.key == "karpor-1" and peer.token:
                clients.append(
                    _Client(
                        peer,
                        peer.key + STATIC_TOKEN,
                        peer.label + " (static token)",
                        peer.context,
                        peer.token,
                    )
                )
        else:
            clients.append(_Client(peer, peer.key, peer.label, peer.context, peer.token))
    return clients


#: the key suffix of karpor-1 reached by the Python client with the static token
STATIC_TOKEN = "-token"


def python_latency(
    results: Results, peers: Sequence[Peer], requests: int, chunk: int = 200
) -> None:
    """Workload 1 again with one Python client: sequential GETs, one keep-alive
    connection per peer and way of authenticating.

    The same client for every peer, so its own cost cancels in the ratios;
    karpor is reached with the bench user's client certificate, which wrk
    cannot present, and ``karpor-1`` also with the token file's static
    token (the OIDC peer with its ID token, on the same gateway), so the
    peer's CPU time per request (its process tree's, while the measured
    requests ran) compares the ways of authenticating side by side.  The
    peers take turns by ``chunk`` requests (the order rotated each round),
    so that a shared machine's changes of speed fall on every peer alike;
    ``connections`` counts the connections opened for the measured
    requests (0: the warm-up's one served them all).
    """
    clients = _clients(peers)
    for client in clients:
        client.get(max(1, requests // 10), measured=False)  # warm-up, and the connection
        client.connections = 0
    chunk = max(1, min(chunk, requests))
    rounds = max(1, requests // chunk)
    for r in range(rounds):
        turn = clients[r % len(clients) :] + clients[: r % len(clients)] if clients else []
        for client in turn:
            if not client.note:
                client.get(chunk, measured=True)
    for client in clients:
        client.conn.close()
        samples = sorted(client.samples)
        values: dict[str, float] = {}
        if samples and not client.note:
            if client.peer.proc is not None:
                values["cpu_us"] = client.cpu_s / len(samples) * 1e6
            for q in (50.0, 90.0, 99.0, 99.9):
                index = min(len(samples) - 1, int(len(samples) * q / 100))
                values[f"p{q:g}"] = samples[index] * 1000
            values["rps"] = len(samples) / sum(samples)
            values["connections"] = float(client.connections)
        results.add(Row(LATENCY_PY, client.key, client.label, "c=1", values, client.note))
        print(
            f"  {client.label:32} python c=1 "
            + (
                f"p50 {values['p50']:.2f} ms"
                + (f"  CPU {values['cpu_us']:6.0f} µs/req" if "cpu_us" in values else "")
                + f"  {client.connections} new connection(s)"
                if values
                else client.note
            ),
            flush=True,
        )
