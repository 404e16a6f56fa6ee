"""``python -m bench``: run the suite, write RESULTS.md and the plots.

::

    python -m bench [--quick] [--only W[,W...]] [--duration S] [--workers N]
                    [--install] [--out DIR] [--keep] [--no-plots] [--merge]
                    [--rewrite]

Every run writes ``results.json`` beside RESULTS.md; ``--merge`` keeps from
it the figures of the workloads the run does not measure, so a run of a few
workloads updates their tables and leaves the others (each dated).

Workloads (``--only`` takes names or numbers): 1 ``latency``, 2 ``throughput``,
3 ``watch``, 4 ``exec``, 5 ``list``, 6 ``workers``, 7 ``clusters``, 8 ``tunnel``,
9 ``fanout-watch``, 10 ``fanout``, 11 ``limits``, 12 ``recording`` (exec with
and without session recording), 13 ``h2``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from bench import (
    fanoutwatchwork,
    fanoutwork,
    h2work,
    limitswork,
    machine,
    oidcwork,
    recordingwork,
    report,
    reqresp,
    simwork,
    sweep,
    tunnelwork,
)
from bench.fixture import Workspace
from bench.peers import (
    Karpor,
    Peer,
    find_kubectl,
    karpor_peer,
    oidc_peer,
    start_karpor,
    start_kubectl_proxy,
    start_nginx_proxy,
    start_upstream,
)
from bench.procs import BenchError, Processes, export_revision
from bench.results import Results, Row
from bench.wrk import find_wrk
from karpor.app.settings import default_workers

WORKLOADS = (
    "latency",
    "throughput",
    "watch",
    "exec",
    "list",
    "workers",
    "clusters",
    "tunnel",
    "fanout-watch",
    "fanout",
    "limits",
    "recording",
    "h2",
)
REQRESP = {"latency", "throughput", "workers"}
SIM = {"watch", "exec", "list"}
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Plan:
    """Sizes of one run (``--quick`` or full)."""

    duration: float
    concurrencies: tuple[int, ...]
    watches: tuple[int, ...]
    watch_events: int
    list_bytes: int
    exec_bytes: int
    cluster_counts: tuple[int, ...]
    sweep_requests: int
    py_requests: int
    reload_timeout: float
    #: wrk runs per peer and concurrency, alternating the peers
    rounds: int


FULL = Plan(
    4.0, (1, 16, 64, 256), (1000,), 10, 100_000_000, 200 << 20, (10, 100, 1000), 500, 2000, 10.0, 3
)
QUICK = Plan(1.0, (1, 16), (20,), 3, 2_000_000, 8 << 20, (10,), 50, 100, 3.0, 1)


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    """The options of ``python -m bench``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure karpor side by side with the upstream, kubectl proxy and nginx; "
        "write RESULTS.md and PNG plots.",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a tiny run (seconds): 1 s per wrk run, small sizes"
    )
    parser.add_argument(
        "--only",
        default="",
        metavar="W[,W]",
        help="workloads to run, by name or number: "
        + ", ".join(f"{i} {w}" for i, w in enumerate(WORKLOADS, 1)),
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        metavar="S",
        help="seconds per wrk run (4; --quick: 1)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="R",
        help="wrk runs per peer and concurrency, alternating the peers (3; --quick: 1)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=default_workers(),
        metavar="N",
        help="workers of the N-worker karpor peer (default: CPUs)",
    )
    parser.add_argument(
        "--concurrency",
        type=_ints,
        default=None,
        metavar="C,C",
        help="wrk connection counts (1,16,64,256)",
    )
    parser.add_argument(
        "--watches",
        type=_ints,
        default=None,
        metavar="N,N",
        help="concurrent watch counts (1000; the issue's 5000,10000 work too)",
    )
    parser.add_argument(
        "--list-mb", type=float, default=None, metavar="MB", help="size of the large LIST (100)"
    )
    parser.add_argument(
        "--clusters",
        type=_ints,
        default=None,
        metavar="N,N",
        help="cluster counts of the sweep (10,100,1000)",
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help="apt-get install wrk and nginx if missing (root), and "
        "matplotlib into bench/.deps for the plots",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE,
        metavar="DIR",
        help="where RESULTS.md and the PNGs go (bench/)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the scratch directory (configs, logs) and print its path",
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument(
        "--rewrite",
        action="store_true",
        help="measure nothing: write RESULTS.md and the plots again from DIR/results.json",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the figures of the workloads this run does not measure from DIR/results.json "
        "(the run that wrote it); RESULTS.md says when each workload was measured",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="REV",
        help="also measure karpor as of git revision REV (1 worker, peer `baseline-1`) in "
        "workloads 1 and 2, side by side with the working tree's karpor",
    )
    return parser


def selected(only: str) -> list[str]:
    """The workloads ``--only`` names (all when empty)."""
    if not only:
        return list(WORKLOADS)
    out: list[str] = []
    for raw in only.split(","):
        item = raw.strip().lower()
        if item.isdigit() and 1 <= int(item) <= len(WORKLOADS):
            out.append(WORKLOADS[int(item) - 1])
        elif item in WORKLOADS:
            out.append(item)
        else:
            raise SystemExit(
                f"python -m bench: unknown workload {item!r}; one of " + ", ".join(WORKLOADS)
            )
    return out


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


def _unavailable(key: str, label: str, why: str) -> Peer:
    return Peer(key, label, 0, "", None, unavailable=f"not measured: {why}")


def run_reqresp(
    results: Results,
    procs: Processes,
    ws: Workspace,
    upstream: Peer,
    plan: Plan,
    workers: int,
    workloads: Sequence[str],
    wrk_bin: str,
    baseline: str | None = None,
) -> list[Peer]:
    """Workloads 1, 2, 6: start the proxies, run wrk against every peer, stop them.

    With ``baseline`` (a git revision), karpor as of that revision runs
    beside them as peer ``baseline-1`` (1 worker, its source exported with
    ``git archive`` and put first on its PYTHONPATH).
    """
    peers: list[Peer] = [upstream]
    directory = ws.clusters_dir("clusters", upstream.port)
    karpors: list[tuple[str, str, int, dict[str, str] | None]] = [
        (f"karpor-{n}", f"karpor, {n} worker{'s' if n > 1 else ''}", n, None)
        for n in ([1] if workers == 1 else [1, workers])
    ]
    if baseline is not None:
        try:
            source = export_revision(baseline, ws.root / "baseline-src")
            karpors.insert(1, ("baseline-1", f"karpor at {baseline}, 1 worker", 1, source))
        except BenchError as exc:
            peers.append(_unavailable("baseline-1", f"karpor at {baseline}", str(exc)))
    for key, label, n, env in karpors:
        gw: Karpor | None = None
        try:
            gw = start_karpor(procs, ws, key, directory, n, env=env)
            peer = karpor_peer(gw, ws, key, label, n)
        except BenchError as exc:
            peer = _unavailable(key, label, str(exc).splitlines()[0])
        peers.append(peer)
        if key == "karpor-1" and gw is not None:
            # the same gateway, authenticated by an OpenID provider's ID token
            peers.append(oidc_peer(gw, ws, "karpor-1-oidc", "karpor, 1 worker, OIDC token"))
    kubectl = find_kubectl()
    try:
        if kubectl is None:
            raise BenchError("kubectl not found (PATH or /usr/lib/google-cloud-sdk/bin)")
        peers.append(start_kubectl_proxy(procs, ws, kubectl, upstream))
    except BenchError as exc:
        peers.append(_unavailable("kubectl-proxy", "kubectl proxy", str(exc).splitlines()[0]))
    try:
        peers.append(start_nginx_proxy(procs, ws, upstream, workers))
    except BenchError as exc:
        peers.append(_unavailable("nginx-proxy", "nginx reverse proxy", str(exc).splitlines()[0]))
    for peer in peers:
        results.peers[peer.key] = f"{peer.label}: {peer.note}" + (
            f" — {peer.unavailable}" if peer.unavailable else ""
        )
    wl = [
        w
        for w in ("latency", "throughput")
        if w in workloads or (w == "throughput" and "workers" in workloads)
    ]
    concurrencies = plan.concurrencies
    if "throughput" not in wl:
        concurrencies = (1,)
    reqresp.measure_peers(
        results, wrk_bin, ws.root, peers, concurrencies, plan.duration, wl, plan.rounds
    )
    if "latency" in workloads:
        reqresp.python_latency(results, peers, plan.py_requests)
        oidcwork.token_costs(results, ws)
    if "workers" in workloads:
        reqresp.worker_rows(results, peers)
        if "throughput" not in workloads:
            results.rows = [r for r in results.rows if r.workload != "throughput"]
    for peer in peers:
        if peer is not upstream and peer.proc is not None:
            procs.stop(peer.proc)
    return peers


def run_sim(
    results: Results, procs: Processes, ws: Workspace, plan: Plan, workloads: Sequence[str]
) -> None:
    """Workloads 3, 4, 5 against one simulator."""
    sim = simwork.start_sim(procs, ws)
    try:
        for peer in sim.peers:
            results.peers.setdefault(
                f"sim:{peer.key}", f"{peer.label} in front of the simulator: {peer.note}"
            )
        # the LIST first: its RSS baseline must be a fresh process, not a heap
        # grown by a thousand watches
        steps = [
            ("list", lambda: simwork.large_list(results, sim, plan.list_bytes)),
            ("exec", lambda: simwork.exec_stream(results, ws, sim, plan.exec_bytes)),
            ("watch", lambda: simwork.watches(results, sim, plan.watches, plan.watch_events, 0.2)),
        ]
        for name, step in steps:
            if name not in workloads:
                continue
            print(f"workload {name}", flush=True)
            try:
                step()
            except (BenchError, OSError) as exc:
                results.add(Row(name, "-", "(workload)", "", note=f"not measured: {exc}"))
    finally:
        for peer in sim.peers:
            simwork.stop_quietly(procs, peer.proc)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite; the exit status."""
    args = build_parser().parse_args(argv)
    if args.rewrite:
        return rewrite(args)
    workloads = selected(args.only)
    plan = QUICK if args.quick else FULL
    overrides: dict[str, object] = {}
    if args.duration is not None:
        overrides["duration"] = args.duration
    if args.rounds is not None:
        overrides["rounds"] = max(1, args.rounds)
    if args.concurrency:
        overrides["concurrencies"] = args.concurrency
    if args.watches:
        overrides["watches"] = args.watches
    if args.list_mb:
        overrides["list_bytes"] = int(args.list_mb * 1e6)
    if args.clusters:
        overrides["cluster_counts"] = args.clusters
    if overrides:
        plan = dataclasses.replace(plan, **overrides)  # type: ignore[arg-type]
    missing = machine.missing_tools()
    optional = machine.missing_optional() if "h2" in workloads else []
    if args.install and (
        missing or optional or (not args.no_plots and not machine.have_matplotlib())
    ):
        for problem in machine.install(missing + optional, plots=not args.no_plots):
            print(f"python -m bench: --install: {problem}", file=sys.stderr)
        missing = machine.missing_tools()
    if missing:
        print(
            f"python -m bench: missing {', '.join(missing)} (Debian packages). Install them "
            f"with `apt-get install -y {' '.join(missing)}` or run `python -m bench --install` "
            "as root.",
            file=sys.stderr,
        )
        return 2
    wrk_bin = find_wrk()
    assert wrk_bin is not None
    signal.signal(signal.SIGTERM, _terminate)
    _raise_fd_limit()
    results = Results()
    results.settings = {
        "mode": "quick (--quick: tiny, not for comparison)" if args.quick else "full",
        "workloads": ", ".join(workloads),
        "wrk run": f"{plan.duration:g} s per run after a 1 s warm-up, -t2 (-t1 at c=1), "
        f"concurrency {', '.join(map(str, plan.concurrencies))}; {plan.rounds} rounds "
        "alternating the peers (rotated each round), medians reported",
        "karpor workers": f"1 and {args.workers}",
        "watch counts": ", ".join(map(str, plan.watches)),
        "large LIST": f"{plan.list_bytes / 1e6:.0f} MB",
        "exec": f"{plan.exec_bytes >> 20} MiB",
        "cluster counts": ", ".join(map(str, plan.cluster_counts)),
    }
    scratch = Path(tempfile.mkdtemp(prefix="karpor-bench-"))
    started = time.monotonic()
    karpor_key = f"karpor-{args.workers}"
    try:
        ws = Workspace.create(scratch)
        with Processes(scratch) as procs:
            print("starting the upstream (nginx over TLS)", flush=True)
            upstream = start_upstream(procs, ws, args.workers)
            if REQRESP & set(workloads):
                print("workloads latency / throughput / workers (wrk)", flush=True)
                run_reqresp(
                    results,
                    procs,
                    ws,
                    upstream,
                    plan,
                    args.workers,
                    workloads,
                    wrk_bin,
                    args.baseline,
                )
            if SIM & set(workloads):
                try:
                    run_sim(results, procs, ws, plan, workloads)
                except BenchError as exc:
                    for name in SIM & set(workloads):
                        results.add(Row(name, "-", "(simulator)", "", note=f"not measured: {exc}"))
            if "clusters" in workloads:
                print("workload clusters (sweep)", flush=True)
                sweep.sweep(results, procs, ws, upstream, plan.cluster_counts, plan.sweep_requests)
            # each: (name, what it prints, where a failure is noted, the step); one
            # workload's failure loses none of the others' figures
            steps: list[tuple[str, str, str, Callable[[], object]]] = [
                (
                    "tunnel",
                    "direct and through an agent, side by side",
                    "(simulator)",
                    lambda: tunnelwork.run(
                        results,
                        procs,
                        ws,
                        wrk_bin,
                        plan.duration,
                        plan.rounds,
                        plan.exec_bytes,
                        max(plan.watches),
                        plan.watch_events,
                        args.quick,
                    ),
                ),
                (
                    "fanout-watch",
                    "merged and single-cluster watches",
                    "(simulator)",
                    lambda: fanoutwatchwork.run(results, procs, ws, args.quick),
                ),
                (
                    "fanout",
                    "one LIST across N clusters vs the slowest one",
                    "(nginx)",
                    lambda: fanoutwork.run(results, procs, ws, args.quick),
                ),
                (
                    "limits",
                    "karpor with and without limits, side by side",
                    "(karpor)",
                    lambda: limitswork.run(
                        results,
                        procs,
                        ws,
                        upstream,
                        wrk_bin,
                        plan.duration,
                        plan.rounds,
                        args.workers,
                    ),
                ),
                (
                    "recording",
                    "exec with and without recording",
                    "(simulator)",
                    lambda: recordingwork.run(results, procs, ws, min(plan.exec_bytes, 64 << 20)),
                ),
            ]
            for name, what, where, step in steps:
                if name not in workloads:
                    continue
                print(f"workload {name} ({what})", flush=True)
                try:
                    step()
                except (BenchError, OSError) as exc:
                    results.add(Row(name, "-", where, "", note=f"not measured: {exc}"))
            if "h2" in workloads:
                print("workload h2 (h2load beside wrk; opening watches over HTTP/2)", flush=True)
                h2work.run(
                    results,
                    procs,
                    ws,
                    upstream,
                    wrk_bin,
                    plan.duration,
                    plan.rounds,
                    args.workers,
                    max(plan.watches)
                    if args.watches
                    else (h2work.QUICK_WATCHES if args.quick else h2work.WATCHES),
                )
    except KeyboardInterrupt:
        print(
            "python -m bench: interrupted; every process stopped; RESULTS.md not written",
            file=sys.stderr,
        )
        return 130
    except BenchError as exc:
        print(f"python -m bench: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    results.settings["wall time"] = f"{time.monotonic() - started:.0f} s"
    facts = machine.facts()
    stamp = f"{facts['date']} ({'quick' if args.quick else 'full'})"
    for name in workloads:
        results.measured[name] = stamp
    saved = args.out / "results.json"
    if args.merge and saved.exists():
        results.merge_from(saved, workloads)
    _report(results, args, facts, karpor_key, plan.cluster_counts)
    return 0


def _report(
    results: Results,
    args: argparse.Namespace,
    facts: dict[str, str],
    karpor_key: str,
    cluster_counts: Sequence[int],
) -> None:
    """The targets, the plots, ``results.json`` and RESULTS.md in ``args.out``."""
    results.targets = report.targets(
        results, karpor_key, cluster_counts if "clusters" in results.measured else ()
    )
    args.out.mkdir(parents=True, exist_ok=True)
    images: list[str] = []
    plots_note = ""
    if args.no_plots:
        plots_note = "Plots skipped (--no-plots)."
    elif not machine.have_matplotlib():
        plots_note = (
            "Plots skipped: matplotlib is not installed (`python -m bench --install` "
            "puts it in bench/.deps)."
        )
    else:
        images = report.plots(results, args.out)
    results.save(args.out / "results.json")
    report.write(results, facts, karpor_key, args.out / "RESULTS.md", images, plots_note)
    print(f"wrote {args.out / 'RESULTS.md'}" + (f" and {', '.join(images)}" if images else ""))


def rewrite(args: argparse.Namespace) -> int:
    """``--rewrite``: RESULTS.md and the plots again from ``results.json``
    (the report's code may have changed; nothing is measured)."""
    saved = args.out / "results.json"
    if not saved.exists():
        print(f"python -m bench: --rewrite: no {saved}", file=sys.stderr)
        return 2
    results = Results()
    results.merge_from(saved, [])
    results.settings["written"] = "again from results.json (`--rewrite`), nothing measured"
    plan = QUICK if args.quick else FULL
    cluster_counts = args.clusters or plan.cluster_counts
    _report(results, args, machine.facts(), f"karpor-{args.workers}", cluster_counts)
    return 0
