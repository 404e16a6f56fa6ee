"""Without a policy file (issue 14, items 4, 14 and 17): what the session
gateway (no ``authorization.policyFile``) does with a caller's impersonation,
unknown clusters and its verbose health.

``kubectl --as`` / ``--as-group`` must reach the cluster as the identity
asked for (the cluster decides), never silently as the cluster's own
credential; unknown clusters stay 404 for an authenticated caller; the
verbose health report needs credentials.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.gateway import GatewayRun, client_context, credentials_of, request
from support.kubectl import Kubectl

#: the gateway fixtures (gateway, gateway_clusters_dir, gateway_kubeconfig), registered
#: once for the session however many modules name them
pytest_plugins = ("support.gateway",)

PROXY = "/apis/cluster.karpor.io/v1beta1/clusters"
ALIAS = "/apis/cluster.core.oam.dev/v1alpha1/clustergateways"


def _kubectl(kubectl_bins: dict[str, Path], kubeconfig: Path) -> Kubectl:
    # auth whoami needs kubectl >= 1.28
    binary = kubectl_bins.get("1.33") or kubectl_bins.get("path")
    if binary is None:
        pytest.skip("no kubectl >= 1.28 on this machine")
    return Kubectl(binary, kubeconfig)


def _whoami(kubectl: Kubectl, *args: str) -> dict[str, object]:
    out = kubectl.out("auth", "whoami", "-o", "json", "--context", "sim-1", *args)
    info: dict[str, object] = json.loads(out)["status"]["userInfo"]
    return info


def test_kubectl_as_reaches_the_cluster_as_the_identity_asked_for(
    gateway: GatewayRun, gateway_kubeconfig: Path, kubectl_bins: dict[str, Path]
) -> None:
    kubectl = _kubectl(kubectl_bins, gateway_kubeconfig)
    # sim-1 has no spec.impersonate: without --as it sees the gateway's credential
    # (whoami is the gateway's answer about the caller; issue 17)
    own = _whoami(kubectl)
    assert own["extra"] == {
        "karpor.io/cluster": ["sim-1"],
        "karpor.io/cluster-identity": ["credential"],
    }
    jane = _whoami(kubectl, "--as=jane")
    assert jane["username"] == "jane" != own["username"]
    assert "system:masters" not in jane.get("groups", [])  # type: ignore[operator]
    assert jane["extra"]["karpor.io/cluster-identity"] == ["impersonated"]  # type: ignore[index]
    assert jane["extra"]["karpor.io/cluster-user"] == ["jane"]  # type: ignore[index]
    grouped = _whoami(kubectl, "--as=jane", "--as-group=devs", "--as-group=qa")
    assert grouped["username"] == "jane"
    assert {"devs", "qa"} <= set(grouped["groups"])  # type: ignore[call-overload]
    # --as-group alone is refused as kube refuses it, never dropped
    alone = kubectl.run("auth", "whoami", "--context", "sim-1", "--as-group=devs", check=False)
    assert alone.returncode != 0


def test_unknown_cluster_is_404_for_an_authenticated_caller(
    gateway: GatewayRun, gateway_kubeconfig: Path
) -> None:
    ca, cert, key = credentials_of(gateway_kubeconfig)
    admin = client_context(ca, cert, key)
    for prefix in (PROXY, ALIAS):
        response = request(gateway.port, f"{prefix}/nope/proxy/api/v1/pods", admin)
        assert response.status == 404, response.body
    response = request(gateway.port, f"{PROXY}/nope", admin)
    assert response.status == 404, response.body


def test_verbose_health_needs_credentials(gateway: GatewayRun, gateway_kubeconfig: Path) -> None:
    ca, cert, key = credentials_of(gateway_kubeconfig)
    admin = client_context(ca, cert, key)
    nobody = client_context(gateway.ca_pem)
    for path in ("/healthz", "/readyz", "/livez"):
        plain = request(gateway.port, path, nobody)
        assert (plain.status, plain.body) == (200, b"ok")
        denied = request(gateway.port, f"{path}?verbose", nobody)
        assert denied.status == 401, denied.body
        assert json.loads(denied.body)["reason"] == "Unauthorized"
        assert b"pid" not in denied.body
        verbose = request(gateway.port, f"{path}?verbose", admin)
        assert verbose.status == 200 and b"[+]worker ok: pid " in verbose.body
