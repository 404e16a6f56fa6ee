"""A small OpenAPI v3 publication, enough for kubectl's server-side validation.

``kubectl create -f`` and ``kubectl apply`` (``--validate=strict``, the
default) ask ``/openapi/v3`` whether the server supports the
``fieldValidation`` query parameter on the PATCH operation of the object's
kind; with neither OpenAPI v3 nor v2 served they fail with ``failed to
download openapi``.  This module publishes, per group/version, the paths of
each resource with their operations (tagged with
``x-kubernetes-group-version-kind`` and ``x-kubernetes-action``, and
``fieldValidation`` among the query parameters) and a coarse schema per kind
(``apiVersion``, ``kind``, ``metadata``, ``spec``, ``status``), so kubectl
sends ``fieldValidation=Strict`` and ``kubectl explain <kind>`` prints the
top-level fields.  ``/openapi/v2`` (protobuf) stays 404; kubectl copes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from karpor.sim.resources import Catalog, ResourceType

_QUERY_STRING = {"type": "string", "uniqueItems": True}


def gv_path(group: str, version: str) -> str:
    """The key of a group/version in ``/openapi/v3`` (``api/v1``, ``apis/apps/v1``)."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def schema_name(rt: ResourceType) -> str:
    """The component name of a kind's schema (``io.k8s.api.core.v1.Pod``)."""
    group = rt.group.split(".", 1)[0] if rt.group else "core"
    return f"io.k8s.api.{group}.{rt.version}.{rt.kind}"


def _gvk(rt: ResourceType) -> dict[str, str]:
    return {"group": rt.group, "version": rt.version, "kind": rt.kind}


def _param(name: str, location: str = "query") -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": location, "schema": _QUERY_STRING}
    if location == "path":
        param["required"] = True
    return param


def _operation(rt: ResourceType, action: str, extra: list[str]) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{schema_name(rt)}"}
    return {
        "description": f"{action} {rt.kind}",
        "operationId": f"{action}{rt.kind}",
        "parameters": [_param(p) for p in extra],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": ref}}}
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt),
    }


def _paths(rt: ResourceType) -> dict[str, Any]:
    prefix = "/" + gv_path(rt.group, rt.version)
    scope = f"{prefix}/namespaces/{{namespace}}" if rt.namespaced else prefix
    collection = f"{scope}/{rt.plural}"
    item = f"{collection}/{{name}}"
    path_params = [_param("namespace", "path")] if rt.namespaced else []
    writes = ["dryRun", "fieldManager", "fieldValidation"]
    coll: dict[str, Any] = {"parameters": path_params}
    one: dict[str, Any] = {"parameters": [*path_params, _param("name", "path")]}
    verbs = set(rt.verbs)
    if "list" in verbs:
        coll["get"] = _operation(rt, "list", ["labelSelector", "fieldSelector", "limit"])
    if "create" in verbs:
        coll["post"] = _operation(rt, "post", writes)
    if "deletecollection" in verbs:
        coll["delete"] = _operation(rt, "deletecollection", ["labelSelector", "fieldSelector"])
    if "get" in verbs:
        one["get"] = _operation(rt, "get", [])
    if "update" in verbs:
        one["put"] = _operation(rt, "put", writes)
    if "patch" in verbs:
        one["patch"] = _operation(rt, "patch", [*writes, "force"])
    if "delete" in verbs:
        one["delete"] = _operation(rt, "delete", ["dryRun", "propagationPolicy"])
    out = {collection: coll}
    if rt.stored:
        out[item] = one
    return out


def _schema(rt: ResourceType) -> dict[str, Any]:
    described = {
        "apiVersion": "APIVersion defines the versioned schema of this representation "
        "of an object.",
        "kind": "Kind is a string value representing the REST resource this object represents.",
    }
    properties: dict[str, Any] = {
        name: {"type": "string", "description": text} for name, text in described.items()
    }
    properties["metadata"] = {
        "type": "object",
        "description": "Standard object's metadata.",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    for part in ("spec", "status", "data", "stringData"):
        properties[part] = {
            "type": "object",
            "description": f"The {part} of the {rt.kind} (not modelled by the simulator).",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    return {
        "type": "object",
        "description": f"{rt.kind} as served by the karpor simulator.",
        "properties": properties,
        "x-kubernetes-group-version-kind": [_gvk(rt)],
    }


def group_version_document(
    catalog: Catalog, group: str, version: str, git_version: str
) -> dict[str, Any] | None:
    """The OpenAPI v3 document of one group/version, or ``None`` if not served."""
    types = catalog.resources(group, version)
    if not types:
        return None
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for rt in types:
        paths.update(_paths(rt))
        schemas[schema_name(rt)] = _schema(rt)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": git_version},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def document_hash(document: dict[str, Any]) -> str:
    """The hash kube puts in ``serverRelativeURL`` (upper-case hex of a SHA-512)."""
    return hashlib.sha512(json.dumps(document, sort_keys=True).encode()).hexdigest().upper()


def root_document(catalog: Catalog, git_version: str) -> dict[str, Any]:
    """``/openapi/v3``: each group/version with the URL of its document."""
    paths: dict[str, Any] = {}
    for group, versions in catalog.group_versions():
        for version in versions:
            doc = group_version_document(catalog, group, version, git_version)
            if doc is None:
                continue
            key = gv_path(group, version)
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={document_hash(doc)}"}
    return {"paths": paths}


#: the media type kubectl asks ``/openapi/v2`` for
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"


def v2_document(git_version: str) -> dict[str, Any]:
    """``/openapi/v2`` as JSON: a valid Swagger 2.0 document with no definitions.

    kubectl 1.27-1.29 download it before validating; with no definition of a
    kind, their client-side schema validation skips the object (the server
    validates, ``fieldValidation`` being advertised in OpenAPI v3).
    """
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": git_version},
        "paths": {},
        "definitions": {},
    }


def _pb_bytes(field_number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (wire type 2)."""
    key = field_number << 3 | 2
    length = len(payload)
    varint = bytearray()
    while True:
        byte = length & 0x7F
        length >>= 7
        if length:
            varint.append(byte | 0x80)
        else:
            varint.append(byte)
            break
    return bytes([key]) + bytes(varint) + payload


def v2_document_protobuf(git_version: str) -> bytes:
    """:func:`v2_document` as the gnostic ``openapi_v2.Document`` protobuf kubectl decodes.

    Fields: ``swagger`` (1), ``info`` (2: ``title`` 1, ``version`` 2), ``paths`` (8).
    """
    info = _pb_bytes(1, b"Kubernetes") + _pb_bytes(2, git_version.encode())
    return _pb_bytes(1, b"2.0") + _pb_bytes(2, info) + _pb_bytes(8, b"")
