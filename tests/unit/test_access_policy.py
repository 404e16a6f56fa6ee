"""The policy file: rules, verbs from request info, denials, identity exchange."""

from __future__ import annotations

from fnmatch import fnmatchcase

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.auth.identity import Identity
from karpor.auth.policy import (
    ALLOW_ALL,
    Attributes,
    Exchange,
    PolicyError,
    attributes,
    load_policy,
    parse_policy,
)
from karpor.config.model import Cluster
from karpor.kube.requestinfo import parse_request_info

ALICE = Identity("alice", ("dev",))
BOB = Identity("bob", ("ops",))
SIM1 = Cluster("sim-1", "https://127.0.0.1:1", labels={"env": "dev"})
SIM2 = Cluster("sim-2", "https://127.0.0.1:2", labels={"env": "prod", "tier": "web"})
PROD = Cluster("prod-east", "https://10.0.0.1", labels={"env": "prod"})

POLICY = parse_policy(
    """
rules:
- users: [alice]
  clusters: ["sim-*"]
  verbs: [get, list, watch]
- users: [alice]
  clusters: [sim-1]
  verbs: ["*"]
  namespaces: [team-a]
- groups: [ops]
  clusterSelector: {matchLabels: {env: prod}}
  verbs: [exec, portforward]
- groups: [ops]
  clusterSelector:
    matchExpressions: [{key: tier, operator: In, values: [web]}]
  verbs: [impersonate]
""",
    "policy.yaml",
)


def attrs(method: str, path: str, query: str = "") -> Attributes:
    return attributes(parse_request_info(method, path, query))


def test_verbs_from_request_info():
    assert attrs("GET", "/api/v1/namespaces/a/pods").verb == "list"
    assert attrs("GET", "/api/v1/namespaces/a/pods", "watch=true").verb == "watch"
    assert attrs("GET", "/api/v1/namespaces/a/pods/p").verb == "get"
    assert attrs("DELETE", "/api/v1/namespaces/a/pods").verb == "deletecollection"
    assert attrs("POST", "/api/v1/namespaces/a/pods/p/exec").verb == "exec"
    assert attrs("GET", "/api/v1/namespaces/a/pods/p/exec").verb == "exec"
    assert attrs("POST", "/api/v1/namespaces/a/pods/p/attach").verb == "attach"
    assert attrs("POST", "/api/v1/namespaces/a/pods/p/portforward").verb == "portforward"
    assert attrs("GET", "/api/v1/namespaces/a/services/s/proxy/x").verb == "proxy"
    assert attrs("GET", "/api/v1/nodes/n/proxy/metrics").verb == "proxy"
    assert attrs("GET", "/api/v1/namespaces/a/pods/p/log").verb == "get"
    version = attrs("GET", "/version")
    assert not version.is_resource_request and version.path == "/version"


def test_read_only_user_cannot_create():
    assert POLICY.allows(ALICE, SIM2, attrs("GET", "/api/v1/namespaces/x/pods")).allowed
    denied = POLICY.allows(ALICE, SIM2, attrs("POST", "/api/v1/namespaces/team-b/pods"))
    assert not denied.allowed
    assert denied.reason == (
        'User "alice" cannot create resource "pods" in API group "" '
        'in the namespace "team-b" on cluster "sim-2"'
    )
    error = denied.error()
    assert error.code == 403 and error.reason == "Forbidden"
    assert error.message == f"pods is forbidden: {denied.reason}"
    assert error.details == {"group": "", "kind": "pods"}


def test_namespace_limited_rule():
    # full rights in team-a on sim-1, nothing else beyond reading
    assert POLICY.allows(ALICE, SIM1, attrs("POST", "/api/v1/namespaces/team-a/pods")).allowed
    assert POLICY.allows(ALICE, SIM1, attrs("GET", "/api/v1/namespaces/team-a")).allowed
    denied = POLICY.allows(
        ALICE, SIM1, attrs("DELETE", "/apis/apps/v1/namespaces/team-b/deployments/d")
    )
    assert not denied.allowed
    assert denied.error().message == (
        'deployments.apps "d" is forbidden: User "alice" cannot delete resource "deployments" '
        'in API group "apps" in the namespace "team-b" on cluster "sim-1"'
    )
    cluster_scoped = POLICY.allows(ALICE, SIM1, attrs("POST", "/api/v1/namespaces"))
    assert cluster_scoped.reason == (
        'User "alice" cannot create resource "namespaces" in API group "" at the cluster scope '
        'on cluster "sim-1"'
    )


def test_exec_and_portforward_are_separate_verbs_on_label_selected_clusters():
    exec_ = attrs("POST", "/api/v1/namespaces/a/pods/p/exec")
    assert POLICY.allows(BOB, PROD, exec_).allowed
    assert POLICY.allows(
        BOB, PROD, attrs("POST", "/api/v1/namespaces/a/pods/p/portforward")
    ).allowed
    attach = POLICY.allows(BOB, PROD, attrs("POST", "/api/v1/namespaces/a/pods/p/attach"))
    assert not attach.allowed
    assert 'cannot attach resource "pods/attach"' in attach.reason
    assert not POLICY.allows(BOB, SIM1, exec_).allowed  # env=dev
    assert not POLICY.allows(ALICE, PROD, exec_).allowed  # not her rule


def test_discovery_for_anyone_who_reaches_the_cluster():
    for path in ("/version", "/api", "/apis", "/apis/apps", "/openapi/v3", "/healthz"):
        assert POLICY.allows(BOB, PROD, attrs("GET", path)).allowed
        assert not POLICY.allows(ALICE, PROD, attrs("GET", path)).allowed
    post = POLICY.allows(BOB, PROD, attrs("POST", "/logs"))
    assert not post.allowed
    assert post.reason == 'User "bob" cannot post path "/logs" on cluster "prod-east"'
    assert post.error().message == f"forbidden: {post.reason}"


def test_deny_by_default_and_absent_policy_allows_all():
    stranger = Identity("mallory")
    create = attrs("POST", "/api/v1/namespaces/a/pods")
    assert not POLICY.allows(stranger, SIM1, create).allowed
    assert ALLOW_ALL.allows(stranger, SIM1, create).allowed
    assert ALLOW_ALL.visible_clusters(stranger, [SIM1, SIM2]) == [SIM1, SIM2]
    assert POLICY.visible_clusters(stranger, [SIM1, SIM2, PROD]) == []
    assert POLICY.visible_clusters(ALICE, [SIM1, SIM2, PROD]) == [SIM1, SIM2]
    assert POLICY.visible_clusters(BOB, [SIM1, SIM2, PROD]) == [SIM2, PROD]


def test_system_groups_are_implied():
    policy = parse_policy(
        "rules:\n- groups: [system:authenticated]\n  clusters: ['*']\n  verbs: [get]\n"
        "- groups: [system:unauthenticated]\n  clusters: [sim-1]\n  verbs: [list]\n",
        "p",
    )
    assert policy.allows(Identity("x"), SIM2, attrs("GET", "/api/v1/nodes/n")).allowed
    anonymous = Identity("system:anonymous")
    assert not policy.allows(anonymous, SIM2, attrs("GET", "/api/v1/nodes/n")).allowed
    assert policy.allows(anonymous, SIM1, attrs("GET", "/api/v1/nodes")).allowed


def test_identity_exchange_first_match_wins():
    policy = parse_policy(
        """
rules:
- groups: [system:authenticated]
  clusters: ["*"]
  verbs: ["*"]
identityExchange:
- name: ops-admin-on-prod
  type: StaticMapping
  source: {group: ops, cluster: "prod-*"}
  target: {user: cluster-admin, groups: [system:masters]}
- type: PrivilegedIdentityExchanger
  source: {userPattern: "svc-.*", clusterSelector: {matchLabels: {env: prod}}}
- type: StaticMappingIdentityExchanger
  source: {}
  target: {user: everyone}
""",
        "p",
    )
    assert policy.exchange(BOB, PROD) == Exchange(
        "ops-admin-on-prod", target=Identity("cluster-admin", ("system:masters",))
    )
    assert policy.exchange(Identity("svc-ci"), SIM2) == Exchange(
        "identityExchange[1]", privileged=True
    )
    assert policy.exchange(Identity("svc-ci"), SIM1) == Exchange(
        "identityExchange[2]", target=Identity("everyone")
    )
    assert POLICY.exchange(BOB, PROD) is None


def test_parse_errors_name_the_field():
    text = """
rules:
- users: [alice]
  verbs: [get, lst]
- groups: []
  clusters: [x]
  verbs: ["*"]
  namespace: [a]
- users: [a]
  clusterSelector:
    matchExpressions: [{key: env, operator: In}, {key: t, operator: Has}]
  verbs: [get]
identityExchange:
- type: External
  source: {userPattern: "("}
- type: StaticMapping
oops: 1
"""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "policy.yaml")
    assert info.value.problems == (
        "policy.yaml: oops: unknown key (known: rules, identityExchange)",
        "policy.yaml: rules[0]: needs clusters or clusterSelector "
        '(clusters: ["*"] for every cluster)',
        'policy.yaml: rules[0].verbs[1]: unknown verb "lst" (known: *, attach, create, delete, '
        "deletecollection, exec, get, impersonate, list, patch, portforward, proxy, update, watch)",
        "policy.yaml: rules[1].namespace: unknown key (did you mean namespaces?)",
        "policy.yaml: rules[1].groups: must not be empty (leave the key out instead)",
        "policy.yaml: rules[1]: needs users or groups "
        "(groups: [system:authenticated] for everyone)",
        "policy.yaml: rules[2].clusterSelector.matchExpressions[0].values: must not be empty "
        "with operator In",
        "policy.yaml: rules[2].clusterSelector.matchExpressions[1].operator: must be one of "
        "In, NotIn, Exists, DoesNotExist",
        'policy.yaml: identityExchange[0].type: unsupported "External": use StaticMapping or '
        "Privileged",
        "policy.yaml: identityExchange[0].source.userPattern: invalid regular expression: "
        "missing ), unterminated subpattern at position 0",
        "policy.yaml: identityExchange[1].target: required with type StaticMapping",
    )


def test_a_null_selector_key_is_an_error_not_a_wider_rule():
    """A requirement whose key is null once vanished, selecting every cluster."""
    text = """
rules:
- users: [a]
  clusterSelector:
    matchExpressions: [{key: null, operator: Exists}, {key: env, operator: null}]
  verbs: [get]
"""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p")
    assert info.value.problems == (
        "p: rules[0].clusterSelector.matchExpressions[0].key: required",
        "p: rules[0].clusterSelector.matchExpressions[1].operator: required",
    )


def test_yaml_and_file_errors(tmp_path):
    with pytest.raises(PolicyError, match=r"^p: yaml: .* \(line 3\)$"):
        parse_policy("rules:\n  - [\n", "p")
    with pytest.raises(PolicyError, match="p: rules: required"):
        parse_policy("", "p")
    path = tmp_path / "policy.yaml"
    path.write_text("rules: []\n")
    policy = load_policy(str(path))
    assert policy.enforcing and policy.rules == ()
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(str(tmp_path / "none.yaml"))


# -- properties -----------------------------------------------------------------

USERS = ["alice", "bob", "carol"]
GROUPS = ["dev", "ops"]
CLUSTER_NAMES = ["sim-1", "sim-2", "prod-1"]
NAMESPACES = ["team-a", "team-b"]
ALL_VERBS = ["get", "list", "watch", "create", "delete", "exec", "portforward", "proxy"]

rule_strategy = st.fixed_dictionaries(
    {
        "users": st.lists(st.sampled_from(USERS), min_size=1, max_size=2),
        "clusters": st.lists(
            st.sampled_from([*CLUSTER_NAMES, "sim-*", "*"]), min_size=1, max_size=2
        ),
        "verbs": st.lists(st.sampled_from([*ALL_VERBS, "*"]), min_size=1, max_size=3),
    },
    optional={
        "groups": st.lists(st.sampled_from(GROUPS), min_size=1, max_size=2),
        "namespaces": st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=2),
    },
)
request_strategy = st.tuples(
    st.sampled_from(USERS),
    st.lists(st.sampled_from(GROUPS), max_size=2),
    st.sampled_from(CLUSTER_NAMES),
    st.sampled_from(ALL_VERBS),
    st.sampled_from(["", *NAMESPACES, "other"]),
)


@settings(max_examples=300)
@given(st.lists(rule_strategy, max_size=4), request_strategy)
def test_never_grants_what_no_rule_names(rules, request):
    policy = parse_policy(yaml.safe_dump({"rules": rules}), "p")
    user, groups, cluster, verb, namespace = request
    decision = policy.allows(
        Identity(user, tuple(groups)),
        Cluster(cluster, "https://h"),
        Attributes(verb=verb, namespace=namespace, resource="pods"),
    )
    named = any(
        (user in r["users"] or set(groups) & set(r.get("groups", ())))
        and any(fnmatchcase(cluster, c) for c in r["clusters"])
        and (verb in r["verbs"] or "*" in r["verbs"])
        and ("namespaces" not in r or namespace in r["namespaces"])
        for r in rules
    )
    assert decision.allowed == named
    if not decision.allowed:
        assert f'User "{user}" cannot {verb} resource "pods"' in decision.reason


@given(
    st.lists(rule_strategy.filter(lambda r: "namespaces" in r), min_size=1, max_size=4),
    request_strategy,
    st.sampled_from(["nodes", "namespaces", "clusterroles"]),
)
def test_namespace_restriction_blocks_cluster_scoped_resources(rules, request, resource):
    policy = parse_policy(yaml.safe_dump({"rules": rules}), "p")
    user, groups, cluster, verb, _ = request
    decision = policy.allows(
        Identity(user, tuple(groups)),
        Cluster(cluster, "https://h"),
        Attributes(verb=verb, resource=resource),
    )
    assert not decision.allowed
    assert decision.reason.endswith(f'at the cluster scope on cluster "{cluster}"')


# -- the gateway's own paths (nonResourceURLs) -------------------------------------------

PATHS = parse_policy(
    """
rules:
- users: [prometheus]
  nonResourceURLs: ["/metrics"]
  verbs: [get]
- groups: [debuggers]
  nonResourceURLs: ["/debug/*"]
  verbs: ["*"]
- users: [alice]
  clusters: ["*"]
  verbs: ["*"]
""",
    "paths.yaml",
)
PROMETHEUS = Identity("prometheus", ())


def test_a_nonresourceurls_rule_grants_its_verbs_on_its_paths():
    assert PATHS.allows_path(PROMETHEUS, "get", "/metrics").allowed
    assert not PATHS.allows_path(PROMETHEUS, "head", "/metrics").allowed
    assert not PATHS.allows_path(PROMETHEUS, "get", "/metrics/x").allowed
    debugger = Identity("dave", ("debuggers",))
    assert PATHS.allows_path(debugger, "post", "/debug/pprof").allowed
    assert not PATHS.allows_path(debugger, "get", "/metrics").allowed


def test_a_cluster_rule_grants_no_gateway_path_and_the_denial_reads_like_kube():
    decision = PATHS.allows_path(ALICE, "get", "/metrics")
    assert not decision.allowed
    assert decision.reason == 'User "alice" cannot get path "/metrics"'
    assert decision.error().code == 403
    assert decision.error().message == 'forbidden: User "alice" cannot get path "/metrics"'


def test_a_nonresourceurls_rule_reaches_no_cluster():
    assert not PATHS.reaches(PROMETHEUS, SIM1)
    assert PATHS.visible_clusters(PROMETHEUS, [SIM1, SIM2]) == []
    assert not PATHS.allows(PROMETHEUS, SIM1, attrs("GET", "/version")).allowed
    assert PATHS.reaches(ALICE, SIM1)


def test_without_a_policy_any_authenticated_caller_but_anonymous_may_read_paths():
    assert ALLOW_ALL.allows_path(BOB, "get", "/metrics").allowed
    anonymous = Identity("system:anonymous", ("system:unauthenticated",))
    assert not ALLOW_ALL.allows_path(anonymous, "get", "/metrics").allowed


def test_nonresourceurls_rule_errors_name_the_field():
    text = """
rules:
- users: [p]
  nonResourceURLs: ["metrics", "/a*b", "*"]
  clusters: ["*"]
  namespaces: [x]
  verbs: [get, exec]
- users: [q]
  nonResourceURLs: []
  verbs: [get]
"""
    with pytest.raises(PolicyError) as info:
        parse_policy(text, "p.yaml")
    problems = info.value.problems
    assert any(
        p.startswith("p.yaml: rules[0].nonResourceURLs[0]: must be a path") for p in problems
    )
    assert any(
        p.startswith("p.yaml: rules[0].nonResourceURLs[1]: must be a path") for p in problems
    )
    assert not any("nonResourceURLs[2]" in p for p in problems)
    assert not any("rules[0].clusters" in p for p in problems)  # paths of clusters
    assert any(
        p.startswith("p.yaml: rules[0].namespaces: not with nonResourceURLs") for p in problems
    )
    assert any(p.startswith('p.yaml: rules[0].verbs[1]: unknown verb "exec" for') for p in problems)
    assert any(
        p.startswith("p.yaml: rules[1].nonResourceURLs: must not be empty") for p in problems
    )
    with pytest.raises(PolicyError) as null:
        parse_policy(
            "rules:\n- users: [p]\n  nonResourceURLs: [/x]\n  clusters:\n  verbs: [get]\n", "p"
        )
    assert null.value.problems == ("p: rules[0].clusters: must be a list of strings, not null",)


# -- non-resource paths of clusters (issue 14, item 1) -------------------------------------

CLUSTER_PATHS = parse_policy(
    """
rules:
- users: [alice]
  clusters: [sim-1]
  verbs: [get, list, watch]
  namespaces: [team-a]
- users: [root]
  clusters: ["*"]
  verbs: ["*"]
- users: [sre]
  clusters: ["sim-*"]
  nonResourceURLs: ["/metrics", "/logs/*"]
  verbs: [get]
- users: [sre]
  clusterSelector: {matchLabels: {env: prod}}
  nonResourceURLs: ["*"]
  verbs: ["*"]
""",
    "cluster-paths.yaml",
)
ROOT = Identity("root")
SRE = Identity("sre")
#: what the review read with a namespace-limited user's rule
SENSITIVE = (
    "/logs/",
    "/logs/kube-apiserver.log",
    "/debug/pprof/",
    "/metrics",
    "/configz",
    "/debug/flags/v",
    "/",
    "/healthz/etcd",
    "/readyz/ping",
    "/livez/log",
)
DISCOVERY = (
    "/api",
    "/api/v1",
    "/apis",
    "/apis/apps",
    "/apis/apps/v1",
    "/version",
    "/version/",
    "/openapi/v2",
    "/openapi/v3",
    "/openapi/v3/apis/apps/v1",
    "/healthz",
    "/readyz",
    "/livez",
)


@pytest.mark.parametrize("user", [ALICE, ROOT])
@pytest.mark.parametrize("path", SENSITIVE)
def test_resource_rules_grant_no_non_resource_path(user: Identity, path: str):
    for method in ("GET", "HEAD"):
        decision = CLUSTER_PATHS.allows(user, SIM1, attrs(method, path))
        assert not decision.allowed
        assert decision.reason == (
            f'User "{user.user}" cannot {method.lower()} path "{path}" on cluster "sim-1"'
        )


@pytest.mark.parametrize("path", DISCOVERY)
def test_discovery_is_open_to_whoever_reaches_the_cluster_and_only_for_reading(path: str):
    for user in (ALICE, ROOT, SRE):
        for method in ("GET", "HEAD"):
            assert CLUSTER_PATHS.allows(user, SIM1, attrs(method, path)).allowed
    assert not CLUSTER_PATHS.allows(ALICE, SIM2, attrs("GET", path)).allowed  # not reached
    assert not CLUSTER_PATHS.allows(Identity("x"), SIM1, attrs("GET", path)).allowed
    assert not CLUSTER_PATHS.allows(ROOT, SIM1, attrs("POST", path)).allowed


def test_a_nonresourceurls_rule_with_clusters_grants_its_paths_there():
    for path in ("/metrics", "/logs/", "/logs/a.log"):
        assert CLUSTER_PATHS.allows(SRE, SIM1, attrs("GET", path)).allowed
        assert not CLUSTER_PATHS.allows(SRE, SIM1, attrs("HEAD", path)).allowed
    assert not CLUSTER_PATHS.allows(SRE, SIM1, attrs("GET", "/logs")).allowed  # not "/logs/*"
    assert not CLUSTER_PATHS.allows(SRE, SIM1, attrs("GET", "/debug/pprof/")).allowed
    # the selector rule: every path, every method, on env=prod clusters only
    assert CLUSTER_PATHS.allows(SRE, PROD, attrs("POST", "/debug/pprof/profile")).allowed
    assert not CLUSTER_PATHS.allows(SRE, SIM1, attrs("POST", "/metrics")).allowed
    # paths are not resources
    assert not CLUSTER_PATHS.allows(SRE, SIM1, attrs("GET", "/api/v1/namespaces")).allowed
    # such a rule reaches its clusters (discovery, kubectl get clusters), not the gateway
    assert CLUSTER_PATHS.visible_clusters(SRE, [SIM1, SIM2, PROD]) == [SIM1, SIM2, PROD]
    assert not CLUSTER_PATHS.allows_path(SRE, "get", "/metrics").allowed


def test_gateway_path_rules_keep_their_meaning_beside_cluster_path_rules():
    policy = parse_policy(
        """
rules:
- users: [prometheus]
  nonResourceURLs: ["/metrics"]
  verbs: [get]
- users: [prometheus]
  clusters: [sim-1]
  nonResourceURLs: ["/metrics"]
  verbs: [get]
""",
        "p",
    )
    assert policy.allows_path(PROMETHEUS, "get", "/metrics").rule == 0
    assert policy.allows(PROMETHEUS, SIM1, attrs("GET", "/metrics")).rule == 1
    assert not policy.allows(PROMETHEUS, SIM2, attrs("GET", "/metrics")).allowed


def test_who_may_learn_a_name_and_see_an_endpoint():
    # names: rules naming the name (globs too), not selectors
    assert POLICY.names(ALICE, "sim-9") and not POLICY.names(ALICE, "prod-east")
    assert not POLICY.names(BOB, "prod-east")  # selector rules only
    assert not POLICY.names(Identity("mallory"), "sim-1")
    assert ALLOW_ALL.names(BOB, "anything")
    assert not ALLOW_ALL.names(Identity("system:anonymous"), "anything")
    # endpoints: a resource rule without namespaces
    assert POLICY.shows_endpoint(ALICE, SIM1) and POLICY.shows_endpoint(BOB, PROD)
    team = parse_policy(
        "rules:\n- users: [t]\n  clusters: ['*']\n  verbs: ['*']\n  namespaces: [a]\n"
        "- users: [t]\n  clusters: ['*']\n  nonResourceURLs: ['*']\n  verbs: ['*']\n",
        "p",
    )
    assert team.reaches(Identity("t"), SIM1) and not team.shows_endpoint(Identity("t"), SIM1)
    assert not CLUSTER_PATHS.shows_endpoint(ALICE, SIM1)
    assert CLUSTER_PATHS.shows_endpoint(ROOT, SIM1) and not CLUSTER_PATHS.shows_endpoint(SRE, SIM1)
    assert ALLOW_ALL.shows_endpoint(BOB, SIM1)
    assert not ALLOW_ALL.shows_endpoint(Identity("system:anonymous"), SIM1)


path_rule_strategy = st.fixed_dictionaries(
    {
        "users": st.lists(st.sampled_from(USERS), min_size=1, max_size=2),
        "nonResourceURLs": st.lists(
            st.sampled_from(["/metrics", "/logs/*", "/debug/*", "*", "/healthz/*"]),
            min_size=1,
            max_size=2,
        ),
        "verbs": st.lists(st.sampled_from(["get", "head", "post", "*"]), min_size=1, max_size=2),
    },
    optional={
        "clusters": st.lists(
            st.sampled_from([*CLUSTER_NAMES, "sim-*", "*"]), min_size=1, max_size=2
        ),
    },
)
PROBE_PATHS = [
    "/metrics",
    "/logs/",
    "/logs/x",
    "/debug/pprof/",
    "/configz",
    "/healthz/etcd",
    "/healthz",
    "/api",
    "/apis/apps/v1",
    "/openapi/v3/x",
    "/version",
    "/",
]


@settings(max_examples=300)
@given(
    st.lists(st.one_of(rule_strategy, path_rule_strategy), max_size=4),
    st.sampled_from(USERS),
    st.sampled_from(CLUSTER_NAMES),
    st.sampled_from(["get", "head", "post"]),
    st.sampled_from(PROBE_PATHS),
)
def test_a_path_is_granted_only_by_a_rule_naming_it_or_as_discovery(
    rules, user, cluster, verb, path
):
    policy = parse_policy(yaml.safe_dump({"rules": rules}), "p")
    decision = policy.allows(
        Identity(user), Cluster(cluster, "https://h"), Attributes(verb, False, path=path)
    )

    def on_cluster(r):
        return user in r["users"] and any(fnmatchcase(cluster, c) for c in r.get("clusters", ()))

    def matches(url):
        return url == path or (url.endswith("*") and path.startswith(url[:-1]))

    discovery = verb in ("get", "head") and (
        path in ("/api", "/healthz", "/version") or path.startswith(("/apis/", "/openapi/"))
    )
    named = any(
        on_cluster(r)
        and "nonResourceURLs" in r
        and ("*" in r["verbs"] or verb in r["verbs"])
        and any(matches(u) for u in r["nonResourceURLs"])
        for r in rules
    )
    assert decision.allowed == (named or (discovery and any(on_cluster(r) for r in rules)))
