"""The review objects (karpor.kube.reviews): paths, bodies (JSON and
protobuf), answers, and rule intersections matched as kube RBAC matches."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.rbacrules import (
    NonResourceRule,
    ResourceRule,
    intersect_non_resource_rules,
    intersect_resource_rules,
)
from karpor.kube.reviews import (
    ACCESS,
    RULES,
    WHOAMI,
    ReviewKind,
    RulesStatus,
    access_review,
    combine_rules,
    parse_access_review,
    parse_access_status,
    parse_rules_review,
    parse_rules_status,
    review_kind,
    review_request,
    rules_review,
    self_subject_review,
)
from karpor.kube.status import ApiError

SSAR = ReviewKind(ACCESS, "authorization.k8s.io", "v1")
SSRR = ReviewKind(RULES, "authorization.k8s.io", "v1")


def test_review_paths() -> None:
    for version in ("v1", "v1beta1", "v1alpha1"):
        kind = review_kind(f"/apis/authentication.k8s.io/{version}/selfsubjectreviews")
        assert kind == ReviewKind(WHOAMI, "authentication.k8s.io", version)
    assert review_kind("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews?dryRun=All") == SSAR
    assert review_kind("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews") == SSRR
    for path in (
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        "/apis/authorization.k8s.io/v1beta1/selfsubjectaccessreviews",
        "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews/x",
        "/api/v1/pods",
        "/",
    ):
        assert review_kind(path) is None, path
    assert SSAR.plural == "selfsubjectaccessreviews"


def test_whoami_document() -> None:
    kind = ReviewKind(WHOAMI, "authentication.k8s.io", "v1beta1")
    doc = self_subject_review(kind, "alice", ("dev",), "u-1", {"b": ("2",), "a": ("1",)})
    assert doc["apiVersion"] == "authentication.k8s.io/v1beta1"
    assert doc["status"]["userInfo"] == {
        "username": "alice",
        "uid": "u-1",
        "groups": ["dev"],
        "extra": {"a": ["1"], "b": ["2"]},
    }


def _ssar(spec: dict[str, object]) -> bytes:
    return json.dumps(
        {"kind": ACCESS, "apiVersion": "authorization.k8s.io/v1", "spec": spec}
    ).encode()


def test_access_review_json() -> None:
    attrs = {"verb": "get", "resource": "pods", "namespace": "a", "subresource": "log"}
    query = parse_access_review(_ssar({"resourceAttributes": attrs}), SSAR)
    assert (query.verb, query.resource, query.namespace, query.subresource) == (
        "get",
        "pods",
        "a",
        "log",
    )
    path = parse_access_review(
        _ssar({"nonResourceAttributes": {"verb": "get", "path": "/x"}}), SSAR
    )
    assert not path.is_resource and path.path == "/x"
    doc = access_review(SSAR, query, False, "no way", denied=True)
    assert doc["status"] == {"allowed": False, "denied": True, "reason": "no way"}
    assert doc["spec"] == {"resourceAttributes": attrs}
    assert json.loads(review_request(SSAR, doc["spec"]))["spec"] == doc["spec"]


def _field(number: int, data: bytes) -> bytes:
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


def test_access_review_protobuf() -> None:
    # kubectl 1.33 sends runtime.Unknown{typeMeta, raw: SelfSubjectAccessReview}
    attrs = _field(1, b"team-a") + _field(2, b"create") + _field(5, b"pods")
    review = _field(1, b"") + _field(2, _field(1, attrs))
    type_meta = _field(1, b"authorization.k8s.io/v1") + _field(2, ACCESS.encode())
    body = b"k8s\x00" + _field(1, type_meta) + _field(2, review)
    query = parse_access_review(body, SSAR)
    assert (query.verb, query.resource, query.namespace) == ("create", "pods", "team-a")
    rules = b"k8s\x00" + _field(2, _field(2, _field(1, b"team-b")))
    assert parse_rules_review(rules, SSRR) == "team-b"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"", 400),
        (b"[]", 400),
        (b"k8s\x00\x0a\xff", 400),
        (_ssar({}), 422),
        (_ssar({"resourceAttributes": {}, "nonResourceAttributes": {}}), 422),
    ],
)
def test_bad_access_reviews(body: bytes, code: int) -> None:
    with pytest.raises(ApiError) as caught:
        parse_access_review(body, SSAR)
    assert caught.value.code == code


def test_rules_review_needs_a_namespace() -> None:
    with pytest.raises(ApiError) as caught:
        parse_rules_review(b'{"spec": {}}', SSRR)
    assert caught.value.code == 422


@given(st.binary(max_size=64))
def test_any_body_is_a_review_or_a_status(body: bytes) -> None:
    for parse in (parse_access_review, parse_rules_review):
        try:
            parse(b"k8s\x00" + body, SSAR)
            parse(body, SSAR)
        except ApiError as error:
            assert error.code in (400, 422)


def test_cluster_answers() -> None:
    assert parse_access_status(b'{"status": {"allowed": true}}') == (True, "")
    assert parse_access_status(b'{"status": {"allowed": false, "reason": "r"}}') == (False, "r")
    assert parse_access_status(b"nope")[0] is False
    status = parse_rules_status(
        json.dumps(
            {
                "status": {
                    "resourceRules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
                    "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/x"]}],
                    "incomplete": True,
                }
            }
        ).encode()
    )
    assert status == RulesStatus(
        (ResourceRule(("get",), ("",), ("pods",)),), (NonResourceRule(("get",), ("/x",)),), True
    )
    assert parse_rules_status(b"{}").incomplete
    doc = rules_review(SSRR, "a", status)
    assert doc["spec"] == {"namespace": "a"} and doc["status"]["incomplete"] is True


# -- intersections, checked against RBAC's matching --------------------------------

VERBS = st.sampled_from(["get", "list", "create", "*"])
GROUPS = st.sampled_from(["", "apps", "*"])
RESOURCES = st.sampled_from(["pods", "pods/log", "*/log", "deployments", "*", "*/scale"])
NAMES = st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True).map(tuple)
RULE = st.builds(
    ResourceRule,
    st.lists(VERBS, min_size=1, max_size=2).map(tuple),
    st.lists(GROUPS, min_size=1, max_size=2).map(tuple),
    st.lists(RESOURCES, min_size=1, max_size=2).map(tuple),
    NAMES,
)
REQUEST = st.tuples(
    st.sampled_from(["get", "list", "create", "delete"]),
    st.sampled_from(["", "apps"]),
    st.sampled_from(["pods", "deployments"]),
    st.sampled_from(["", "log", "scale"]),
    st.sampled_from(["", "a", "b"]),
)


@given(st.lists(RULE, max_size=3), st.lists(RULE, max_size=3), REQUEST)
def test_resource_rule_intersection_allows_what_both_allow(
    a: list[ResourceRule], b: list[ResourceRule], request: tuple[str, str, str, str, str]
) -> None:
    both = intersect_resource_rules(a, b)
    expected = any(r.allows(*request) for r in a) and any(r.allows(*request) for r in b)
    assert any(r.allows(*request) for r in both) == expected


URLS = st.sampled_from(["*", "/logs/*", "/logs/a", "/l*", "/metrics", "/metrics*"])
PATH_RULE = st.builds(
    NonResourceRule,
    st.lists(st.sampled_from(["get", "post", "*"]), min_size=1, max_size=2).map(tuple),
    st.lists(URLS, min_size=1, max_size=2).map(tuple),
)


@given(
    st.lists(PATH_RULE, max_size=3),
    st.lists(PATH_RULE, max_size=3),
    st.sampled_from(["get", "post"]),
    st.sampled_from(["/logs/a", "/logs/b", "/lx", "/metrics", "/metricsx", "/"]),
)
def test_path_rule_intersection_allows_what_both_allow(
    a: list[NonResourceRule], b: list[NonResourceRule], verb: str, path: str
) -> None:
    both = intersect_non_resource_rules(a, b)
    expected = any(r.allows(verb, path) for r in a) and any(r.allows(verb, path) for r in b)
    assert any(r.allows(verb, path) for r in both) == expected


def test_combined_rules() -> None:
    ours = RulesStatus((ResourceRule(("*",)),), (NonResourceRule(("get",), ("/logs/*",)),))
    theirs = RulesStatus(
        (ResourceRule(("get", "list"), ("",), ("pods",)),),
        (NonResourceRule(("*",), ("*",)),),
        evaluation_error="partial",
    )
    combined = combine_rules(ours, theirs)
    assert combined.resource_rules == (ResourceRule(("get", "list"), ("",), ("pods",)),)
    assert combined.non_resource_rules == (NonResourceRule(("get",), ("/logs/*",)),)
    assert combined.evaluation_error == "partial"
