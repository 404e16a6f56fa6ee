"""``kubectl auth whoami`` and ``kubectl auth can-i`` answered for the caller
(issue 17, item 2), with kubectl 1.27, 1.30, 1.33 and the Python client.

One gateway with an access policy serves the module, in front of two
clusters: ``plain`` (the session's ``sim-1``, which lets everyone do
everything; no ``spec.impersonate``, so it sees the gateway's credential)
and ``strict`` (a simulated cluster of its own whose RBAC is a policy file,
``spec.impersonate: true``, so it sees the caller and is asked too).  The
caller ``teamuser`` may do everything in namespace ``team-a`` of either,
by the gateway's policy; ``strict`` lets it only read there.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from support.access import write_yaml
from support.gateway import GatewayRun, start_gateway, write_kubeconfig
from support.kubectl import Kubectl
from support.sim import SimRun, start_sim

USER = "teamuser"

GATEWAY_POLICY = {
    "rules": [
        {"users": [USER], "clusters": ["*"], "verbs": ["*"], "namespaces": ["team-a"]},
        {"users": [USER], "clusters": ["plain"], "nonResourceURLs": ["/logs/*"], "verbs": ["get"]},
        {"users": [USER], "nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ]
}
#: ``strict``'s own RBAC: the gateway's credential (a service account) may
#: do everything, impersonation included; teamuser may only read team-a
STRICT_POLICY = {
    "rules": [
        {"groups": ["system:serviceaccounts"], "clusters": ["*"], "verbs": ["*"]},
        {
            "users": [USER],
            "clusters": ["*"],
            "verbs": ["get", "list", "watch"],
            "namespaces": ["team-a"],
        },
    ]
}


@dataclass
class Setup:
    gateway: GatewayRun
    kubeconfig: Path


@pytest.fixture(scope="module")
def strict_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimRun]:
    tmp = tmp_path_factory.mktemp("strict-sim")
    policy = write_yaml(tmp / "rbac.yaml", STRICT_POLICY)
    run = start_sim(tmp / "out", 1, "--policy", str(policy))
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def setup(
    sim_clusters: SimRun, strict_sim: SimRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("reviews")
    clusters = tmp / "clusters"
    clusters.mkdir()
    for name, sim, impersonate in (
        ("plain", sim_clusters["sim-1"], False),
        ("strict", strict_sim["sim-1"], True),
    ):
        doc = yaml.safe_load(sim.cluster_file.read_text())
        doc["metadata"]["name"] = name
        doc["spec"]["impersonate"] = impersonate
        write_yaml(clusters / f"{name}.yaml", doc)
    write_yaml(tmp / "policy.yaml", GATEWAY_POLICY)
    write_yaml(tmp / "config.yaml", {"authorization": {"policyFile": str(tmp / "policy.yaml")}})
    state = tmp / "state"
    gateway = start_gateway(clusters, state, "--workers", "1", "--config", str(tmp / "config.yaml"))
    try:
        kubeconfig = write_kubeconfig(state, tmp / "team.kubeconfig", gateway.url, USER, ("qa",))
        yield Setup(gateway, kubeconfig)
    finally:
        gateway.stop()


def kubectl(setup: Setup, kubectl_bins: dict[str, Path], version: str) -> Kubectl:
    if version not in kubectl_bins:
        pytest.skip(f"no kubectl {version} on this machine")
    return Kubectl(kubectl_bins[version], setup.kubeconfig, version)


def whoami(k: Kubectl, context: str) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(k.out("auth", "whoami", "-o", "json", "--context", context))[
        "status"
    ]["userInfo"]
    return info


def can_i(k: Kubectl, context: str, *args: str) -> bool:
    """``kubectl auth can-i`` (yes: exit 0, no: exit 1; anything else fails)."""
    where = ("--context", context) if context else ()
    result = k.run("auth", "can-i", *args, *where, check=False)
    assert result.returncode in (0, 1), (args, result.stdout, result.stderr)
    assert result.stdout.strip().split(" ")[0] in ("yes", "no"), (
        args,
        result.stdout,
        result.stderr,
    )
    return result.returncode == 0


@pytest.mark.parametrize("version", ["1.27", "1.30", "1.33"])
def test_whoami_and_can_i_answer_for_the_caller(
    setup: Setup, kubectl_bins: dict[str, Path], version: str
) -> None:
    k = kubectl(setup, kubectl_bins, version)
    # whoami: the caller, and which identity each cluster sees
    plain = whoami(k, "plain")
    assert plain["username"] == USER
    assert {"qa", "system:authenticated"} <= set(plain["groups"])
    assert plain["extra"]["karpor.io/cluster-identity"] == ["credential"]
    assert plain["extra"]["karpor.io/cluster"] == ["plain"]
    strict = whoami(k, "strict")
    assert strict["username"] == USER
    assert strict["extra"]["karpor.io/cluster-identity"] == ["impersonated"]
    assert strict["extra"]["karpor.io/cluster-user"] == [USER]
    assert whoami(k, "karpor")["username"] == USER  # not a 405
    # can-i: yes/no under a namespace-limited policy, never a 403
    assert can_i(k, "plain", "get", "pods", "-n", "team-a")
    assert not can_i(k, "plain", "get", "pods", "-n", "team-b")
    assert can_i(k, "plain", "get", "/logs/kube.log")
    assert not can_i(k, "plain", "get", "/metrics")
    # strict sees the caller: its refusal turns the gateway's yes into a no
    assert can_i(k, "strict", "list", "pods", "-n", "team-a")
    assert not can_i(k, "strict", "create", "pods", "-n", "team-a")
    # the gateway's own API
    assert can_i(k, "karpor", "list", "clusters.cluster.karpor.io")
    assert not can_i(k, "karpor", "delete", "clusters.cluster.karpor.io")
    assert can_i(k, "karpor", "get", "/metrics")
    # --list: the rules of team-a
    listed = k.out("auth", "can-i", "--list", "-n", "team-a", "--context", "strict")
    assert "selfsubjectaccessreviews.authorization.k8s.io" in listed
    star = next(line for line in listed.splitlines() if line.startswith("*.*"))
    assert "[get list watch]" in star, listed  # what both the gateway and strict allow


def test_can_i_details_on_the_newest_kubectl(
    setup: Setup, strict_sim: SimRun, kubectl_bins: dict[str, Path]
) -> None:
    k = kubectl(setup, kubectl_bins, "1.33")
    # strict on its own answers for whom Impersonate-* names (kubectl 1.33 sends protobuf)
    direct = Kubectl(k.binary, strict_sim["sim-1"].kubeconfig, "1.33")
    assert can_i(direct, "", "create", "pods", "-n", "team-a")
    assert not can_i(direct, "", "create", "pods", "-n", "team-a", "--as", USER)
    assert can_i(direct, "", "list", "pods", "-n", "team-a", "--as", USER)
    assert can_i(k, "plain", "create", "pods", "-n", "team-a")  # plain sees the credential
    assert can_i(k, "plain", "create", "pods/exec", "-n", "team-a")
    assert not can_i(k, "plain", "get", "nodes")
    assert not can_i(k, "plain", "list", "pods", "-A")
    assert not can_i(k, "strict", "get", "pods", "-n", "team-b")
    assert not can_i(k, "karpor", "get", "/debug/pprof/")
    assert can_i(k, "karpor", "get", "/version")
    plain = k.out("auth", "can-i", "--list", "-n", "team-a", "--context", "plain")
    assert "/logs/*" in plain and "[*]" in plain
    assert "[*]" not in k.out("auth", "can-i", "--list", "-n", "team-b", "--context", "plain")
    own = k.out("auth", "can-i", "--list", "--context", "karpor")
    assert "clusters.cluster.karpor.io" in own and "/metrics" in own
    # kubectl --as needs the impersonate verb: team-a's "*" is no grant at the cluster scope
    denied = k.run("auth", "whoami", "--as", "bob", "--context", "plain", check=False)
    assert denied.returncode != 0 and "permission" in denied.stderr


def _allowed(authz: Any, verb: str, namespace: str) -> bool:
    spec = client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(
            verb=verb, resource="configmaps", namespace=namespace
        )
    )
    answer: Any = authz.create_self_subject_access_review(
        client.V1SelfSubjectAccessReview(spec=spec)
    )
    return bool(answer.status.allowed)


def test_python_client(setup: Setup) -> None:
    for context, identity in (("plain", "credential"), ("strict", "impersonated")):
        api = config.new_client_from_config(str(setup.kubeconfig), context=context)
        review: Any = client.AuthenticationV1Api(api).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
        assert review.status.user_info.username == USER
        assert review.status.user_info.extra["karpor.io/cluster-identity"] == [identity]
        authz = client.AuthorizationV1Api(api)
        assert _allowed(authz, "get", "team-a")
        assert not _allowed(authz, "get", "team-b")
        # strict sees the caller and lets it only read: its no wins
        assert _allowed(authz, "create", "team-a") is (context == "plain")
