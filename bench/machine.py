"""The machine a run measures on, the tools it needs, and installing them.

wrk and nginx come from the distribution's packages (``--install`` runs
``apt-get install -y wrk nginx`` as root, and ``nghttp2-client`` for h2load,
which workload 13 needs); kubectl from PATH or the Cloud
SDK's ``kubectl.1.NN``; matplotlib (for the PNG plots, optional) is looked
for in the running Python and in ``bench/.deps`` (``--install`` puts it
there with ``pip install --target``, never into the project's venv).
"""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from bench.peers import find_kubectl

DEPS = Path(__file__).resolve().parent / ".deps"
APT_PACKAGES = ("wrk", "nginx")
#: packages of workloads that report "not measured" without them: h2load (workload 13)
OPTIONAL_PACKAGES = {"nghttp2-client": "h2load"}


def use_deps() -> None:
    """Make ``bench/.deps`` importable (matplotlib installed by ``--install``)."""
    if DEPS.is_dir() and str(DEPS) not in sys.path:
        sys.path.append(str(DEPS))


def have_matplotlib() -> bool:
    """Whether matplotlib can be imported (after :func:`use_deps`)."""
    use_deps()
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        return False
    return True


def missing_tools() -> list[str]:
    """The required Debian packages whose binaries are not found."""
    found = {"wrk": shutil.which("wrk"), "nginx": shutil.which("nginx") or _sbin("nginx")}
    return [name for name in APT_PACKAGES if not found[name]]


def missing_optional() -> list[str]:
    """The optional Debian packages whose binaries are not found."""
    return [name for name, binary in OPTIONAL_PACKAGES.items() if not shutil.which(binary)]


def _sbin(name: str) -> str | None:
    path = Path("/usr/sbin") / name
    return str(path) if path.exists() else None


def install(packages: list[str], plots: bool) -> list[str]:
    """Install what is missing; the problems (empty when all went well)."""
    problems: list[str] = []
    if packages:
        if os.geteuid() != 0:
            problems.append(f"not root: run `sudo apt-get install -y {' '.join(packages)}`")
        else:
            for argv in (["apt-get", "update"], ["apt-get", "install", "-y", *packages]):
                done = subprocess.run(
                    argv, capture_output=True, text=True, timeout=600, check=False
                )
                if done.returncode != 0:
                    problems.append(f"{' '.join(argv)} failed: {done.stderr.strip()[-300:]}")
                    break
    if plots and not have_matplotlib():
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--target",
                str(DEPS),
                "matplotlib",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if done.returncode != 0:
            problems.append(f"pip install matplotlib failed: {done.stderr.strip()[-300:]}")
    return problems


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def facts() -> dict[str, str]:
    """What the results depend on, for RESULTS.md."""
    kubectl = find_kubectl()
    kubectl_version = _first_line([str(kubectl), "version", "--client"]) if kubectl else "not found"
    nginx = shutil.which("nginx") or _sbin("nginx")
    wrk = shutil.which("wrk")
    h2load = shutil.which("h2load")
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 0
    return {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "CPUs": str(cpus),
        "CPU model": cpu_model(),
        "kernel": f"{platform.system()} {platform.release()}",
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "twisted": _version("twisted"),
        "pyopenssl": _version("pyopenssl"),
        "cryptography": _version("cryptography"),
        "httptools": _version("httptools"),
        "h2": _version("h2"),
        "karpor": _version("karpor"),
        "kubectl": f"{kubectl} ({kubectl_version})" if kubectl else "not found",
        "nginx": _first_line([nginx, "-v"]) if nginx else "not found",
        "wrk": _first_line([wrk, "-v"]) if wrk else "not found",
        "h2load": _first_line([h2load, "--version"]) if h2load else "not found",
    }
