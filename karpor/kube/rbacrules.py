"""kube RBAC rules as a ``SelfSubjectRulesReview`` lists them (sans-IO):
:class:`ResourceRule` and :class:`NonResourceRule`, matched as kube RBAC
matches them (``*``, ``*/subresource``, URL prefixes ending in ``*``), and
:func:`intersect_resource_rules` / :func:`intersect_non_resource_rules`:
the rules that allow exactly what one list and the other both allow (the
gateway's policy and a cluster's own answer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any


def _matches(patterns: Sequence[str], value: str) -> bool:
    return "*" in patterns or value in patterns


@dataclass(frozen=True)
class ResourceRule:
    """One ``resourceRules`` entry (an empty ``resource_names``: every name)."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ("*",)
    resources: tuple[str, ...] = ("*",)
    resource_names: tuple[str, ...] = ()

    def allows(
        self, verb: str, group: str, resource: str, subresource: str = "", name: str = ""
    ) -> bool:
        """Whether the rule grants this, as kube RBAC's ``RuleAllows``."""
        if not _matches(self.verbs, verb) or not _matches(self.api_groups, group):
            return False
        combined = f"{resource}/{subresource}" if subresource else resource
        if not any(
            r in ("*", combined) or (subresource and r == f"*/{subresource}")
            for r in self.resources
        ):
            return False
        return not self.resource_names or name in self.resource_names

    def document(self) -> dict[str, Any]:
        """The entry as JSON."""
        doc: dict[str, Any] = {
            "verbs": list(self.verbs),
            "apiGroups": list(self.api_groups),
            "resources": list(self.resources),
        }
        if self.resource_names:
            doc["resourceNames"] = list(self.resource_names)
        return doc


def url_matches(url: str, path: str) -> bool:
    """kube RBAC's ``NonResourceURLMatches``: ``*``, a prefix ending in ``*``, or the path."""
    return url in (path, "*") or (url.endswith("*") and path.startswith(url[:-1]))


@dataclass(frozen=True)
class NonResourceRule:
    """One ``nonResourceRules`` entry."""

    verbs: tuple[str, ...]
    urls: tuple[str, ...]

    def allows(self, verb: str, path: str) -> bool:
        """Whether the rule grants ``verb`` on ``path``."""
        return _matches(self.verbs, verb) and any(url_matches(u, path) for u in self.urls)

    def document(self) -> dict[str, Any]:
        """The entry as JSON."""
        return {"verbs": list(self.verbs), "nonResourceURLs": list(self.urls)}


def _common(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    """What two lists of names (``*``: any) both match."""
    if "*" in a:
        return tuple(b)
    if "*" in b:
        return tuple(a)
    return tuple(x for x in a if x in b)


def _common_resources(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    """What two ``resources`` lists both match (``*``, ``*/sub``, ``res``, ``res/sub``)."""
    if "*" in a:
        return tuple(b)
    if "*" in b:
        return tuple(a)
    out: list[str] = []
    for x in a:
        for y in b:
            if x == y:
                both = x
            elif x.startswith("*/") and "/" in y and y.split("/", 1)[1] == x[2:]:
                both = y
            elif y.startswith("*/") and "/" in x and x.split("/", 1)[1] == y[2:]:
                both = x
            else:
                continue
            if both not in out:
                out.append(both)
    return tuple(out)


def _common_names(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...] | None:
    """Common ``resourceNames`` (empty: every name); ``None``: none in common."""
    if not a:
        return tuple(b)
    if not b:
        return tuple(a)
    both = tuple(x for x in a if x in b)
    return both or None


def intersect_resource_rules(
    a: Iterable[ResourceRule], b: Iterable[ResourceRule]
) -> list[ResourceRule]:
    """Rules granting exactly what one rule of ``a`` and one of ``b`` both grant."""
    out: list[ResourceRule] = []
    second = list(b)
    for x in a:
        for y in second:
            verbs = _common(x.verbs, y.verbs)
            groups = _common(x.api_groups, y.api_groups)
            resources = _common_resources(x.resources, y.resources)
            names = _common_names(x.resource_names, y.resource_names)
            if verbs and groups and resources and names is not None:
                rule = ResourceRule(verbs, groups, resources, names)
                if rule not in out:
                    out.append(rule)
    return out


def _common_urls(a: Sequence[str], b: Sequence[str]) -> tuple[str, ...]:
    out: list[str] = []
    for x in a:
        for y in b:
            if x == "*" or (x.endswith("*") and y.startswith(x[:-1])):
                both = y
            elif y == "*" or (y.endswith("*") and x.startswith(y[:-1])) or x == y:
                both = x
            else:
                continue
            if both not in out:
                out.append(both)
    return tuple(out)


def intersect_non_resource_rules(
    a: Iterable[NonResourceRule], b: Iterable[NonResourceRule]
) -> list[NonResourceRule]:
    """Rules granting exactly what one rule of ``a`` and one of ``b`` both grant."""
    out: list[NonResourceRule] = []
    second = list(b)
    for x in a:
        for y in second:
            verbs = _common(x.verbs, y.verbs)
            urls = _common_urls(x.urls, y.urls)
            if verbs and urls:
                rule = NonResourceRule(verbs, urls)
                if rule not in out:
                    out.append(rule)
    return out
