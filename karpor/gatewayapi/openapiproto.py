"""``/openapi/v2`` as the protobuf kubectl asks for (gnostic ``openapi_v2.Document``).

kubectl (``explain --output plaintext-openapiv2``, and client-side
validation in 1.27-1.29) downloads ``/openapi/v2`` with ``Accept:
application/com.github.proto-openapi.spec.v2@v1.0+protobuf`` and decodes
the body as that message whatever the ``Content-Type``; a JSON answer would
not parse.  :func:`document_protobuf` encodes a Swagger 2.0 document built
by :mod:`karpor.gatewayapi.openapi` (``swagger``, ``info`` and the
``definitions``; kubectl reads nothing else) with the few protobuf wire
rules it needs: varint-length-delimited fields (wire type 2) and booleans
(wire type 0).  Field numbers are those of gnostic's ``OpenAPIv2.proto``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from karpor.kube import protowire

#: the media type kubectl asks for
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
#: the ``Content-Type`` answered (kube-openapi's: Go's ``mime`` rejects the ``@`` form)
OPENAPI_V2_PROTOBUF_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _named(name: str, value: bytes) -> bytes:
    """A ``Named*`` message: ``name`` (1), ``value`` (2)."""
    return protowire.text(1, name) + protowire.delimited(2, value)


def _vendor_extension(name: str, value: Any) -> bytes:
    """A ``NamedAny`` whose ``Any`` holds the value as YAML (JSON is YAML)."""
    return _named(name, protowire.text(2, json.dumps(value)))


def schema_protobuf(schema: Mapping[str, Any]) -> bytes:
    """One ``Schema`` message from a JSON schema dict."""
    out = protowire.text(1, schema.get("$ref", ""))
    out += protowire.text(2, schema.get("format", ""))
    out += protowire.text(4, schema.get("description", ""))
    out += b"".join(protowire.text(19, name) for name in schema.get("required", ()))
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        out += protowire.delimited(
            21, protowire.delimited(1, schema_protobuf(extra))
        )  # AdditionalPropertiesItem.schema
    if "type" in schema:
        out += protowire.delimited(22, protowire.text(1, schema["type"]))  # TypeItem.value
    if "items" in schema:
        out += protowire.delimited(
            23, protowire.delimited(1, schema_protobuf(schema["items"]))
        )  # ItemsItem.schema
    properties = schema.get("properties")
    if properties:
        named = b"".join(
            protowire.delimited(1, _named(name, schema_protobuf(sub)))
            for name, sub in properties.items()
        )
        out += protowire.delimited(25, named)  # Properties.additional_properties
    for key, value in schema.items():
        if key.startswith("x-"):
            out += protowire.delimited(31, _vendor_extension(key, value))
    return out


def document_protobuf(document: Mapping[str, Any]) -> bytes:
    """The ``Document`` message of a Swagger 2.0 document (no paths)."""
    info = document.get("info", {})
    out = protowire.text(1, document.get("swagger", "2.0"))
    out += protowire.delimited(
        2, protowire.text(1, info.get("title", "")) + protowire.text(2, info.get("version", ""))
    )
    out += protowire.delimited(8, b"")  # Paths: kubectl does not read them
    definitions = b"".join(
        protowire.delimited(1, _named(name, schema_protobuf(schema)))
        for name, schema in document.get("definitions", {}).items()
    )
    return out + protowire.delimited(9, definitions)
