"""Discovery documents of a simulated cluster, sans-IO.

Both forms kube-apiserver serves:

- legacy: ``/api`` (``APIVersions``), ``/apis`` (``APIGroupList``),
  ``/apis/<group>`` (``APIGroup``), ``/api/v1`` and ``/apis/<group>/<version>``
  (``APIResourceList``);
- aggregated: ``/api`` and ``/apis`` as ``APIGroupDiscoveryList`` in
  ``apidiscovery.k8s.io`` ``v2`` (kubectl 1.30+) or ``v2beta1`` (kubectl
  1.27-1.29), with ``responseKind`` on every resource and subresource.

Which one a request gets is decided by :func:`karpor.kube.negotiate.negotiate_discovery`.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from karpor.sim.resources import Catalog, ResourceType, Subresource


def _group_version(group: str, version: str) -> str:
    return f"{group}/{version}" if group else version


def api_versions(catalog: Catalog, server_address: str) -> dict[str, Any]:
    """``/api``: the core group's versions (``APIVersions``)."""
    versions = next((v for g, v in catalog.group_versions() if g == ""), [])
    return {
        "kind": "APIVersions",
        "versions": list(versions),
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def api_group(group: str, versions: list[str]) -> dict[str, Any]:
    """One named group with its versions, preferred first (``APIGroup``, without kind)."""
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def api_group_list(catalog: Catalog) -> dict[str, Any]:
    """``/apis``: every named group (``APIGroupList``)."""
    groups = [api_group(g, v) for g, v in catalog.group_versions() if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group_document(catalog: Catalog, group: str) -> dict[str, Any] | None:
    """``/apis/<group>`` (``APIGroup``), or ``None`` for an unknown group."""
    for name, versions in catalog.group_versions():
        if name == group and group:
            return {"kind": "APIGroup", "apiVersion": "v1", **api_group(group, versions)}
    return None


def _subresource_group_version(rt: ResourceType, sub: Subresource) -> tuple[str, str]:
    if sub.group is not None or sub.version is not None:
        return sub.group or "", sub.version or ""
    return "", ""


def storage_version_hash(rt: ResourceType) -> str:
    """A stable ``storageVersionHash`` (kube: 8 bytes of a SHA-256, base64)."""
    digest = hashlib.sha256(f"{rt.group}/{rt.version}/{rt.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def api_resource_list(catalog: Catalog, group: str, version: str) -> dict[str, Any] | None:
    """``/api/v1`` or ``/apis/<group>/<version>`` (``APIResourceList``), or ``None``."""
    types = catalog.resources(group, version)
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for rt in types:
        entry: dict[str, Any] = {
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": list(rt.verbs),
        }
        if rt.short_names:
            entry["shortNames"] = list(rt.short_names)
        if rt.categories:
            entry["categories"] = list(rt.categories)
        if rt.stored:
            entry["storageVersionHash"] = storage_version_hash(rt)
        resources.append(entry)
        for sub in rt.subresource_details:
            sub_entry: dict[str, Any] = {
                "name": f"{rt.plural}/{sub.name}",
                "singularName": "",
                "namespaced": rt.namespaced,
            }
            if sub.group is not None or sub.version is not None:
                sub_entry["group"] = sub.group or ""
                sub_entry["version"] = sub.version or ""
            sub_entry["kind"] = sub.kind
            sub_entry["verbs"] = list(sub.verbs)
            resources.append(sub_entry)
    doc: dict[str, Any] = {"kind": "APIResourceList"}
    if group:
        doc["apiVersion"] = "v1"
    doc["groupVersion"] = _group_version(group, version)
    doc["resources"] = resources
    return doc


def _aggregated_resource(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "resource": rt.plural,
        "responseKind": {"group": "", "version": "", "kind": rt.kind},
        "scope": "Namespaced" if rt.namespaced else "Cluster",
        "singularResource": rt.singular,
        "verbs": list(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if rt.subresource_details:
        subs = []
        for sub in rt.subresource_details:
            group, version = _subresource_group_version(rt, sub)
            subs.append(
                {
                    "subresource": sub.name,
                    "responseKind": {"group": group, "version": version, "kind": sub.kind},
                    "verbs": list(sub.verbs),
                }
            )
        entry["subresources"] = subs
    return entry


def aggregated_discovery(catalog: Catalog, *, legacy: bool, version: str) -> dict[str, Any]:
    """``/api`` (``legacy``) or ``/apis`` as an ``APIGroupDiscoveryList`` of
    ``apidiscovery.k8s.io/<version>``."""
    items: list[dict[str, Any]] = []
    for group, versions in catalog.group_versions():
        if (group == "") != legacy:
            continue
        metadata: dict[str, Any] = {"name": group} if group else {}
        metadata["creationTimestamp"] = None
        items.append(
            {
                "metadata": metadata,
                "versions": [
                    {
                        "version": v,
                        "resources": [
                            _aggregated_resource(rt) for rt in catalog.resources(group, v)
                        ],
                        "freshness": "Current",
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": f"apidiscovery.k8s.io/{version}",
        "metadata": {},
        "items": items,
    }


def etag(document: dict[str, Any]) -> str:
    """The ``ETag`` of a discovery document (kube: a hash of its JSON, quoted)."""
    digest = hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest()
    return f'"{digest[:32].upper()}"'
