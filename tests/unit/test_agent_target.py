"""The cluster an agent serves (:mod:`karpor.agent.target`): a kubeconfig
context, or the in-cluster service account as the ``kubernetes`` package finds it."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import Configuration
from kubernetes.config.kube_config import KubeConfigLoader

from karpor.agent import target
from karpor.agent.target import AgentTargetError, in_cluster, load_agent_cluster
from karpor.auth.ca import CertificateAuthority
from karpor.config.model import TokenCredential, X509Credential

CA = CertificateAuthority.create("member-ca")
TOKEN = "s3cret-service-account-token"
ENV = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}


@pytest.fixture
def account(tmp_path: Path) -> tuple[Path, Path]:
    """A service account's token and CA files."""
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text(TOKEN)
    ca.write_bytes(CA.cert_pem)
    return token, ca


# --- in the cluster ------------------------------------------------------------------


def test_in_cluster_keeps_the_token_a_file(account: tuple[Path, Path]) -> None:
    token, ca = account
    cluster = in_cluster("edge-1", ENV, str(token), str(ca))
    assert (cluster.name, cluster.endpoint) == ("edge-1", "https://10.96.0.1:443")
    # a file: re-read when the kubelet rotates it
    assert cluster.credential == TokenCredential(token_file=str(token))
    assert cluster.ca_file == str(ca) and cluster.ca_pem is None
    assert TOKEN not in repr(cluster)


def test_in_cluster_ipv6(account: tuple[Path, Path]) -> None:
    token, ca = account
    env = {"KUBERNETES_SERVICE_HOST": "fd00:10:96::1", "KUBERNETES_SERVICE_PORT": "443"}
    assert in_cluster("edge-1", env, str(token), str(ca)).endpoint == "https://[fd00:10:96::1]:443"


def test_without_kubeconfig_the_agent_uses_the_pods_service_account(
    account: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    token, ca = account
    monkeypatch.setattr(target, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(target, "SERVICE_CERT_FILENAME", str(ca))
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    cluster = load_agent_cluster("edge-1", None, None)
    assert cluster.endpoint == "https://10.96.0.1:443"
    assert cluster.credential == TokenCredential(token_file=str(token))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST")
    with pytest.raises(AgentTargetError, match=r"not running in a Kubernetes pod.*--kubeconfig"):
        load_agent_cluster("edge-1", None, None)
    with pytest.raises(AgentTargetError, match="--context needs --kubeconfig"):
        load_agent_cluster("edge-1", None, "ctx")


IN_CLUSTER_ERRORS = [
    ({}, TOKEN, CA.cert_pem, "Service host/port is not set"),
    ({**ENV, "KUBERNETES_SERVICE_PORT": ""}, TOKEN, CA.cert_pem, "set but empty"),
    (ENV, None, CA.cert_pem, "token file does not exist"),
    (ENV, "", CA.cert_pem, "Token file exists but empty"),
    (ENV, TOKEN, None, "certification file does not exist"),
    (ENV, TOKEN, b"not a certificate", "no PEM certificate found"),
    (ENV, TOKEN + " with spaces", CA.cert_pem, "token must be printable ASCII"),
    ({**ENV, "KUBERNETES_SERVICE_PORT": "http"}, TOKEN, CA.cert_pem, "not a valid URL"),
]


@pytest.mark.parametrize(
    ("env", "token", "ca", "message"),
    IN_CLUSTER_ERRORS,
    # named by the message: the CA is made at import, so its PEM differs between
    # pytest-xdist's workers, which must collect the same test ids
    ids=[case[3] for case in IN_CLUSTER_ERRORS],
)
def test_in_cluster_errors_say_what_is_missing(
    tmp_path: Path, env: dict[str, str], token: str | None, ca: bytes | None, message: str
) -> None:
    token_file, ca_file = tmp_path / "token", tmp_path / "ca.crt"
    if token is not None:
        token_file.write_text(token)
    if ca is not None:
        ca_file.write_bytes(ca)
    with pytest.raises(AgentTargetError) as refused:
        in_cluster("edge-1", env, str(token_file), str(ca_file))
    assert message in str(refused.value)
    assert TOKEN not in str(refused.value)


# --- from a kubeconfig ---------------------------------------------------------------


ARN = "arn:aws:eks:eu-west-1:1234:cluster/prod"


def server(name: str, url: str, ca: str = base64.b64encode(CA.cert_pem).decode()) -> Any:
    return {"name": name, "cluster": {"server": url, "certificate-authority-data": ca}}


def context(name: str, cluster: str, user: str) -> Any:
    return {"name": name, "context": {"cluster": cluster, "user": user}}


def kubeconfig(tmp_path: Path, **changes: Any) -> Path:
    issued = CA.issue_client("agent")
    doc: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [server("a", "https://a.example:6443/"), server("b", "https://10.0.0.2")],
        "users": [
            {"name": "token-user", "user": {"token": TOKEN}},
            {
                "name": "cert-user",
                "user": {
                    "client-certificate-data": base64.b64encode(issued.cert_pem).decode(),
                    "client-key-data": base64.b64encode(issued.key_pem).decode(),
                },
            },
        ],
        "contexts": [
            context(ARN, "a", "token-user"),
            context("kind-b", "b", "cert-user"),
            context("broken", "nowhere", "token-user"),
        ],
        "current-context": ARN,
    }
    doc.update(changes)
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_the_current_context_under_the_agents_name(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    cluster = load_agent_cluster("edge-1", str(path), None)
    assert (cluster.name, cluster.endpoint) == ("edge-1", "https://a.example:6443")
    assert cluster.credential == TokenCredential(token=TOKEN)
    assert cluster.ca_pem == CA.cert_pem
    # the kubernetes package reads the same server from the same context
    configuration = Configuration()
    KubeConfigLoader(yaml.safe_load(path.read_text())).load_and_set(configuration)
    assert configuration.host.rstrip("/") == cluster.endpoint


def test_context_picks_another(tmp_path: Path) -> None:
    cluster = load_agent_cluster("edge-1", str(kubeconfig(tmp_path)), "kind-b")
    assert (cluster.name, cluster.endpoint) == ("edge-1", "https://10.0.0.2")
    assert isinstance(cluster.credential, X509Credential)


def test_kubeconfig_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path)
    with pytest.raises(AgentTargetError) as refused:
        load_agent_cluster("edge-1", str(path), "missing")
    assert str(refused.value) == (
        f'{path}: --context: no context "missing" (contexts: '
        '"arn:aws:eks:eu-west-1:1234:cluster/prod", "kind-b", "broken")'
    )
    with pytest.raises(AgentTargetError) as refused:
        load_agent_cluster("edge-1", str(path), "broken")
    # the position of the context in the file
    assert str(refused.value).startswith(f"{path}: contexts[2].context.cluster: no cluster")
    unset = kubeconfig(tmp_path, **{"current-context": ""})
    with pytest.raises(AgentTargetError, match="current-context: not set: give --context"):
        load_agent_cluster("edge-1", str(unset), None)
    with pytest.raises(AgentTargetError, match="cannot read"):
        load_agent_cluster("edge-1", str(tmp_path / "absent"), None)
    path.write_text("clusters: [\n")
    with pytest.raises(AgentTargetError, match="invalid YAML"):
        load_agent_cluster("edge-1", str(path), None)
    path.write_text("kind: Cluster\n")
    with pytest.raises(AgentTargetError, match="not a kubeconfig"):
        load_agent_cluster("edge-1", str(path), None)


def test_a_bad_entry_is_reported_without_its_credential(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, clusters=[server("a", "https://a.example", "%%")])
    with pytest.raises(AgentTargetError) as refused:
        load_agent_cluster("edge-1", str(path), None)
    text = str(refused.value)
    assert "clusters[0].cluster.certificate-authority-data: not valid base64" in text
    assert TOKEN not in text
