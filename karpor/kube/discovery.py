"""API discovery for the gateway's own group, ``cluster.karpor.io/v1beta1``.

Pure functions building the documents a kube-apiserver serves, so kubectl
(1.27 and later) finds the ``clusters`` resource:

* legacy discovery: ``/api`` (``APIVersions``), ``/apis`` (``APIGroupList``),
  ``/apis/cluster.karpor.io`` (``APIGroup``) and
  ``/apis/cluster.karpor.io/v1beta1`` (``APIResourceList``);
* aggregated discovery: ``/api`` and ``/apis`` as ``APIGroupDiscoveryList``
  when the ``Accept`` header asks for it, in ``apidiscovery.k8s.io/v2``
  (client-go 1.30 and later) or ``v2beta1`` (client-go 1.26-1.29).  The
  response's ``Content-Type`` names the version served: client-go reads
  the body as aggregated only when it does.

The gateway serves no core (``/api/v1``) resources: ``/api`` lists no
versions (legacy) or no groups (aggregated), which client-go accepts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

GROUP = "cluster.karpor.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"

_DISCOVERY_GROUP = "apidiscovery.k8s.io"
_DISCOVERY_KIND = "APIGroupDiscoveryList"
#: aggregated discovery versions, most preferred first
AGGREGATED_VERSIONS = ("v2", "v2beta1")

#: what a discovery request is answered with
DiscoveryFormat = Literal["v2", "v2beta1", "legacy"]


@dataclass(frozen=True)
class Subresource:
    """A subresource as discovery shows it (``clusters/proxy``)."""

    name: str
    kind: str
    verbs: tuple[str, ...]


@dataclass(frozen=True)
class Resource:
    """A resource of the group as discovery shows it."""

    name: str
    singular: str
    kind: str
    verbs: tuple[str, ...]
    namespaced: bool = False
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    subresources: tuple[Subresource, ...] = ()


#: ``clusters``: the virtual, read-only resource listing the clusters the
#: gateway serves; ``clusters/proxy`` is the path every request to a cluster
#: takes (every verb).  No short names: ``cl``/``cls`` would shadow other
#: tools' resources in a user's muscle memory; ``kubectl get cluster`` works.
CLUSTERS = Resource(
    name="clusters",
    singular="cluster",
    kind="Cluster",
    verbs=("get", "list", "watch"),
    subresources=(
        Subresource("proxy", "ClusterProxyOptions", ("create", "delete", "get", "patch", "update")),
    ),
)

#: every resource of ``cluster.karpor.io/v1beta1``
RESOURCES: tuple[Resource, ...] = (CLUSTERS,)


@dataclass(frozen=True)
class MediaRange:
    """One entry of an ``Accept`` header: ``type/subtype`` and its parameters."""

    type: str
    subtype: str
    params: dict[str, str]

    def matches_json(self) -> bool:
        """Whether this range admits ``application/json``."""
        return (self.type, self.subtype) in {
            ("application", "json"),
            ("application", "*"),
            ("*", "*"),
        }

    def is_plain(self) -> bool:
        """Whether this range asks for no particular kind (no ``as``/``g``/``v``)."""
        return not {"as", "g", "v"} & self.params.keys()


def media_ranges(accept: str) -> list[MediaRange]:
    """The media ranges of an ``Accept`` header, in the order sent.

    Parameter names are lower-cased and values unquoted; an empty header
    yields ``*/*`` (anything is acceptable).
    """
    out: list[MediaRange] = []
    for item in accept.split(","):
        parts = [p.strip() for p in item.split(";")]
        if not parts[0]:
            continue
        mtype, _, subtype = parts[0].lower().partition("/")
        params: dict[str, str] = {}
        for param in parts[1:]:
            key, sep, value = param.partition("=")
            if sep:
                params[key.strip().lower()] = value.strip().strip('"')
        out.append(MediaRange(mtype, subtype or "*", params))
    return out or [MediaRange("*", "*", {})]


def negotiate(accept: str) -> DiscoveryFormat | None:
    """Which discovery format answers a request with this ``Accept`` header.

    The first acceptable range wins (clients list them by preference, as
    client-go does: aggregated v2, then v2beta1, then plain JSON); ``None``
    when nothing offered is served (the answer is then 406).
    """
    for media in media_ranges(accept):
        if not media.matches_json():
            continue
        if media.is_plain():
            return "legacy"
        if (
            media.params.get("g") == _DISCOVERY_GROUP
            and media.params.get("as") == _DISCOVERY_KIND
            and media.params.get("v") in AGGREGATED_VERSIONS
        ):
            version = media.params["v"]
            return "v2" if version == "v2" else "v2beta1"
    return None


def aggregated_content_type(version: str) -> str:
    """The ``Content-Type`` of an aggregated discovery document."""
    return f"application/json;g={_DISCOVERY_GROUP};v={version};as={_DISCOVERY_KIND}"


def _kind(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def _resource_discovery(resource: Resource) -> dict[str, Any]:
    """One ``APIResourceDiscovery``: ``responseKind`` on the resource and on
    every subresource (client-go drops a resource without one)."""
    doc: dict[str, Any] = {
        "resource": resource.name,
        "responseKind": _kind(GROUP, VERSION, resource.kind),
        "scope": "Namespaced" if resource.namespaced else "Cluster",
        "singularResource": resource.singular,
        "verbs": list(resource.verbs),
    }
    if resource.short_names:
        doc["shortNames"] = list(resource.short_names)
    if resource.categories:
        doc["categories"] = list(resource.categories)
    if resource.subresources:
        doc["subresources"] = [
            {
                "subresource": sub.name,
                "responseKind": _kind(GROUP, VERSION, sub.kind),
                "verbs": list(sub.verbs),
            }
            for sub in resource.subresources
        ]
    return doc


def aggregated_apis(version: str, resources: Sequence[Resource] = RESOURCES) -> dict[str, Any]:
    """``/apis`` as an ``APIGroupDiscoveryList`` (``version``: ``v2`` or ``v2beta1``)."""
    return {
        "kind": _DISCOVERY_KIND,
        "apiVersion": f"{_DISCOVERY_GROUP}/{version}",
        "metadata": {},
        "items": [
            {
                "metadata": {"name": GROUP, "creationTimestamp": None},
                "versions": [
                    {
                        "version": VERSION,
                        "resources": [_resource_discovery(r) for r in resources],
                        "freshness": "Current",
                    }
                ],
            }
        ],
    }


def aggregated_core(version: str) -> dict[str, Any]:
    """``/api`` as an ``APIGroupDiscoveryList``: the gateway serves no core group."""
    return {
        "kind": _DISCOVERY_KIND,
        "apiVersion": f"{_DISCOVERY_GROUP}/{version}",
        "metadata": {},
        "items": [],
    }


def api_versions() -> dict[str, Any]:
    """``/api`` (legacy): ``APIVersions`` with no versions."""
    return {"kind": "APIVersions", "versions": [], "serverAddressByClientCIDRs": []}


def _group_version() -> dict[str, str]:
    return {"groupVersion": GROUP_VERSION, "version": VERSION}


def api_group() -> dict[str, Any]:
    """``/apis/cluster.karpor.io``: the ``APIGroup``."""
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": GROUP,
        "versions": [_group_version()],
        "preferredVersion": _group_version(),
    }


def api_group_list() -> dict[str, Any]:
    """``/apis`` (legacy): the ``APIGroupList``."""
    group = api_group()
    del group["kind"], group["apiVersion"]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [group]}


def api_resource_list(resources: Sequence[Resource] = RESOURCES) -> dict[str, Any]:
    """``/apis/cluster.karpor.io/v1beta1``: the ``APIResourceList``."""
    entries: list[dict[str, Any]] = []
    for resource in resources:
        entry: dict[str, Any] = {
            "name": resource.name,
            "singularName": resource.singular,
            "namespaced": resource.namespaced,
            "kind": resource.kind,
            "verbs": list(resource.verbs),
        }
        if resource.short_names:
            entry["shortNames"] = list(resource.short_names)
        if resource.categories:
            entry["categories"] = list(resource.categories)
        entries.append(entry)
        entries.extend(
            {
                "name": f"{resource.name}/{sub.name}",
                "singularName": "",
                "namespaced": resource.namespaced,
                "kind": sub.kind,
                "verbs": list(sub.verbs),
            }
            for sub in resource.subresources
        )
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": GROUP_VERSION,
        "resources": entries,
    }
