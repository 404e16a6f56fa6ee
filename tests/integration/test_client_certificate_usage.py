"""Client certificates need ``clientAuth``: the gateway's serving certificate
(in every replica and in the ``karpor-state`` Secret) is no client identity.

The session gateway runs without a policy file: any client certificate it
accepted would have full access.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from support.gateway import GatewayRun, client_context, request
from support.kubectl import Kubectl, find_kubectls

from karpor.auth.ca import CertificateAuthority

pytest_plugins = ("support.gateway",)

PROXY = "/apis/cluster.karpor.io/v1beta1/clusters"


def with_user(kubeconfig: Path, out: Path, cert_pem: bytes, key_pem: bytes) -> Path:
    """``kubeconfig`` with every user's client certificate replaced."""
    config = yaml.safe_load(kubeconfig.read_text())
    for user in config["users"]:
        user["user"]["client-certificate-data"] = base64.b64encode(cert_pem).decode()
        user["user"]["client-key-data"] = base64.b64encode(key_pem).decode()
    out.write_text(yaml.safe_dump(config))
    return out


def kubectl_binary() -> Path:
    found = find_kubectls()
    if not found:
        pytest.skip("no kubectl")
    return next(iter(found.values()))


def test_the_serving_certificate_is_refused_as_a_client(gateway: GatewayRun) -> None:
    cert = (gateway.state_dir / "serving.crt").read_bytes()
    key = (gateway.state_dir / "serving.key").read_bytes()
    context = client_context(gateway.ca_pem, cert, key)
    for path in (f"{PROXY}/sim-1/proxy/api/v1/namespaces", PROXY):
        response = request(gateway.port, path, context)
        assert response.status == 401, response.body
        assert response.json()["reason"] == "Unauthorized"


def test_a_server_auth_certificate_of_the_gateway_ca_is_refused(gateway: GatewayRun) -> None:
    ca = CertificateAuthority.load(gateway.state_dir)
    server_only = ca.issue_server("admin", ["127.0.0.1"])
    context = client_context(gateway.ca_pem, server_only.cert_pem, server_only.key_pem)
    response = request(gateway.port, f"{PROXY}/sim-1/proxy/api/v1/namespaces", context)
    assert response.status == 401, response.body


def test_kubectl_with_the_serving_certificate_is_unauthorized_and_with_its_own_works(
    gateway: GatewayRun, gateway_kubeconfig: Path, tmp_path: Path
) -> None:
    binary = kubectl_binary()
    own = Kubectl(binary, gateway_kubeconfig, "user")
    assert "default" in own.out("--context", "sim-1", "get", "namespaces", "-o", "name")
    serving = with_user(
        gateway_kubeconfig,
        tmp_path / "serving.kubeconfig",
        (gateway.state_dir / "serving.crt").read_bytes(),
        (gateway.state_dir / "serving.key").read_bytes(),
    )
    result = Kubectl(binary, serving, "serving").run(
        "--context", "sim-1", "get", "namespaces", check=False
    )
    assert result.returncode != 0
    assert "Unauthorized" in result.stderr or "must be logged in" in result.stderr, result.stderr
