"""``karpor agent`` as a real process, for integration tests.

:func:`write_agent_credentials` writes an agent's credentials file with
``karpor agent-credentials``; :func:`agent_certificate` issues an agent
identity's certificate from the gateway CA (user
``system:karpor:agent:NAME``, group ``system:karpor:agents``) for tests
that open a tunnel by hand.  :func:`start_agent` runs ``karpor agent`` and
waits until it holds ``tunnels`` tunnels.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from karpor.auth.ca import CertificateAuthority
from support.procs import Process
from support.sim import karpor_command

AGENT_GROUP = "system:karpor:agents"
AGENT_USER_PREFIX = "system:karpor:agent:"


def agent_certificate(state_dir: Path, cluster: str) -> tuple[bytes, bytes, bytes]:
    """(gateway CA, certificate, key) PEM of agent identity ``cluster``, issued
    by the gateway CA in ``state_dir``."""
    ca = CertificateAuthority.load(state_dir)
    issued = ca.issue_client(f"{AGENT_USER_PREFIX}{cluster}", (AGENT_GROUP,))
    return ca.cert_pem, issued.cert_pem, issued.key_pem


def write_agent_credentials(state_dir: Path, cluster: str, server: str, out: Path) -> Path:
    """An agent credentials file for ``cluster`` at ``out`` (``karpor agent-credentials``)."""
    argv = [
        *karpor_command(),
        "agent-credentials",
        "--state-dir",
        str(state_dir),
        "--cluster",
        cluster,
        "--server",
        server,
        "-o",
        str(out),
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"karpor agent-credentials failed:\n{result.stderr}")
    return out


def start_agent(credentials: Path, kubeconfig: Path, tunnels: int = 1) -> Process:
    """Run ``karpor agent`` and wait until ``tunnels`` tunnels are up."""
    argv = [*karpor_command(), "agent", "--credentials", str(credentials)]
    process = Process([*argv, "--kubeconfig", str(kubeconfig)])
    try:
        for worker in range(tunnels):
            process.wait_for_line(rf"tunnel to \S+ up: worker {worker}/")
    except BaseException:
        process.stop()
        raise
    return process
