"""What the policy answers to the reviews a caller asks about itself (sans-IO).

``kubectl auth whoami``, ``auth can-i`` and ``auth can-i --list`` on a
cluster context are answered by the gateway for the identity it
authenticated (:mod:`karpor.kube.reviews` builds and reads the objects):

- :func:`whoami_extra`: the ``extra`` of the ``SelfSubjectReview``, the
  caller's own extra plus what the cluster sees, under ``karpor.io/`` keys:

  ``karpor.io/cluster``
      the cluster the review was asked of;
  ``karpor.io/cluster-identity``
      ``impersonated`` when the gateway impersonates someone on the cluster
      (the caller on a ``spec.impersonate`` cluster, the identity of
      ``kubectl --as``, or an identity-exchange target), ``credential``
      when the cluster sees the cluster's own credential;
  ``karpor.io/cluster-user``, ``karpor.io/cluster-groups``
      the impersonated user and groups (only with ``impersonated``);
  ``karpor.io/identity-exchange``
      the identity-exchange rule that decided, when one did;

- :func:`access_decision`: the policy's answer to a
  ``SelfSubjectAccessReview`` (its attributes read as the policy reads a
  request's: ``pods/exec`` is the verb ``exec``, any ``*/proxy``
  ``proxy``);
- :func:`policy_rules`: the policy's ``SelfSubjectRulesReview`` of a
  namespace, each rule translated to kube's terms (a karpor rule has no
  resource restriction: ``apiGroups: ["*"]``, ``resources: ["*"]``;
  ``exec``, ``attach``, ``portforward`` are ``create`` and ``get`` on
  ``pods/exec``..., ``proxy`` every verb on ``*/proxy``), plus discovery and
  the reviews themselves, which everyone who reaches the cluster may use;
- :func:`gateway_path_rules`: the rules about the gateway's own paths.

The front combines these with the cluster's own answer when the gateway
impersonates someone there (allowed only if both allow; the rules'
intersection): the cluster then judges the identity it will see.  When it
does not, the cluster sees its shared credential, whose permissions say
nothing about the caller, and the policy alone decides.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from karpor.auth.identity import ANONYMOUS_USER, Identity
from karpor.auth.policy import (
    DISCOVERY_URLS,
    STREAM_SUBRESOURCES,
    Attributes,
    Policy,
    Rule,
    groups_of,
)
from karpor.config.model import Cluster
from karpor.kube.rbacrules import NonResourceRule, ResourceRule
from karpor.kube.reviews import AccessQuery, RulesStatus

#: ``extra`` key: the cluster the review was asked of
EXTRA_CLUSTER = "karpor.io/cluster"
#: ``extra`` key: :data:`IMPERSONATED` or :data:`CREDENTIAL`
EXTRA_CLUSTER_IDENTITY = "karpor.io/cluster-identity"
#: ``extra`` key: the user the cluster sees (impersonated)
EXTRA_CLUSTER_USER = "karpor.io/cluster-user"
#: ``extra`` key: the groups the cluster sees (impersonated)
EXTRA_CLUSTER_GROUPS = "karpor.io/cluster-groups"
#: ``extra`` key: the identity-exchange rule that decided
EXTRA_EXCHANGE = "karpor.io/identity-exchange"
#: the cluster sees an identity the gateway impersonates
IMPERSONATED = "impersonated"
#: the cluster sees the cluster's own credential
CREDENTIAL = "credential"

#: what everyone who reaches a cluster may create: the reviews about oneself
REVIEW_RULES = (
    ResourceRule(("create",), ("authentication.k8s.io",), ("selfsubjectreviews",)),
    ResourceRule(
        ("create",),
        ("authorization.k8s.io",),
        ("selfsubjectaccessreviews", "selfsubjectrulesreviews"),
    ),
)
#: discovery, readable by everyone who reaches a cluster (:data:`DISCOVERY_URLS`)
DISCOVERY_RULE = NonResourceRule(("get", "head"), DISCOVERY_URLS)
#: everything (no policy file)
EVERYTHING = RulesStatus((ResourceRule(("*",)),), (NonResourceRule(("*",), ("*",)),))

_PLAIN_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


def whoami_extra(
    identity: Identity, cluster: str, upstream: Identity | None, exchange: str = ""
) -> dict[str, tuple[str, ...]]:
    """The ``extra`` of the caller's ``SelfSubjectReview`` on ``cluster``
    (``upstream``: whom the gateway impersonates there; see the module docstring)."""
    extra = {k: tuple(v) for k, v in identity.extra.items() if not k.startswith("karpor.io/")}
    extra[EXTRA_CLUSTER] = (cluster,)
    if upstream is None:
        extra[EXTRA_CLUSTER_IDENTITY] = (CREDENTIAL,)
    else:
        extra[EXTRA_CLUSTER_IDENTITY] = (IMPERSONATED,)
        extra[EXTRA_CLUSTER_USER] = (upstream.user,)
        groups = tuple(g for g in upstream.with_authenticated().groups)
        if groups:
            extra[EXTRA_CLUSTER_GROUPS] = groups
    if exchange:
        extra[EXTRA_EXCHANGE] = (exchange,)
    return extra


def query_attributes(query: AccessQuery) -> Attributes:
    """The policy attributes of a ``SelfSubjectAccessReview`` question."""
    if not query.is_resource:
        return Attributes(verb=query.verb, is_resource_request=False, path=query.path or "/")
    verb = query.verb
    if query.resource == "pods" and query.subresource in STREAM_SUBRESOURCES:
        verb = query.subresource
    elif query.subresource == "proxy":
        verb = "proxy"
    return Attributes(
        verb=verb,
        namespace=query.namespace,
        resource=query.resource,
        subresource=query.subresource,
        api_group=query.group,
        name=query.name,
    )


def access_decision(
    policy: Policy, identity: Identity, cluster: Cluster, query: AccessQuery
) -> tuple[bool, str]:
    """``(allowed, reason)``: the policy's answer for ``identity`` on ``cluster``."""
    if (
        query.is_resource
        and (query.group, query.resource) in _REVIEW_RESOURCES
        and query.verb == "create"
    ):
        return True, "karpor: every caller may review itself"
    decision = policy.allows(identity, cluster, query_attributes(query))
    if not decision.allowed:
        return False, f"karpor: {decision.reason}"
    if decision.rule is None:
        return True, "karpor: no access policy"
    return True, f"karpor: allowed by rules[{decision.rule}]"


_REVIEW_RESOURCES = frozenset(
    (rule.api_groups[0], resource) for rule in REVIEW_RULES for resource in rule.resources
)


def _resource_rules(verbs: frozenset[str]) -> list[ResourceRule]:
    """A karpor rule's verbs as kube resource rules."""
    if "*" in verbs:
        return [ResourceRule(("*",))]
    rules: list[ResourceRule] = []
    plain = tuple(v for v in _PLAIN_VERBS if v in verbs)
    if plain:
        rules.append(ResourceRule(plain))
    for stream in sorted(STREAM_SUBRESOURCES & verbs):
        rules.append(ResourceRule(("create", "get"), ("",), (f"pods/{stream}",)))
    if "proxy" in verbs:
        rules.append(ResourceRule(("*",), ("*",), ("*/proxy",)))
    if "impersonate" in verbs:
        rules.append(ResourceRule(("impersonate",)))
    return rules


def _in_namespace(rule: Rule, namespace: str) -> bool:
    return rule.namespaces is None or any(fnmatchcase(namespace, p) for p in rule.namespaces)


def policy_rules(
    policy: Policy, identity: Identity, cluster: Cluster, namespace: str
) -> RulesStatus:
    """What the policy lets ``identity`` do in ``namespace`` of ``cluster``
    (see the module docstring); everything without a policy file."""
    if not policy.enforcing:
        return EVERYTHING
    groups = groups_of(identity)
    resource: list[ResourceRule] = []
    paths: list[NonResourceRule] = []
    reaches = False
    for rule in policy.rules:
        if not rule.applies_to(identity.user, groups) or not rule.covers(cluster):
            continue
        reaches = True
        if rule.non_resource_urls is not None:
            path_rule = NonResourceRule(tuple(sorted(rule.verbs)), rule.non_resource_urls)
            if path_rule not in paths:
                paths.append(path_rule)
        elif _in_namespace(rule, namespace):
            for entry in _resource_rules(rule.verbs):
                if entry not in resource:
                    resource.append(entry)
    if reaches:
        resource[:0] = REVIEW_RULES
        paths.insert(0, DISCOVERY_RULE)
    return RulesStatus(tuple(resource), tuple(paths))


def gateway_path_rules(policy: Policy, identity: Identity) -> list[NonResourceRule]:
    """The rules about the gateway's own paths (``/metrics``) that apply to
    ``identity``; without a policy file every path (``get``, ``head``)."""
    if not policy.enforcing:
        if identity.user == ANONYMOUS_USER:
            return []
        return [NonResourceRule(("get", "head"), ("*",))]
    groups = groups_of(identity)
    return [
        NonResourceRule(tuple(sorted(rule.verbs)), rule.non_resource_urls or ())
        for rule in policy.rules
        if rule.about_gateway and rule.applies_to(identity.user, groups)
    ]
