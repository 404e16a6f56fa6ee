"""Workloads 3, 4 and 5, against the simulator (``karpor sim``) as the upstream.

3. ``watch``: N concurrent watch streams through one peer: the peer's RSS
   per stream, the upstream connections it opened, and, while all are open,
   the event delivery latency (written at the upstream → read by the client)
   of sparse updates (each reaching ~10 of the N) and of broadcast updates
   (each reaching all N);
4. ``exec``: bytes per second of ``kubectl exec POD -- head -c SIZE /dev/zero``
   straight to the simulator and through karpor (the splice), from the
   first byte of output to the last (kubectl's start-up and the upgrade,
   reported apart, are not the stream's), the median of
   :data:`EXEC_ROUNDS` rounds that alternate the two ways;
5. ``list``: a LIST of about 100 MB of ConfigMaps: time to last byte and the
   peer's peak RSS growth (VmRSS of its process tree sampled every 20 ms).

Karpor is reached here with a client certificate from its CA (Python
clients and kubectl can present one; wrk cannot), so these are measured
before token authentication lands.  ``kubectl proxy`` serves plain HTTP.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import base64
import contextlib
import http.client
import json
import multiprocessing
import multiprocessing.process
import os
import re
import resource
import signal
import ssl
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

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
#: rounds of the exec workload; each runs every way once, in turn, so that
#: a burst of load on a shared machine hits both ways alike
EXEC_ROUNDS = 3


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


def start_sim(
    procs: Processes,
    ws: Workspace,
    with_kubectl_proxy: bool = True,
    use_config: bool = False,
    tunnel_twin: str = "",
    name: str = "",
) -> Sim:
    """``karpor sim --clusters 1``, a karpor with 1 worker in front, and kubectl proxy.

    ``use_config`` starts the gateway with the bench's token authentication
    (for wrk); ``tunnel_twin`` names a second Cluster file written beside
    ``sim-1``'s with ``spec.access.tunnel: true`` and no endpoint (the same
    simulated cluster, reached only through an agent).
    """
    # a run of its own (the tunnel workload starts a second simulator): its
    # log and files are read for its port, never an earlier run's
    name = name or ("sim-tunnel" if tunnel_twin else "sim")
    out = ws.root / f"{name}-clusters"
    out.mkdir(exist_ok=True)
    token = ws.upstream_token
    proc = procs.start(
        name,
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
    if tunnel_twin:
        twin = {
            "apiVersion": "cluster.karpor.io/v1beta1",
            "kind": "Cluster",
            "metadata": {"name": tunnel_twin},
            "spec": {"access": {"tunnel": True}},
        }
        (out / f"{tunnel_twin}.yaml").write_text(yaml.safe_dump(twin))
    gw = start_karpor(procs, ws, f"karpor-{name}", out, 1, use_config=use_config)
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


def ensure_namespace(sim: Sim, name: str) -> None:
    """Create namespace ``name`` in the simulator (already there is fine)."""
    status, body = sim.request("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    if status not in (200, 201, 409):
        raise BenchError(f"simulator: cannot create namespace {name}: {status} {body[:200]!r}")


# ---- 3. watches --------------------------------------------------------------------------
#
# One round = one peer at one watch count N, all N streams open for the whole round:
#
# - the N watches are spread over K "sparse" probe ConfigMaps, watch i selecting the probe
#   i % K by label (``PROBE_LABEL in (ROUND-<i % K>,ROUND-all)``); the same selector also
#   takes the one "broadcast" probe ``ROUND-all``.  A field selector (``metadata.name=…``)
#   cannot do that: its terms are ANDed ``=``/``!=`` only, so a watch could not take its own
#   probe *and* the broadcast one, and the two measurements would need 2N streams;
# - sparse: ``events`` x SPARSE_PER_BROADCAST updates, one every SPARSE_INTERVAL, each to the
#   next probe
#   (round robin), each reaching about N/K watches: the event latency of a gateway holding
#   N idle watches, which is what the bench issue's target is about;
# - broadcast: ``events`` updates of the broadcast probe, each reaching all N watches: the
#   time to finish an N-wide fan-out (the simulator's, the peer's and the clients').
#
# The watches start at the resourceVersion of the moment (as an informer does after its
# LIST), so they open without initial ADDED events.  They are read by client processes of
# their own (WATCHES_PER_CLIENT streams each, forked), the writer is this process on one
# keep-alive connection straight to the simulator; every update carries the writer's
# time.time() taken just before its PUT, and a client takes time.time() when it has read a
# chunk holding the event: latency = write -> read, per delivered event.

#: the label the probes carry and the watches select on
PROBE_LABEL = "bench.karpor.io/probe"
#: sparse probes: about this many watches per sparse update ...
SPARSE_FANOUT = 10
#: ... but at most this many probe ConfigMaps (each is created before the watches open)
SPARSE_MAX_PROBES = 1000
#: sparse updates per round (``events`` x this, i.e. 200 in the full run, 60 with --quick)
SPARSE_PER_BROADCAST = 20
#: seconds between two sparse updates (steady, well apart: each update is one event in
#: flight, so the latency is the path's, not a queue's)
SPARSE_INTERVAL = 0.1
#: watch streams held by one client process
WATCHES_PER_CLIENT = 2500
#: TLS handshakes in flight, over all client processes
HANDSHAKES = 64


def sparse_probes(count: int) -> int:
    """K, the number of sparse probe ConfigMaps for ``count`` watches."""
    return max(1, min(SPARSE_MAX_PROBES, count // SPARSE_FANOUT))


class _Watch:
    """One watch stream (HTTP/1.1, chunked) read with asyncio."""

    def __init__(self) -> None:
        #: write -> read seconds per kind of update: "s" sparse, "b" broadcast
        self.latencies: dict[str, list[float]] = {"s": [], "b": []}
        self.opened = asyncio.Event()
        self.failed = ""
        self.writer: asyncio.StreamWriter | None = None

    async def run(self, peer: SimPeer, path: str) -> None:
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
                    if not line.strip():
                        continue
                    data = json.loads(line).get("object", {}).get("data") or {}
                    sent, kind = data.get("t"), data.get("k")
                    if sent and kind in self.latencies:
                        self.latencies[kind].append(now - float(sent))
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            if not self.opened.is_set():
                self.failed = f"{type(exc).__name__}: {exc}"
                self.opened.set()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


async def _client(conn: Connection, peer: SimPeer, paths: list[str], handshakes: int) -> None:
    """Open ``paths`` as watches, then answer the parent's commands on ``conn``.

    Sends ``("opened", failures, first failure)``; then answers ``"count"`` with the
    events read so far per kind, and ``"stop"`` (or the parent gone) with every latency.
    """
    watches = [_Watch() for _ in paths]
    gate = asyncio.Semaphore(handshakes)
    tasks: list[asyncio.Future[None]] = []

    async def open_one(w: _Watch, path: str) -> None:
        async with gate:
            tasks.append(asyncio.ensure_future(w.run(peer, path)))
            try:
                await asyncio.wait_for(w.opened.wait(), 60)
            except TimeoutError:
                w.failed = w.failed or "no response headers within 60 s"

    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def command() -> None:
        try:
            commands.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            commands.put_nowait("stop")

    async def orphaned(parent: int) -> None:
        # the parent gone (even SIGKILLed): stop, do not hold the watches forever
        while os.getppid() == parent:
            await asyncio.sleep(1)
        commands.put_nowait("stop")

    watchdog = asyncio.ensure_future(orphaned(os.getppid()))
    try:
        await asyncio.gather(*(open_one(w, p) for w, p in zip(watches, paths, strict=True)))
        failed = [w.failed for w in watches if w.failed]
        conn.send(("opened", len(failed), failed[0] if failed else ""))
        loop.add_reader(conn.fileno(), command)
        while (cmd := await commands.get()) != "stop":
            if cmd == "count":
                conn.send(
                    ("count", *(sum(len(w.latencies[k]) for w in watches) for k in ("s", "b")))
                )
    finally:
        watchdog.cancel()
        for w in watches:
            w.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    merged = {k: [x for w in watches for x in w.latencies[k]] for k in ("s", "b")}
    with contextlib.suppress(OSError):
        conn.send(("latencies", merged))


def _client_main(conn: Connection, peer: SimPeer, paths: list[str], handshakes: int) -> None:
    """A watch client process (forked: ``peer`` and its SSL context are inherited)."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # asyncio's TLS transport gives every connection a 256 KiB read buffer (2.5 GB of client
    # memory at 10,000 watches); a TLS record is at most 16 KiB
    if isinstance(getattr(asyncio.sslproto.SSLProtocol, "max_size", None), int):
        asyncio.sslproto.SSLProtocol.max_size = 16 * 1024
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_client(conn, peer, paths, handshakes))


class _Clients:
    """The watch client processes of one round, driven over pipes."""

    def __init__(self, peer: SimPeer, paths: list[str]) -> None:
        count = max(1, -(-len(paths) // WATCHES_PER_CLIENT))
        context = multiprocessing.get_context("fork")
        self.conns: list[Connection] = []
        self.procs: list[multiprocessing.process.BaseProcess] = []
        for i in range(count):
            mine, theirs = context.Pipe()
            proc = context.Process(
                target=_client_main,
                args=(theirs, peer, paths[i::count], max(1, HANDSHAKES // count)),
                name=f"bench-watch-client-{i}",
                daemon=True,
            )
            proc.start()
            theirs.close()
            self.conns.append(mine)
            self.procs.append(proc)

    def receive(self, conn: Connection, timeout: float) -> tuple[object, ...]:
        try:
            if not conn.poll(timeout):
                raise BenchError(f"watch client: no answer within {timeout:.0f} s")
            message = conn.recv()
        except (EOFError, OSError) as exc:
            raise BenchError(f"watch client exited: {type(exc).__name__} {exc}") from None
        assert isinstance(message, tuple)
        return message

    def opened(self, timeout: float) -> str:
        """Wait until every client opened its watches; the first failure, if any."""
        deadline = time.monotonic() + timeout
        failures, first = 0, ""
        for conn in self.conns:
            _, n, why = self.receive(conn, max(1.0, deadline - time.monotonic()))
            failures += int(str(n))
            first = first or str(why)
        return f"{failures} watches failed to open: {first}" if failures else ""

    def counts(self) -> tuple[int, int]:
        """Events read so far by every client: (sparse, broadcast)."""
        for conn in self.conns:
            conn.send("count")
        sparse = broadcast = 0
        for conn in self.conns:
            _, s, b = self.receive(conn, 60)
            sparse += int(str(s))
            broadcast += int(str(b))
        return sparse, broadcast

    def wait_for(self, sparse: int, broadcast: int, timeout: float) -> None:
        """Poll the clients until they read that many events, or ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s, b = self.counts()
            if s >= sparse and b >= broadcast:
                return
            time.sleep(0.1)

    def stop(self) -> dict[str, list[float]]:
        """Close every watch; the latencies of all clients, merged."""
        merged: dict[str, list[float]] = {"s": [], "b": []}
        try:
            for conn in self.conns:
                with contextlib.suppress(OSError):
                    conn.send("stop")
            for conn in self.conns:
                with contextlib.suppress(BenchError, OSError, EOFError):
                    message = self.receive(conn, 120)
                    while message[0] != "latencies":
                        message = self.receive(conn, 120)
                    latencies = message[1]
                    assert isinstance(latencies, dict)
                    for kind, into in merged.items():
                        into.extend(latencies[kind])
        finally:
            self.kill()
        return merged

    def kill(self) -> None:
        """End the client processes (by their pid), whatever state they are in."""
        for proc in self.procs:
            proc.join(5)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in self.conns:
            conn.close()


#: the watch clients of workload 3, for other workloads opening watches the same way
WatchClients = _Clients


class _Writer:
    """PUTs and POSTs straight to the simulator on one keep-alive connection."""

    def __init__(self, sim: Sim) -> None:
        self.sim = sim
        self.conn = self._connect()

    def _connect(self) -> http.client.HTTPSConnection:
        conn = http.client.HTTPSConnection(
            LOOPBACK, self.sim.port, timeout=120, context=self.sim.context
        )
        conn.connect()
        return conn

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {self.sim.token}", "Content-Type": "application/json"}
        data = None if body is None else json.dumps(body).encode()
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                if attempt == 2:
                    raise
                self.conn = self._connect()
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.conn.close()


def _percentiles(values: dict[str, float | str], prefix: str, latencies: list[float]) -> None:
    if latencies:
        latencies.sort()
        values[f"{prefix}_p50"] = latencies[len(latencies) // 2] * 1000
        last = len(latencies) - 1
        values[f"{prefix}_p99"] = latencies[min(last, int(len(latencies) * 0.99))] * 1000


def watch_round(
    sim: Sim, peer: SimPeer, count: int, events: int, interval: float
) -> dict[str, float | str]:
    """One round of workload 3: ``count`` watches through ``peer``; its figures
    (or ``{"error": why}``)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 256:
        # the peer (and the simulator, direct) holds one descriptor per watch
        return {
            "error": f"the open-files limit ({soft}) is below N + 256; raise it (ulimit -Hn) "
            "before running the bench"
        }
    round_ = f"{peer.key}-{count}"
    probes = sparse_probes(count)
    sparse_updates = events * SPARSE_PER_BROADCAST
    cm = f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps"

    def probe(group: str, i: int, kind: str) -> dict[str, object]:
        return {
            "metadata": {
                "name": f"probe-{round_}-{group}",
                "namespace": WATCH_NAMESPACE,
                "labels": {PROBE_LABEL: f"{round_}-{group}"},
            },
            "data": {"t": repr(time.time()) if kind else "", "i": str(i), "k": kind},
        }

    writer = _Writer(sim)
    clients: _Clients | None = None
    try:
        for group in [*map(str, range(probes)), "all"]:
            status, body = writer.request("POST", cm, probe(group, -1, ""))
            if status not in (200, 201, 409):
                return {"error": f"cannot create a probe ConfigMap: {status} {body[:200]!r}"}
        selector = quote(f"{PROBE_LABEL} in ({round_}-all)", safe="")
        status, body = writer.request("GET", f"{cm}?labelSelector={selector}")
        if status != 200:
            return {"error": f"cannot list the probe ConfigMaps: {status} {body[:200]!r}"}
        rv = json.loads(body)["metadata"]["resourceVersion"]
        paths = [
            f"{cm}?watch=true&resourceVersion={rv}&labelSelector="
            + quote(f"{PROBE_LABEL} in ({round_}-{i % probes},{round_}-all)", safe="")
            for i in range(count)
        ]
        root = peer.proc.pid if peer.proc is not None else 0
        baseline_kib = tree_rss_kib(root) if peer.key != "direct" else 0
        upstream_before = established_to(sim.port)
        started = time.monotonic()
        clients = _Clients(peer, paths)
        problem = clients.opened(120 + count * 0.1)
        open_s = time.monotonic() - started
        if problem:
            return {"error": f"{problem} (of {count})"}
        time.sleep(0.5)
        rss_kib = tree_rss_kib(root) if peer.key != "direct" else 0
        upstream = established_to(sim.port) - upstream_before
        # sparse first: N idle watches, a few of them get each event
        group_size = [count // probes + (1 if g < count % probes else 0) for g in range(probes)]
        sparse_expected = sum(group_size[j % probes] for j in range(sparse_updates))
        begin = time.monotonic()
        for j in range(sparse_updates):
            time.sleep(max(0.0, begin + j * SPARSE_INTERVAL - time.monotonic()))
            group = str(j % probes)
            writer.request("PUT", f"{cm}/probe-{round_}-{group}", probe(group, j, "s"))
        clients.wait_for(sparse_expected, 0, 10)
        # then the broadcast: every update reaches all N watches
        begin = time.monotonic()
        for j in range(events):
            time.sleep(max(0.0, begin + (j + 1) * interval - time.monotonic()))
            writer.request("PUT", f"{cm}/probe-{round_}-all", probe("all", j, "b"))
        clients.wait_for(sparse_expected, count * events, 10 + count / 500)
        latencies = clients.stop()
    except BenchError as exc:
        return {"error": str(exc)}
    finally:
        if clients is not None:
            clients.kill()
        writer.close()
    values: dict[str, float | str] = {
        "open_s": open_s,
        "sparse_delivered": len(latencies["s"]) / max(1, sparse_expected),
        "bcast_delivered": len(latencies["b"]) / max(1, count * events),
    }
    _percentiles(values, "sparse", latencies["s"])
    _percentiles(values, "bcast", latencies["b"])
    if peer.key != "direct":
        values["kib_per_stream"] = (rss_kib - baseline_kib) / count
        values["rss_mib"] = rss_kib / 1024
        values["upstream_conns"] = float(upstream)
    return values


def watches(
    results: Results, sim: Sim, counts: Sequence[int], events: int, interval: float
) -> None:
    """Workload 3 for every sim peer and watch count."""
    ensure_namespace(sim, WATCH_NAMESPACE)
    for count in counts:
        for peer in sim.peers:
            values = watch_round(sim, peer, count, events, interval)
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
            print(f"  {peer.label:32} n={count:<6} {rss_note(row.values) or row.note}", flush=True)
    sizes = ", ".join(
        f"n={n}: K={sparse_probes(n)}, ~{n / sparse_probes(n):.0f} watches per update"
        for n in counts
    )
    results.note(
        WATCH,
        f"Sparse: the N watches are spread over K probe ConfigMaps ({sizes}) by label "
        f"selector; {events * SPARSE_PER_BROADCAST} updates, one every "
        f"{SPARSE_INTERVAL * 1000:.0f} ms, each to the next probe, while all N watches are "
        "open. This is the event latency of a gateway holding N mostly idle watches.",
    )
    results.note(
        WATCH,
        f"Broadcast: then {events} updates, one every {interval * 1000:.0f} ms, of one "
        "ConfigMap every watch selects: each is an N-wide fan-out, so its latency is the "
        "time for the simulator, the peer and the clients to move N events, not a gateway's "
        "per-event cost.",
    )
    results.note(
        WATCH,
        "Latency is per delivered event, from the writer's timestamp (time.time() just "
        "before its PUT, on a keep-alive connection straight to the simulator) to the client "
        "reading it: it includes the simulator's own work (its store checks every open "
        "watch's selector on every write, so even a sparse update costs it O(N)). Watches "
        f"are read by forked client processes, {WATCHES_PER_CLIENT} streams each, "
        f"{HANDSHAKES} TLS handshakes in flight in all.",
    )


# ---- 4. exec -----------------------------------------------------------------------------


def karpor_kubeconfig(ws: Workspace, gw: Karpor, cluster: str = "sim-1") -> Path:
    """A kubeconfig to ``cluster`` through the gateway, with the bench user's certificate."""

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    path = ws.root / f"karpor-{cluster}.kubeconfig"
    # issued now from this gateway's CA (client.crt is rewritten by every gateway started)
    cert, key = ws.client_certificate(gw.state_dir)
    prefix = KARPOR_SIM_PREFIX.replace("/clusters/sim-1/", f"/clusters/{cluster}/")
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "sim-1",
                "cluster": {
                    "server": f"https://127.0.0.1:{gw.port}{prefix}",
                    "certificate-authority-data": b64(gw.state_dir / "ca.crt"),
                },
            }
        ],
        "users": [
            {
                "name": "bench",
                "user": {
                    "client-certificate-data": b64(cert),
                    "client-key-data": b64(key),
                },
            }
        ],
        "contexts": [{"name": "sim-1", "context": {"cluster": "sim-1", "user": "bench"}}],
        "current-context": "sim-1",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class ExecTiming(NamedTuple):
    """One ``kubectl exec`` read to its end."""

    #: seconds from starting kubectl to the first byte of output (kubectl's
    #: start-up, the connection, the upgrade)
    start: float
    #: seconds from the first byte to the last
    stream: float
    #: bytes read after the first piece (what ``stream`` carried)
    streamed: int

    @property
    def total(self) -> float:
        """Seconds from starting kubectl to the last byte."""
        return self.start + self.stream


def exec_once(
    kubectl: Path,
    kubeconfig: Path,
    size: int,
    env: dict[str, str],
    command: Sequence[str] = (),
) -> tuple[ExecTiming | None, str]:
    """The timing of reading ``size`` bytes of exec output (of ``command``,
    by default ``head -c SIZE /dev/zero``), or (None, why not)."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [
            str(kubectl),
            "--kubeconfig",
            str(kubeconfig),
            "exec",
            EXEC_POD,
            "--",
            *(command or ("head", "-c", str(size), "/dev/zero")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert proc.stdout is not None and proc.stderr is not None
    got = 0
    first_at = last_at = started
    first_len = 0
    out = proc.stdout.fileno()
    try:
        deadline = started + 120
        # whatever the pipe holds, so the first byte is timed when it comes
        while chunk := os.read(out, 1 << 20):
            last_at = time.monotonic()
            if not got:
                first_at, first_len = last_at, len(chunk)
            got += len(chunk)
            if last_at > deadline:
                break
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read().decode(errors="replace").strip()
    if proc.returncode != 0 or got != size:
        return None, f"kubectl exit {proc.returncode}, {got} of {size} bytes: {err[-300:]}"
    return ExecTiming(first_at - started, last_at - first_at, got - first_len), ""


def ensure_exec_pod(sim: Sim) -> None:
    """Create the exec pod :data:`EXEC_POD` in the simulator and wait until it runs."""
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


def exec_rounds(
    kubectl: Path, ways: Sequence[tuple[str, str, Path]], size: int, env: dict[str, str]
) -> tuple[dict[str, list[ExecTiming]], dict[str, str]]:
    """:data:`EXEC_ROUNDS` rounds of one exec through each of ``ways``
    (key, label, kubeconfig), alternating them: each way's timings, and why
    a way stopped being measured."""
    timings: dict[str, list[ExecTiming]] = {key: [] for key, _, _ in ways}
    problems: dict[str, str] = {}
    for _ in range(EXEC_ROUNDS):
        for key, _label, kubeconfig in ways:
            if key in problems:
                continue
            timing, problem = exec_once(kubectl, kubeconfig, size, env)
            if timing is None:
                problems[key] = problem
            else:
                timings[key].append(timing)
    return timings, problems


def exec_stream(results: Results, ws: Workspace, sim: Sim, size: int) -> None:
    """Workload 4: exec output throughput straight to the simulator and through karpor."""
    kubectl = find_kubectl()
    if kubectl is None:
        results.add(Row(EXEC, "direct", "simulator (direct)", "", note="not measured: no kubectl"))
        return
    ensure_exec_pod(sim)
    env = {"PATH": "/usr/bin:/bin", "HOME": str(ws.root), "KUBECACHEDIR": str(ws.root / "kc")}
    ways = [("direct", "simulator (direct)", sim.kubeconfig)]
    if sim.karpor is not None:
        ways.append(("karpor-1", "karpor, 1 worker", karpor_kubeconfig(ws, sim.karpor)))
    timings, problems = exec_rounds(kubectl, ways, size, env)
    for key, label, _kubeconfig in ways:
        problem = problems.get(key, "")
        if problem:
            note = f"not measured: {problem}"
            if key.startswith("karpor"):
                note = (
                    "not measured yet: exec through the gateway failed (the splice of upgrades "
                    f"is issue 4): {problem}"
                )
            results.add(Row(EXEC, key, label, f"{size >> 20} MiB", note=note))
        else:
            runs = timings[key]
            results.add(
                Row(
                    EXEC,
                    key,
                    label,
                    f"{size >> 20} MiB",
                    {
                        "mb_s": statistics.median(t.streamed / t.stream / 1e6 for t in runs),
                        "start_s": statistics.median(t.start for t in runs),
                        "seconds": statistics.median(t.total for t in runs),
                        "total_mb_s": statistics.median(size / t.total / 1e6 for t in runs),
                    },
                )
            )
        print(f"  {label:32} exec {results.rows[-1].values or results.rows[-1].note}", flush=True)
    results.note(
        EXEC,
        "kubectl exec POD -- head -c SIZE /dev/zero; MB/s is the stream's, from the "
        "first byte of output to the last (what the splice carries); start is kubectl's "
        "start-up, connection and upgrade up to the first byte; seconds and total MB/s "
        f"from kubectl's start to the last byte; medians of {EXEC_ROUNDS} rounds, each "
        "running every way in turn.",
    )


# ---- 5. large LIST -----------------------------------------------------------------------


def _fill(sim: Sim, total_bytes: int, each: int = 100_000) -> int:
    ensure_namespace(sim, LIST_NAMESPACE)
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
