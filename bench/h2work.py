"""Workload 9, ``h2``: HTTP/2 to the gateway, beside its own HTTP/1.1.

- **throughput**: the small GET through karpor (N workers, the bench
  user's bearer token) with ``h2load`` (8 connections x 16 streams, HTTP/2)
  and with wrk at concurrency 64 (HTTP/1.1), in rounds alternating the two,
  with the CPU time per request of the gateway's process tree for each;
- **watch opening**: N watches (10,000) opened the way a client-go process
  opens them, through a simulated cluster: through karpor over HTTP/2 from
  one client (streams on one TLS connection, a new connection only once the
  server's ``SETTINGS_MAX_CONCURRENT_STREAMS`` is reached, as Go's
  transport does), through karpor over HTTP/1.1 (one TLS connection per
  watch: the way before HTTP/2), and through ``kubectl proxy`` (plain
  HTTP/1.1, one connection per watch: Go's server speaks no h2c there, and
  client-go offers ``h2`` only over TLS). For each: the time until every
  watch has its response head, the connections used, the peer's RSS per
  watch and its CPU time per watch opened.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import ssl
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from bench import wrk
from bench.fixture import Workspace
from bench.peers import Peer, karpor_peer, start_karpor
from bench.procs import (
    LOOPBACK,
    BenchError,
    Processes,
    client_context,
    tree_cpu_seconds,
    tree_rss_kib,
)
from bench.results import Results, Row
from bench.simwork import (
    WATCH_NAMESPACE,
    Sim,
    SimPeer,
    WatchClients,
    ensure_namespace,
    start_sim,
    stop_quietly,
)

H2 = "h2"
H2_WATCH = "h2-watch"
#: h2load's load: connections x streams per connection
H2_CONNECTIONS = 8
H2_STREAMS = 16
#: wrk's HTTP/1.1 load it is compared with
H1_CONNECTIONS = 64
H1_KEY = "karpor-h1"
H2_KEY = "karpor-h2"
#: watches opened by one client (the issue's figure); ``--quick``: a few
WATCHES = 10_000
QUICK_WATCHES = 20
#: streams waiting for their response head at once (the HTTP/1.1 clients of
#: workload 3 have 64 connections being opened at once): a burst of thousands
#: would only measure how the Python simulator copes with it
OPENING = 256


# ---- h2load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class H2loadResult:
    """What one h2load run measured."""

    done: int
    succeeded: int
    ok_2xx: int
    duration_s: float
    mean_ms: float

    @property
    def rps(self) -> float:
        """Requests done per second."""
        return self.done / self.duration_s if self.duration_s else 0.0


def find_h2load() -> str | None:
    """h2load (Debian's ``nghttp2-client``), if installed."""
    return shutil.which("h2load")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse_h2load(output: str) -> H2loadResult:
    """The figures of h2load's summary; ValueError if it printed none."""
    finished = re.search(r"^finished in ([\d.]+)(us|ms|s),", output, re.M)
    requests = re.search(r"^requests: .*?(\d+) done, (\d+) succeeded", output, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx", output, re.M)
    mean = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", output, re.M)
    if finished is None or requests is None or codes is None:
        raise ValueError("h2load printed no summary:\n" + output[-2000:])
    return H2loadResult(
        done=int(requests.group(1)),
        succeeded=int(requests.group(2)),
        ok_2xx=int(codes.group(1)),
        duration_s=float(finished.group(1)) * _UNITS[finished.group(2)] / 1e3,
        mean_ms=float(mean.group(1)) * _UNITS[mean.group(2)] if mean else 0.0,
    )


def run_h2load(
    h2load: str,
    url: str,
    headers: dict[str, str],
    duration: float,
    connections: int = H2_CONNECTIONS,
    streams: int = H2_STREAMS,
    threads: int = 2,
) -> H2loadResult:
    """One h2load run of ``duration`` seconds (whole seconds)."""
    seconds = max(1, round(duration))
    argv = [
        h2load,
        f"-c{connections}",
        f"-m{streams}",
        f"-t{max(1, min(threads, connections))}",
        f"-D{seconds}",
    ]
    for name, value in headers.items():
        argv += ["-H", f"{name.lower()}: {value}"]
    done = subprocess.run(
        [*argv, url], capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    if done.returncode != 0:
        raise ValueError(f"h2load exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return parse_h2load(done.stdout)


def throughput(
    results: Results,
    procs: Processes,
    ws: Workspace,
    upstream: Peer,
    wrk_bin: str,
    duration: float,
    rounds: int,
    workers: int,
) -> None:
    """h2load (HTTP/2) and wrk (HTTP/1.1) through one gateway, rounds alternating."""
    h1_label = f"karpor, {workers} workers, HTTP/1.1 (wrk -c{H1_CONNECTIONS})"
    h2_label = f"karpor, {workers} workers, HTTP/2 (h2load -c{H2_CONNECTIONS} -m{H2_STREAMS})"
    h2load = find_h2load()
    if h2load is None:
        why = "not measured: h2load not installed (apt-get install -y nghttp2-client)"
        results.add(Row(H2, H2_KEY, h2_label, "", note=why))
        return
    gw = start_karpor(
        procs, ws, "karpor-h2", ws.clusters_dir("clusters-h2", upstream.port), workers
    )
    try:
        peer = karpor_peer(gw, ws, H1_KEY, h1_label, workers)
        if peer.unavailable:
            results.add(Row(H2, H2_KEY, h2_label, "", note=peer.unavailable))
            return
        script = wrk.lua_script(ws.root / "wrk-h2-peer.lua", peer.headers())
        # warm up: pools, caches, TLS sessions
        wrk.run(wrk_bin, peer.url, script, 16, 1)
        run_h2load(h2load, peer.url, peer.headers(), 1)
        root = gw.proc.pid
        h1: list[wrk.WrkResult] = []
        h2runs: list[H2loadResult] = []
        cpu: dict[str, list[float]] = {H1_KEY: [], H2_KEY: []}
        for r in range(rounds):
            for key in (H1_KEY, H2_KEY) if r % 2 == 0 else (H2_KEY, H1_KEY):
                before = tree_cpu_seconds(root)
                if key == H1_KEY:
                    result = wrk.run(wrk_bin, peer.url, script, H1_CONNECTIONS, duration)
                    h1.append(result)
                    served = result.requests
                else:
                    h2result = run_h2load(h2load, peer.url, peer.headers(), duration)
                    h2runs.append(h2result)
                    served = h2result.done
                if served:
                    cpu[key].append((tree_cpu_seconds(root) - before) / served * 1e6)
    except (ValueError, OSError) as exc:
        results.add(Row(H2, H2_KEY, h2_label, "", note=f"not measured: {exc}"))
        return
    finally:
        procs.stop(gw.proc)
    h1_rps = statistics.median(r.rps for r in h1)
    h1_cpu = statistics.median(cpu[H1_KEY]) if cpu[H1_KEY] else 0.0
    h1_values = {
        "rps": h1_rps,
        "p50": statistics.median(r.percentiles_ms[50.0] for r in h1),
        "p99": statistics.median(r.percentiles_ms[99.0] for r in h1),
        "requests": float(sum(r.requests for r in h1)),
        "errors": float(sum(r.errors + r.non_2xx for r in h1)),
        "ok_share": 1 - sum(r.errors + r.non_2xx for r in h1) / max(1, sum(r.requests for r in h1)),
        "rps_vs_h1": 1.0,
        "cpu_vs_h1": 1.0,
    }
    if h1_cpu:
        h1_values["cpu_us"] = h1_cpu
    h2_rps = statistics.median(r.rps for r in h2runs)
    done = sum(r.done for r in h2runs)
    h2_values = {
        "rps": h2_rps,
        "mean_ms": statistics.median(r.mean_ms for r in h2runs),
        "requests": float(done),
        "errors": float(done - sum(r.ok_2xx for r in h2runs)),
        "ok_share": sum(r.ok_2xx for r in h2runs) / max(1, done),
        "rps_vs_h1": h2_rps / h1_rps if h1_rps else 0.0,
    }
    if cpu[H2_KEY]:
        h2_values["cpu_us"] = statistics.median(cpu[H2_KEY])
        if h1_cpu:
            h2_values["cpu_vs_h1"] = h2_values["cpu_us"] / h1_cpu
    results.add(Row(H2, H1_KEY, h1_label, f"{rounds} rounds", h1_values))
    results.add(Row(H2, H2_KEY, h2_label, f"{rounds} rounds", h2_values))
    for label, values in ((h1_label, h1_values), (h2_label, h2_values)):
        print(
            f"  {label:56} {values['rps']:9.0f} req/s  "
            f"CPU {values.get('cpu_us', 0):6.0f} µs/req  2xx {values['ok_share']:.1%}",
            flush=True,
        )


# ---- watch opening -----------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    """One HTTP/2 connection of the watch client: streams started, heads received."""

    def __init__(
        self, authority: str, progress: asyncio.Event, extra: list[tuple[bytes, bytes]]
    ) -> None:
        self.authority = authority
        #: headers every request carries (a bearer token, straight to the simulator)
        self.extra = extra
        #: set whenever a stream is answered (the opener waits on it)
        self.progress = progress
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        #: the server's first SETTINGS came (its stream limit is known)
        self.settled = asyncio.Event()
        #: streams started and not answered yet
        self.waiting: set[int] = set()
        self.opened = 0
        self.failed: list[str] = []
        self.answered = asyncio.Event()
        #: the body of the first failed stream (its ``Status``), for the report
        self.failed_stream = 0
        self.failed_body = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.initiate_connection()
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiting:
            self.failed.append(f"connection lost: {exc}")
            self.waiting.clear()
        self.settled.set()
        self.answered.set()
        self.progress.set()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def capacity(self) -> int:
        """How many more streams the server lets this connection open."""
        limit = self.conn.remote_settings.max_concurrent_streams
        return max(0, limit - self.conn.open_outbound_streams)

    def start(self, path: str) -> None:
        """Send a GET for ``path`` (the caller flushes)."""
        stream = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", b"GET"),
            (b":scheme", b"https"),
            (b":authority", self.authority.encode()),
            (b":path", path.encode()),
            (b"accept", b"application/json"),
            (b"user-agent", b"bench-h2-watch"),
            *self.extra,
        ]
        self.conn.send_headers(stream, headers, end_stream=True)
        self.waiting.add(stream)
        self.answered.clear()

    def _answer(self, stream: int, problem: str) -> None:
        if stream in self.waiting:
            self.waiting.discard(stream)
            self.progress.set()
            if problem:
                self.failed.append(problem)
            else:
                self.opened += 1
            if not self.waiting:
                self.answered.set()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self.failed.append(f"HTTP/2 protocol error: {exc}")
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self.settled.set()
            elif isinstance(event, h2.events.ResponseReceived):
                status = dict(event.headers).get(b":status", b"")
                if status != b"200" and not self.failed_stream:
                    self.failed_stream = event.stream_id
                self._answer(event.stream_id, "" if status == b"200" else f"status {status!r}")
            elif isinstance(event, h2.events.DataReceived):
                if event.stream_id == self.failed_stream and len(self.failed_body) < 300:
                    self.failed_body += event.data
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                self._answer(event.stream_id, f"stream ended before its head: {event}")
            elif isinstance(event, h2.events.ConnectionTerminated):
                for stream in list(self.waiting):
                    self._answer(stream, f"GOAWAY: {event}")
        self.flush()


@dataclass
class Opened:
    """N watches opened over HTTP/2 by one client."""

    seconds: float
    connections: int
    failures: int
    first_failure: str


async def _open_h2(
    port: int,
    context: ssl.SSLContext,
    paths: list[str],
    timeout: float,
    hold: Callable[[], None],
    extra: list[tuple[bytes, bytes]] | None = None,
) -> Opened:
    """Open ``paths`` as streams, a connection at a time filled to the server's
    stream limit, at most :data:`OPENING` of them waiting for their head at
    once; call ``hold()`` (sync) once every head came, then close."""
    loop = asyncio.get_running_loop()
    authority = f"{LOOPBACK}:{port}"
    progress = asyncio.Event()
    connections: list[_Connection] = []
    todo: Iterator[str] = iter(paths)
    left = len(paths)
    started = time.monotonic()
    try:
        while left:
            if not connections or not connections[-1].capacity():
                _, proto = await loop.create_connection(
                    lambda: _Connection(authority, progress, extra or []),
                    LOOPBACK,
                    port,
                    ssl=context,
                )
                connections.append(proto)
                await asyncio.wait_for(proto.settled.wait(), timeout)
                if not proto.capacity():
                    raise BenchError("the server allows no stream on a new connection")
            proto = connections[-1]
            take = min(left, proto.capacity(), OPENING - sum(len(p.waiting) for p in connections))
            if take <= 0:
                progress.clear()
                await asyncio.wait_for(progress.wait(), timeout)
                continue
            for _ in range(take):
                proto.start(next(todo))
            proto.flush()
            left -= take
        for proto in connections:
            await asyncio.wait_for(proto.answered.wait(), timeout)
        seconds = time.monotonic() - started
        failed = [f for proto in connections for f in proto.failed]
        hold()
        bodies = [p.failed_body for p in connections if p.failed_body]
        first = (failed[0] if failed else "") + (
            f": {bodies[0][:300].decode(errors='replace')}" if bodies else ""
        )
        return Opened(seconds, len(connections), len(failed), first)
    finally:
        for proto in connections:
            if proto.transport is not None:
                proto.transport.close()
        await asyncio.sleep(0.2)


def _paths(sim: Sim, count: int, prefix: str) -> list[str]:
    status, body = sim.request(
        "GET", f"/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps?labelSelector=bench-h2%3Dnone"
    )
    if status != 200:
        raise BenchError(f"cannot list ConfigMaps in the simulator: {status} {body[:200]!r}")
    rv = re.search(rb'"resourceVersion":\s*"(\d+)"', body)
    version = rv.group(1).decode() if rv else "0"
    # an informer's watch after its LIST: from that version, no initial events;
    # a selector nothing matches, so that no write reaches them while they are held
    return [
        f"{prefix}/api/v1/namespaces/{WATCH_NAMESPACE}/configmaps?watch=true"
        f"&resourceVersion={version}&labelSelector=bench-h2%3Dnone&allowWatchBookmarks=true"
        for _ in range(count)
    ]


def _watch_row(
    results: Results, key: str, label: str, count: int, values: dict[str, float], note: str = ""
) -> None:
    row = results.add(Row(H2_WATCH, key, label, f"n={count}", values, note))
    shown = (
        f"open {values['open_s']:.2f} s, {values.get('kib_per_watch', 0):.1f} KiB/watch, "
        f"{values.get('cpu_us_per_watch', 0):.0f} µs CPU/watch, "
        f"{values.get('connections', 0):.0f} connections"
        if values
        else note
    )
    print(f"  {row.label:44} n={count:<6} {shown}", flush=True)


def _open_h2_row(
    results: Results,
    key: str,
    label: str,
    port: int,
    context: ssl.SSLContext,
    paths: list[str],
    root: int,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """Open ``paths`` from one HTTP/2 client; a row with the figures of the
    process tree at ``root``."""
    count = len(paths)
    rss0, cpu0 = tree_rss_kib(root), tree_cpu_seconds(root)
    held: dict[str, float] = {}

    def hold() -> None:
        time.sleep(0.5)
        held["rss"] = tree_rss_kib(root)
        held["cpu"] = tree_cpu_seconds(root)

    try:
        opened = asyncio.run(_open_h2(port, context, paths, 120 + count * 0.1, hold, extra))
    except (BenchError, OSError, TimeoutError) as exc:
        _watch_row(results, key, label, count, {}, f"not measured: {exc}")
        return
    if opened.failures:
        why = f"{opened.failures} watches failed to open: {opened.first_failure}"
        _watch_row(results, key, label, count, {}, f"not measured: {why}")
        return
    _watch_row(
        results,
        key,
        label,
        count,
        {
            "open_s": opened.seconds,
            "connections": float(opened.connections),
            "kib_per_watch": (held["rss"] - rss0) / count,
            "rss_mib": held["rss"] / 1024,
            "cpu_us_per_watch": (held["cpu"] - cpu0) / count * 1e6,
        },
    )


def watch_opening(results: Results, procs: Processes, ws: Workspace, count: int) -> None:
    """Open ``count`` watches through karpor (HTTP/2 and HTTP/1.1) and kubectl proxy."""
    sim = start_sim(procs, ws, name="sim-h2")
    try:
        ensure_namespace(sim, WATCH_NAMESPACE)
        gw = sim.karpor
        assert gw is not None
        karpor = next(p for p in sim.peers if p.key == "karpor-1")
        kubectl = next((p for p in sim.peers if p.key == "kubectl-proxy"), None)
        cert, cert_key = ws.client_certificate(gw.state_dir)
        context = client_context(gw.state_dir / "ca.crt", cert, cert_key)
        context.set_alpn_protocols(["h2"])
        timeout = 120 + count * 0.1
        # HTTP/2 first: the gateway's heap has held no watch before
        _open_h2_row(
            results,
            H2_KEY,
            "karpor, 1 worker, HTTP/2 (one client)",
            gw.port,
            context,
            _paths(sim, count, karpor.prefix),
            gw.proc.pid,
            [],
        )
        time.sleep(1.0)  # the gateway's streams ended
        direct = client_context(sim.ca_file)
        direct.set_alpn_protocols(["h2"])
        _open_h2_row(
            results,
            "direct",
            "simulator (direct), HTTP/2 (one client)",
            sim.port,
            direct,
            _paths(sim, count, ""),
            sim.proc.pid,
            [(b"authorization", f"Bearer {sim.token}".encode())],
        )
        time.sleep(1.0)  # the gateway's streams ended
        for peer, key, label in (
            (karpor, H1_KEY, "karpor, 1 worker, HTTP/1.1 (a connection per watch)"),
            (kubectl, "kubectl-proxy", "kubectl proxy (plain HTTP/1.1, a connection per watch)"),
        ):
            if peer is None:
                _watch_row(results, key, label, count, {}, "not measured: kubectl not found")
                continue
            _watch_row(results, key, label, count, *_open_h1(sim, peer, count, timeout))
    finally:
        for peer in sim.peers:
            stop_quietly(procs, peer.proc)
    results.note(
        H2_WATCH,
        "Each peer as a client-go process would use it: through karpor over TLS it offers "
        "`h2` and multiplexes (Go's transport opens another connection only once the "
        "server's SETTINGS_MAX_CONCURRENT_STREAMS streams are open on one: karpor's "
        "default is 1,000, as kube-apiserver's); to `kubectl proxy` (plain HTTP, no h2c) it "
        "opens one HTTP/1.1 connection per watch. The direct row is the same HTTP/2 client "
        "straight to the simulator (Python; it registers every watch): the pace every peer "
        "is held to. The HTTP/1.1 rows are read by forked "
        "client processes as in workload 3 (64 connections being opened at a time). RSS "
        "and CPU are the peer's process tree (karpor's supervisor and worker) from before "
        "the watches opened to 0.5 s after the last one's head; kubectl proxy's RSS "
        "includes the Go runtime's heap growth.",
    )


def _open_h1(sim: Sim, peer: SimPeer, count: int, timeout: float) -> tuple[dict[str, float], str]:
    """``count`` watches through ``peer``, one HTTP/1.1 connection each; the figures."""
    assert peer.proc is not None
    root = peer.proc.pid
    paths = [p.removeprefix(peer.prefix) for p in _paths(sim, count, peer.prefix)]
    rss0, cpu0 = tree_rss_kib(root), tree_cpu_seconds(root)
    started = time.monotonic()
    clients = WatchClients(peer, paths)
    try:
        problem = clients.opened(timeout)
        seconds = time.monotonic() - started
        if problem:
            return {}, f"not measured: {problem}"
        time.sleep(0.5)
        rss, cpu = tree_rss_kib(root), tree_cpu_seconds(root)
    except BenchError as exc:
        return {}, f"not measured: {exc}"
    finally:
        clients.kill()
    return {
        "open_s": seconds,
        "connections": float(count),
        "kib_per_watch": (rss - rss0) / count,
        "rss_mib": rss / 1024,
        "cpu_us_per_watch": (cpu - cpu0) / count * 1e6,
    }, ""


def run(
    results: Results,
    procs: Processes,
    ws: Workspace,
    upstream: Peer,
    wrk_bin: str,
    duration: float,
    rounds: int,
    workers: int,
    watches: int,
) -> None:
    """Workload 9: the throughput rounds, then the watch opening."""
    try:
        throughput(results, procs, ws, upstream, wrk_bin, duration, rounds, workers)
    except BenchError as exc:
        results.add(Row(H2, H2_KEY, "karpor, HTTP/2", "", note=f"not measured: {exc}"))
    try:
        watch_opening(results, procs, ws, watches)
    except (BenchError, OSError) as exc:
        results.add(Row(H2_WATCH, H2_KEY, "karpor, HTTP/2", "", note=f"not measured: {exc}"))
