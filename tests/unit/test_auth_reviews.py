"""What the policy answers to the reviews a caller asks about itself
(karpor.auth.reviews, Access.reviewer), on a cluster, on the gateway's own
API (karpor.gatewayapi.reviews) and in the simulator (karpor.sim.auth)."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock
from unit.test_api_handler import FakeResponder

from karpor.auth.access import Access
from karpor.auth.identity import ANONYMOUS_USER, Identity
from karpor.auth.policy import ALLOW_ALL, parse_policy
from karpor.auth.reviews import (
    EVERYTHING,
    access_decision,
    gateway_path_rules,
    policy_rules,
    whoami_extra,
)
from karpor.auth.revocation import ReloadingFile
from karpor.config.model import Cluster
from karpor.gatewayapi.handler import GatewayApi
from karpor.gatewayapi.request import ApiRequest
from karpor.gatewayapi.reviews import own_review
from karpor.kube.rbacrules import NonResourceRule, ResourceRule
from karpor.kube.reviews import ACCESS, RULES, WHOAMI, AccessQuery, ReviewKind
from karpor.kube.status import ApiError
from karpor.sim.auth import Authorizer

POLICY = parse_policy(
    yaml.safe_dump(
        {
            "rules": [
                {"users": ["team"], "clusters": ["*"], "verbs": ["*"], "namespaces": ["team-*"]},
                {"users": ["reader"], "clusters": ["c1"], "verbs": ["get", "list", "exec"]},
                {
                    "users": ["sre"],
                    "clusters": ["c1"],
                    "nonResourceURLs": ["/logs/*"],
                    "verbs": ["get"],
                },
                {"users": ["sre"], "nonResourceURLs": ["/metrics"], "verbs": ["get"]},
                {"users": ["imp"], "clusters": ["c1"], "verbs": ["impersonate"]},
            ],
            "identityExchange": [
                {
                    "name": "to-admin",
                    "type": "StaticMapping",
                    "source": {"user": "reader", "cluster": "c2"},
                    "target": {"user": "mapped", "groups": ["g"]},
                }
            ],
        }
    ),
    "policy.yaml",
)
C1 = Cluster("c1", "https://c1")
C2 = Cluster("c2", "https://c2", impersonate=True)
TEAM = Identity("team", ("qa",))
SSAR = ReviewKind(ACCESS, "authorization.k8s.io", "v1")
SSRR = ReviewKind(RULES, "authorization.k8s.io", "v1")


def q(verb: str, resource: str = "pods", namespace: str = "", subresource: str = "") -> AccessQuery:
    return AccessQuery(verb=verb, resource=resource, namespace=namespace, subresource=subresource)


def test_whoami_extra_says_whom_the_cluster_sees() -> None:
    caller = Identity("alice", ("dev",), extra={"scopes": ("x",), "karpor.io/cluster": ("fake",)})
    assert whoami_extra(caller, "c1", None) == {
        "scopes": ("x",),
        "karpor.io/cluster": ("c1",),
        "karpor.io/cluster-identity": ("credential",),
    }
    seen = whoami_extra(caller, "c2", Identity("mapped", ("g",)), "to-admin")
    assert seen["karpor.io/cluster-identity"] == ("impersonated",)
    assert seen["karpor.io/cluster-user"] == ("mapped",)
    assert seen["karpor.io/cluster-groups"] == ("g", "system:authenticated")
    assert seen["karpor.io/identity-exchange"] == ("to-admin",)


def test_access_decisions_for_a_namespace_limited_caller() -> None:
    assert access_decision(POLICY, TEAM, C1, q("create", namespace="team-a"))[0]
    allowed, reason = access_decision(POLICY, TEAM, C1, q("get", namespace="other"))
    assert not allowed and 'User "team" cannot get resource "pods"' in reason
    assert not access_decision(POLICY, TEAM, C1, q("list"))[0]  # every namespace
    assert not access_decision(POLICY, TEAM, C1, q("get", "nodes"))[0]
    # the reviews themselves: anyone
    review = AccessQuery(
        "create", group="authorization.k8s.io", resource="selfsubjectaccessreviews"
    )
    assert access_decision(POLICY, TEAM, C1, review)[0]
    # pods/exec is the verb exec, as for a request
    reader = Identity("reader")
    assert access_decision(POLICY, reader, C1, q("create", subresource="exec", namespace="a"))[0]
    assert not access_decision(POLICY, reader, C1, q("create", namespace="a"))[0]
    # non-resource paths: discovery for anyone reaching the cluster, else by nonResourceURLs
    sre = Identity("sre")
    logs = AccessQuery("get", is_resource=False, path="/logs/x")
    assert access_decision(POLICY, sre, C1, logs)[0]
    assert not access_decision(POLICY, TEAM, C1, logs)[0]
    assert access_decision(POLICY, TEAM, C1, AccessQuery("get", is_resource=False, path="/api"))[0]
    assert access_decision(ALLOW_ALL, TEAM, C1, q("delete", "nodes"))[0]


def test_rules_of_a_namespace() -> None:
    rules = policy_rules(POLICY, TEAM, C1, "team-a")
    assert ResourceRule(("*",)) in rules.resource_rules
    assert NonResourceRule(("get", "head"), tuple(rules.non_resource_rules[0].urls))
    assert "/api/*" in rules.non_resource_rules[0].urls
    other = policy_rules(POLICY, TEAM, C1, "other")
    assert ResourceRule(("*",)) not in other.resource_rules
    assert any("selfsubjectaccessreviews" in r.resources for r in other.resource_rules)
    reader = policy_rules(POLICY, Identity("reader"), C1, "x").resource_rules
    assert ResourceRule(("get", "list")) in reader
    assert ResourceRule(("create", "get"), ("",), ("pods/exec",)) in reader
    sre = policy_rules(POLICY, Identity("sre"), C1, "x").non_resource_rules
    assert NonResourceRule(("get",), ("/logs/*",)) in sre
    nobody = policy_rules(POLICY, Identity("nobody"), C1, "x")
    assert not nobody.resource_rules and not nobody.non_resource_rules
    assert policy_rules(ALLOW_ALL, TEAM, C1, "x") == EVERYTHING


@given(
    st.sampled_from(["get", "list", "create", "delete", "exec", "*"]),
    st.sampled_from(["pods", "nodes", "configmaps"]),
    st.sampled_from(["", "team-a", "team-b", "other"]),
    st.sampled_from(["team", "reader", "sre", "imp", "nobody"]),
)
def test_rules_agree_with_decisions(verb: str, resource: str, namespace: str, user: str) -> None:
    """What the rules of a namespace allow is what the policy decides there."""
    identity = Identity(user)
    query = q(verb, resource, namespace)
    rules = policy_rules(POLICY, identity, C1, namespace or "default").resource_rules
    listed = any(r.allows(verb, "", resource) for r in rules)
    if namespace and verb != "exec":
        assert listed == access_decision(POLICY, identity, C1, query)[0]


def test_reviewer() -> None:
    access = Access(policy=ReloadingFile("/nonexistent", lambda p: POLICY, POLICY))
    plain = access.reviewer(TEAM, C1, [])
    assert plain is not None and plain.identity == TEAM and plain.upstream is None
    seen = access.reviewer(Identity("reader"), C2, [])
    assert seen is None  # reader reaches c1 only
    team_c2 = access.reviewer(TEAM, C2, [])
    assert team_c2 is not None and team_c2.upstream == TEAM
    # impersonation: granted on c1 for imp; the review is about whom it asks for
    as_team = access.reviewer(Identity("imp"), C1, [(b"Impersonate-User", b"team")])
    assert as_team is not None and as_team.identity.user == "team"
    assert as_team.upstream is not None and as_team.upstream.user == "team"
    assert access.reviewer(TEAM, C1, [(b"Impersonate-User", b"bob")]) is None
    # whom imp impersonates need not reach the cluster: the answers are then no
    nobody = access.reviewer(Identity("imp"), C1, [(b"Impersonate-User", b"nobody")])
    assert nobody is not None and nobody.identity.user == "nobody"
    with pytest.raises(ApiError):
        access.reviewer(TEAM, C1, [(b"Impersonate-Group", b"g")])
    assert Access().reviewer(Identity(ANONYMOUS_USER), C1, []) is None
    assert Access().reviewer(TEAM, C1, []) is not None


def test_own_api_reviews() -> None:
    whoami = own_review(ReviewKind(WHOAMI, "authentication.k8s.io", "v1"), b"", TEAM, POLICY)
    assert whoami["status"]["userInfo"]["username"] == "team"

    def can(identity: Identity, attrs: dict[str, str], key: str = "resourceAttributes") -> bool:
        body = json.dumps({"spec": {key: attrs}}).encode()
        return bool(own_review(SSAR, body, identity, POLICY)["status"]["allowed"])

    clusters = {"group": "cluster.karpor.io", "resource": "clusters"}
    assert can(TEAM, {"verb": "list", **clusters})
    assert not can(TEAM, {"verb": "delete", **clusters})
    assert not can(TEAM, {"verb": "get", "resource": "pods"})
    assert can(TEAM, {"verb": "get", "path": "/version"}, "nonResourceAttributes")
    assert not can(TEAM, {"verb": "get", "path": "/metrics"}, "nonResourceAttributes")
    assert can(Identity("sre"), {"verb": "get", "path": "/metrics"}, "nonResourceAttributes")
    rules = own_review(SSRR, b'{"spec": {"namespace": "x"}}', Identity("sre"), POLICY)
    urls = [u for r in rules["status"]["nonResourceRules"] for u in r["nonResourceURLs"]]
    assert "/metrics" in urls and "/version" in urls
    assert gateway_path_rules(ALLOW_ALL, Identity(ANONYMOUS_USER)) == []


def test_simulator_authorizer() -> None:
    authorizer = Authorizer(POLICY, "c1")
    sa = Identity("system:serviceaccount:kube-system:karpor")
    with pytest.raises(ApiError) as denied:
        authorizer.check(TEAM, TEAM, "GET", "/api/v1/namespaces/other/pods", "")
    assert denied.value.code == 403
    authorizer.check(TEAM, TEAM, "GET", "/api/v1/namespaces/team-a/pods", "")
    authorizer.check(
        TEAM, TEAM, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", ""
    )
    with pytest.raises(ApiError):  # impersonation needs the verb
        authorizer.check(sa, TEAM, "GET", "/api/v1/namespaces/team-a/pods", "")
    imp = Identity("imp")
    authorizer.check(imp, TEAM, "GET", "/api/v1/namespaces/team-a/pods", "")
    masters = Identity("root", ("system:masters",))
    authorizer.check(masters, masters, "DELETE", "/api/v1/nodes/n", "")
    assert authorizer.access_review(TEAM, q("get", namespace="team-a"))[0]
    allowed, reason = authorizer.access_review(TEAM, q("get", namespace="x"))
    assert not allowed and reason.startswith("RBAC: ")
    assert Authorizer().access_review(TEAM, q("delete", "nodes")) == (True, "")
    assert Authorizer().rules_review(TEAM, "x") == EVERYTHING


def test_own_api_handler_answers_reviews_and_nothing_else_posted() -> None:
    api = GatewayApi(lambda: {}, Clock(), policy=lambda: POLICY)

    def post(path: str, body: bytes = b"{}") -> FakeResponder:
        responder = FakeResponder()
        api.handle(ApiRequest("POST", path, "", {}, TEAM, body), responder)
        return responder

    whoami = post("/apis/authentication.k8s.io/v1beta1/selfsubjectreviews")
    assert whoami.code == 201
    assert whoami.json()["apiVersion"] == "authentication.k8s.io/v1beta1"
    assert post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews").code == 422
    assert post("/apis/cluster.karpor.io/v1beta1/clusters").code == 405
