"""An agent's credentials (issue 16) at the session gateway, through kubectl.

``karpor agent-credentials`` writes a kubeconfig that kubectl reads as is;
with it kubectl reaches no cluster and no gateway path: the agent identity
opens tunnels and nothing else, also without a policy file (where every
other authenticated caller may do everything).  ``karpor revoke`` revokes it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from support.gateway import GatewayRun
from support.kubectl import Kubectl
from support.waits import wait_for

from karpor.cli import main

pytest_plugins = ("support.gateway",)

PROXY = "/apis/cluster.karpor.io/v1beta1/clusters"


def _karpor(*argv: str) -> None:
    """Run a ``karpor`` command in process (its start-up costs seconds on a busy machine)."""
    assert main(list(argv)) == 0


def test_an_agents_credentials_reach_nothing_through_kubectl(
    gateway: GatewayRun, kubectl_bins: dict[str, Path], tmp_path: Path
) -> None:
    binary = kubectl_bins.get("1.33") or kubectl_bins.get("path")
    if binary is None:
        pytest.skip("no kubectl on this machine")
    agent_file = tmp_path / "sim-1.agent"
    _karpor(
        "agent-credentials", "--state-dir", str(gateway.state_dir), "--cluster", "sim-1",
        "--server", gateway.url, "-o", str(agent_file),
    )  # fmt: skip
    kubectl = Kubectl(binary, agent_file)
    for path in (
        f"{PROXY}/sim-1/proxy/api/v1/namespaces",
        f"{PROXY}/sim-1",
        PROXY,  # not even the list of clusters
        "/metrics",
        "/healthz?verbose",
    ):
        denied = kubectl.run("get", "--raw", path, check=False)
        assert denied.returncode != 0
        assert "Forbidden" in denied.stderr or "forbidden" in denied.stderr, denied.stderr
    # revoked: not even authenticated any more (within a second)
    _karpor("revoke", "--state-dir", str(gateway.state_dir), "--user", "system:karpor:agent:sim-1")

    def refused() -> subprocess.CompletedProcess[str] | None:
        result = kubectl.run("get", "--raw", PROXY, check=False)
        return result if "Unauthorized" in result.stderr else None

    after = wait_for(refused, 5.0, "the revoked agent refused")
    assert after is not None and "Unauthorized" in after.stderr, after
