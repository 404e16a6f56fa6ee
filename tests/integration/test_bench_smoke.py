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


def test_quick_bench_produces_numbers(tmp_path):
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
            "latency,throughput,workers",
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
    text = (out / "RESULTS.md").read_text()
    assert "## Machine" in text
    direct = [
        line for line in text.splitlines() if line.startswith("| upstream (nginx TLS, direct) |")
    ]
    assert direct, text
    # a row with figures: at least one number after the peer and setting cells
    assert any(re.search(r"\| c=\d+ \| [\d,.]+ \|", line) for line in direct), direct
