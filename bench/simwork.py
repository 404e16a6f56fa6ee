"""Workloads 3, 4 and 5, against the simulator (``karpor sim``) as the upstream.

3. ``watch``: N concurrent watch streams through one peer: the peer's RSS
   per stream, the upstream connections it opened, and the event delivery
   latency (written at the upstream → read by the client) while all are open;
4. ``exec``: bytes per second of ``kubectl exec POD -- head -c SIZE /dev/zero``
   straight to the simulator and through karpor (the splice);
5. ``list``: a LIST of about 100 MB of ConfigMaps: time to last byte and the
   peer's peak RSS growth (VmRSS of its process tree sampled every 20 ms).

Karpor is reached here with a client certificate from its CA (Python
clients and kubectl can present one; wrk cannot), so these are measured
before token authentication lands.  ``kubectl proxy`` serves plain HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import re
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from bench.fixture import Workspace
from bench.peers import Karpor, find_kubectl, start_karpor
from bench.procs import (
    LOOPBACK,
    BenchError,
    Proc,
    Processes,
    RssSampler,
    client_context,
    established_to,
    free_port,
    log_contains,
    tree_rss_kib,
    wait_for,
)
from bench.results import Results, Row

WATCH = "watch"
EXEC = "exec"
LIST = "list"

KARPOR_SIM_PREFIX = "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy"
WATCH_NAMESPACE = "bench-watch"
LIST_NAMESPACE = "bench-list"
EXEC_POD = "bench-exec"


@dataclass
class SimPeer:
    """A way to the simulator: direct, karpor or kubectl proxy."""

    key: str
    label: str
    port: int
    prefix: str
    context: ssl.SSLContext | None
    headers: dict[str, str]
    proc: Proc | None
    note: str = ""


@dataclass
class Sim:
    """A running ``karpor sim`` with one cluster, and the peers in front of it."""

    proc: Proc
    port: int
    token: str
    ca_file: Path
    out: Path
    kubeconfig: Path
    context: ssl.SSLContext
    peers: list[SimPeer]
    karpor: Karpor | None = None

    def request(
        self, method: str, path: str, body: object | None = None, timeout: float = 60.0
    ) -> tuple[int, bytes]:
        """One request straight to the simulator with its token."""
        conn = http.client.HTTPSConnection(
            LOOPBACK, self.port, timeout=timeout, context=self.context
        )
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"}
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def start_sim(procs: Processes, ws: Workspace, with_kubectl_proxy: bool = True) -> Sim:
    """``karpor sim --clusters 1``, a karpor with 1 worker in front, and kubectl proxy."""
    out = ws.root / "sim-clusters"
    out.mkdir(exist_ok=True)
    token = ws.upstream_token
    proc = procs.start(
        "sim",
        [
            sys.executable,
            "-m",
            "karpor.cli",
            "sim",
            "--clusters",
            "1",
            "--out",
            str(out),
            "--token",
            token,
            "--history",
            "1000",
        ],
    )
    wait_for("karpor sim ready", log_contains(proc, "ready:"), 60, proc)
    match = re.search(r"serving sim-1 https://127\.0\.0\.1:(\d+)", proc.log.read_text())
    if match is None:
        raise BenchError("karpor sim: no serving line in its output")
    port = int(match.group(1))
    doc = yaml.safe_load((out / "sim-1.yaml").read_text())
    ca_file = ws.root / "sim-ca.crt"
    ca_file.write_bytes(base64.b64decode(doc["spec"]["access"]["caBundle"]))
    context = client_context(ca_file)
    direct = SimPeer(
        "direct",
        "simulator (direct)",
        port,
        "",
        context,
        {"Authorization": f"Bearer {token}"},
        proc,
        "karpor sim, TLS, one process",
    )
    sim = Sim(proc, port, token, ca_file, out, out / "sim-1.kubeconfig", context, [direct])
    gw = start_karpor(procs, ws, "karpor-sim", out, 1, use_config=False)
    sim.karpor = gw
    sim.peers.append(
        SimPeer(
            "karpor-1",
            "karpor, 1 worker",
            gw.port,
            KARPOR_SIM_PREFIX,
            gw.cert_context,
            {},
            gw.proc,
            "client certificate (Python client / kubectl)",
        )
    )
    kubectl = find_kubectl()
    if with_kubectl_proxy and kubectl is not None:
        kport = free_port()
        kproc = procs.start(
            "kubectl-proxy-sim",
            [
                str(kubectl),
                "--kubeconfig",
                str(sim.kubeconfig),
                "proxy",
                f"--address={LOOPBACK}",
                f"--port={kport}",
                r"--accept-hosts=^(localhost|127\.0\.0\.1)$",
            ],
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(ws.root),
                "KUBECACHEDIR": str(ws.root / "kube-cache"),
            },
        )
        wait_for("kubectl proxy serving", log_contains(kproc, "Starting to serve"), 60, kproc)
        sim.peers.append(
            SimPeer(
                "kubectl-proxy",
                "kubectl proxy",
                kport,
                "",
                None,
                {},
                kproc,
                "plain HTTP on loopback",
            )
        )
    return sim


def _ensure_namespace(sim: Sim, name: str) -> None:
    status, body = sim.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    if status not in (200, 201, 409):
        raise BenchError(f"simulator: cannot create namespace {name}: {status} {body[:200]!r}")


# ---- 3. watches --------------------------------------------------------------------------


class _Watch:
    """One watch stream (HTTP/1.1, chunked) read with asyncio."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.opened = asyncio.Event()
        self.failed = ""
        self.writer: asyncio.StreamWriter | None = None

    async def run(self, peer: SimPeer, path: str, probe: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(
                LOOPBACK, peer.port, ssl=peer.context, limit=1 << 20
            )
            self.writer = writer
            head = f"GET {peer.prefix}{path} HTTP/1.1\r\nHost: {LOOPBACK}:{peer.port}\r\n"
            for name, value in peer.headers.items():
                head += f"{name}: {value}\r\n"
            writer.write((head + "\r\n").encode())
            status = await reader.readline()
            if b" 200 " not in status:
                self.failed = status.decode(errors="replace").strip() or "connection closed"
                self.opened.set()
                return
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            self.opened.set()
            buffer = b""
            while True:
                size_line = await reader.readline()
                if not size_line:
                    return
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                buffer += (await reader.readexactly(size + 2))[:-2]
                *lines, buffer = buffer.split(b"\n")
                now = time.time()
                for line in lines:
                    if probe.encode() not in line:
                        continue
                    event = json.loads(line)
                    sent = event["object"].get("data", {}).get("t")
                    if sent:
                        self.latencies.append(now - float(sent))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if not self.opened.is_set():
                self.failed = f"{type(exc).__name__}: {exc}"
                self.opened.set()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _watch_round(
    sim: Sim, peer: SimPeer, count: int, events: int, interval: float
) -> dict[str, float | str]:
    probe = f"probe-{peer.key}-{count}"
    path = f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps?watch=true"
    cm = f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps"
    status, _ = await asyncio.to_thread(
        sim.request, "POST", cm, {"metadata": {"name": probe}, "data": {"t": ""}}
    )
    if status not in (200, 201):
        return {"error": f"cannot create the probe ConfigMap: {status}"}
    root = peer.proc.pid if peer.proc is not None else 0
    baseline_kib = tree_rss_kib(root) if peer.key != "direct" else 0
    upstream_before = established_to(sim.port)
    watches = [_Watch() for _ in range(count)]
    gate = asyncio.Semaphore(64)  # handshakes in flight

    async def open_one(w: _Watch) -> None:
        async with gate:
            task = asyncio.ensure_future(w.run(peer, path, probe))
            tasks.append(task)
            await asyncio.wait_for(w.opened.wait(), 60)

    tasks: list[asyncio.Future[None]] = []
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(open_one(w) for w in watches)), 300)
        open_s = time.monotonic() - started
        failed = [w.failed for w in watches if w.failed]
        if failed:
            return {"error": f"{len(failed)} of {count} watches failed to open: {failed[0]}"}
        await asyncio.sleep(0.5)
        rss_kib = tree_rss_kib(root) if peer.key != "direct" else 0
        upstream = established_to(sim.port) - upstream_before
        for i in range(events):
            await asyncio.sleep(interval)
            await asyncio.to_thread(
                sim.request,
                "PUT",
                f"{cm}/{probe}",
                {
                    "metadata": {"name": probe, "namespace": WATCH_NAMESPACE},
                    "data": {"t": repr(time.time()), "i": str(i)},
                },
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if sum(len(w.latencies) for w in watches) >= count * events:
                break
            await asyncio.sleep(0.05)
    finally:
        for w in watches:
            w.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies = sorted(x for w in watches for x in w.latencies)
    values: dict[str, float | str] = {
        "open_s": open_s,
        "delivered": len(latencies) / max(1, count * events),
    }
    if latencies:
        values["ev_p50"] = latencies[len(latencies) // 2] * 1000
        values["ev_p99"] = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000
    if peer.key != "direct":
        values["kib_per_stream"] = (rss_kib - baseline_kib) / count
        values["rss_mib"] = rss_kib / 1024
        values["upstream_conns"] = float(upstream)
    return values


def watches(
    results: Results, sim: Sim, counts: Sequence[int], events: int, interval: float
) -> None:
    """Workload 3 for every sim peer and watch count."""
    _ensure_namespace(sim, WATCH_NAMESPACE)
    for count in counts:
        for peer in sim.peers:
            values = asyncio.run(_watch_round(sim, peer, count, events, interval))
            error = values.pop("error", "")
            numbers = {k: float(v) for k, v in values.items() if not isinstance(v, str)}
            row = results.add(
                Row(
                    WATCH,
                    peer.key,
                    peer.label,
                    f"n={count}",
                    numbers,
                    f"not measured: {error}" if error else "",
                )
            )
            print(f"  {peer.label:32} n={count:<6} {row.values or row.note}", flush=True)
    results.note(
        WATCH,
        "Latency is from the write's timestamp (taken by the writer just before its PUT) to "
        "the event read by the client: it includes the simulator's own work and the single "
        "Python client process that reads every stream.",
    )


# ---- 4. exec -----------------------------------------------------------------------------


def _karpor_kubeconfig(ws: Workspace, gw: Karpor) -> Path:
    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    path = ws.root / "karpor-sim.kubeconfig"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sim-1",
                "cluster": {
                    "server": f"https://127.0.0.1:{gw.port}{KARPOR_SIM_PREFIX}",
                    "certificate-authority-data": b64(gw.state_dir / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": "bench",
                "user": {
                    "client-certificate-data": b64(ws.root / "client.crt"),
                    "client-key-data": b64(ws.root / "client.key"),
                },
            }
        ],
        "contexts": [{"name": "sim-1", "context": {"cluster": "sim-1", "user": "bench"}}],
        "current-context": "sim-1",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def _exec_once(
    kubectl: Path, kubeconfig: Path, size: int, env: dict[str, str]
) -> tuple[float, str]:
    """Seconds to read ``size`` bytes of exec output, or (0, why not)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            str(kubectl),
            "--kubeconfig",
            str(kubeconfig),
            "exec",
            EXEC_POD,
            "--",
            "head",
            "-c",
            str(size),
            "/dev/zero",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    got = 0
    try:
        deadline = started + 120
        while chunk := proc.stdout.read(1 << 20):
            got += len(chunk)
            if time.monotonic() > deadline:
                break
        elapsed = time.monotonic() - started
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode != 0 or got != size:
        return 0.0, f"kubectl exit {proc.returncode}, {got} of {size} bytes: {err[-300:]}"
    return elapsed, ""


def exec_stream(results: Results, ws: Workspace, sim: Sim, size: int) -> None:
    """Workload 4: exec output throughput straight to the simulator and through karpor."""
    kubectl = find_kubectl()
    if kubectl is None:
        results.add(Row(EXEC, "direct", "simulator (direct)", "", note="not measured: no kubectl"))
        return
    status, body = sim.request(
        "POST",
        "/api/v1/namespaces/default/pods",
        {
            "metadata": {"name": EXEC_POD},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        },
    )
    if status not in (200, 201, 409):
        raise BenchError(f"simulator: cannot create pod: {status} {body[:200]!r}")

    def running() -> bool:
        code, data = sim.request("GET", f"/api/v1/namespaces/default/pods/{EXEC_POD}")
        return code == 200 and json.loads(data).get("status", {}).get("phase") == "Running"

    wait_for("exec pod running", running, 30)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ws.root), "KUBECACHEDIR": str(ws.root / "kc")}
    ways = [("direct", "simulator (direct)", sim.kubeconfig)]
    if sim.karpor is not None:
        ways.append(("karpor-1", "karpor, 1 worker", _karpor_kubeconfig(ws, sim.karpor)))
    for key, label, kubeconfig in ways:
        elapsed, problem = _exec_once(kubectl, kubeconfig, size, env)
        if problem:
            note = f"not measured: {problem}"
            if key.startswith("karpor"):
                note = (
                    "not measured yet: exec through the gateway failed (the splice of upgrades "
                    f"is issue 4): {problem}"
                )
            results.add(Row(EXEC, key, label, f"{size >> 20} MiB", note=note))
        else:
            results.add(
                Row(
                    EXEC,
                    key,
                    label,
                    f"{size >> 20} MiB",
                    {"mb_s": size / elapsed / 1e6, "seconds": elapsed},
                )
            )
        print(f"  {label:32} exec {results.rows[-1].values or results.rows[-1].note}", flush=True)
    results.note(
        EXEC,
        "kubectl exec POD -- head -c SIZE /dev/zero, timed from kubectl's start "
        "to its last byte (kubectl's own start-up, ~0.1-0.3 s, is included).",
    )


# ---- 5. large LIST -----------------------------------------------------------------------


def _fill(sim: Sim, total_bytes: int, each: int = 100_000) -> int:
    _ensure_namespace(sim, LIST_NAMESPACE)
    count = max(1, total_bytes // each)
    conn = http.client.HTTPSConnection(LOOPBACK, sim.port, timeout=60, context=sim.context)
    headers = {"Authorization": f"Bearer {sim.token}", "Content-Type": "application/json"}
    filler = "x" * each
    try:
        for i in range(count):
            body = {"metadata": {"name": f"cm-{i:05d}"}, "data": {"blob": filler}}
            conn.request(
                "POST",
                f"/api/v1/namespaces/{LIST_NAMESPACE}/configmaps",
                body=json.dumps(body).encode(),
                headers=headers,
            )
            response = conn.getresponse()
            response.read()
            if response.status not in (200, 201, 409):
                raise BenchError(f"simulator: cannot create configmap: {response.status}")
    finally:
        conn.close()
    return count


def _list_once(peer: SimPeer) -> tuple[float, int]:
    conn: http.client.HTTPConnection
    if peer.context is None:
        conn = http.client.HTTPConnection(LOOPBACK, peer.port, timeout=120)
    else:
        conn = http.client.HTTPSConnection(LOOPBACK, peer.port, timeout=120, context=peer.context)
    started = time.monotonic()
    try:
        conn.request(
            "GET",
            f"{peer.prefix}/api/v1/namespaces/{LIST_NAMESPACE}/configmaps",
            headers=peer.headers,
        )
        response = conn.getresponse()
        if response.status != 200:
            raise BenchError(f"{peer.label}: LIST answered {response.status}")
        got = 0
        while chunk := response.read(1 << 16):
            got += len(chunk)
        return time.monotonic() - started, got
    finally:
        conn.close()


def large_list(results: Results, sim: Sim, total_bytes: int) -> None:
    """Workload 5: time to last byte and the peer's peak RSS growth for one big LIST."""
    count = _fill(sim, total_bytes)
    params = f"{total_bytes / 1e6:.0f} MB"
    for peer in sim.peers:
        root = peer.proc.pid if peer.proc is not None else 0
        try:
            baseline = tree_rss_kib(root)
            with RssSampler(root) as sampler:
                seconds, got = _list_once(peer)
        except (OSError, BenchError) as exc:
            results.add(Row(LIST, peer.key, peer.label, params, note=f"not measured: {exc}"))
            continue
        values = {"seconds": seconds, "mbytes": got / 1e6, "mb_s": got / seconds / 1e6}
        if peer.key != "direct":
            values["rss_growth_mib"] = (sampler.peak_kib - baseline) / 1024
            values["rss_peak_mib"] = sampler.peak_kib / 1024
        results.add(Row(LIST, peer.key, peer.label, params, values))
        print(f"  {peer.label:32} LIST {values}", flush=True)
    results.note(
        LIST,
        f"{count} ConfigMaps of 100 kB each, one LIST, read in 64 KiB pieces; "
        "RSS is the peer's process tree, VmRSS sampled every 20 ms.",
    )


def rss_note(values: dict[str, float]) -> str:
    """A short text of a row's values (for the console)."""
    return ", ".join(f"{k}={v:.3g}" for k, v in values.items())


def median(xs: Sequence[float]) -> float:
    """The median, 0 for none."""
    return statistics.median(xs) if xs else 0.0


def stop_quietly(procs: Processes, proc: Proc | None) -> None:
    """Stop a process if given."""
    if proc is not None:
        with contextlib.suppress(Exception):
            procs.stop(proc)
