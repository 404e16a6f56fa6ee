"""Who may do what on which cluster: the policy file (sans-IO).

The file (``authorization.policyFile``) is YAML::

    rules:
    - users: [alice]              # and/or groups: [dev]
      clusters: ["sim-*"]         # names or globs (fnmatch: * ? [..])
      clusterSelector:            # and/or a label selector on the Cluster
        matchLabels: {env: dev}
        matchExpressions:
        - {key: tier, operator: In, values: [web]}   # In NotIn Exists DoesNotExist
      verbs: [get, list, watch]   # or "*"
      namespaces: [team-a]        # optional (names or globs)

    identityExchange:             # optional; first match wins
    - name: ops-are-admins        # optional, shown in the audit log
      type: StaticMapping         # or Privileged (KubeVela's names
                                  # StaticMappingIdentityExchanger and
                                  # PrivilegedIdentityExchanger work too)
      source:                     # every field given must match; none: everyone
        group: ops                # user, group, uid: exact
        # userPattern, groupPattern, clusterPattern: regular expressions (full match)
        cluster: "prod-*"         # a glob; or clusterSelector as above
      target:                     # StaticMapping only
        user: cluster-admin
        groups: [system:masters]
        uid: ""

**Rules.** A rule applies to a caller whose user is in ``users`` or who is
in one of ``groups`` (every authenticated caller is in
``system:authenticated``, an anonymous one in ``system:unauthenticated``),
and to a cluster named by ``clusters`` *and* selected by
``clusterSelector`` (when both are given; at least one is required: write
``clusters: ["*"]`` for every cluster).  ``verbs`` are Kubernetes verbs
(``get list watch create update patch delete deletecollection``) plus
``exec``, ``attach``, ``portforward``, ``proxy`` and ``impersonate``, or
``*`` for all.  With ``namespaces`` a rule grants only requests for
resources in those namespaces: never cluster-scoped resources.  Rules
about resources grant no non-resource path (below).

Once a policy file exists, whatever no rule grants is denied.  Without one
(:data:`ALLOW_ALL`), every authenticated caller may do everything.

**Verbs of a request** (:func:`attributes`) are kube-apiserver's
(:func:`karpor.kube.requestinfo.parse_request_info`: ``GET`` on a collection
is ``list``, with ``?watch=true`` ``watch``, ``DELETE`` on a collection
``deletecollection``) except for the subresources that open a stream into a
workload, which are verbs of their own here: ``pods/exec`` is ``exec``,
``pods/attach`` ``attach``, ``pods/portforward`` ``portforward``, and any
``*/proxy`` subresource (``services/proxy``, ``nodes/proxy``...) ``proxy``.

**Non-resource paths of a cluster** (anything that is not an API resource:
``/version``, ``/healthz``, ``/metrics``, ``/logs/...``, ``/debug/pprof/``...)
are granted as kube RBAC grants them: only by a rule that names them in
``nonResourceURLs`` together with ``clusters`` and/or ``clusterSelector``.
Its ``verbs`` are the lower-cased HTTP methods (``get``, ``head``, ``post``,
``put``, ``patch``, ``delete``, ``options``) or ``*``; each entry is an
exact path, a prefix ending in ``*`` (``/debug/*``), or ``*`` for every
path; such a rule grants no resource, and a rule about resources (even
``verbs: ["*"]``) grants no non-resource path::

    - users: [sre]
      clusters: ["prod-*"]
      nonResourceURLs: ["/metrics", "/logs/*"]
      verbs: [get]

One exception, **discovery**: ``GET`` and ``HEAD`` of :data:`DISCOVERY_URLS`
(``/api``, ``/api/*``, ``/apis``, ``/apis/*``, ``/openapi``, ``/openapi/*``,
``/version``, ``/version/``, ``/healthz``, ``/livez``, ``/readyz``: what
kube's ``system:discovery`` and ``system:public-info-viewer`` grant, so not
``/healthz/etcd``) are allowed to anyone some rule lets reach the cluster at
all (kubectl needs discovery whatever it is allowed to do).

**The gateway's own paths** (``/metrics``): a rule with ``nonResourceURLs``
and neither ``clusters`` nor ``clusterSelector`` is about the gateway
itself, as kube RBAC's ``nonResourceURLs`` rules are about the apiserver:
it grants its ``verbs`` on those paths (matched as above) and nothing on
any cluster::

    - users: [prometheus]
      nonResourceURLs: ["/metrics"]
      verbs: [get]

:meth:`Policy.allows_path` decides; without a policy file every
authenticated caller but ``system:anonymous`` may read them.  A
``nonResourceURLs`` rule never takes ``namespaces``.

**What a caller may learn of clusters.** A caller who may not reach a
cluster is told 403 whether it exists or not; only a caller with a rule
naming the name by ``clusters`` (without ``clusterSelector``, which needs
the labels of a cluster that exists) learns that no such cluster exists
(404) (:meth:`Policy.names`; without a policy file every authenticated
caller).  Where a cluster is (``spec.access`` of ``kubectl get clusters``:
its endpoint, CA, server name) is shown only to callers with a rule about
resources that covers the cluster without ``namespaces``
(:meth:`Policy.shows_endpoint`); namespace-limited and path-only rules let
a caller see the cluster, not where it is.

**Identity exchange.** Rules are tried in order and the first whose
``source`` matches the caller and the cluster decides what the cluster sees:
``StaticMapping`` impersonates ``target`` (whatever the cluster's
``impersonate`` flag says), ``Privileged`` sends the request with the
gateway's own credential, unimpersonated.  A rule with a cluster condition
is a per-cluster rule, one without a global rule; put per-cluster rules
first.  When no rule matches, the cluster's ``impersonate`` flag decides
(see :mod:`karpor.auth.impersonation`).  Exchange never changes what the
caller is *allowed* to do: rules above are always checked for the caller.

Errors read ``file: rules[N].field: message`` (the format of every
configuration file: :mod:`karpor.config.validation`).  A denial's
:attr:`Decision.reason` is worded as kube-apiserver words its 403s, with the
cluster appended: ``User "alice" cannot create resource "pods" in API group
"" in the namespace "team-b" on cluster "sim-1"``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from karpor.auth.identity import ANONYMOUS_USER, AUTHENTICATED, UNAUTHENTICATED, Identity
from karpor.config.model import Cluster
from karpor.config.textfile import TextFileError, read_text
from karpor.config.validation import (
    Checker,
    FileProblems,
    YamlError,
    describe,
    join,
    load_yaml,
    problem_line,
    quote,
)
from karpor.kube.requestinfo import RequestInfo
from karpor.kube.status import ApiError

#: the verbs a rule may name ("*" besides)
VERBS = frozenset(
    {
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
        "exec",
        "attach",
        "portforward",
        "proxy",
        "impersonate",
    }
)
#: the verbs a ``nonResourceURLs`` rule may name ("*" besides)
PATH_VERBS = frozenset({"get", "head", "post", "put", "patch", "delete", "options"})
#: the non-resource paths of a cluster that ``GET`` and ``HEAD`` may read
#: for anyone who reaches it: kube's ``system:discovery`` and
#: ``system:public-info-viewer`` (so ``/healthz`` but not ``/healthz/etcd``)
DISCOVERY_URLS = (
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/openapi",
    "/openapi/*",
    "/version",
    "/version/",
    "/healthz",
    "/livez",
    "/readyz",
)
#: subresources of pods that are verbs of their own
STREAM_SUBRESOURCES = frozenset({"exec", "attach", "portforward"})

_EXCHANGE_TYPES = {
    "StaticMapping": "StaticMapping",
    "StaticMappingIdentityExchanger": "StaticMapping",
    "Privileged": "Privileged",
    "PrivilegedIdentityExchanger": "Privileged",
}
_READ_METHODS = frozenset({"get", "head"})

_POLICY_KEYS = ("rules", "identityExchange")
_RULE_KEYS = (
    "users",
    "groups",
    "clusters",
    "clusterSelector",
    "verbs",
    "namespaces",
    "nonResourceURLs",
)
_EXCHANGE_KEYS = ("name", "type", "source", "target")
_SOURCE_KEYS = (
    "user",
    "group",
    "uid",
    "cluster",
    "userPattern",
    "groupPattern",
    "clusterPattern",
    "clusterSelector",
)
_TARGET_KEYS = ("user", "groups", "uid")


class PolicyError(FileProblems):
    """A policy file that cannot be used; ``problems`` holds ``file: field: message`` lines."""


# -- request attributes -------------------------------------------------------


@dataclass(frozen=True)
class Attributes:
    """What a request asks, in the policy's terms (kube's ``authorizer.Attributes``)."""

    verb: str
    is_resource_request: bool = True
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    api_group: str = ""
    name: str = ""
    #: the path of a non-resource request
    path: str = ""


def attributes(info: RequestInfo) -> Attributes:
    """The policy attributes of a request (see the module docstring for verbs)."""
    if not info.is_resource_request:
        return Attributes(verb=info.verb, is_resource_request=False, path=info.path or "/")
    verb = info.verb
    if info.resource == "pods" and info.subresource in STREAM_SUBRESOURCES:
        verb = info.subresource
    elif info.subresource == "proxy" or verb == "proxy":
        verb = "proxy"
    return Attributes(
        verb=verb,
        namespace=info.namespace,
        resource=info.resource,
        subresource=info.subresource,
        api_group=info.api_group,
        name=info.name,
    )


# -- selectors ------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether ``labels`` satisfy the requirement."""
        present = self.key in labels
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        if self.operator == "In":
            return present and labels[self.key] in self.values
        return not present or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True)
class ClusterSelector:
    """A label selector over a Cluster's ``metadata.labels``."""

    match_labels: Mapping[str, str] = field(default_factory=dict)
    match_expressions: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a cluster with ``labels`` is selected (an empty selector selects all)."""
        return all(labels.get(k) == v for k, v in self.match_labels.items()) and all(
            r.matches(labels) for r in self.match_expressions
        )


# -- rules ---------------------------------------------------------------------


def _groups_of(identity: Identity) -> frozenset[str]:
    implied = UNAUTHENTICATED if identity.user == ANONYMOUS_USER else AUTHENTICATED
    return frozenset((*identity.groups, implied))


def groups_of(identity: Identity) -> frozenset[str]:
    """The groups the rules see for ``identity`` (``system:authenticated``,
    or ``system:unauthenticated`` for ``system:anonymous``, added)."""
    return _groups_of(identity)


def url_matches(url: str, path: str) -> bool:
    """Whether a ``nonResourceURLs`` entry matches ``path``, as kube RBAC's
    ``NonResourceURLMatches``: ``*`` matches every path, an entry ending in
    ``*`` every path it prefixes, any other entry only itself."""
    return url == path or (url.endswith("*") and path.startswith(url[:-1]))


def is_discovery(path: str) -> bool:
    """Whether ``path`` is one of :data:`DISCOVERY_URLS` (what kube's
    ``system:discovery`` and ``system:public-info-viewer`` grant)."""
    return any(url_matches(url, path) for url in DISCOVERY_URLS)


@dataclass(frozen=True)
class Rule:
    """One ``rules`` entry."""

    users: frozenset[str] = frozenset()
    groups: frozenset[str] = frozenset()
    #: names or globs; ``None`` when the rule names none (selector only)
    clusters: tuple[str, ...] | None = None
    selector: ClusterSelector | None = None
    verbs: frozenset[str] = frozenset()
    #: names or globs; ``None``: every namespace and cluster-scoped resources
    namespaces: tuple[str, ...] | None = None
    #: non-resource paths (``None``: a rule about resources); with neither
    #: ``clusters`` nor ``clusterSelector`` the gateway's own paths
    non_resource_urls: tuple[str, ...] | None = None

    @property
    def about_gateway(self) -> bool:
        """Whether the rule is about the gateway's own paths (no cluster at all)."""
        return (
            self.non_resource_urls is not None and self.clusters is None and self.selector is None
        )

    def applies_to(self, user: str, groups: frozenset[str]) -> bool:
        """Whether the rule is about this caller."""
        return user in self.users or not self.groups.isdisjoint(groups)

    def covers(self, cluster: Cluster) -> bool:
        """Whether the rule is about this cluster."""
        if self.about_gateway:
            return False
        if self.clusters is not None and not any(
            fnmatchcase(cluster.name, p) for p in self.clusters
        ):
            return False
        return self.selector is None or self.selector.matches(cluster.labels)

    def names(self, name: str) -> bool:
        """Whether the rule covers a cluster called ``name`` whatever its
        labels (it names it by ``clusters`` and has no ``clusterSelector``)."""
        return (
            self.clusters is not None
            and self.selector is None
            and any(fnmatchcase(name, p) for p in self.clusters)
        )

    def _grants_url(self, verb: str, path: str) -> bool:
        urls = self.non_resource_urls
        if urls is None or ("*" not in self.verbs and verb not in self.verbs):
            return False
        return any(url_matches(url, path) for url in urls)

    def grants_path(self, verb: str, path: str) -> bool:
        """Whether the rule grants ``verb`` on the gateway's own ``path``."""
        return self.about_gateway and self._grants_url(verb, path)

    def grants(self, attrs: Attributes) -> bool:
        """Whether the rule grants ``attrs`` (caller and cluster already match).

        A non-resource request only by ``nonResourceURLs`` naming its path,
        a resource request only by a rule without them (as in kube RBAC);
        discovery is decided by :meth:`Policy.allows`, not here."""
        if not attrs.is_resource_request:
            return self._grants_url(attrs.verb, attrs.path)
        if self.non_resource_urls is not None:
            return False
        if "*" not in self.verbs and attrs.verb not in self.verbs:
            return False
        if self.namespaces is None:
            return True
        return bool(attrs.namespace) and any(
            fnmatchcase(attrs.namespace, p) for p in self.namespaces
        )

    def shows_endpoint(self, cluster: Cluster) -> bool:
        """Whether the rule lets its callers see where ``cluster`` is (its
        ``spec.access``): a rule about resources covering it in every namespace."""
        return self.non_resource_urls is None and self.namespaces is None and self.covers(cluster)


@dataclass(frozen=True)
class Exchange:
    """The outcome of the identity-exchange rule that matched."""

    #: the rule's ``name``, else ``identityExchange[N]``
    rule: str
    #: send the request with the gateway's own credential, unimpersonated
    privileged: bool = False
    #: the identity to impersonate (``StaticMapping``)
    target: Identity | None = None


@dataclass(frozen=True)
class ExchangeRule:
    """One ``identityExchange`` entry."""

    name: str
    kind: str
    user: str | None = None
    group: str | None = None
    uid: str | None = None
    cluster: str | None = None
    user_pattern: re.Pattern[str] | None = None
    group_pattern: re.Pattern[str] | None = None
    cluster_pattern: re.Pattern[str] | None = None
    selector: ClusterSelector | None = None
    target: Identity | None = None

    def matches(self, identity: Identity, cluster: Cluster) -> bool:
        """Whether the rule's source matches this caller on this cluster."""
        groups = _groups_of(identity)
        return (
            (self.user is None or identity.user == self.user)
            and (self.group is None or self.group in groups)
            and (self.uid is None or identity.uid == self.uid)
            and (self.cluster is None or fnmatchcase(cluster.name, self.cluster))
            and (
                self.user_pattern is None or self.user_pattern.fullmatch(identity.user) is not None
            )
            and (self.group_pattern is None or any(self.group_pattern.fullmatch(g) for g in groups))
            and (
                self.cluster_pattern is None
                or self.cluster_pattern.fullmatch(cluster.name) is not None
            )
            and (self.selector is None or self.selector.matches(cluster.labels))
        )

    def outcome(self) -> Exchange:
        """What the rule decides."""
        if self.kind == "Privileged":
            return Exchange(self.name, privileged=True)
        return Exchange(self.name, target=self.target)


# -- decisions -----------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """The answer to one authorization question."""

    allowed: bool
    #: for a denial, why, worded as kube-apiserver words it; "" when allowed
    reason: str = ""
    #: the index of the granting rule (``None``: no policy, or denied)
    rule: int | None = None
    attrs: Attributes | None = None

    def error(self) -> ApiError:
        """The 403 ``Status`` of a denial, shaped as kube-apiserver's
        (``pods "x" is forbidden: User ...``, details group/kind/name)."""
        attrs = self.attrs or Attributes(verb="")
        if not attrs.is_resource_request or not attrs.resource:
            return ApiError(403, f"forbidden: {self.reason}", "Forbidden")
        qualified = attrs.resource + (f".{attrs.api_group}" if attrs.api_group else "")
        if attrs.name:
            message = f'{qualified} "{attrs.name}" is forbidden: {self.reason}'
        else:
            message = f"{qualified} is forbidden: {self.reason}"
        details = {"group": attrs.api_group, "kind": attrs.resource}
        if attrs.name:
            details["name"] = attrs.name
        return ApiError(403, message, "Forbidden", details)


def forbidden_message(user: str, attrs: Attributes, cluster: str | None) -> str:
    """kube-apiserver's ``forbiddenMessage``, with the cluster appended
    (``None``: the gateway's own path)."""
    if not attrs.is_resource_request:
        text = f'User "{user}" cannot {attrs.verb} path "{attrs.path}"'
    else:
        resource = attrs.resource
        if attrs.subresource:
            resource = f"{resource}/{attrs.subresource}"
        where = (
            f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        )
        text = (
            f'User "{user}" cannot {attrs.verb} resource "{resource}" '
            f'in API group "{attrs.api_group}" {where}'
        )
    return text if cluster is None else f'{text} on cluster "{cluster}"'


@dataclass(frozen=True)
class Policy:
    """The parsed policy file (or, with ``enforcing=False``, its absence)."""

    rules: tuple[Rule, ...] = ()
    exchange_rules: tuple[ExchangeRule, ...] = ()
    #: whether a policy file exists (deny by default); ``False``: allow all
    enforcing: bool = True
    source: str = ""

    def allows(self, identity: Identity, cluster: Cluster, attrs: Attributes) -> Decision:
        """Whether ``identity`` may do ``attrs`` on ``cluster``."""
        if not self.enforcing:
            return Decision(True, attrs=attrs)
        groups = _groups_of(identity)
        discovery = (
            not attrs.is_resource_request
            and attrs.verb in _READ_METHODS
            and is_discovery(attrs.path)
        )
        for index, rule in enumerate(self.rules):
            if (
                rule.applies_to(identity.user, groups)
                and rule.covers(cluster)
                and (discovery or rule.grants(attrs))
            ):
                return Decision(True, rule=index, attrs=attrs)
        return Decision(False, forbidden_message(identity.user, attrs, cluster.name), attrs=attrs)

    def allows_path(self, identity: Identity, verb: str, path: str) -> Decision:
        """Whether ``identity`` may ``verb`` (the lower-cased method) the
        gateway's own ``path`` (``/metrics``): a ``nonResourceURLs`` rule must
        grant it; without a policy file anyone authenticated but
        ``system:anonymous`` may."""
        attrs = Attributes(verb=verb, is_resource_request=False, path=path)
        if not self.enforcing:
            if identity.user == ANONYMOUS_USER:
                return Decision(False, forbidden_message(identity.user, attrs, None), attrs=attrs)
            return Decision(True, attrs=attrs)
        groups = _groups_of(identity)
        for index, rule in enumerate(self.rules):
            if rule.applies_to(identity.user, groups) and rule.grants_path(verb, path):
                return Decision(True, rule=index, attrs=attrs)
        return Decision(False, forbidden_message(identity.user, attrs, None), attrs=attrs)

    def reaches(self, identity: Identity, cluster: Cluster) -> bool:
        """Whether some rule lets ``identity`` do anything on ``cluster``."""
        if not self.enforcing:
            return True
        groups = _groups_of(identity)
        return any(r.applies_to(identity.user, groups) and r.covers(cluster) for r in self.rules)

    def granted_namespaces(
        self, identity: Identity, cluster: Cluster, verb: str
    ) -> tuple[list[str], list[str]]:
        """Where rules restricted to namespaces let ``identity`` ``verb``
        resources on ``cluster``: ``(names, patterns)``, each sorted, once
        (patterns hold a glob character: they cannot be enumerated)."""
        if not self.enforcing:
            return [], []
        groups = _groups_of(identity)
        names: set[str] = set()
        patterns: set[str] = set()
        for rule in self.rules:
            if (
                rule.namespaces is None
                or rule.non_resource_urls is not None
                or ("*" not in rule.verbs and verb not in rule.verbs)
                or not rule.applies_to(identity.user, groups)
                or not rule.covers(cluster)
            ):
                continue
            for namespace in rule.namespaces:
                (patterns if any(c in namespace for c in "*?[") else names).add(namespace)
        return sorted(names), sorted(patterns)

    def names(self, identity: Identity, name: str) -> bool:
        """Whether some rule lets ``identity`` reach a cluster called
        ``name``, whatever its labels: the caller may learn whether such a
        cluster exists (404), where others are told 403 either way."""
        if not self.enforcing:
            return identity.user != ANONYMOUS_USER
        groups = _groups_of(identity)
        return any(r.applies_to(identity.user, groups) and r.names(name) for r in self.rules)

    def shows_endpoint(self, identity: Identity, cluster: Cluster) -> bool:
        """Whether ``identity`` may see where ``cluster`` is (``spec.access``
        in ``kubectl get clusters``): a rule about resources covering it
        without ``namespaces``; without a policy file anyone but
        ``system:anonymous``."""
        if not self.enforcing:
            return identity.user != ANONYMOUS_USER
        groups = _groups_of(identity)
        return any(
            r.applies_to(identity.user, groups) and r.shows_endpoint(cluster) for r in self.rules
        )

    def visible_clusters(self, identity: Identity, clusters: Iterable[Cluster]) -> list[Cluster]:
        """The clusters ``identity`` may reach (``kubectl get clusters``,
        ``karpor kubeconfig``), in the given order."""
        return [c for c in clusters if self.reaches(identity, c)]

    def exchange(self, identity: Identity, cluster: Cluster) -> Exchange | None:
        """The first identity-exchange rule matching the caller on ``cluster``, if any."""
        for rule in self.exchange_rules:
            if rule.matches(identity, cluster):
                return rule.outcome()
        return None


#: no policy file: every authenticated caller may do everything
ALLOW_ALL = Policy(enforcing=False)


# -- parsing -------------------------------------------------------------------


def _selector(c: Checker, obj: Mapping[str, Any], path: str) -> ClusterSelector | None:
    selector = c.label_selector(obj, "clusterSelector", path)
    if selector is None:
        return None
    return ClusterSelector(
        selector.match_labels,
        tuple(Requirement(*expression) for expression in selector.match_expressions),
    )


def _names(
    c: Checker, obj: Mapping[str, Any], key: str, path: str, *, empty: bool = False
) -> tuple[str, ...] | None:
    """A list of non-empty strings (an empty list only if ``empty``)."""
    return c.strings(obj, key, path, empty=empty, empty_items=False)


def _rule(c: Checker, value: Any, path: str) -> Rule | None:
    obj = c.mapping(value, path, _RULE_KEYS)
    if obj is None:
        return None
    before = len(c.errors)
    users = _names(c, obj, "users", path)
    groups = _names(c, obj, "groups", path)
    if users is None and groups is None:
        c.error(path, "needs users or groups (groups: [system:authenticated] for everyone)")
    urls = _names(c, obj, "nonResourceURLs", path)
    if urls is not None or "nonResourceURLs" in obj:
        return _path_rule(c, obj, path, before, users, groups, urls)
    clusters = _names(c, obj, "clusters", path)
    selector = _selector(c, obj, path)
    if clusters is None and selector is None:
        c.error(path, 'needs clusters or clusterSelector (clusters: ["*"] for every cluster)')
    verbs = _names(c, obj, "verbs", path)
    if verbs is None and "verbs" not in obj:
        c.error(join(path, "verbs"), "required")
    for i, verb in enumerate(verbs or ()):
        if verb != "*" and verb not in VERBS:
            c.error(
                f"{path}.verbs[{i}]",
                f"unknown verb {quote(verb)} (known: *, {', '.join(sorted(VERBS))})",
            )
    namespaces = _names(c, obj, "namespaces", path)
    if len(c.errors) > before:
        return None
    return Rule(
        users=frozenset(users or ()),
        groups=frozenset(groups or ()),
        clusters=clusters,
        selector=selector,
        verbs=frozenset(verbs or ()),
        namespaces=namespaces,
    )


def _path_rule(
    c: Checker,
    obj: Mapping[str, Any],
    path: str,
    before: int,
    users: tuple[str, ...] | None,
    groups: tuple[str, ...] | None,
    urls: tuple[str, ...] | None,
) -> Rule | None:
    """A rule about non-resource paths (``nonResourceURLs``): of the
    clusters it names, or of the gateway itself when it names none."""
    if "namespaces" in obj:
        c.error(
            join(path, "namespaces"),
            "not with nonResourceURLs (a path is in no namespace: write two rules)",
        )
    clusters = _names(c, obj, "clusters", path)
    if clusters is None and "clusters" in obj:
        c.error(join(path, "clusters"), "must be a list of strings, not null")
    if "clusterSelector" in obj and obj["clusterSelector"] is None:
        # null must not turn a rule about clusters into one about the gateway
        c.error(join(path, "clusterSelector"), "must be a mapping, not null")
    selector = _selector(c, obj, path)
    for i, url in enumerate(urls or ()):
        if url != "*" and (not url.startswith("/") or "*" in url[:-1]):
            c.error(
                f"{path}.nonResourceURLs[{i}]",
                "must be a path (/metrics), a prefix ending in * (/debug/*) or *, "
                f"not {quote(url)}",
            )
    verbs = _names(c, obj, "verbs", path)
    if verbs is None and "verbs" not in obj:
        c.error(join(path, "verbs"), "required")
    for i, verb in enumerate(verbs or ()):
        if verb != "*" and verb not in PATH_VERBS:
            c.error(
                f"{path}.verbs[{i}]",
                f"unknown verb {quote(verb)} for nonResourceURLs "
                f"(known: *, {', '.join(sorted(PATH_VERBS))})",
            )
    if len(c.errors) > before:
        return None
    return Rule(
        users=frozenset(users or ()),
        groups=frozenset(groups or ()),
        clusters=clusters,
        selector=selector,
        verbs=frozenset(verbs or ()),
        non_resource_urls=urls,
    )


def _target(c: Checker, obj: Mapping[str, Any], path: str) -> Identity | None:
    """``target`` of a ``StaticMapping`` rule."""
    target = c.section(obj, "target", path, _TARGET_KEYS)
    if target is None:
        if obj.get("target") is None:
            c.error(join(path, "target"), "required with type StaticMapping")
        return None
    tpath = join(path, "target")
    user = c.string(target, "user", tpath, required=True)
    groups = _names(c, target, "groups", tpath, empty=True) or ()
    uid = c.string(target, "uid", tpath) or ""
    return Identity(user=user, groups=groups, uid=uid) if user else None


def _exchange_rule(c: Checker, value: Any, path: str, index: int) -> ExchangeRule | None:
    obj = c.mapping(value, path, _EXCHANGE_KEYS)
    if obj is None:
        return None
    before = len(c.errors)
    name = c.string(obj, "name", path, empty=False) or f"identityExchange[{index}]"
    raw_type = obj.get("type")
    kind = _EXCHANGE_TYPES.get(raw_type) if isinstance(raw_type, str) else None
    if raw_type is None:
        c.error(join(path, "type"), "required (StaticMapping or Privileged)")
    elif kind is None:
        shown = quote(raw_type) if isinstance(raw_type, str) else describe(raw_type)
        c.error(join(path, "type"), f"unsupported {shown}: use StaticMapping or Privileged")
    spath = join(path, "source")
    source = c.section(obj, "source", path, _SOURCE_KEYS) or {}
    selector = _selector(c, source, spath)
    target: Identity | None = None
    if kind == "StaticMapping":
        target = _target(c, obj, path)
    elif obj.get("target") is not None:
        c.error(join(path, "target"), "only with type StaticMapping")
    rule = ExchangeRule(
        name=name,
        kind=kind or "",
        user=c.string(source, "user", spath, empty=False),
        group=c.string(source, "group", spath, empty=False),
        uid=c.string(source, "uid", spath, empty=False),
        cluster=c.string(source, "cluster", spath, empty=False),
        user_pattern=c.pattern(source, "userPattern", spath),
        group_pattern=c.pattern(source, "groupPattern", spath),
        cluster_pattern=c.pattern(source, "clusterPattern", spath),
        selector=selector,
        target=target,
    )
    return None if len(c.errors) > before else rule


def parse_policy(text: str, source: str) -> Policy:
    """Parse the YAML ``text`` of the policy file named ``source``.

    Raises :class:`PolicyError` with one ``source: field: message`` line per
    problem (:mod:`karpor.config.validation`); an empty file is an error (to
    allow everything, remove the ``policyFile`` setting).
    """
    c = Checker()
    try:
        obj = load_yaml(text)
    except YamlError as exc:
        raise PolicyError([problem_line(source, 0, "yaml", str(exc))]) from None
    rules: list[Rule] = []
    exchange: list[ExchangeRule] = []
    if obj is None:
        c.error("rules", "required (the policy file is empty)")
    top = c.mapping(obj, "", _POLICY_KEYS) if obj is not None else None
    if top is not None:
        if top.get("rules") is None:
            c.error("rules", "required")
        for where, entry in c.items(top, "rules", ""):
            rule = _rule(c, entry, where)
            if rule is not None:
                rules.append(rule)
        for i, (where, entry) in enumerate(c.items(top, "identityExchange", "")):
            ex = _exchange_rule(c, entry, where, i)
            if ex is not None:
                exchange.append(ex)
    if c.errors:
        raise PolicyError(c.lines(source))
    return Policy(tuple(rules), tuple(exchange), enforcing=True, source=source)


def load_policy(path: str) -> Policy:
    """Read and parse the policy file at ``path`` (blocking).  Raises :class:`PolicyError`."""
    try:
        text = read_text(path)
    except TextFileError as exc:
        raise PolicyError([str(exc)]) from None
    return parse_policy(text, path)
