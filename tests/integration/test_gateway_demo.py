"""``twistd -n karpor --demo``: the README's first command works as printed.

The demo runs as a real process in a scratch working directory; the line it
prints is run as given (kubectl on PATH, or the newest of the matrix).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from support.gateway import twistd_command
from support.procs import Process, free_port

pytestmark = pytest.mark.kubectl


def test_demo_prints_a_working_kubectl_line(tmp_path: Path, kubectl_bins: dict[str, Path]):
    binary = next(
        (kubectl_bins[k] for k in ("path", "1.33", "1.30", "1.27") if k in kubectl_bins), None
    )
    if binary is None:
        pytest.skip("no kubectl found")
    port = free_port()
    argv = [*twistd_command(), "-n", "--pidfile=", "karpor", "--demo", "--port", str(port)]
    with Process(argv, cwd=tmp_path) as demo:
        match = demo.wait_for_line(r"^\s+(kubectl --kubeconfig \S+ --context sim-1 get pods -A)$")
        words = shlex.split(match[1])
        assert words[2] == "karpor-demo/admin.kubeconfig"
        env = {**os.environ, "KUBECACHEDIR": str(tmp_path / ".kube-cache")}

        def kubectl(*args: str) -> str:
            result = subprocess.run(
                [str(binary), *args],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            assert result.returncode == 0, result.stderr
            return result.stdout

        pods = kubectl(*words[1:])
        assert pods.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
        assert "hello" in pods
        kubeconfig = words[2]
        clusters = kubectl("--kubeconfig", kubeconfig, "--context", "karpor", "get", "clusters")
        assert [line.split()[0] for line in clusters.splitlines()[1:]] == ["sim-1", "sim-2"]
        sim2 = kubectl("--kubeconfig", kubeconfig, "--context", "sim-2", "get", "namespaces")
        assert "kube-system" in sim2
        # the fan-out context: one table over both clusters, with their names
        every = kubectl("--kubeconfig", kubeconfig, "--context", "all", "get", "namespaces")
        rows = [line.split() for line in every.splitlines()]
        assert rows[0][0] == "CLUSTER"
        assert {"sim-1", "sim-2"} <= {row[0] for row in rows[1:] if "kube-system" in row}
        assert f"serving https://127.0.0.1:{port}" in demo.output
    assert (tmp_path / "karpor-demo" / "admin.kubeconfig").stat().st_mode & 0o077 == 0
    assert (tmp_path / "karpor-demo" / "ca.key").stat().st_mode & 0o077 == 0
