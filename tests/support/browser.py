"""Headless Chromium, driven from its command line (no Python dependency).

:func:`dump_dom` loads a page, lets its scripts run for a budget of virtual
time and returns the DOM as HTML, saving a PNG of the page when asked.  It runs
Chromium without a sandbox (tests run as root in CI), GPU, QUIC, first-run
chores or network services of its own, with a profile directory of the
test's.  Tests skip when Debian's ``chromium`` is not installed
(``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

#: flags of every run
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
#: seconds a run may take (a safety net on a shared machine)
TIMEOUT = 90.0


def chromium() -> str:
    """The Chromium binary (the test skips when there is none)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("chromium is not installed (.ci/run installs Debian's chromium)")


def _run(profile: Path, *args: str) -> str:
    argv = [chromium(), *FLAGS, f"--user-data-dir={profile}", *args]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    if result.returncode != 0:
        raise AssertionError(f"chromium failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return result.stdout


def dump_dom(
    url: str,
    profile: Path,
    *,
    screenshot: Path | None = None,
    size: tuple[int, int] = (1280, 900),
    budget_ms: int = 1500,
) -> str:
    """The DOM of ``url`` after ``budget_ms`` of virtual time (its scripts
    ran); with ``screenshot``, a PNG of the page in a ``size`` window too
    (the same run)."""
    args = [f"--virtual-time-budget={budget_ms}", f"--window-size={size[0]},{size[1]}"]
    if screenshot is not None:
        args.append(f"--screenshot={screenshot}")
    dom = _run(profile, *args, "--dump-dom", url)
    if screenshot is not None and not screenshot.exists():
        raise AssertionError(f"chromium wrote no screenshot to {screenshot}")
    return dom
