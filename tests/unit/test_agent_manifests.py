"""The manifests of ``etc/kubernetes/agent`` agree with each other, with
karpor's CLI and with the gateway's own manifests and Dockerfile.

They parse; ``kubectl apply -f etc/kubernetes/agent/`` (files in name order)
creates the namespace first; the Deployment runs the gateway's image with
``karpor agent --credentials FILE``, FILE being the key of the credentials
Secret where it is mounted; the ServiceAccount it runs as is bound to a
role; its security context is the gateway's.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

import karpor
from karpor.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
AGENT = ROOT / "etc" / "kubernetes" / "agent"
GATEWAY_DEPLOYMENT = ROOT / "etc" / "kubernetes" / "deployment.yaml"
NAMESPACE = "karpor-agent"
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}

Doc = dict[str, Any]


def files() -> list[Path]:
    """In the order ``kubectl apply -f DIR`` applies them."""
    return sorted(AGENT.glob("*.yaml"))


def docs() -> list[Doc]:
    return [d for path in files() for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one(kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs() if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def pod_spec() -> Doc:
    spec = one("Deployment")["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container() -> Doc:
    (only,) = pod_spec()["containers"]
    assert isinstance(only, dict)
    return only


def gateway_pod_spec() -> Doc:
    spec = yaml.safe_load(GATEWAY_DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


@pytest.mark.parametrize("path", files(), ids=lambda p: p.name)
def test_every_file_parses(path: Path) -> None:
    found = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert found, f"{path.name}: no document"
    for doc in found:
        assert isinstance(doc, dict) and doc.get("kind") and doc.get("apiVersion")
        assert doc["metadata"]["name"]


def test_the_namespace_comes_first_and_holds_the_rest() -> None:
    all_docs = docs()
    assert all_docs[0]["kind"] == "Namespace"
    assert all_docs[0]["metadata"]["name"] == NAMESPACE
    for doc in all_docs:
        if doc["kind"] in CLUSTER_SCOPED:
            assert "namespace" not in doc["metadata"], doc["metadata"]["name"]
        else:
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_the_service_account_is_bound_to_a_role_here() -> None:
    account = pod_spec()["serviceAccountName"]
    one("ServiceAccount", account)
    assert pod_spec()["automountServiceAccountToken"] is True  # the in-cluster credential
    binding = one("ClusterRoleBinding")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert binding["roleRef"]["kind"] == "ClusterRole"
    # the broad role is the bound one; it includes impersonation
    bound = one("ClusterRole", binding["roleRef"]["name"])
    assert {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]} in bound["rules"]


def test_the_impersonation_role_grants_impersonate_only() -> None:
    role = one("ClusterRole", "karpor-agent-impersonator")
    assert {verb for rule in role["rules"] for verb in rule["verbs"]} == {"impersonate"}
    core = [r for r in role["rules"] if r["apiGroups"] == [""]]
    assert {res for r in core for res in r["resources"]} == {"users", "groups", "serviceaccounts"}
    # the command the file gives to bind it names this role and the ServiceAccount
    text = (AGENT / "10-rbac.yaml").read_text()
    assert (
        f"--clusterrole={role['metadata']['name']} "
        f"--serviceaccount={NAMESPACE}:{pod_spec()['serviceAccountName']}"
    ) in text


def test_the_command_reads_the_mounted_credentials() -> None:
    command = container()["command"]
    assert command[:2] == ["karpor", "agent"]
    assert "--kubeconfig" not in command  # the in-cluster service account
    credentials = Path(command[command.index("--credentials") + 1])
    mounts = [m for m in container()["volumeMounts"] if m["mountPath"] == str(credentials.parent)]
    assert len(mounts) == 1 and mounts[0]["readOnly"] is True
    (volume,) = [v for v in pod_spec()["volumes"] if v["name"] == mounts[0]["name"]]
    secret = volume["secret"]
    assert "items" not in secret  # every key a file: the key is the file name
    # the documented command making the Secret gives it that key
    create = re.search(
        r"kubectl .*create secret generic .*", (AGENT / "20-deployment.yaml").read_text()
    )
    assert create, "the Deployment's file does not say how to make the Secret"
    argv = shlex.split(create.group(0).lstrip("# "))
    assert argv[argv.index("-n") + 1] == NAMESPACE
    assert argv[argv.index("generic") + 1] == secret["secretName"]
    assert f"--from-file={credentials.name}=AGENT_FILE" in argv


def test_the_command_is_karpors() -> None:
    parser = build_parser()
    command = container()["command"]
    (subcommands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if "agent" not in subcommands.choices:
        pytest.skip("this tree has no `karpor agent` yet")
    args = parser.parse_args(command[1:])
    assert args.credentials == command[command.index("--credentials") + 1]


def test_the_gateways_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    match = re.search(r"docker build -t (\S+) \.", dockerfile)
    assert match
    assert container()["image"] == match.group(1) == f"karpor:{karpor.__version__}"


def test_the_gateways_security_context_and_requests() -> None:
    gateway = gateway_pod_spec()
    assert pod_spec()["securityContext"] == gateway["securityContext"]
    (gateway_container,) = gateway["containers"]
    assert container()["securityContext"] == gateway_container["securityContext"]
    requests = container()["resources"]["requests"]
    assert requests["cpu"] and requests["memory"]
    assert container()["resources"]["limits"]["memory"]


# --- the README's three commands -------------------------------------------------------


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def commands(section: str, start: str) -> list[list[str]]:
    """The indented command lines of ``section`` starting with ``start`` (continuations joined)."""
    joined = re.sub(r"\\\n\s*", "", section)
    return [
        shlex.split(line.strip())
        for line in joined.splitlines()
        if line.startswith("    ") and line.strip().startswith(start)
    ]


def test_the_readme_onboards_a_cluster_with_these_files() -> None:
    section = readme_section("Clusters behind NAT or firewalls")
    # 1. the cluster file: a tunnel, no endpoint
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    cluster = yaml.safe_load(block)
    assert cluster["spec"]["access"] == {"tunnel": True}
    name = cluster["metadata"]["name"]
    # 2. karpor agent-credentials, with the CLI's flags, for that cluster
    (issue,) = commands(section, "karpor agent-credentials")
    args = build_parser().parse_args(issue[1:])
    assert args.cluster == name
    # 3. these manifests, and the Secret the Deployment mounts, from that file
    assert ["kubectl", "apply", "-f", "etc/kubernetes/agent/"] in commands(section, "kubectl")
    (create,) = commands(section, "kubectl -n")
    documented = re.search(
        r"kubectl .*create secret generic .*", (AGENT / "20-deployment.yaml").read_text()
    )
    assert documented
    expected = shlex.split(documented.group(0).replace("AGENT_FILE", args.output))
    assert create == expected
    assert "**The cluster credential never leaves the cluster.**" in section
