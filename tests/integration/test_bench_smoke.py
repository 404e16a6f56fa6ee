"""A tiny run of the bench suite (``python -m bench --quick``): it produces numbers.

Never a timed assertion: the figures of a shared machine say nothing here.
Skipped, with the reason, only when wrk or nginx is missing and cannot be
installed (``--install`` installs them as root with apt-get).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tools_missing() -> list[str]:
    return [
        name
        for name in ("wrk", "nginx")
        if not (shutil.which(name) or Path("/usr/sbin", name).exists())
    ]


def _quick_run(tmp_path: Path, only: str) -> str:
    """``python -m bench --quick --only ONLY``; the RESULTS.md it wrote (skips without tools)."""
    missing = _tools_missing()
    if missing and os.geteuid() != 0:
        pytest.skip(f"{', '.join(missing)} not installed and not root to apt-get install them")
    out = tmp_path / "results"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--install",
            "--no-plots",
            "--out",
            str(out),
            "--only",
            only,
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    if done.returncode == 2 and "missing" in done.stderr:
        pytest.skip(f"bench tools could not be installed: {done.stderr.strip()[-300:]}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return (out / "RESULTS.md").read_text()


def test_quick_bench_produces_numbers(tmp_path):
    text = _quick_run(tmp_path, "latency,throughput,workers")
    assert "## Machine" in text
    direct = [
        line for line in text.splitlines() if line.startswith("| upstream (nginx TLS, direct) |")
    ]
    assert direct, text
    # a row with figures: at least one number after the peer and setting cells
    assert any(re.search(r"\| c=\d+ \| [\d,.]+ \|", line) for line in direct), direct


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_quick_watch_bench_produces_sparse_and_broadcast_numbers(tmp_path):
    text = _quick_run(tmp_path, "watch")
    section = text.split("## 3. Concurrent watches", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = _cells(lines[0])
    rows = {_cells(line)[0]: _cells(line) for line in lines[2:]}
    for label in ("simulator (direct)", "karpor, 1 worker"):
        assert label in rows, section
        for column in (
            "sparse event p50 ms",
            "sparse event p99 ms",
            "broadcast event p50 ms",
            "broadcast event p99 ms",
        ):
            cell = rows[label][header.index(column)]
            assert re.fullmatch(r"[\d,.]+", cell), (label, column, section)
    assert re.search(r"\| karpor, 1 worker \| n=\d+ \|.* \| 100% \|", section), section
    target = [line for line in text.splitlines() if line.startswith("| watch event p99 while")]
    assert target and "sparse" in target[0] and "| — |" not in target[0], target


def _table(text: str, title: str) -> tuple[list[str], dict[str, list[str]]]:
    """The header and the rows (by their first two cells) of the table under ``## title``."""
    section = text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    rows = {" ".join(_cells(line)[:2]): _cells(line) for line in lines[2:]}
    return _cells(lines[0]), rows


def test_quick_tunnel_bench_compares_the_tunnel_with_direct(tmp_path):
    """Workload 8: the same simulated cluster through the gateway directly and
    through ``karpor agent``, side by side, with the tunnel's targets."""
    text = _quick_run(tmp_path, "tunnel")
    number = re.compile(r"-?[\d,.]+")
    direct, tunnel = "karpor → simulator (endpoint)", "karpor → agent → simulator (tunnel)"
    header, rows = _table(text, "8. Through a tunnel: a small GET")
    for c in ("c=1", "c=64"):
        for label in (direct, tunnel):
            row = rows[f"{label} {c}"]
            for column in ("p50 ms", "req/s", "gateway CPU µs/req", "agent CPU µs/req"):
                assert number.fullmatch(row[header.index(column)]), (label, c, column, text)
        assert rows[f"{direct} {c}"][header.index("p50 ÷ direct")] == "1.00x"
    header, rows = _table(text, "8b. Through a tunnel: exec stream")
    for label in (direct, tunnel):
        row = next(row for key, row in rows.items() if key.startswith(label))
        assert number.fullmatch(row[header.index("MB/s")]), (label, text)
    header, rows = _table(text, "8c. Through a tunnel: concurrent watches")
    row = next(row for key, row in rows.items() if key.startswith(tunnel))
    assert number.fullmatch(row[header.index("gateway KiB/stream")]), text
    assert row[header.index("sparse delivered")] == "100%", text
    targets = [line for line in text.splitlines() if line.startswith("| tunnel: ")]
    assert len(targets) == 4, targets
    assert all(_cells(line)[-1] in ("met", "missed") for line in targets), targets
