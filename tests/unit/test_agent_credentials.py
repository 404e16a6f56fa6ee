"""The agent's credentials file (:mod:`karpor.agent.credentials`): written
private and atomically, read back strictly, no key in any message."""

from __future__ import annotations

import base64
import copy
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from karpor.agent.credentials import (
    AgentCredentials,
    AgentCredentialsError,
    load_agent_credentials,
    parse_agent_credentials,
    render_agent_credentials,
    write_agent_credentials,
)
from karpor.auth.agentidentity import AGENT_GROUP, agent_user
from karpor.auth.ca import CertificateAuthority
from karpor.config.directory import read_cluster_file
from karpor.config.model import X509Credential

CA = CertificateAuthority.create("karpor-ca")
ISSUED = CA.issue_client(agent_user("edge-1"), [AGENT_GROUP])
CREDENTIALS = AgentCredentials(
    cluster="edge-1",
    server="https://gateway.example:8443",
    ca_pem=CA.cert_pem,
    certificate_pem=ISSUED.cert_pem,
    key_pem=ISSUED.key_pem,
    tls_server_name=None,
)
#: what must never appear in a message: the key, PEM or base64
SECRETS = (
    ISSUED.key_pem.decode().splitlines()[1],
    base64.b64encode(ISSUED.key_pem).decode()[:40],
)


def document(credentials: AgentCredentials = CREDENTIALS) -> dict[str, Any]:
    loaded = yaml.safe_load(render_agent_credentials(credentials))
    assert isinstance(loaded, dict)
    return loaded


def problems(obj: Any) -> str:
    with pytest.raises(AgentCredentialsError) as refused:
        parse_agent_credentials(obj, "agent.kubeconfig")
    text = str(refused.value)
    assert all(s not in text for s in SECRETS)
    assert all(line.startswith("agent.kubeconfig: ") for line in refused.value.problems)
    return text


def test_written_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    for credentials in (CREDENTIALS, _with(tls_server_name="karpor.karpor.svc")):
        write_agent_credentials(str(path), credentials)
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert load_agent_credentials(str(path)) == credentials
    assert [p.name for p in tmp_path.iterdir()] == ["credentials"]  # no temporary file left
    assert "BEGIN" not in repr(CREDENTIALS)  # no PEM in a log line


def _with(**changes: Any) -> AgentCredentials:
    values = {**CREDENTIALS.__dict__, **changes}
    return AgentCredentials(**values)


def test_it_is_a_kubeconfig_to_the_gateway_without_a_cluster_credential(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    write_agent_credentials(str(path), CREDENTIALS)
    (cluster,) = read_cluster_file(str(path)).clusters
    # read as any kubeconfig: a context to the gateway, with the agent's certificate
    assert (cluster.name, cluster.endpoint) == ("edge-1", CREDENTIALS.server)
    assert cluster.ca_pem == CA.cert_pem
    assert isinstance(cluster.credential, X509Credential)
    assert cluster.credential.certificate == ISSUED.cert_pem
    doc = document()
    assert doc["kind"] == "Config" and doc["current-context"] == "edge-1"
    assert [u["name"] for u in doc["users"]] == ["system:karpor:agent:edge-1"]
    assert set(doc["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}


def test_unreadable_and_broken_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(AgentCredentialsError, match=f"{missing}: cannot read: "):
        load_agent_credentials(str(missing))
    broken = tmp_path / "broken"
    broken.write_text("kind: [Config\n")
    with pytest.raises(AgentCredentialsError, match=f"{broken}: invalid YAML: .*line"):
        load_agent_credentials(str(broken))
    assert "must be a kubeconfig" in problems({"kind": "Cluster"})
    assert "(document): must be a mapping" in problems(["x"])


def test_the_current_context_names_the_cluster() -> None:
    doc = document()
    del doc["current-context"]
    assert "current-context: required" in problems(doc)
    doc["current-context"] = "Edge_1"
    assert "not a cluster name" in problems(doc)
    doc["current-context"] = "edge-2"
    assert 'contexts: no entry named "edge-2"' in problems(doc)
    doc["current-context"] = "edge-1"
    doc["contexts"][0]["context"]["user"] = "someone"
    assert "users: no entry named as contexts[0].context.user says" in problems(doc)


def test_the_gateway_is_always_verified() -> None:
    doc = document()
    entry = doc["clusters"][0]["cluster"]
    del entry["certificate-authority-data"]
    entry["insecure-skip-tls-verify"] = True
    text = problems(doc)
    assert "clusters[0].cluster.certificate-authority-data: required" in text
    assert "clusters[0].cluster.insecure-skip-tls-verify: an agent always verifies" in text
    doc = document()
    doc["clusters"][0]["cluster"]["server"] = "http://gateway:8443"
    assert "clusters[0].cluster.server: must be an https:// URL" in problems(doc)


def test_the_certificate_must_be_the_agents_of_this_cluster() -> None:
    other = CA.issue_client(agent_user("edge-2"), [AGENT_GROUP])
    user = CA.issue_client("alice", ["system:masters"])
    for issued, shown in ((other, "system:karpor:agent:edge-2"), (user, "alice")):
        text = problems(document(_with(certificate_pem=issued.cert_pem, key_pem=issued.key_pem)))
        assert f'users[0].user.client-certificate-data: the certificate is for "{shown}"' in text
        assert "karpor agent-credentials --cluster edge-1" in text
    no_group = CA.issue_client(agent_user("edge-1"), [])
    assert "groups: none" in problems(
        document(_with(certificate_pem=no_group.cert_pem, key_pem=no_group.key_pem))
    )


def test_the_key_must_match_and_no_other_credential() -> None:
    doc = document(_with(key_pem=CA.issue_client("x").key_pem))
    assert "client-key-data: private key does not match the certificate" in problems(doc)
    doc = document()
    doc["users"][0]["user"]["token"] = "s3cret-token"
    text = problems(doc)
    assert "users[0].user.token: an agent authenticates with client-certificate-data" in text
    assert "s3cret-token" not in text


def _leaves(obj: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in _leaves(v, (*path, k))]
    if isinstance(obj, list):
        return [p for i, v in enumerate(obj) for p in _leaves(v, (*path, i))]
    return [path]


LEAVES = _leaves(document())


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
@given(
    where=st.sampled_from(LEAVES),
    value=st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=30),
        st.just(base64.b64encode(ISSUED.key_pem).decode()),
        st.lists(st.text(max_size=5), max_size=2),
    ),
)
def test_any_broken_field_is_a_clear_error_without_the_key(
    where: tuple[Any, ...], value: Any
) -> None:
    doc = copy.deepcopy(document())
    target = doc
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    try:
        parse_agent_credentials(doc, "agent.kubeconfig")
    except AgentCredentialsError as refused:
        text = str(refused)
        assert all(s not in text for s in SECRETS)
        assert all(line.startswith("agent.kubeconfig: ") for line in refused.problems)
