"""OpenAPI v2 and v3 for ``cluster.karpor.io/v1beta1``, so ``kubectl explain`` works.

Pure builders of the documents kube-apiserver serves:

* ``/openapi/v3`` (:func:`v3_root`): the group/versions, each with its
  ``serverRelativeURL`` (``?hash=`` of the document, as kube gives it);
* ``/openapi/v3/apis/cluster.karpor.io/v1beta1`` (:func:`v3_document`):
  the paths of ``clusters`` (list, get, watch) and the schemas of
  ``Cluster`` and ``ClusterList``, tagged with
  ``x-kubernetes-group-version-kind`` (kubectl explain, 1.27 and later,
  finds a kind's schema by that tag);
* ``/openapi/v2`` (:func:`v2_document`): the same as Swagger 2.0 JSON
  (kubectl ``explain --output plaintext-openapiv2`` and older tools, and
  the aggregator of an APIService, which merges it).

The schema describes the ``Cluster`` object as the gateway shows it
(:func:`karpor.gatewayapi.clusters.cluster_object`), with the fields a
cluster file may set (:mod:`karpor.config.clusters`): ``spec.access``
lists the secret-bearing fields of the file too, saying that the API never
shows them.  The documents are built once (:data:`V3_DOCUMENT`...): they
depend on nothing but this module.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from karpor.gatewayapi import version
from karpor.kube.discovery import GROUP, GROUP_VERSION, VERSION

_PREFIX = "io.karpor.cluster.v1beta1"
CLUSTER_SCHEMA = f"{_PREFIX}.Cluster"
CLUSTER_LIST_SCHEMA = f"{_PREFIX}.ClusterList"
#: the key of the group/version in ``/openapi/v3``
V3_KEY = f"apis/{GROUP_VERSION}"

Schema = dict[str, Any]


def _string(description: str, fmt: str = "") -> Schema:
    out: Schema = {"type": "string", "description": description}
    if fmt:
        out["format"] = fmt
    return out


def _boolean(description: str) -> Schema:
    return {"type": "boolean", "description": description}


def _object(
    description: str, properties: dict[str, Schema], required: tuple[str, ...] = ()
) -> Schema:
    out: Schema = {"type": "object", "description": description, "properties": properties}
    if required:
        out["required"] = list(required)
    return out


def _string_map(description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "additionalProperties": {"type": "string", "default": ""},
    }


_API_VERSION = _string(
    f"APIVersion defines the versioned schema of this representation of an object: {GROUP_VERSION}."
)
_NOT_SHOWN = " Read from the cluster file only: the API never shows it."

_OBJECT_META = _object(
    "Standard object's metadata. A cluster's name, labels and annotations come from "
    "its cluster file; the gateway fills in the rest.",
    {
        "name": _string("The cluster's name (a DNS-1123 label), unique in the gateway."),
        "labels": _string_map(
            "Labels of the cluster, for label selectors (kubectl get clusters -l, and "
            "fan-out requests to clusters/{selector}/proxy)."
        ),
        "annotations": _string_map("Annotations of the cluster."),
        "uid": _string(
            "A UID derived from the cluster's name and creation time: stable for a "
            "definition across restarts."
        ),
        "resourceVersion": _string(
            "Changes whenever the cluster's definition or its health, version or probe "
            "message changes; usable to resume a watch. Opaque: compare for equality only."
        ),
        "creationTimestamp": _string(
            "When the cluster was defined (metadata.creationTimestamp of the file), else "
            "when this gateway first loaded it. RFC 3339, UTC.",
            "date-time",
        ),
    },
)

_EXEC_ENV = {
    "type": "array",
    "description": "Environment variables of the plugin (values are never shown).",
    "items": _object(
        "One environment variable.",
        {"name": _string("The variable's name."), "value": _string("Its value.")},
        ("name", "value"),
    ),
}

_CREDENTIAL = _object(
    "How the gateway authenticates to the cluster. The API shows only the type: tokens, "
    "keys, certificates and the paths of files holding them never appear.",
    {
        "type": _string(
            "The credential's type: ServiceAccountToken (a bearer token), X509Certificate "
            "(a client certificate) or OIDC (an exec plugin printing an ExecCredential)."
        ),
        "serviceAccountToken": _string("The bearer token (type ServiceAccountToken)." + _NOT_SHOWN),
        "tokenFile": _string(
            "A file holding the bearer token, re-read when it changes (a karpor extension)."
            + _NOT_SHOWN
        ),
        "x509": _object(
            "The client certificate and key (type X509Certificate): inline base64 PEM, "
            "or files." + _NOT_SHOWN,
            {
                "certificate": _string("Base64 PEM client certificate."),
                "privateKey": _string("Base64 PEM private key."),
                "certificateFile": _string("A PEM client certificate file."),
                "privateKeyFile": _string("A PEM private key file."),
            },
        ),
        "execConfig": _object(
            "An exec credential plugin, as in a kubeconfig (type OIDC)." + _NOT_SHOWN,
            {
                "command": _string("The plugin's command."),
                "args": {
                    "type": "array",
                    "description": "Its arguments.",
                    "items": {"type": "string", "default": ""},
                },
                "env": _EXEC_ENV,
                "apiVersion": _string("client.authentication.k8s.io/v1 (default) or v1beta1."),
                "installHint": _string("Printed when the command is missing."),
                "provideClusterInfo": _boolean(
                    "Whether the plugin gets the cluster's details in KUBERNETES_EXEC_INFO."
                ),
                "interactiveMode": _string("Never (the gateway has no terminal)."),
            },
        ),
    },
    ("type",),
)

_ACCESS = _object(
    "Where the cluster's API server is and how the gateway reaches it (an endpoint, or "
    "tunnel: true). Left out for a caller the access policy does not let see where a "
    "cluster is.",
    {
        "endpoint": _string(
            "The API server's URL (https://HOST:PORT, an optional path); none for a "
            "tunnelled cluster."
        ),
        "tunnel": _boolean(
            "Reached only through its agent (karpor agent dials out to the gateway); then "
            "no endpoint, CA or credential is given: the cluster credential stays with the "
            "agent (a karpor extension)."
        ),
        "caBundle": _string(
            "Base64 PEM certificates the API server's serving certificate is verified "
            "against (public).",
            "byte",
        ),
        "caFile": _string("A PEM file of CA certificates, instead of caBundle (an extension)."),
        "insecure": _boolean(
            "Skip verifying the API server's certificate (cannot be combined with a CA)."
        ),
        "tlsServerName": _string(
            "The server name sent (SNI) and verified, when not the endpoint's host."
        ),
        "credential": _CREDENTIAL,
    },
)

_SPEC = _object(
    "The cluster as its cluster file defines it (karpor check DIR validates the files).",
    {
        "provider": _string("Who runs the cluster (free text, e.g. eks, gke, kind)."),
        "displayName": _string("A human-friendly name (the DISPLAY NAME column)."),
        "description": _string("Free text about the cluster."),
        "impersonate": _boolean(
            "Whether requests reach the cluster as the caller (Impersonate-* headers, the "
            "gateway's credential needing the impersonate verb) rather than as the "
            "gateway's credential (a karpor extension)."
        ),
        "finalized": _boolean("Accepted for compatibility with Karpor; ignored."),
        "access": _ACCESS,
    },
)

_STATUS = _object(
    "What this gateway process's last health probe of the cluster found (each worker "
    "process probes on its own).",
    {
        "healthy": _boolean(
            "Whether the last probe passed (GET /readyz, or /healthz, answered ok); unset "
            "before the first probe. While false, requests to the cluster fail fast with "
            "503 and a Warning header naming the cause."
        ),
        "version": _string("The cluster's Kubernetes version (gitVersion of its /version)."),
        "lastProbeTime": _string("When the last probe ended (RFC 3339, UTC).", "date-time"),
        "message": _string(
            "What the last probe asked and found: e.g. '/readyz: ok', the status code and "
            "the server's failed checks, or why the cluster could not be reached; 'not "
            "probed yet' before the first probe."
        ),
    },
)

_GVK = {"group": GROUP, "version": VERSION, "kind": "Cluster"}
_LIST_GVK = {"group": GROUP, "version": VERSION, "kind": "ClusterList"}


def cluster_schema() -> Schema:
    """The schema of a ``Cluster`` (no references: every part inline)."""
    return {
        **_object(
            "Cluster is a Kubernetes cluster the gateway serves: requests to "
            f"/apis/{GROUP_VERSION}/clusters/NAME/proxy/PATH reach PATH on it. Read-only: "
            "clusters are defined by the files of the gateway's clusters directory.",
            {
                "apiVersion": _API_VERSION,
                "kind": _string("Kind is a string value representing the REST resource: Cluster."),
                "metadata": _OBJECT_META,
                "spec": _SPEC,
                "status": _STATUS,
            },
        ),
        "x-kubernetes-group-version-kind": [_GVK],
    }


def _list_schema(ref: str) -> Schema:
    return {
        **_object(
            "ClusterList is a list of clusters.",
            {
                "apiVersion": _API_VERSION,
                "kind": _string("ClusterList."),
                "metadata": _object(
                    "Standard list metadata.",
                    {
                        "resourceVersion": _string("The list's resourceVersion."),
                        "continue": _string(
                            "Set when more items remain: send it as ?continue= for them."
                        ),
                        "remainingItemCount": {
                            "type": "integer",
                            "format": "int64",
                            "description": "How many items follow this page (no selectors).",
                        },
                    },
                ),
                "items": {"type": "array", "description": "The clusters.", "items": {"$ref": ref}},
            },
            ("items",),
        ),
        "x-kubernetes-group-version-kind": [_LIST_GVK],
    }


_LIST_PARAMETERS = (
    ("labelSelector", "A label selector."),
    ("fieldSelector", "A field selector (metadata.name)."),
    ("limit", "At most this many items; the rest come with the continue token."),
    ("continue", "The continue token of the previous page."),
    ("resourceVersion", "For a watch: the version to start after."),
    ("watch", "Watch for changes instead of listing."),
    ("timeoutSeconds", "How long a watch stays open."),
)


def _operation(action: str, ref: str, description: str, v3: bool, query: bool) -> Schema:
    op: Schema = {
        "description": description,
        "operationId": f"{action}ClusterKarporIoV1beta1Cluster",
        "tags": [f"clusterKarporIo_{VERSION}"],
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": dict(_GVK),
    }
    params = [
        {"name": name, "in": "query", "description": text, "schema": {"type": "string"}}
        if v3
        else {"name": name, "in": "query", "description": text, "type": "string"}
        for name, text in (_LIST_PARAMETERS if query else ())
    ]
    if params:
        op["parameters"] = params
    if v3:
        op["responses"] = {
            "200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": ref}}}}
        }
    else:
        op["produces"] = ["application/json", "application/json;stream=watch"]
        op["responses"] = {"200": {"description": "OK", "schema": {"$ref": ref}}}
    return op


def _paths(ref_prefix: str, v3: bool) -> Schema:
    collection = f"/apis/{GROUP_VERSION}/clusters"
    cluster_ref, list_ref = f"{ref_prefix}{CLUSTER_SCHEMA}", f"{ref_prefix}{CLUSTER_LIST_SCHEMA}"
    name = (
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
        if v3
        else {"name": "name", "in": "path", "required": True, "type": "string"}
    )
    return {
        collection: {
            "get": _operation("list", list_ref, "list or watch clusters", v3, query=True),
        },
        collection + "/{name}": {
            "parameters": [name],
            "get": _operation("get", cluster_ref, "read the specified cluster", v3, query=False),
        },
    }


def v3_document() -> Schema:
    """``/openapi/v3/apis/cluster.karpor.io/v1beta1``."""
    ref_prefix = "#/components/schemas/"
    return {
        "openapi": "3.0.0",
        "info": {"title": "karpor", "version": version.git_version()},
        "paths": _paths(ref_prefix, v3=True),
        "components": {
            "schemas": {
                CLUSTER_SCHEMA: cluster_schema(),
                CLUSTER_LIST_SCHEMA: _list_schema(ref_prefix + CLUSTER_SCHEMA),
            }
        },
    }


def v2_document() -> Schema:
    """``/openapi/v2``: Swagger 2.0 JSON of the same paths and definitions."""
    ref_prefix = "#/definitions/"
    return {
        "swagger": "2.0",
        "info": {"title": "karpor", "version": version.git_version()},
        "paths": _paths(ref_prefix, v3=False),
        "definitions": {
            CLUSTER_SCHEMA: cluster_schema(),
            CLUSTER_LIST_SCHEMA: _list_schema(ref_prefix + CLUSTER_SCHEMA),
        },
    }


def dumps(document: Schema) -> bytes:
    """A document as served (compact JSON, keys sorted: a stable hash)."""
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def document_hash(body: bytes) -> str:
    """The hash kube puts in ``serverRelativeURL`` (upper-case hex SHA-512)."""
    return hashlib.sha512(body).hexdigest().upper()


#: the served bodies, built once
V3_BODY = dumps(v3_document())
V2_BODY = dumps(v2_document())


def v3_root() -> Schema:
    """``/openapi/v3``: the group/version and the URL of its document."""
    return {
        "paths": {
            V3_KEY: {"serverRelativeURL": f"/openapi/v3/{V3_KEY}?hash={document_hash(V3_BODY)}"}
        }
    }
