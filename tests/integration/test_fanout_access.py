"""Fan-out under an access policy, through the contexts ``karpor kubeconfig``
writes (issue 18): a gateway of its own with four clusters, for the user
``fanner``: ``sim-1`` (every namespace), ``sim-2`` (only the namespace
:data:`TEAM`: asked once per namespace the policy names), ``closed`` (on a
closed port: a warning) and ``hidden`` (a copy of ``sim-2`` the user may not
reach: never named); kubectl 1.27, 1.30 and 1.33, the audit log, the metric.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from support.access import write_yaml
from support.gateway import (
    GatewayRun,
    closed_port,
    cluster_document,
    start_gateway,
)
from support.kubectl import Kubectl
from support.sim import SimRun
from support.tables import printed_row
from support.waits import wait_for

from karpor.cli import build_parser
from karpor.kube.fanout import CLUSTER_ANNOTATION

USER = "fanner"
#: the namespace ``fanner`` may read on sim-2 (and every namespace on sim-1)
TEAM = "fan-team"
#: a namespace of sim-2 ``fanner`` may not read
OTHER = "fan-other"
SELECTOR_CONTEXT = "sims"
POLICY = {
    "rules": [
        {"users": ["admin"], "clusters": ["*"], "verbs": ["*"]},
        {"users": ["admin"], "nonResourceURLs": ["/metrics"], "verbs": ["get"]},
        {"users": [USER], "clusters": ["sim-1", "closed"], "verbs": ["get", "list", "create"]},
        {"users": [USER], "clusters": ["sim-2"], "verbs": ["get", "list"], "namespaces": [TEAM]},
    ]
}
VERSIONS = ("1.27", "1.30", "1.33")


@dataclass
class Setup:
    """The module's gateway, kubeconfigs and objects."""

    gateway: GatewayRun
    admin: Path
    fanner: Path
    audit: Path
    #: the pods created: (cluster, namespace, name)
    pods: list[tuple[str, str, str]]

    def core(self, context: str) -> client.CoreV1Api:
        """The admin's Python client on ``context``."""
        return client.CoreV1Api(config.new_client_from_config(str(self.admin), context=context))


def _pod(name: str) -> client.V1Pod:
    container = client.V1Container(name="c", image="busybox")
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(containers=[container])
    )


def _kubeconfig(state_dir: Path, out: Path, *extra: str) -> Path:
    """``karpor kubeconfig`` run in this process (a second of start-up less
    than a new one); ``--user admin`` with ``--group system:masters`` in
    ``extra``, else ``--user fanner``."""
    user = "admin" if "system:masters" in extra else USER
    args = build_parser().parse_args(
        ["kubeconfig", "--state-dir", str(state_dir), "--user", user, "-o", str(out), *extra]
    )
    err = io.StringIO()
    assert args.handler(args, out=io.StringIO(), err=err) == 0, err.getvalue()
    return out


@pytest.fixture(scope="module")
def setup(sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("fanout-access")
    clusters = tmp / "clusters"
    clusters.mkdir()
    for name in ("sim-1", "sim-2"):
        shutil.copy(sim_clusters[name].cluster_file, clusters / f"{name}.yaml")
    hidden = yaml.safe_load(sim_clusters["sim-2"].cluster_file.read_text())
    hidden["metadata"]["name"] = "hidden"
    write_yaml(clusters / "hidden.yaml", hidden)
    write_yaml(
        clusters / "closed.yaml", cluster_document("closed", f"https://127.0.0.1:{closed_port()}")
    )
    write_yaml(tmp / "policy.yaml", POLICY)
    audit = tmp / "audit.jsonl"
    write_yaml(
        tmp / "config.yaml",
        {"auditLog": str(audit), "authorization": {"policyFile": str(tmp / "policy.yaml")}},
    )
    state_dir = tmp / "state"
    gateway = start_gateway(
        clusters, state_dir, "--workers", "0", "--config", str(tmp / "config.yaml")
    )
    try:
        admin = _kubeconfig(state_dir, tmp / "admin.kubeconfig", "--group", "system:masters")
        fanner = _kubeconfig(
            state_dir, tmp / "fanner.kubeconfig",
            "--set", f"{SELECTOR_CONTEXT}=karpor.io/simulated=true",
        )  # fmt: skip
        setup = Setup(gateway, admin, fanner, audit, [])
        suffix = uuid.uuid4().hex[:6]
        cores = {name: setup.core(name) for name in ("sim-1", "sim-2")}
        for cluster, namespace in (("sim-1", TEAM), ("sim-2", TEAM), ("sim-2", OTHER)):
            core = cores[cluster]
            try:
                core.create_namespace(
                    client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
                )
            except client.ApiException as exc:
                assert exc.status == 409, exc
            name = f"{cluster}-{namespace}-{suffix}"
            core.create_namespaced_pod(namespace, _pod(name))
            setup.pods.append((cluster, namespace, name))
        yield setup
        for cluster, namespace, name in setup.pods:
            cores[cluster].delete_namespaced_pod(name, namespace, grace_period_seconds=0)
    finally:
        gateway.stop()


def _kubectl(kubectl_bins: dict[str, Path], version: str, kubeconfig: Path) -> Kubectl:
    binary = kubectl_bins.get(version)
    if binary is None:
        pytest.skip(f"no kubectl {version} on this machine")
    return Kubectl(binary, kubeconfig, version)


def test_the_user_gets_contexts_all_and_the_selector_set(setup: Setup) -> None:
    doc = yaml.safe_load(setup.fanner.read_text())
    names = [c["name"] for c in doc["contexts"]]
    assert names == ["closed", "sim-1", "sim-2", "all", SELECTOR_CONTEXT, "karpor"]
    servers = {c["name"]: c["cluster"]["server"] for c in doc["clusters"]}
    assert servers["all"] == f"{setup.gateway.url}/apis/cluster.karpor.io/v1beta1/clusters/*/proxy"
    assert servers[SELECTOR_CONTEXT].endswith("/clusters/karpor.io%2Fsimulated%3Dtrue/proxy")


@pytest.mark.parametrize("version", VERSIONS)
def test_kubectl_lists_pods_of_every_cluster_the_user_reaches(
    setup: Setup, kubectl_bins: dict[str, Path], version: str
) -> None:
    kubectl = _kubectl(kubectl_bins, version, setup.fanner)
    result = kubectl.run("--context", "all", "get", "pods", "-A", check=False)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    assert header.split()[:3] == ["NAMESPACE", "CLUSTER", "NAME"], header
    rows = {
        (r["CLUSTER"], r["NAMESPACE"], r["NAME"]) for r in (printed_row(header, x) for x in lines)
    }
    mine = set(setup.pods)
    # sim-2 only in the namespace the policy names; hidden never
    assert rows & mine == {p for p in mine if p[:2] != ("sim-2", OTHER)}, rows
    assert all(row[0] in ("sim-1", "sim-2") for row in rows), rows
    assert all(row[1] == TEAM for row in rows if row[0] == "sim-2"), rows
    # the unreachable cluster is a warning; the forbidden one is never named
    assert "Warning" in result.stderr and "closed" in result.stderr, result.stderr
    assert "hidden" not in result.stdout + result.stderr


def test_json_items_of_the_selector_context_carry_their_cluster(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    kubectl = _kubectl(kubectl_bins, "1.33", setup.fanner)
    result = kubectl.run(
        "--context", SELECTOR_CONTEXT, "get", "pods", "-A", "-o", "json", check=False
    )
    assert result.returncode == 0, result.stderr
    assert "closed" not in result.stderr and "hidden" not in result.stdout + result.stderr
    listed = json.loads(result.stdout)
    found = {
        (
            i["metadata"]["annotations"][CLUSTER_ANNOTATION],
            i["metadata"]["namespace"],
            i["metadata"]["name"],
        )
        for i in listed["items"]
    }
    assert found & set(setup.pods) == {p for p in setup.pods if p[:2] != ("sim-2", OTHER)}
    assert {cluster for cluster, _, _ in found} <= {"sim-1", "sim-2"}


def test_writes_are_refused_naming_only_reachable_clusters(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    kubectl = _kubectl(kubectl_bins, "1.33", setup.fanner)
    name = f"fan-{uuid.uuid4().hex[:8]}"
    result = kubectl.run("--context", "all", "create", "configmap", name, "-n", TEAM, check=False)
    assert result.returncode != 0
    assert "MethodNotAllowed" in result.stderr or "may only read" in result.stderr, result.stderr
    assert "sim-1" in result.stderr and "sim-2" in result.stderr and "closed" in result.stderr
    assert "hidden" not in result.stderr
    for cluster in ("sim-1", "sim-2", "hidden"):
        with pytest.raises(client.ApiException) as missing:
            setup.core(cluster).read_namespaced_config_map(name, TEAM)
        assert missing.value.status == 404


def test_audit_has_a_line_per_cluster_and_failures_are_counted(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    kubectl = _kubectl(kubectl_bins, "1.33", setup.fanner)

    def lines() -> list[dict[str, Any]]:
        text = setup.audit.read_text() if setup.audit.exists() else ""
        return [json.loads(x) for x in text.splitlines() if x.strip()]

    before = len(lines())
    result = kubectl.run("--context", "all", "get", "pods", "-A", check=False)
    assert result.returncode == 0, result.stderr

    def listed() -> list[dict[str, Any]]:
        return [
            r
            for r in lines()[before:]
            if r.get("user") == USER and r["cluster"] == "*" and r["path"].startswith("/apis/")
            and "/proxy/api/v1/pods" in r["path"]
        ]  # fmt: skip

    request_id = wait_for(lambda: listed(), 10, "the fan-out's audit line")[0]["requestID"]
    parts = {r["cluster"]: r for r in lines() if r["requestID"] == request_id and r.get("fanout")}
    assert set(parts) == {"sim-1", "sim-2", "closed"}, parts
    assert parts["sim-1"]["code"] == 200 and parts["sim-1"]["path"].startswith("/api/v1/pods?")
    assert parts["sim-2"]["path"].startswith(f"/api/v1/namespaces/{TEAM}/pods?")
    assert parts["sim-2"]["namespace"] == TEAM and parts["sim-2"]["code"] == 200
    assert parts["closed"]["code"] == 0 and parts["closed"]["reason"]
    admin = Kubectl(Path(shutil.which("kubectl") or "kubectl"), setup.admin)
    metrics = admin.run("--context", "karpor", "get", "--raw", "/metrics").stdout
    assert re.search(
        r'karpor_fanout_cluster_failures_total\{cluster="closed",reason="unavailable"\} [1-9]',
        metrics,
    ), metrics
    assert 'cluster="hidden"' not in "".join(
        x for x in metrics.splitlines() if x.startswith("karpor_fanout")
    )
