"""Workload 9, ``recording``: what recording an exec session costs.

One gateway (1 worker, no audit log) serves the simulator's ``sim-1``
twice: as ``sim-1`` (not recorded) and as ``sim-r`` (the same endpoint and
token; ``sessionRecording: {clusters: [sim-r]}``, recordings written to a
directory of the bench's scratch space).  Side by side, in rounds that
alternate the two ways, ``kubectl exec`` streams SIZE bytes of stdout:

- ``text``: ``yes 'karpor session recording bench line …' | head -c SIZE``
  (terminal-like output: what recordings hold);
- ``zeros``: ``head -c SIZE /dev/zero`` (the worst case: every byte is a
  control character, escaped six bytes wide in the recording's JSON).

Each row gives the stream's MB/s (first byte to last, as in table 4) and
the gateway's process-tree CPU seconds per MB streamed (user + system,
measured around each exec; the simulator's and kubectl's CPU are in
neither), medians of the rounds; the recorded row's ratio to the
unrecorded one is the cost of recording.
"""

from __future__ import annotations

import shutil
import statistics

import yaml

from bench.fixture import Workspace
from bench.peers import find_kubectl, start_karpor
from bench.procs import Processes, tree_cpu_seconds
from bench.results import Results, Row
from bench.simwork import (
    EXEC_POD,
    EXEC_ROUNDS,
    ExecTiming,
    ensure_exec_pod,
    exec_once,
    karpor_kubeconfig,
    start_sim,
    stop_quietly,
)

RECORDING = "recording"
#: the recorded twin of ``sim-1``
TWIN = "sim-r"
PLAIN_KEY = "karpor-plain"
RECORDED_KEY = "karpor-recorded"
PLAIN_LABEL = "karpor, not recorded"
RECORDED_LABEL = "karpor, recorded (asciicast)"
LINE = "karpor session recording bench line: some terminal output 0123456789"
#: the streams measured: name -> the command (SIZE appended by ``head -c``)
STREAMS = {
    "text": ["sh", "-c", f"yes '{LINE}' | head -c {{size}}"],
    "zeros": ["head", "-c", "{size}", "/dev/zero"],
}


def run(results: Results, procs: Processes, ws: Workspace, size: int) -> None:
    """Workload 9: the simulator, one gateway recording ``sim-r``; measure; stop them."""
    sim = start_sim(procs, ws, with_kubectl_proxy=False, name="sim-recording")
    gw = None
    try:
        # the gateway start_sim made serves nothing here: its CPU must not count
        for peer in sim.peers:
            if peer.key != "direct":
                stop_quietly(procs, peer.proc)
        twin = yaml.safe_load((sim.out / "sim-1.yaml").read_text())
        twin["metadata"] = {"name": TWIN}
        (sim.out / f"{TWIN}.yaml").write_text(yaml.safe_dump(twin))
        recordings = ws.root / "recordings"
        gw = start_karpor(
            procs,
            ws,
            "karpor-recording",
            sim.out,
            1,
            extra={"sessionRecording": {"dir": str(recordings), "clusters": [TWIN]}},
        )
        ensure_exec_pod(sim)
        kubectl = find_kubectl()
        params = f"{size >> 20} MiB"
        if kubectl is None:
            results.add(Row(RECORDING, "-", "(kubectl)", params, note="not measured: no kubectl"))
            return
        results.peers[f"recording:{PLAIN_KEY}"] = (
            f"{PLAIN_LABEL}: karpor, 1 worker, no audit log, Cluster `sim-1`"
        )
        results.peers[f"recording:{RECORDED_KEY}"] = (
            f"{RECORDED_LABEL}: the same gateway, Cluster `{TWIN}` (the same endpoint) named by "
            "`sessionRecording.clusters`"
        )
        env = {"PATH": "/usr/bin:/bin", "HOME": str(ws.root), "KUBECACHEDIR": str(ws.root / "kc")}
        ways = [
            (PLAIN_KEY, PLAIN_LABEL, karpor_kubeconfig(ws, gw, "sim-1")),
            (RECORDED_KEY, RECORDED_LABEL, karpor_kubeconfig(ws, gw, TWIN)),
        ]
        for stream, template in STREAMS.items():
            command = [part.format(size=size) for part in template]
            timings: dict[str, list[tuple[ExecTiming, float]]] = {k: [] for k, _, _ in ways}
            problems: dict[str, str] = {}
            for _ in range(EXEC_ROUNDS):
                for key, _label, kubeconfig in ways:
                    if key in problems:
                        continue
                    before = tree_cpu_seconds(gw.proc.pid)
                    timing, problem = exec_once(kubectl, kubeconfig, size, env, command)
                    cpu = tree_cpu_seconds(gw.proc.pid) - before
                    if timing is None:
                        problems[key] = problem
                    else:
                        timings[key].append((timing, cpu))
                shutil.rmtree(recordings, ignore_errors=True)  # the disk stays free
                recordings.mkdir(mode=0o700, exist_ok=True)
            for key, label, _ in ways:
                row_params = f"{stream}, {params}"
                if key in problems:
                    note = f"not measured: {problems[key]}"
                    results.add(Row(RECORDING, key, label, row_params, note=note))
                    continue
                runs = timings[key]
                values = {
                    "mb_s": statistics.median(t.streamed / t.stream / 1e6 for t, _ in runs),
                    "cpu_ms_per_mb": statistics.median(
                        1000 * cpu / (size / 1e6) for _, cpu in runs
                    ),
                    "seconds": statistics.median(t.total for t, _ in runs),
                }
                results.add(Row(RECORDING, key, label, row_params, values))
                print(f"  {label:32} {stream:6} {values}", flush=True)
        results.note(
            RECORDING,
            f"kubectl exec (WebSocket) of a SIZE-byte stdout stream in `{EXEC_POD}`, medians "
            f"of {EXEC_ROUNDS} rounds alternating the two ways; MB/s first byte to last; CPU "
            "is the gateway's process tree (user + system) around each exec, per MB streamed.",
        )
    finally:
        if gw is not None:
            stop_quietly(procs, gw.proc)
        for peer in sim.peers:
            stop_quietly(procs, peer.proc)
