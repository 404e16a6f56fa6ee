"""``karpor sim`` as a real process, for integration tests.

:func:`start_sim` runs ``karpor sim --clusters N --out DIR`` and waits for its
``ready`` line; the returned :class:`SimRun` lists each :class:`SimCluster`
with the endpoint, token and CA read back from the files the command wrote.
Always call :meth:`SimRun.stop` (the fixtures do, in a finalizer).
"""

from __future__ import annotations

import base64
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from support.procs import Process

_SERVING = re.compile(
    r"^serving (?P<name>\S+) (?P<endpoint>https://\S+) cluster=(?P<cluster>\S+) "
    r"kubeconfig=(?P<kubeconfig>\S+) cert-kubeconfig=(?P<cert>\S+)$"
)


@dataclass(frozen=True)
class SimCluster:
    """One simulated cluster as ``karpor sim`` described it."""

    name: str
    endpoint: str
    cluster_file: Path
    kubeconfig: Path
    cert_kubeconfig: Path
    token: str = field(repr=False)
    ca_pem: bytes = field(repr=False)

    @property
    def host(self) -> str:
        """The host of the endpoint."""
        return self.endpoint.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        """The port of the endpoint."""
        return int(self.endpoint.rsplit(":", 1)[1])

    def ca_file(self) -> Path:
        """The CA written next to the kubeconfig (created on first use)."""
        path = self.kubeconfig.with_name(f"{self.name}-ca.crt")
        if not path.exists():
            path.write_bytes(self.ca_pem)
        return path


@dataclass
class SimRun:
    """A running ``karpor sim`` process and its clusters."""

    process: Process
    out: Path
    clusters: list[SimCluster]

    def stop(self) -> None:
        """Stop the process (idempotent)."""
        self.process.stop()

    def __getitem__(self, name: str) -> SimCluster:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        raise KeyError(name)


def karpor_command() -> list[str]:
    """How to run ``karpor`` from the test interpreter's environment."""
    script = Path(sys.executable).with_name("karpor")
    if script.exists():
        return [str(script)]
    found = shutil.which("karpor")
    if found:
        return [found]
    return [sys.executable, "-m", "karpor.cli"]


def start_sim(out: Path, clusters: int = 1, *extra: str, token: str | None = None) -> SimRun:
    """Run ``karpor sim`` writing into ``out`` and wait until it serves."""
    argv = [*karpor_command(), "sim", "--clusters", str(clusters), "--out", str(out), *extra]
    if token is not None:
        argv += ["--token", token]
    process = Process(argv)
    try:
        process.wait_for_line(r"^ready: ")
        found = []
        for line in process.lines:
            match = _SERVING.match(line)
            if match:
                found.append(_read_cluster(match))
    except BaseException:
        process.stop()
        raise
    return SimRun(process, out, found)


def _read_cluster(match: re.Match[str]) -> SimCluster:
    cluster_file = Path(match["cluster"])
    document: dict[str, Any] = yaml.safe_load(cluster_file.read_text())
    access = document["spec"]["access"]
    return SimCluster(
        name=match["name"],
        endpoint=match["endpoint"],
        cluster_file=cluster_file,
        kubeconfig=Path(match["kubeconfig"]),
        cert_kubeconfig=Path(match["cert"]),
        token=access["credential"]["serviceAccountToken"],
        ca_pem=base64.b64decode(access["caBundle"]),
    )
