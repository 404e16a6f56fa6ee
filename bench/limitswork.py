"""Workload 9, ``limits``: what the per-user limits cost a request.

Side by side against the same upstream (nginx over TLS), in rounds that
alternate the peers: karpor without a ``limits`` section and karpor with
every limit set (user ``inflight``, ``watches``, ``qps``/``burst`` and
``cluster.inflight``, all far above what wrk reaches, so nothing is
refused and every request goes through the whole admission and release),
with 1 worker and with N workers (the table of counts shared through
memory).  wrk at concurrency 1 (p50) and 64 (requests/s), with the CPU
time per request of each gateway's process tree.

``limits-inproc``: the admission and release of one request by
:class:`karpor.front.limits.Limiter` in-process, with the limits set and
without (microseconds; the figure the gateway's CPU µs/req differ by).
"""

from __future__ import annotations

import time
from typing import Any

from bench import reqresp
from bench.fixture import BENCH_GROUPS, BENCH_USER, Workspace
from bench.peers import Karpor, Peer, karpor_peer, start_karpor
from bench.procs import BenchError, Processes
from bench.results import Results, Row
from karpor.auth.identity import Identity
from karpor.front.limits import ClusterLimits, Limiter, LimitSettings, UserLimits
from karpor.front.limitstable import CountTable

LIMITS = "limits"
LIMITS_INPROC = "limits-inproc"
#: the wrk concurrencies
CONCURRENCIES = (1, 64)
#: limits nothing in the bench reaches: every request is counted, none refused
HIGH = {
    "user": {"inflight": 100000, "watches": 100000, "qps": 1000000, "burst": 1000000},
    "cluster": {"inflight": 100000},
}


def _settings() -> LimitSettings:
    user: dict[str, Any] = HIGH["user"]
    return LimitSettings(
        UserLimits(user["inflight"], user["watches"], float(user["qps"]), user["burst"]),
        ClusterLimits(HIGH["cluster"]["inflight"]),
    )


def in_process(results: Results, requests: int = 40_000, repeats: int = 7) -> None:
    """Time admit + release of one request, with and without limits:
    ``repeats`` loops of ``requests`` each, alternating the two, the
    fastest loop of each kept (the machine is shared: the minimum is the
    figure least disturbed by other processes)."""
    identity = Identity(BENCH_USER, tuple(BENCH_GROUPS))
    ways = [
        ("karpor-limits", "Limiter, every limit set", Limiter(CountTable.in_memory(), _settings())),
        ("karpor", "Limiter, no limits section", Limiter(CountTable.in_memory(), None)),
    ]
    best = {key: float("inf") for key, _, _ in ways}
    for _ in range(repeats):
        for key, _, limiter in ways:
            admit = limiter.admit
            admit(identity, "upstream", False).release()  # the user's and cluster's slots
            started = time.perf_counter()
            for _ in range(requests):
                admit(identity, "upstream", False).release()
            best[key] = min(best[key], (time.perf_counter() - started) / requests * 1e6)
    for key, label, _ in ways:
        results.add(Row(LIMITS_INPROC, key, label, "in-process", {"admit_us": best[key]}))
        print(f"  {label:40} admit + release {best[key]:.2f} µs (fastest of {repeats})", flush=True)


def run(
    results: Results,
    procs: Processes,
    ws: Workspace,
    upstream: Peer,
    wrk_bin: str,
    duration: float,
    rounds: int,
    workers: int,
) -> None:
    """The gateways with and without limits, side by side (see the module docstring)."""
    in_process(results)
    directory = ws.clusters_dir("limits-clusters", upstream.port)
    counts = [1] if workers <= 1 else [1, workers]
    peers: list[Peer] = []
    started: list[Karpor] = []
    try:
        for n in counts:
            for limited in (False, True):
                key = f"karpor-{n}{'-limits' if limited else ''}"
                label = f"karpor, {n} worker{'s' if n > 1 else ''}" + (
                    ", limits" if limited else ", no limits"
                )
                try:
                    gw = start_karpor(
                        procs, ws, key, directory, n, extra={LIMITS: HIGH} if limited else None
                    )
                except BenchError as exc:
                    for c in CONCURRENCIES:
                        results.add(Row(LIMITS, key, label, f"c={c}", note=f"not measured: {exc}"))
                    continue
                started.append(gw)
                peer = karpor_peer(gw, ws, key, label, n)
                if limited and gw.config_problem:
                    peer.unavailable = f"not measured: {gw.config_problem}"
                peers.append(peer)
                results.peers.setdefault(f"limits:{key}", f"{label}: {peer.note}")
        reqresp.measure_peers(
            results, wrk_bin, ws.root, peers, CONCURRENCIES, duration, [LIMITS], rounds
        )
    finally:
        for gw in started:
            procs.stop(gw.proc)
    results.note(
        LIMITS,
        f"wrk -t2 -cC for {duration:g} s per run, {rounds} round(s) alternating the peers "
        "(medians), GET of one pod (~1 KB) with the bench user's token, through karpor to the "
        "nginx upstream. With limits: user inflight/watches 100000, qps/burst 1000000, cluster "
        "inflight 100000 (every request admitted and released, none refused). CPU µs/req: the "
        "gateway's process-tree CPU time (user + system) during the run ÷ its requests.",
    )
