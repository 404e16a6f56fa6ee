"""Workload 8, ``tunnel``: one simulated cluster reached two ways through one gateway.

The gateway (1 worker, token authentication for wrk) serves the simulator's
``sim-1`` twice: directly (``sim-1``: its Cluster file has the endpoint and
the token) and through a tunnel (``sim-t``: ``spec.access.tunnel: true``,
no endpoint; ``karpor agent`` runs beside the simulator with its
kubeconfig and dials the gateway).  Side by side, in rounds that alternate
the two ways:

- a small GET (the exec pod's JSON, ~1 KB) with wrk at concurrency 1 (p50)
  and 64 (requests/s), with the CPU time per request of the gateway's
  process tree and of the agent's, apart;
- ``kubectl exec POD -- head -c SIZE /dev/zero``: MB/s of the stream;
- first, N watches held open through each way: the gateway's RSS per watch
  (the round of workload 3, :func:`bench.simwork.watch_round`), each way on
  a gateway that held no watches before.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

from bench import wrk
from bench.fixture import Workspace
from bench.peers import Karpor, Peer, find_kubectl, start_karpor
from bench.procs import (
    BenchError,
    Proc,
    Processes,
    RssSampler,
    https_status,
    log_contains,
    tree_cpu_seconds,
    tree_rss_kib,
    wait_for,
)
from bench.results import Results, Row
from bench.simwork import (
    EXEC_POD,
    EXEC_ROUNDS,
    KARPOR_SIM_PREFIX,
    WATCH_NAMESPACE,
    Sim,
    SimPeer,
    ensure_exec_pod,
    ensure_namespace,
    exec_rounds,
    karpor_kubeconfig,
    rss_note,
    start_sim,
    stop_quietly,
    watch_round,
)

TUNNEL = "tunnel"
TUNNEL_EXEC = "tunnel-exec"
TUNNEL_WATCH = "tunnel-watch"
#: the tunnelled twin of ``sim-1``
TWIN = "sim-t"
#: the wrk concurrencies: the p50 target's and the throughput target's
CONCURRENCIES = (1, 64)
DIRECT_KEY = "karpor-direct"
TUNNEL_KEY = "karpor-tunnel"
DIRECT_LABEL = "karpor → simulator (endpoint)"
TUNNEL_LABEL = "karpor → agent → simulator (tunnel)"
#: the small GET: the exec pod's JSON
GET_PATH = f"/api/v1/namespaces/default/pods/{EXEC_POD}"


def _prefix(cluster: str) -> str:
    return KARPOR_SIM_PREFIX.replace("/clusters/sim-1/", f"/clusters/{cluster}/")


def start_agent(procs: Processes, ws: Workspace, sim: Sim) -> Proc:
    """``karpor agent-credentials`` for :data:`TWIN`, then ``karpor agent`` beside
    the simulator (its kubeconfig); returns once its tunnel is up."""
    gw = sim.karpor
    assert gw is not None
    credentials = ws.root / "agent.credentials"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "karpor.cli",
            "agent-credentials",
            "--state-dir",
            str(gw.state_dir),
            "--cluster",
            TWIN,
            "--server",
            f"https://127.0.0.1:{gw.port}",
            "-o",
            str(credentials),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"karpor agent-credentials failed: {done.stderr.strip()[-300:]}")
    proc = procs.start(
        "agent",
        [
            sys.executable,
            "-m",
            "karpor.cli",
            "agent",
            "--credentials",
            str(credentials),
            "--kubeconfig",
            str(sim.kubeconfig),
        ],
    )
    wait_for("the agent's tunnel up", log_contains(proc, "up: worker 0/"), 60, proc)
    return proc


def _wrk_rows(
    results: Results,
    wrk_bin: str,
    ws: Workspace,
    sim: Sim,
    agent: Proc,
    duration: float,
    rounds: int,
) -> None:
    gw = sim.karpor
    assert gw is not None
    peers = [
        Peer(DIRECT_KEY, DIRECT_LABEL, gw.port, _prefix("sim-1") + GET_PATH, gw.context),
        Peer(TUNNEL_KEY, TUNNEL_LABEL, gw.port, _prefix(TWIN) + GET_PATH, gw.context),
    ]
    ready: list[tuple[Peer, Path]] = []
    for peer in peers:
        peer.token = ws.user_token
        status, body = https_status(peer.port, peer.path, peer.context, peer.headers())
        if status != 200:
            why = f"not measured: GET answered {status} {body[:200]!r}"
            if gw.config_problem:
                why = f"not measured: token authentication not available ({gw.config_problem})"
            for c in CONCURRENCIES:
                results.add(Row(TUNNEL, peer.key, peer.label, f"c={c}", note=why))
            continue
        script = wrk.lua_script(ws.root / f"wrk-{peer.key}.lua", peer.headers())
        wrk.run(wrk_bin, peer.url, script, 16, 1)  # warm up
        ready.append((peer, script))
    for c in CONCURRENCIES:
        runs: dict[str, list[wrk.WrkResult]] = {p.key: [] for p, _ in ready}
        cpu: dict[str, list[tuple[float, float]]] = {p.key: [] for p, _ in ready}
        for r in range(rounds):
            turn = ready[r % len(ready) :] + ready[: r % len(ready)] if ready else []
            for peer, script in turn:
                before = tree_cpu_seconds(gw.proc.pid), tree_cpu_seconds(agent.pid)
                result = wrk.run(wrk_bin, peer.url, script, c, duration)
                after = tree_cpu_seconds(gw.proc.pid), tree_cpu_seconds(agent.pid)
                runs[peer.key].append(result)
                if result.requests:
                    cpu[peer.key].append(
                        (
                            (after[0] - before[0]) / result.requests * 1e6,
                            (after[1] - before[1]) / result.requests * 1e6,
                        )
                    )
        for peer, _ in ready:
            done = runs[peer.key]
            values = {
                "rps": statistics.median(x.rps for x in done),
                "p50": statistics.median(x.percentiles_ms.get(50.0, 0.0) for x in done),
                "p99": statistics.median(x.percentiles_ms.get(99.0, 0.0) for x in done),
                "errors": float(sum(x.errors + x.non_2xx for x in done)),
            }
            if cpu[peer.key]:
                values["cpu_us"] = statistics.median(g for g, _ in cpu[peer.key])
                values["agent_cpu_us"] = statistics.median(a for _, a in cpu[peer.key])
                values["cpu_total_us"] = statistics.median(g + a for g, a in cpu[peer.key])
            row = results.add(Row(TUNNEL, peer.key, peer.label, f"c={c}", values))
            print(f"  {peer.label:40} c={c:<3} {rss_note(row.values)}", flush=True)
    results.note(
        TUNNEL,
        f"wrk -t2 -cC for {duration:g} s per run, {rounds} round(s) alternating the two ways "
        "(medians), GET of one pod (~1 KB) with the bench user's token. CPU µs/req: the "
        "process-tree CPU time (user + system) during the run divided by its requests, of the "
        "gateway and of the agent apart (the agent idles while the direct way runs); the "
        "simulator's own CPU is in neither.",
    )


def _exec_rows(results: Results, ws: Workspace, sim: Sim, size: int) -> None:
    kubectl = find_kubectl()
    params = f"{size >> 20} MiB"
    gw = sim.karpor
    assert gw is not None
    ways = [
        (DIRECT_KEY, DIRECT_LABEL, karpor_kubeconfig(ws, gw, "sim-1")),
        (TUNNEL_KEY, TUNNEL_LABEL, karpor_kubeconfig(ws, gw, TWIN)),
    ]
    if kubectl is None:
        for key, label, _ in ways:
            results.add(Row(TUNNEL_EXEC, key, label, params, note="not measured: no kubectl"))
        return
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ws.root), "KUBECACHEDIR": str(ws.root / "kc")}
    timings, problems = exec_rounds(kubectl, ways, size, env)
    for key, label, _ in ways:
        if key in problems:
            results.add(Row(TUNNEL_EXEC, key, label, params, note=f"not measured: {problems[key]}"))
            continue
        runs = timings[key]
        values = {
            "mb_s": statistics.median(t.streamed / t.stream / 1e6 for t in runs),
            "start_s": statistics.median(t.start for t in runs),
            "seconds": statistics.median(t.total for t in runs),
            "total_mb_s": statistics.median(size / t.total / 1e6 for t in runs),
        }
        results.add(Row(TUNNEL_EXEC, key, label, params, values))
        print(f"  {label:40} exec {rss_note(values)}", flush=True)
    results.note(
        TUNNEL_EXEC,
        f"kubectl exec (WebSocket) of `head -c SIZE /dev/zero`, medians of {EXEC_ROUNDS} rounds "
        "alternating the two ways; MB/s is the stream's, first byte to last, as in table 4.",
    )


def _watch_rows(
    results: Results,
    procs: Processes,
    ws: Workspace,
    sim: Sim,
    agent: Proc,
    count: int,
    events: int,
    both: bool,
) -> None:
    gw = sim.karpor
    assert gw is not None
    ensure_namespace(sim, WATCH_NAMESPACE)
    # each way on a gateway that held no watches before: the tunnel's on the gateway of
    # the workload (this step runs first), the direct way's on a second, fresh one
    ways: list[tuple[str, str, str, Karpor]] = [(TUNNEL_KEY, TUNNEL_LABEL, TWIN, gw)]
    fresh: Karpor | None = None
    if both:
        fresh = start_karpor(procs, ws, "karpor-sim-direct", sim.out, 1, use_config=False)
        ways.append((DIRECT_KEY, DIRECT_LABEL, "sim-1", fresh))
    try:
        for key, label, cluster, way_gw in ways:
            peer = SimPeer(
                key, label, way_gw.port, _prefix(cluster), way_gw.cert_context, {}, way_gw.proc
            )
            agent_before = tree_rss_kib(agent.pid)
            with RssSampler(agent.pid) as agent_rss:
                values = watch_round(sim, peer, count, events, 0.2)
            error = values.pop("error", "")
            numbers = {k: float(v) for k, v in values.items() if not isinstance(v, str)}
            if key == TUNNEL_KEY and not error:
                numbers["agent_kib_per_stream"] = (agent_rss.peak_kib - agent_before) / count
                numbers["agent_rss_mib"] = agent_rss.peak_kib / 1024
            row = results.add(
                Row(
                    TUNNEL_WATCH,
                    key,
                    label,
                    f"n={count}",
                    numbers,
                    f"not measured: {error}" if error else "",
                )
            )
            print(f"  {label:40} n={count:<5} {rss_note(row.values) or row.note}", flush=True)
    finally:
        if fresh is not None:
            stop_quietly(procs, fresh.proc)
    results.note(
        TUNNEL_WATCH,
        "N watch streams opened through the gateway at once (client certificate), as in "
        "table 3, the tunnel's all over one agent tunnel (one HTTP/2 stream each). Each way "
        "runs on a gateway that held no watches before (this step runs first; the direct "
        "way on a second gateway started for it), so that neither reuses the heap the other "
        "grew. Gateway KiB/stream is its process-tree RSS growth ÷ N while they are open; "
        "upstream connections are those to the simulator (for the tunnel: the agent's). "
        "Agent: its peak RSS (sampled every 20 ms) and the peak growth ÷ N.",
    )


def run(
    results: Results,
    procs: Processes,
    ws: Workspace,
    wrk_bin: str,
    duration: float,
    rounds: int,
    exec_bytes: int,
    watches: int,
    events: int,
    quick: bool,
) -> None:
    """Workload 8: start the simulator, the gateway and the agent; measure; stop them."""
    sim = start_sim(procs, ws, with_kubectl_proxy=False, use_config=True, tunnel_twin=TWIN)
    agent: Proc | None = None
    try:
        agent = tunnel_agent = start_agent(procs, ws, sim)
        ensure_exec_pod(sim)
        gw = sim.karpor
        assert gw is not None
        results.peers[f"tunnel:{DIRECT_KEY}"] = (
            f"{DIRECT_LABEL}: karpor, 1 worker, Cluster file `sim-1` with the simulator's "
            "endpoint and token"
        )
        results.peers[f"tunnel:{TUNNEL_KEY}"] = (
            f"{TUNNEL_LABEL}: the same gateway, Cluster file `{TWIN}` with "
            "`spec.access.tunnel: true` and no endpoint; `karpor agent --kubeconfig "
            "sim-1.kubeconfig` beside the simulator, credentials from `karpor agent-credentials`"
        )
        steps = [
            (
                "watch",
                lambda: _watch_rows(
                    # --quick: the tunnel's way only, 20 sparse updates and 1 broadcast
                    results,
                    procs,
                    ws,
                    sim,
                    tunnel_agent,
                    watches,
                    1 if quick else events,
                    not quick,
                ),
            ),
            ("GET", lambda: _wrk_rows(results, wrk_bin, ws, sim, tunnel_agent, duration, rounds)),
            ("exec", lambda: _exec_rows(results, ws, sim, exec_bytes)),
        ]
        for name, step in steps:
            print(f"workload tunnel: {name}", flush=True)
            try:
                step()
            except (BenchError, OSError, ValueError) as exc:
                workload = {"GET": TUNNEL, "exec": TUNNEL_EXEC, "watch": TUNNEL_WATCH}[name]
                results.add(Row(workload, "-", "(workload)", "", note=f"not measured: {exc}"))
    finally:
        stop_quietly(procs, agent)
        for peer in sim.peers:
            stop_quietly(procs, peer.proc)
