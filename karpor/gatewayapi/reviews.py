"""The reviews a caller asks about itself on the gateway's own API (sans-IO):
``kubectl auth whoami``, ``auth can-i`` and ``auth can-i --list`` with
``--context karpor``.

- ``SelfSubjectReview``: the identity the gateway authenticated;
- ``SelfSubjectAccessReview``: ``get``, ``list`` and ``watch`` of
  ``clusters.cluster.karpor.io`` are allowed to every caller (a list shows
  only the clusters the caller reaches), ``create`` of these reviews too;
  any other resource or verb is not (the API is read-only; whether a
  cluster may be reached through ``clusters/NAME/proxy`` is asked on that
  cluster's context).  Non-resource paths: ``get`` and ``head`` of the
  public paths and of discovery (:data:`OWN_READABLE`) are allowed; any
  other path as the policy's rules about the gateway's own paths decide
  (``/metrics``: :meth:`karpor.auth.policy.Policy.allows_path`);
- ``SelfSubjectRulesReview``: the same, as rules.
"""

from __future__ import annotations

from typing import Any

from karpor.auth.identity import Identity
from karpor.auth.policy import Policy
from karpor.auth.reviews import REVIEW_RULES, gateway_path_rules
from karpor.kube import discovery
from karpor.kube.rbacrules import NonResourceRule, ResourceRule
from karpor.kube.reviews import (
    ACCESS,
    WHOAMI,
    ReviewKind,
    RulesStatus,
    access_review,
    parse_access_review,
    parse_rules_review,
    rules_review,
    self_subject_review,
)

#: what every caller may read on the gateway (besides ``/metrics``, which the policy decides)
OWN_READABLE = (
    "/",
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/openapi/*",
    "/healthz",
    "/healthz/*",
    "/livez",
    "/livez/*",
    "/readyz",
    "/readyz/*",
    "/version",
)
_READ = ("get", "list", "watch")
#: the rule every caller has on the gateway's resources
CLUSTERS_RULE = ResourceRule(_READ, (discovery.GROUP,), ("clusters",))
_PATHS_RULE = NonResourceRule(("get", "head"), OWN_READABLE)


def own_review(kind: ReviewKind, body: bytes, identity: Identity, policy: Policy) -> dict[str, Any]:
    """The answer to a review ``identity`` asks about itself on the gateway
    (a 400 / 422 :class:`~karpor.kube.status.ApiError` for a bad body)."""
    if kind.kind == WHOAMI:
        groups = identity.with_authenticated().groups
        return self_subject_review(kind, identity.user, groups, identity.uid, identity.extra)
    if kind.kind == ACCESS:
        query = parse_access_review(body, kind)
        if query.is_resource:
            allowed = any(
                r.allows(query.verb, query.group, query.resource, query.subresource, query.name)
                for r in (CLUSTERS_RULE, *REVIEW_RULES)
            )
            reason = (
                "karpor: every caller may read the clusters it reaches"
                if allowed
                else "karpor: the gateway's own API serves only get, list and watch of "
                "clusters.cluster.karpor.io (ask a cluster's context about the cluster)"
            )
            return access_review(kind, query, allowed, reason, denied=not allowed)
        if _PATHS_RULE.allows(query.verb, query.path or "/"):
            return access_review(kind, query, True, "karpor: every caller may read this path")
        decision = policy.allows_path(identity, query.verb, query.path or "/")
        reason = (
            f"karpor: allowed by rules[{decision.rule}]"
            if decision.allowed and decision.rule is not None
            else "karpor: no access policy"
            if decision.allowed
            else f"karpor: {decision.reason}"
        )
        return access_review(kind, query, decision.allowed, reason, denied=not decision.allowed)
    namespace = parse_rules_review(body, kind)
    paths = (_PATHS_RULE, *gateway_path_rules(policy, identity))
    return rules_review(kind, namespace, RulesStatus((CLUSTERS_RULE, *REVIEW_RULES), paths))
