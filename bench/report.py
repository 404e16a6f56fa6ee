"""RESULTS.md, the PNG plots, and the targets of the bench issue."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import have_matplotlib
from bench.results import Results, Row, Target


@dataclass(frozen=True)
class Column:
    """A metric column: key in :attr:`Row.values`, header, format."""

    key: str
    header: str
    fmt: str = "{:.2f}"


@dataclass(frozen=True)
class Ratio:
    """A ratio column: ``metric`` of the row ÷ the same of ``against`` at the same params."""

    metric: str
    against: str  # a peer key, or "first" (the first row of the same peer)
    header: str


@dataclass(frozen=True)
class Section:
    """How one workload is shown."""

    key: str
    title: str
    intro: str
    columns: tuple[Column, ...]
    ratios: tuple[Ratio, ...]


#: what limits karpor on these workloads: kept by hand, copied into RESULTS.md
LIMITS = Path(__file__).with_name("LIMITS.md")


def sections(karpor: str) -> list[Section]:
    """The workloads in report order; ``karpor`` is the reference karpor peer key."""
    ms = "{:.2f}"
    rps = "{:,.0f}"
    us = "{:,.0f}"
    return [
        Section(
            "latency",
            "1. Latency of a small GET at concurrency 1",
            "wrk -t1 -c1, one keep-alive connection; milliseconds. CPU µs/req as in table 2.",
            (
                Column("p50", "p50 ms", ms),
                Column("p90", "p90 ms", ms),
                Column("p99", "p99 ms", ms),
                Column("p99.9", "p99.9 ms", ms),
                Column("rps", "req/s", rps),
                Column("cpu_us", "CPU µs/req", us),
            ),
            (
                Ratio("p50", karpor, "p50 ÷ karpor"),
                Ratio("p50", "direct", "p50 ÷ direct"),
                Ratio("cpu_us", karpor, "CPU ÷ karpor"),
            ),
        ),
        Section(
            "oidc",
            "1c. An OpenID ID token: first sight and cached",
            "In-process, the gateway's own authenticator (karpor.auth.oidc) with the bench "
            "provider's JWKS: a token never seen before costs its RS256 signature check and "
            "the claim rules; a known one, a SHA-256 and a lookup. Table 1b has the same "
            "through a gateway, beside a client certificate.",
            (
                Column("first_us", "first sight µs", "{:,.1f}"),
                Column("cached_us", "cached µs", "{:,.2f}"),
            ),
            (),
        ),
        Section(
            "latency-py",
            "1b. Latency at concurrency 1, one Python client",
            "Sequential GETs on one keep-alive connection per row from the bench's own "
            "Python client (the same client for every peer; karpor reached with a client "
            "certificate, which wrk cannot present; `karpor-1-token` with the token file's "
            "static token and `karpor-1-oidc` with an OpenID ID token, on the same gateway). "
            "The rows take turns by 200 requests, the order rotated each round, so that the "
            "shared machine's changes of speed fall on every row alike. Slower than wrk by "
            "the client's own cost: compare the ratios, not the figures with table 1. CPU "
            "µs/req: the peer's process tree while the row's measured requests ran, so a "
            "cached ID token, a static token and a client certificate compare side by side. "
            "new conns: connections opened during the measured requests (0: the warm-up's "
            "connection served them all, no TLS handshake among them).",
            (
                Column("p50", "p50 ms", ms),
                Column("p90", "p90 ms", ms),
                Column("p99", "p99 ms", ms),
                Column("p99.9", "p99.9 ms", ms),
                Column("connections", "new conns", "{:.0f}"),
                Column("cpu_us", "CPU µs/req", us),
            ),
            (
                Ratio("p50", karpor, "p50 ÷ karpor"),
                Ratio("p50", "direct", "p50 ÷ direct"),
                Ratio("cpu_us", "karpor-1", "CPU ÷ karpor-1 (client certificate)"),
            ),
        ),
        Section(
            "throughput",
            "2. Throughput and p99 by concurrency",
            "wrk -t2 -cC (keep-alive connections); the pod JSON, ~3 KB. CPU µs/req: the "
            "CPU time (user + system) of the peer's whole process tree during the run "
            "divided by the requests it served (for `direct`, nginx's own; for the proxies, "
            "the proxy's tree, not the upstream's).",
            (
                Column("rps", "req/s", rps),
                Column("p50", "p50 ms", ms),
                Column("p99", "p99 ms", ms),
                Column("cpu_us", "CPU µs/req", us),
                Column("errors", "errors", "{:.0f}"),
            ),
            (
                Ratio("rps", karpor, "req/s ÷ karpor"),
                Ratio("rps", "direct", "req/s ÷ direct"),
                Ratio("p99", karpor, "p99 ÷ karpor"),
                Ratio("cpu_us", karpor, "CPU ÷ karpor"),
            ),
        ),
        Section(
            "watch",
            "3. Concurrent watches through one worker",
            "N watch streams of ConfigMaps held open at once for the whole round. RSS is the "
            "peer's process tree (VmRSS), upstream connections are those to the simulator "
            "opened while the watches were open. **Sparse**: while all N are open, a series of "
            "updates each reaching only a few of them (N spread over K probe ConfigMaps, see "
            "below): the write → read latency of one event through a peer holding N watches, "
            "the figure the watch target is about. **Broadcast**: then a few updates of one "
            "ConfigMap all N watch: each is an N-wide fan-out, so its latency is the time to "
            "move N events through the simulator, the peer and the clients.",
            (
                Column("open_s", "open all s", ms),
                Column("kib_per_stream", "KiB/stream", "{:.1f}"),
                Column("rss_mib", "RSS MiB", "{:.1f}"),
                Column("upstream_conns", "upstream conns", "{:.0f}"),
                Column("sparse_p50", "sparse event p50 ms", ms),
                Column("sparse_p99", "sparse event p99 ms", ms),
                Column("sparse_delivered", "sparse delivered", "{:.0%}"),
                Column("bcast_p50", "broadcast event p50 ms", ms),
                Column("bcast_p99", "broadcast event p99 ms", ms),
                Column("bcast_delivered", "broadcast delivered", "{:.0%}"),
            ),
            (
                Ratio("kib_per_stream", "karpor-1", "KiB/stream ÷ karpor"),
                Ratio("sparse_p99", "direct", "sparse p99 ÷ direct"),
                Ratio("bcast_p99", "direct", "broadcast p99 ÷ direct"),
            ),
        ),
        Section(
            "exec",
            "4. exec stream throughput",
            "stdout of `head -c SIZE /dev/zero` in a simulated pod, read by kubectl.",
            (
                Column("mb_s", "MB/s", "{:.1f}"),
                Column("start_s", "start s", ms),
                Column("seconds", "seconds", ms),
                Column("total_mb_s", "total MB/s", "{:.1f}"),
            ),
            (Ratio("mb_s", "direct", "MB/s ÷ direct"),),
        ),
        Section(
            "list",
            "5. A large LIST",
            "One LIST of ConfigMaps from the simulator; time to last byte and the peer's RSS.",
            (
                Column("seconds", "to last byte s", ms),
                Column("mb_s", "MB/s", "{:.1f}"),
                Column("rss_growth_mib", "RSS growth MiB", "{:.1f}"),
                Column("rss_peak_mib", "RSS peak MiB", "{:.1f}"),
            ),
            (
                Ratio("seconds", "karpor-1", "time ÷ karpor"),
                Ratio("seconds", "direct", "time ÷ direct"),
            ),
        ),
        Section(
            "workers",
            "6. Worker scaling",
            "karpor with 1 and N workers (from workload 2's runs).",
            (Column("rps", "req/s", rps), Column("p99", "p99 ms", ms)),
            (Ratio("rps", "karpor-1", "req/s ÷ 1 worker"),),
        ),
        Section(
            "clusters",
            "7. Cluster count sweep",
            "A fresh gateway (1 worker) per count; every Cluster points at the same upstream.",
            (
                Column("startup_s", "start-up s", ms),
                Column("first_probes_s", "first probes s", ms),
                Column("reload_s", "reload s", "{:.3f}"),
                Column("rss_mib", "RSS MiB", "{:.1f}"),
                Column("p50", "GET p50 ms", ms),
                Column("p99", "GET p99 ms", ms),
            ),
            (Ratio("p50", "first", "p50 ÷ fewest"),),
        ),
        Section(
            "tunnel",
            "8. Through a tunnel: a small GET",
            "One gateway (1 worker) serves the same simulated cluster twice: `sim-1` "
            "directly (its endpoint) and `sim-t` only through `karpor agent` beside the "
            "simulator (no endpoint). Gateway and agent CPU µs/req apart; CPU ÷ direct "
            "compares gateway + agent with the direct way's gateway.",
            (
                Column("p50", "p50 ms", ms),
                Column("p99", "p99 ms", ms),
                Column("rps", "req/s", rps),
                Column("cpu_us", "gateway CPU µs/req", us),
                Column("agent_cpu_us", "agent CPU µs/req", us),
                Column("errors", "errors", "{:.0f}"),
            ),
            (
                Ratio("p50", "karpor-direct", "p50 ÷ direct"),
                Ratio("rps", "karpor-direct", "req/s ÷ direct"),
                Ratio("cpu_total_us", "karpor-direct", "CPU ÷ direct"),
            ),
        ),
        Section(
            "tunnel-exec",
            "8b. Through a tunnel: exec stream",
            "stdout of `head -c SIZE /dev/zero` in a simulated pod, read by kubectl through "
            "the gateway, directly and through the tunnel.",
            (
                Column("mb_s", "MB/s", "{:.1f}"),
                Column("start_s", "start s", ms),
                Column("seconds", "seconds", ms),
                Column("total_mb_s", "total MB/s", "{:.1f}"),
            ),
            (Ratio("mb_s", "karpor-direct", "MB/s ÷ direct"),),
        ),
        Section(
            "fanout-watch",
            "9. A merged watch over 20 clusters",
            "`karpor sim --clusters 20` behind one gateway (1 worker): one fan-out watch "
            "(`clusters/*`) beside one watch per cluster, in alternating rounds; a ConfigMap "
            "created in the simulator, the clusters in turn, and the time until the client "
            "read its event. CPU µs/event: the gateway's process tree.",
            (
                Column("p50", "event p50 ms", ms),
                Column("p99", "event p99 ms", ms),
                Column("cpu_us", "CPU µs/event", us),
                Column("events", "events", "{:.0f}"),
            ),
            (Ratio("p99", "karpor-single", "p99 ÷ single"),),
        ),
        Section(
            "tunnel-watch",
            "8c. Through a tunnel: concurrent watches",
            "N watches held open through the gateway, directly and all through one agent.",
            (
                Column("open_s", "open all s", ms),
                Column("kib_per_stream", "gateway KiB/stream", "{:.1f}"),
                Column("rss_mib", "gateway RSS MiB", "{:.1f}"),
                Column("agent_kib_per_stream", "agent KiB/stream", "{:.1f}"),
                Column("agent_rss_mib", "agent RSS peak MiB", "{:.1f}"),
                Column("upstream_conns", "upstream conns", "{:.0f}"),
                Column("sparse_p50", "sparse event p50 ms", ms),
                Column("sparse_p99", "sparse event p99 ms", ms),
                Column("sparse_delivered", "sparse delivered", "{:.0%}"),
            ),
            (Ratio("kib_per_stream", "karpor-direct", "KiB/stream ÷ direct"),),
        ),
        Section(
            "fanout",
            "10. One LIST across many clusters",
            "One gateway (1 worker); N clusters, all one small HTTPS server. The fan-out LIST "
            "(`clusters/SELECTOR/proxy`) beside the slowest of the N single-cluster LISTs "
            "made through the same gateway; seconds to the last byte.",
            (
                Column("seconds", "seconds", "{:.3f}"),
                Column("p50", "single p50 ms", ms),
                Column("mbytes", "MB", "{:.2f}"),
                Column("cpu_ms", "CPU ms/req", ms),
                Column("cpu_ms_cluster", "CPU ms/cluster", ms),
            ),
            (Ratio("seconds", "single", "÷ slowest single"),),
        ),
        Section(
            "fanout-rss",
            "10b. A fan-out LIST's memory",
            "The gateway tree's RSS growth while one fan-out LIST of large lists streams.",
            (
                Column("seconds", "seconds", ms),
                Column("mbytes", "MB", "{:.0f}"),
                Column("mb_s", "MB/s", "{:.1f}"),
                Column("rss_growth_mib", "RSS growth MiB", "{:.1f}"),
                Column("rss_peak_mib", "RSS peak MiB", "{:.1f}"),
            ),
            (),
        ),
        Section(
            "limits",
            "11. The limits' cost per request",
            "karpor without a `limits` section and with every limit set (none reached: "
            "each request admitted and released through the table of counts the workers "
            "share), side by side, 1 and N workers; a small GET to the nginx upstream.",
            (
                Column("p50", "p50 ms", ms),
                Column("p99", "p99 ms", ms),
                Column("rps", "req/s", rps),
                Column("cpu_us", "CPU µs/req", us),
                Column("errors", "errors", "{:.0f}"),
            ),
            (
                Ratio("p50", "karpor-1", "p50 ÷ no limits (1 worker)"),
                Ratio("cpu_us", "karpor-1", "CPU ÷ no limits (1 worker)"),
            ),
        ),
        Section(
            "limits-inproc",
            "11b. The limiter in-process",
            "`Limiter.admit(...).release()` of one request, in a loop (the fastest of 7 "
            "loops of 40,000, the two alternating); microseconds.",
            (Column("admit_us", "admit + release µs", "{:.2f}"),),
            (),
        ),
        Section(
            "recording",
            "12. Session recording: exec stream",
            "One gateway (1 worker) serves the same simulated cluster twice: `sim-1` not "
            "recorded and `sim-r` recorded (asciicast files). kubectl reads SIZE bytes of "
            "stdout: text lines, or NUL bytes (the worst case for the recording's JSON). "
            "CPU is the gateway's process tree per MB streamed.",
            (
                Column("mb_s", "MB/s", "{:.1f}"),
                Column("cpu_ms_per_mb", "gateway CPU ms/MB", "{:.2f}"),
                Column("seconds", "seconds", ms),
            ),
            (
                Ratio("mb_s", "karpor-plain", "MB/s ÷ not recorded"),
                Ratio("cpu_ms_per_mb", "karpor-plain", "CPU ÷ not recorded"),
            ),
        ),
        Section(
            "h2",
            "13. HTTP/2 to the gateway: throughput",
            "The small GET through one gateway with h2load (HTTP/2, 8 connections x 16 "
            "streams) and with wrk (HTTP/1.1, 64 connections), rounds alternating the two; "
            "medians. h2load reports no percentiles (its mean time per request is shown). "
            "CPU µs/req as in table 2.",
            (
                Column("rps", "req/s", rps),
                Column("p50", "p50 ms", ms),
                Column("p99", "p99 ms", ms),
                Column("mean_ms", "mean ms", ms),
                Column("cpu_us", "CPU µs/req", us),
                Column("ok_share", "2xx", "{:.2%}"),
                Column("rps_vs_h1", "req/s ÷ HTTP/1.1", "{:.2f}x"),
                Column("cpu_vs_h1", "CPU ÷ HTTP/1.1", "{:.2f}x"),
            ),
            (),
        ),
        Section(
            "h2-watch",
            "13b. Opening watches from one client",
            "N watches opened as a client-go process opens them (see the notes); the time "
            "until every watch has its response head, and the peer's RSS and CPU per watch.",
            (
                Column("open_s", "open all s", ms),
                Column("connections", "client connections", "{:,.0f}"),
                Column("kib_per_watch", "KiB/watch", "{:.1f}"),
                Column("rss_mib", "RSS MiB", "{:.1f}"),
                Column("cpu_us_per_watch", "CPU µs/watch", us),
            ),
            (Ratio("open_s", "kubectl-proxy", "open ÷ kubectl proxy"),),
        ),
    ]


def _cell(value: float | None, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def _ratio(results: Results, section: Section, row: Row, ratio: Ratio) -> str:
    mine = row.values.get(ratio.metric)
    if ratio.against == "first":
        peers = [r for r in results.rows if r.workload == row.workload and r.peer == row.peer]
        ref = peers[0].values.get(ratio.metric) if peers else None
    else:
        ref = results.value(section.key, ratio.against, row.params, ratio.metric)
    if mine is None or not ref:
        return "—"
    return f"{mine / ref:.2f}x"


def table(results: Results, section: Section) -> list[str]:
    """The Markdown table of one workload (empty when it was not run)."""
    rows = [r for r in results.rows if r.workload == section.key]
    if not rows:
        return []
    headers = [
        "peer",
        "setting",
        *(c.header for c in section.columns),
        *(r.header for r in section.ratios),
    ]
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        if not row.values:
            cells = [
                row.label,
                row.params,
                row.note.replace("|", "\\|"),
                *([""] * (len(headers) - 3)),
            ]
        else:
            cells = [
                row.label,
                row.params,
                *(_cell(row.values.get(c.key), c.fmt) for c in section.columns),
                *(_ratio(results, section, row, r) for r in section.ratios),
            ]
        out.append("| " + " | ".join(cells) + " |")
    notes = [r for r in rows if r.values and r.note]
    for row in notes:
        out.append(f"\n- {row.label} {row.params}: {row.note}")
    return out


# ---- targets -----------------------------------------------------------------------------


def _fmt(x: float | None, unit: str = "") -> str:
    return "—" if x is None else f"{x:,.2f}{unit}"


def targets(results: Results, karpor: str, sweep_counts: Sequence[int]) -> list[Target]:
    """The targets of the bench issue against what was measured."""
    out: list[Target] = []

    def check(
        name: str, limit: str, measured: float | None, ok: bool | None, shown: str = ""
    ) -> None:
        if measured is None or ok is None:
            out.append(Target(name, limit, shown or "—", "not measured"))
        elif limit == "measured":  # a figure the issue asks for, with no bound
            out.append(Target(name, limit, shown or _fmt(measured), "measured"))
        else:
            out.append(Target(name, limit, shown or _fmt(measured), "met" if ok else "missed"))

    v = results.value
    k64 = v("throughput", karpor, "c=64", "rps")
    kp64 = v("throughput", "kubectl-proxy", "c=64", "rps")
    ng64 = v("throughput", "nginx-proxy", "c=64", "rps")
    r = k64 / kp64 if k64 and kp64 else None
    check(
        "throughput at c=64 vs kubectl proxy",
        "≥ 4x",
        r,
        None if r is None else r >= 4,
        f"{r:.2f}x" if r else "",
    )
    r = k64 / ng64 if k64 and ng64 else None
    check(
        "throughput at c=64 vs nginx",
        "≥ 0.6x",
        r,
        None if r is None else r >= 0.6,
        f"{r:.2f}x" if r else "",
    )
    k99 = v("throughput", karpor, "c=64", "p99")
    kp99 = v("throughput", "kubectl-proxy", "c=64", "p99")
    r = k99 / kp99 if k99 and kp99 else None
    check(
        "p99 at c=64 vs kubectl proxy",
        "≤ 0.25x",
        r,
        None if r is None else r <= 0.25,
        f"{r:.2f}x" if r else "",
    )
    k50 = v("latency", karpor, "c=1", "p50")
    kp50 = v("latency", "kubectl-proxy", "c=1", "p50")
    how = "wrk"
    if not k50:
        k50 = v("latency-py", karpor, "c=1", "p50")
        kp50 = v("latency-py", "kubectl-proxy", "c=1", "p50")
        how = "Python client, karpor with a client certificate"
    r = k50 / kp50 if k50 and kp50 else None
    check(
        "p50 at c=1 vs kubectl proxy",
        "≤ 1x",
        r,
        None if r is None else r <= 1,
        f"{r:.2f}x ({k50:.2f} vs {kp50:.2f} ms, {how})" if r and k50 and kp50 else "",
    )
    kcpu = v("throughput", karpor, "c=64", "cpu_us")
    for peer, label, bound in (
        ("kubectl-proxy", "kubectl proxy", 0.33),
        ("nginx-proxy", "nginx (moonshot)", 2.0),
    ):
        other = v("throughput", peer, "c=64", "cpu_us")
        r = kcpu / other if kcpu and other else None
        check(
            f"CPU per proxied GET at c=64 vs {label}",
            f"≤ {bound:g}x",
            r,
            None if r is None else r <= bound,
            f"{r:.2f}x ({kcpu:,.0f} vs {other:,.0f} µs)" if r and kcpu and other else "",
        )
    watch = [
        row
        for row in results.rows
        if row.workload == "watch" and row.peer == "karpor-1" and row.values
    ]
    if watch:
        big = max(watch, key=lambda row: int(row.params.split("=")[1]))
        kib = big.values.get("kib_per_stream")
        check(
            f"watch RSS per stream ({big.params})",
            "≤ 48 KiB",
            kib,
            None if kib is None else kib <= 48,
            _fmt(kib, " KiB"),
        )
        p99 = big.values.get("sparse_p99")
        direct = v("watch", "direct", big.params, "sparse_p99")
        check(
            f"watch event p99 while the watches are open ({big.params}; sparse: each update "
            "reaches a few of them)",
            "≤ 50 ms",
            p99,
            None if p99 is None else p99 <= 50,
            _fmt(p99, " ms") + (f" (simulator direct: {direct:,.2f} ms)" if direct else ""),
        )
        conns = big.values.get("upstream_conns")
        check(
            f"upstream connections for the watches ({big.params})",
            "≤ 100",
            conns,
            None if conns is None else conns <= 100,
            _fmt(conns),
        )
    else:
        check(
            "watch RSS per stream / event p99 / upstream connections",
            "≤ 48 KiB, ≤ 50 ms, ≤ 100",
            None,
            None,
        )
    ex = [row for row in results.rows if row.workload == "exec" and row.peer == "karpor-1"]
    mb = ex[0].values.get("mb_s") if ex else None
    check("exec stream", "≥ 200 MB/s", mb, None if mb is None else mb >= 200, _fmt(mb, " MB/s"))
    li = [row for row in results.rows if row.workload == "list" and row.peer == "karpor-1"]
    growth = li[0].values.get("rss_growth_mib") if li else None
    check(
        f"LIST ({li[0].params if li else '100 MB'}) RSS growth",
        "≤ 32 MiB",
        growth,
        None if growth is None else growth <= 32,
        _fmt(growth, " MiB"),
    )
    sweep = {row.params: row for row in results.rows if row.workload == "clusters"}
    oidc = v("latency-py", "karpor-1-oidc", "c=1", "cpu_us")
    cert = v("latency-py", "karpor-1", "c=1", "cpu_us")
    r = oidc / cert if oidc and cert else None
    check(
        "CPU per request, cached OIDC token vs client certificate (one Python client)",
        "≤ 1.1x",
        r,
        None if r is None else r <= 1.1,
        f"{r:.2f}x ({oidc:,.0f} vs {cert:,.0f} µs)" if r and oidc and cert else "",
    )
    first_sight = v("oidc", "karpor", "in-process", "first_us")
    check(
        "an ID token's first sight (signature and claims checked, in-process)",
        "measured",
        first_sight,
        None if first_sight is None else True,
        _fmt(first_sight, " µs"),
    )
    if sweep_counts:
        most = f"{max(sweep_counts)} clusters"
        fewest = f"{min(sweep_counts)} clusters"
        row = sweep.get(most)
        reload = row.values.get("reload_s") if row else None
        check(
            f"reload with {most}",
            "≤ 1 s",
            reload,
            None if reload is None else reload <= 1,
            _fmt(reload, " s"),
        )
        p_most = row.values.get("p50") if row else None
        first = sweep.get(fewest)
        p_few = first.values.get("p50") if first else None
        r = p_most / p_few if p_most and p_few and most != fewest else None
        check(
            f"per-request p50, {most} vs {fewest}",
            "≤ 1.2x (no growth; shared machine)",
            r,
            None if r is None else r <= 1.2,
            f"{r:.2f}x" if r else "",
        )
    _tunnel_targets(results, check)
    _fanout_watch_targets(results, check)
    _fanout_targets(results, check)
    _limits_targets(results, check)
    _recording_targets(results, check)
    _h2_targets(results, check)
    return out


def _fanout_targets(
    results: Results, check: Callable[[str, str, float | None, bool | None, str], None]
) -> None:
    """The fan-out's targets (issue 18): the fan-out LIST ÷ the slowest single-cluster LIST."""
    for count, limit in ((20, 1.5), (100, 3.0)):
        params = f"n={count}, 100 ms lists"
        fan = results.value("fanout", "fanout", params, "seconds")
        single = results.value("fanout", "single", params, "seconds")
        r = fan / single if fan and single else None
        check(
            f"fan-out LIST over {count} clusters vs the slowest single",
            f"≤ {limit:g}x",
            r,
            None if r is None else r <= limit,
            f"{r:.2f}x ({fan:.3f} s vs {single:.3f} s)" if r and fan and single else "",
        )
    rss = [r for r in results.rows if r.workload == "fanout-rss" and r.values]
    growth = rss[0].values.get("rss_growth_mib") if rss else None
    check(
        f"fan-out LIST RSS growth ({rss[0].params if rss else '20 clusters x 10 MB'})",
        "≤ 64 MiB",
        growth,
        None if growth is None else growth <= 64,
        _fmt(growth, " MiB"),
    )


def _tunnel_targets(
    results: Results, check: Callable[[str, str, float | None, bool | None, str], None]
) -> None:
    """The tunnel's targets (issue 16): through the agent ÷ directly through karpor."""
    v = results.value

    def ratio(workload: str, params: str, metric: str) -> tuple[float | None, str]:
        tunnel = v(workload, "karpor-tunnel", params, metric)
        direct = v(workload, "karpor-direct", params, metric)
        if not tunnel or not direct:
            return None, ""
        return tunnel / direct, f"{tunnel / direct:.2f}x ({tunnel:,.2f} vs {direct:,.2f})"

    r, shown = ratio("tunnel", "c=1", "p50")
    check(
        "tunnel: p50 of a small GET vs direct", "≤ 1.5x", r, None if r is None else r <= 1.5, shown
    )
    r, shown = ratio("tunnel", "c=64", "rps")
    check(
        "tunnel: throughput at c=64 vs direct", "≥ 0.6x", r, None if r is None else r >= 0.6, shown
    )
    exec_rows = [r for r in results.rows if r.workload == "tunnel-exec" and r.values]
    r, shown = ratio("tunnel-exec", exec_rows[0].params if exec_rows else "", "mb_s")
    check("tunnel: exec stream vs direct", "≥ 0.5x", r, None if r is None else r >= 0.5, shown)
    watch = [
        row
        for row in results.rows
        if row.workload == "tunnel-watch" and row.peer == "karpor-tunnel" and row.values
    ]
    kib = watch[0].values.get("kib_per_stream") if watch else None
    check(
        f"tunnel: gateway RSS per watch ({watch[0].params if watch else 'n=1000'}, one agent)",
        "≤ 48 KiB",
        kib,
        None if kib is None else kib <= 48,
        _fmt(kib, " KiB"),
    )


def _fanout_watch_targets(
    results: Results, check: Callable[[str, str, float | None, bool | None, str], None]
) -> None:
    """The merged watch's target (issue 18): p99 added over single-cluster watches."""
    merged = results.value("fanout-watch", "karpor-merged", "clusters=20", "p99")
    single = results.value("fanout-watch", "karpor-single", "clusters=20", "p99")
    added = merged - single if merged is not None and single is not None else None
    check(
        "fanout-watch: p99 event delivery added by a merged watch over 20 clusters",
        "≤ 50 ms",
        added,
        None if added is None else added <= 50,
        "" if added is None else f"{added:+.2f} ms ({merged:.2f} vs {single:.2f})",
    )


def _limits_targets(
    results: Results, check: Callable[[str, str, float | None, bool | None, str], None]
) -> None:
    """The limiter's cost per request (issue 20 asks for it measured, no
    bound): in-process, and with wrk side by side (noisier)."""
    v = results.value
    limited = v("limits-inproc", "karpor-limits", "in-process", "admit_us")
    plain = v("limits-inproc", "karpor", "in-process", "admit_us")
    wrk_limited = v("limits", "karpor-1-limits", "c=64", "cpu_us")
    wrk_plain = v("limits", "karpor-1", "c=64", "cpu_us")
    shown = ""
    if limited is not None and plain is not None:
        shown = f"admit + release {limited:.2f} µs, {limited - plain:+.2f} µs over no limits"
    if wrk_limited and wrk_plain:
        shown += (
            f"; wrk c=64, 1 worker: {wrk_limited / wrk_plain:.2f}x the CPU per request "
            f"({wrk_limited:,.0f} vs {wrk_plain:,.0f} µs)"
        )
    check(
        "limits: the limiter's cost per request (every limit set)",
        "measured",
        limited,
        None if limited is None else True,
        shown,
    )


def _recording_targets(
    results: Results, check: Callable[[str, str, float | None, bool | None, str], None]
) -> None:
    """Recording's target (issue 20): ≤ 10% more gateway CPU on an exec stream of text."""
    rows = [
        r
        for r in results.rows
        if r.workload == "recording" and r.values and r.params.startswith("text")
    ]
    params = rows[0].params if rows else ""
    recorded = results.value("recording", "karpor-recorded", params, "cpu_ms_per_mb")
    plain = results.value("recording", "karpor-plain", params, "cpu_ms_per_mb")
    r = recorded / plain if recorded and plain else None
    check(
        "recording: gateway CPU per exec MB (text) vs not recorded",
        "≤ 1.1x",
        r,
        None if r is None else r <= 1.1,
        f"{r:.2f}x ({recorded:.2f} vs {plain:.2f} ms/MB)" if r else "",
    )


def _h2_targets(
    results: Results, check: Callable[[str, str, float | None, bool | None, str], None]
) -> None:
    """HTTP/2's targets (issue 21): h2load against wrk, opening watches against kubectl proxy."""
    h2 = [r for r in results.rows if r.workload == "h2" and r.peer == "karpor-h2"]
    values = h2[0].values if h2 else {}
    r = values.get("rps_vs_h1")
    check(
        "HTTP/2 throughput (h2load 8x16) vs karpor's HTTP/1.1 at c=64 (wrk)",
        "≥ 1.5x",
        r,
        None if r is None else r >= 1.5,
        f"{r:.2f}x ({values['rps']:,.0f} req/s)" if r else "",
    )
    share = values.get("ok_share")
    check(
        "h2load answers 2xx",
        "100%",
        share,
        None if share is None else share == 1.0,
        f"{share:.2%}" if share is not None else "",
    )
    watch = [r for r in results.rows if r.workload == "h2-watch" and r.values]
    params = watch[0].params if watch else "n=10000"
    mine = results.value("h2-watch", "karpor-h2", params, "open_s")
    theirs = results.value("h2-watch", "kubectl-proxy", params, "open_s")
    r = mine / theirs if mine and theirs else None
    check(
        f"opening watches ({params}) from one HTTP/2 client vs kubectl proxy",
        "≤ 1x",
        r,
        None if r is None else r <= 1,
        f"{r:.2f}x ({mine:.2f} vs {theirs:.2f} s)" if r and mine and theirs else "",
    )
    kib = results.value("h2-watch", "karpor-h2", params, "kib_per_watch")
    check(
        f"RSS per watch over HTTP/2 ({params})",
        "≤ 24 KiB",
        kib,
        None if kib is None else kib <= 24,
        _fmt(kib, " KiB"),
    )


# ---- plots -------------------------------------------------------------------------------


def plots(results: Results, directory: Path) -> list[str]:
    """Write the PNG plots; their file names ([] when matplotlib is missing or no data)."""
    if not have_matplotlib():
        return []
    import importlib  # noqa: PLC0415

    matplotlib: Any = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    plt: Any = importlib.import_module("matplotlib.pyplot")

    written: list[str] = []
    lat = [r for r in results.rows if r.workload == "latency" and r.values]
    if lat:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        qs = ["p50", "p90", "p99", "p99.9"]
        width = 0.8 / len(lat)
        for i, row in enumerate(lat):
            xs = [j + i * width for j in range(len(qs))]
            ax.bar(xs, [row.values.get(q, 0.0) for q in qs], width, label=row.label)
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(qs))], qs)
        ax.set_ylabel("latency, ms (log)")
        ax.set_yscale("log")
        ax.set_title("Small GET at concurrency 1")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(directory / "latency.png", dpi=100)
        plt.close(fig)
        written.append("latency.png")
    thr = [r for r in results.rows if r.workload == "throughput" and r.values]
    if thr:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        for peer in dict.fromkeys(r.peer for r in thr):
            rows = [r for r in thr if r.peer == peer]
            cs = [int(r.params.split("=")[1]) for r in rows]
            ax1.plot(cs, [r.values["rps"] for r in rows], marker="o", label=rows[0].label)
            ax2.plot(cs, [r.values["p99"] for r in rows], marker="o", label=rows[0].label)
        for ax in (ax1, ax2):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("concurrent connections")
        ax1.set_ylabel("requests/s")
        ax2.set_ylabel("p99 latency, ms (log)")
        ax2.set_yscale("log")
        ax1.set_title("Throughput against concurrency")
        ax2.set_title("p99 against concurrency")
        ax1.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(directory / "throughput.png", dpi=100)
        plt.close(fig)
        written.append("throughput.png")
    return written


# ---- RESULTS.md --------------------------------------------------------------------------


def write(
    results: Results,
    facts: dict[str, str],
    karpor: str,
    path: Path,
    images: list[str],
    plots_note: str,
) -> None:
    """Write RESULTS.md."""
    lines = [
        "# karpor bench results",
        "",
        "Written by `python -m bench` (see `bench/README.md`). Ratios divide the row's figure "
        f"by the reference peer's at the same setting (`{karpor}` for karpor unless the column "
        "says otherwise); `—` where either is missing.",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "|---|---|",
        *(f"| {k} | {v} |" for k, v in facts.items()),
        "",
        "## Run",
        "",
        *(f"- {k}: {v}" for k, v in results.settings.items()),
        *(
            [
                "- measured (workload: date, mode): "
                + "; ".join(f"{k}: {v}" for k, v in sorted(results.measured.items()))
            ]
            if results.measured
            else []
        ),
        "",
        "## Peers",
        "",
        *(f"- **{k}**: {v}" for k, v in results.peers.items()),
        "",
        "## Targets (bench issue; karpor with N workers)",
        "",
        "| target | limit | measured | status |",
        "|---|---|---|---|",
        *(f"| {t.name} | {t.limit} | {t.measured} | {t.status} |" for t in results.targets),
        "",
    ]
    if LIMITS.exists():
        lines += [LIMITS.read_text().rstrip(), ""]
    for section in sections(karpor):
        body = table(results, section)
        if not body:
            continue
        lines += [f"## {section.title}", "", section.intro, "", *body, ""]
        lines += [f"- {note}" for note in results.notes.get(section.key, [])]
        if results.notes.get(section.key):
            lines.append("")
    lines += ["## Plots", ""]
    if images:
        lines += [f"![{name}]({name})" for name in images]
    else:
        lines.append(plots_note or "No plot data.")
    lines.append("")
    path.write_text("\n".join(lines))
