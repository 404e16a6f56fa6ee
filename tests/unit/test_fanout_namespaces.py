"""A fan-out LIST narrowed to the namespaces the access policy names: which
namespaces (the policy) and the request each is asked with (sans-IO)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.identity import Identity
from karpor.auth.policy import ALLOW_ALL, parse_policy
from karpor.config.model import Cluster
from karpor.kube.namespacing import namespaced_target, narrowable
from karpor.kube.requestinfo import parse_request_info

POLICY = parse_policy(
    yaml.safe_dump(
        {
            "rules": [
                {"users": ["ann"], "clusters": ["a"], "verbs": ["list"], "namespaces": ["x", "w"]},
                {"users": ["ann"], "clusters": ["a", "b"], "verbs": ["*"], "namespaces": ["t-*"]},
                {"users": ["ann"], "clusters": ["a"], "verbs": ["get"], "namespaces": ["y"]},
                {"groups": ["g"], "clusters": ["a"], "verbs": ["list"], "namespaces": ["x", "z"]},
                {"users": ["ann"], "clusters": ["c"], "verbs": ["list"]},
                {"users": ["ann"], "clusters": ["a"], "nonResourceURLs": ["/x"], "verbs": ["*"]},
            ]
        }
    ),
    "policy.yaml",
)


def test_the_namespaces_a_caller_may_list_on_a_cluster() -> None:
    ann = Identity("ann", ("g",))
    assert POLICY.granted_namespaces(ann, Cluster("a", ""), "list") == (["w", "x", "z"], ["t-*"])
    assert POLICY.granted_namespaces(ann, Cluster("b", ""), "list") == ([], ["t-*"])
    # a rule about every namespace is not a namespace rule; another verb's rules do not count
    assert POLICY.granted_namespaces(ann, Cluster("c", ""), "list") == ([], [])
    assert POLICY.granted_namespaces(ann, Cluster("a", ""), "get") == (["y"], ["t-*"])
    assert POLICY.granted_namespaces(Identity("bob"), Cluster("a", ""), "list") == ([], [])
    assert ALLOW_ALL.granted_namespaces(ann, Cluster("a", ""), "list") == ([], [])


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/v1/pods", "/api/v1/namespaces/team/pods"),
        ("/apis/apps/v1/deployments", "/apis/apps/v1/namespaces/team/deployments"),
        ("/apis/example.com/v1beta1/widgets", "/apis/example.com/v1beta1/namespaces/team/widgets"),
    ],
)
def test_a_list_across_namespaces_asks_one(path: str, expected: str) -> None:
    info = parse_request_info("GET", path, "limit=5")
    assert narrowable(info)
    target = namespaced_target(path.encode() + b"?limit=5&labelSelector=a%3Db", info, "team")
    assert target == expected.encode() + b"?limit=5&labelSelector=a%3Db"


@pytest.mark.parametrize(
    "path",
    ["/api/v1/namespaces", "/api/v1/namespaces/x/pods", "/api/v1/nodes/n1", "/api", "/version"],
)
def test_what_is_not_narrowed(path: str) -> None:
    assert not narrowable(parse_request_info("GET", path, ""))


@given(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True))
def test_the_narrowed_target_names_that_namespace(namespace: str) -> None:
    info = parse_request_info("GET", "/apis/apps/v1/deployments", "")
    target = namespaced_target(b"/apis/apps/v1/deployments", info, namespace).decode()
    narrowed = parse_request_info("GET", target, "")
    assert (narrowed.namespace, narrowed.resource, narrowed.verb) == (
        namespace,
        "deployments",
        "list",
    )
