"""The status page's HTML, rendered from the ``/status.json`` document (sans-IO).

:func:`overview` (``/``) and :func:`cluster_page` (``/clusters/NAME``)
render the document :meth:`karpor.status.board.StatusBoard.document` builds;
``static/status.js`` renders the same markup again from ``/status.json``
every few seconds (keep the two in step).  Every text that comes from the
document is escaped (:func:`html.escape`, quotes included): cluster names,
labels and probe messages are admin input or error text.  The page works
without JavaScript (it is then as of its load) and without any external
resource: its stylesheet and script come from the same listener, which
forbids everything else (``Content-Security-Policy``:
:mod:`karpor.status.resource`).
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

#: the page title
TITLE = "Karpor fleet status"
#: a chart's size in CSS pixels
CHART_WIDTH = 160
CHART_HEIGHT = 36
#: shown for a figure that is not known
NONE = "—"


def esc(value: object) -> str:
    """``value`` as HTML text (quotes escaped: safe in attributes too)."""
    return html.escape(str(value), quote=True)


def cluster_href(name: str) -> str:
    """The link to a cluster's page (the name percent-encoded)."""
    return "/clusters/" + quote(name, safe="")


def fmt_rate(value: float | None) -> str:
    """Per second, as the tables show it."""
    if value is None:
        return NONE
    return f"{value:.2f}/s" if value < 100 else f"{value:.0f}/s"


def fmt_seconds(value: float | None) -> str:
    """A latency: milliseconds below a second."""
    if value is None:
        return NONE
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def fmt_bytes(value: int | None) -> str:
    """Bytes in MiB."""
    return NONE if value is None else f"{value / 1048576:.1f} MiB"


def fmt_time(value: str | None) -> str:
    """An RFC 3339 time as a ``<time>`` element."""
    if not value:
        return NONE
    return f'<time datetime="{esc(value)}">{esc(value.replace("T", " "))}</time>'


def fmt_ratio(value: float | None) -> str:
    """A share as a percentage."""
    return NONE if value is None else f"{value * 100:.1f}%"


def _health_badge(health: str) -> str:
    text = {"healthy": "✓ Healthy", "unhealthy": "✗ Unhealthy"}.get(health, "? Unknown")
    return f'<span class="badge {esc(health)}">{esc(text)}</span>'


def reach_text(cluster: Mapping[str, Any]) -> str:
    """How a cluster is reached, as one line of text."""
    agent = cluster.get("agent")
    if cluster.get("reach") != "tunnel" or not isinstance(agent, Mapping):
        return "direct"
    if not agent.get("connected"):
        return "tunnel, no agent connected"
    since = agent.get("since") or "?"
    version = agent.get("version") or "?"
    return f"tunnel, agent {version} connected since {since.replace('T', ' ')}"


def chart(points: Sequence[Mapping[str, Any]], keys: Sequence[str], label: str, unit: str) -> str:
    """An inline SVG line chart of ``points``' ``keys`` (one line each)."""
    values = [p.get(k) for p in points for k in keys]
    numbers = [v for v in values if isinstance(v, int | float)]
    top = max(numbers, default=0.0)
    last = points[-1].get(keys[-1]) if points else None
    if not numbers:
        summary = f"{label}: no data yet"
    else:
        shown = fmt_seconds(last) if unit == "s" else fmt_rate(last)
        peak = fmt_seconds(top) if unit == "s" else fmt_rate(top)
        summary = f"{label}: now {shown}, peak {peak}"
    lines = []
    for key in keys:
        coords = _coords([p.get(key) for p in points], top)
        if coords:
            lines.append(f'<polyline class="line {esc(key)}" points="{coords}"></polyline>')
    return (
        f'<svg class="chart" viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" width="{CHART_WIDTH}" '
        f'height="{CHART_HEIGHT}" role="img" aria-label="{esc(summary)}">'
        f"<title>{esc(summary)}</title>"
        f'<line class="axis" x1="0" y1="{CHART_HEIGHT - 1}" x2="{CHART_WIDTH}" '
        f'y2="{CHART_HEIGHT - 1}"></line>' + "".join(lines) + "</svg>"
    )


def _coords(values: Sequence[object], top: float) -> str:
    """Polyline points for ``values`` scaled into the chart (``None`` skipped)."""
    n = len(values)
    if n == 0:
        return ""
    scale = top if top > 0 else 1.0
    out = []
    for i, v in enumerate(values):
        if not isinstance(v, int | float):
            continue
        x = CHART_WIDTH * (i / (n - 1) if n > 1 else 1.0)
        y = (CHART_HEIGHT - 2) * (1 - v / scale) + 1
        out.append(f"{x:.1f},{y:.1f}")
    if len(out) == 1:
        level = out[0].split(",")[1]
        out = [f"0.0,{level}", f"{CHART_WIDTH:.1f},{level}"]
    return " ".join(out)


def _table(
    table_id: str, caption: str, heads: Sequence[str], rows: Iterable[str], empty: str
) -> str:
    body = "".join(rows)
    if not body:
        body = f'<tr><td colspan="{len(heads)}" class="empty">{esc(empty)}</td></tr>'
    head = "".join(f'<th scope="col">{esc(h)}</th>' for h in heads)
    return (
        f'<div class="scroll"><table id="{table_id}"><caption>{esc(caption)}</caption>'
        f"<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"
    )


CLUSTER_HEADS = (
    "Cluster",
    "Health",
    "Version",
    "Reached",
    "Last probe",
    "Requests",
    "Errors",
    "p50",
    "p99",
    "Watches",
    "Sessions",
    "Requests/s, 5 min",
)


def _cluster_row(c: Mapping[str, Any]) -> str:
    w5 = c["windows"]["5m"]
    name = c["name"]
    display = c.get("displayName") or ""
    sub = f'<span class="sub">{esc(display)}</span>' if display else ""
    message = c.get("message") or ""
    return (
        f'<tr class="health-{esc(c["health"])}" data-cluster="{esc(name)}" '
        f'data-health="{esc(c["health"])}">'
        f'<th scope="row"><a href="{esc(cluster_href(name))}">{esc(name)}</a>{sub}</th>'
        f"<td>{_health_badge(c['health'])}</td>"
        f"<td>{esc(c.get('version') or NONE)}</td>"
        f"<td>{esc(reach_text(c))}</td>"
        f'<td>{fmt_time(c.get("lastProbe"))}<span class="sub">{esc(message)}</span></td>'
        f'<td class="num">{fmt_rate(w5["rate"])}</td>'
        f'<td class="num">{fmt_rate(w5["errorRate"])}</td>'
        f'<td class="num">{fmt_seconds(w5["p50"])}</td>'
        f'<td class="num">{fmt_seconds(w5["p99"])}</td>'
        f'<td class="num">{esc(c["watches"])}</td>'
        f'<td class="num">{esc(c["sessions"])}</td>'
        f"<td>{chart(c['series']['5m'], ('rate',), 'Requests per second, 5 minutes', '/s')}</td>"
        "</tr>"
    )


def _problems(problems: Sequence[Mapping[str, Any]], caption: str) -> str:
    rows = (
        f"<tr><td>{fmt_time(p['time'])}</td><td>{esc(p['kind'])}</td>"
        f"<td>{_cluster_link(p.get('cluster') or '')}</td><td>{esc(p['message'])}</td></tr>"
        for p in problems
    )
    return _table(
        "problems", caption, ("Time", "Kind", "Cluster", "Message"), rows, "No problems seen."
    )


def _cluster_link(name: str) -> str:
    if not name:
        return NONE
    return f'<a href="{esc(cluster_href(name))}">{esc(name)}</a>'


def _gateway(g: Mapping[str, Any]) -> str:
    workers = _table(
        "workers",
        "Worker processes",
        ("Slot", "PID", "Generation", "State", "Restarts", "Memory (RSS)"),
        (
            f'<tr><td class="num">{esc(w["slot"])}</td><td class="num">{esc(w["pid"])}</td>'
            f'<td class="num">{esc(w["generation"])}</td><td>{esc(w["state"])}</td>'
            f'<td class="num">{esc(w["restarts"])}</td>'
            f'<td class="num">{fmt_bytes(w["rssBytes"])}</td></tr>'
            for w in g["workers"]
        ),
        "No worker process.",
    )
    reload = g["reload"]
    readable = reload["directoryReadable"]
    config_rows = [
        ("Reload generation", esc(reload["generation"])),
        ("Reloads (all workers)", esc(reload["reloads"])),
        ("Reloads with problems", esc(reload["reloadErrors"])),
        ("Clusters directory", _readable(readable)),
        ("Worker restarts", esc(g["restarts"])),
        ("Rolling restarts", esc(g["rollingRestarts"])),
        ("Crash-looping slots", esc(", ".join(str(s) for s in g["crashLooping"]) or "none")),
    ]
    config = _table(
        "reload",
        "Configuration and processes",
        ("What", "Value"),
        (f'<tr><th scope="row">{esc(k)}</th><td>{v}</td></tr>' for k, v in config_rows),
        "",
    )
    problems = "".join(f"<li>{esc(p)}</li>" for p in reload["problems"])
    reload_problems = (
        f'<h3 id="h-reload-problems">Last reload problems</h3><ul class="problems">{problems}</ul>'
        if problems
        else ""
    )
    rejected = _table(
        "rejected",
        "Rejected requests by reason",
        ("Reason", "Last 5 min", "Total"),
        (
            f'<tr><th scope="row">{esc(r["reason"])}</th><td class="num">{esc(r["last5m"])}</td>'
            f'<td class="num">{esc(r["total"])}</td></tr>'
            for r in g["rejected"]
        ),
        "None.",
    )
    certs = _table(
        "certificates",
        "Certificates",
        ("Certificate", "Expires", "Days left"),
        (
            f'<tr><th scope="row">{esc(c["name"])}</th><td>{fmt_time(c["notAfter"])}'
            f'{esc(c["problem"])}</td><td class="num{_soon(c["daysLeft"])}">'
            f"{esc(NONE if c['daysLeft'] is None else c['daysLeft'])}</td></tr>"
            for c in g["certificates"]
        ),
        "Unknown.",
    )
    streams = _table(
        "streams",
        "Long-running requests open",
        ("Kind", "Open"),
        (
            f'<tr><th scope="row">{esc(k)}</th><td class="num">{esc(v)}</td></tr>'
            for k, v in g["streams"].items()
        ),
        "None.",
    )
    return (
        '<section aria-labelledby="h-gateway"><h2 id="h-gateway">Gateway</h2>'
        f'<div class="grid">{workers}{config}{rejected}{certs}{streams}</div>{reload_problems}'
        "</section>"
    )


def _readable(readable: bool | None) -> str:
    if readable is None:
        return NONE
    return "readable" if readable else "NOT readable"


def _soon(days: float | None) -> str:
    return " warn" if days is not None and days < 30 else ""


def _overview_main(doc: Mapping[str, Any]) -> str:
    rows = (_cluster_row(c) for c in doc["clusters"])
    clusters = _table(
        "clusters",
        "Clusters: health, and traffic over the last 5 minutes",
        CLUSTER_HEADS,
        rows,
        "No cluster defined.",
    )
    return (
        '<section aria-labelledby="h-clusters"><h2 id="h-clusters">Clusters</h2>'
        f"{clusters}</section>"
        + _gateway(doc["gateway"])
        + '<section aria-labelledby="h-problems"><h2 id="h-problems">Problems</h2>'
        + _problems(doc["problems"], "The last problems, newest first")
        + "</section>"
    )


def _cluster_main(doc: Mapping[str, Any], name: str) -> str:
    c = next((c for c in doc["clusters"] if c["name"] == name), None)
    back = '<p><a href="/">← All clusters</a></p>'
    if c is None:
        return (
            f'{back}<section aria-labelledby="h-cluster"><h2 id="h-cluster">{esc(name)}</h2>'
            '<p class="empty">No cluster of that name is defined.</p></section>'
        )
    labels = ", ".join(f"{k}={v}" for k, v in sorted(c["labels"].items()))
    details = [
        ("Health", _health_badge(c["health"])),
        ("Display name", esc(c["displayName"] or NONE)),
        ("Provider", esc(c["provider"] or NONE)),
        ("Labels", esc(labels or NONE)),
        ("Endpoint", esc(c["endpoint"] or NONE)),
        ("Reached", esc(reach_text(c))),
        ("Version", esc(c["version"] or NONE)),
        ("Last probe", fmt_time(c["lastProbe"])),
        ("Probe message", esc(c["message"] or NONE)),
        ("Open watches", esc(c["watches"])),
        ("Open sessions", esc(c["sessions"])),
    ]
    table = _table(
        "details",
        "Cluster details",
        ("What", "Value"),
        (f'<tr><th scope="row">{esc(k)}</th><td>{v}</td></tr>' for k, v in details),
        "",
    )
    traffic_rows = []
    for label in ("5m", "60m"):
        w = c["windows"][label]
        s = c["series"][label]
        traffic_rows.append(
            f'<tr><th scope="row">{esc(label)}</th><td class="num">{esc(w["requests"])}</td>'
            f'<td class="num">{fmt_rate(w["rate"])}</td>'
            f'<td class="num">{fmt_rate(w["errorRate"])}</td>'
            f'<td class="num">{fmt_ratio(w["errorRatio"])}</td>'
            f'<td class="num">{fmt_seconds(w["p50"])}</td>'
            f'<td class="num">{fmt_seconds(w["p99"])}</td>'
            f"<td>{chart(s, ('rate',), f'Requests per second, {label}', '/s')}</td>"
            f"<td>{chart(s, ('errorRate',), f'Errors per second, {label}', '/s')}</td>"
            f"<td>{chart(s, ('p50', 'p99'), f'Latency p50 and p99, {label}', 's')}</td></tr>"
        )
    traffic = _table(
        "traffic",
        "Traffic over the last 5 and 60 minutes",
        (
            "Window",
            "Requests",
            "Req/s",
            "Errors/s",
            "Error ratio",
            "p50",
            "p99",
            "Requests/s",
            "Errors/s",
            "Latency p50, p99",
        ),
        traffic_rows,
        "",
    )
    problems = [p for p in doc["problems"] if p.get("cluster") == name]
    return (
        f'{back}<section aria-labelledby="h-cluster" class="health-{esc(c["health"])}" '
        f'data-cluster="{esc(name)}" data-health="{esc(c["health"])}">'
        f'<h2 id="h-cluster">{esc(name)}</h2>{table}</section>'
        f'<section aria-labelledby="h-traffic"><h2 id="h-traffic">Traffic</h2>{traffic}</section>'
        '<section aria-labelledby="h-problems"><h2 id="h-problems">Problems</h2>'
        + _problems(problems, f"The last problems of {name}, newest first")
        + "</section>"
    )


def _page(doc: Mapping[str, Any], view: str, name: str, main: str) -> str:
    heading = TITLE if view == "overview" else f"{name} · {TITLE}"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="color-scheme" content="light dark">'
        f"<title>{esc(heading)}</title>"
        '<link rel="stylesheet" href="/static/status.css">'
        '<script src="/static/status.js" defer></script></head>'
        f'<body data-view="{esc(view)}" data-cluster="{esc(name)}">'
        f'<header><h1><a href="/">{esc(TITLE)}</a></h1>'
        f'<p id="updated" aria-live="polite">Sampled {fmt_time(doc.get("sampledAt"))}; '
        f"refreshes every {esc(int(doc.get('sampleInterval', 5)))} s</p></header>"
        f'<main id="content">{main}</main></body></html>'
    )


def overview(doc: Mapping[str, Any]) -> str:
    """``/``: every cluster, the gateway, the last problems."""
    return _page(doc, "overview", "", _overview_main(doc))


def cluster_page(doc: Mapping[str, Any], name: str) -> str:
    """``/clusters/NAME``: one cluster's details, traffic charts and problems."""
    return _page(doc, "cluster", name, _cluster_main(doc, name))
