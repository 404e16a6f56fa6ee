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

#: the media type kubectl asks for
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
#: the ``Content-Type`` answered (kube-openapi's: Go's ``mime`` rejects the ``@`` form)
OPENAPI_V2_PROTOBUF_CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _text(number: int, value: str) -> bytes:
    return _field(number, value.encode()) if value else b""


def _named(name: str, value: bytes) -> bytes:
    """A ``Named*`` message: ``name`` (1), ``value`` (2)."""
    return _text(1, name) + _field(2, value)


def _vendor_extension(name: str, value: Any) -> bytes:
    """A ``NamedAny`` whose ``Any`` holds the value as YAML (JSON is YAML)."""
    return _named(name, _text(2, json.dumps(value)))


def schema_protobuf(schema: Mapping[str, Any]) -> bytes:
    """One ``Schema`` message from a JSON schema dict."""
    out = _text(1, schema.get("$ref", ""))
    out += _text(2, schema.get("format", ""))
    out += _text(4, schema.get("description", ""))
    out += b"".join(_text(19, name) for name in schema.get("required", ()))
    extra = schema.get("additionalProperties")
    if isinstance(extra, Mapping):
        out += _field(21, _field(1, schema_protobuf(extra)))  # AdditionalPropertiesItem.schema
    if "type" in schema:
        out += _field(22, _text(1, schema["type"]))  # TypeItem.value
    if "items" in schema:
        out += _field(23, _field(1, schema_protobuf(schema["items"])))  # ItemsItem.schema
    properties = schema.get("properties")
    if properties:
        named = b"".join(
            _field(1, _named(name, schema_protobuf(sub))) for name, sub in properties.items()
        )
        out += _field(25, named)  # Properties.additional_properties
    for key, value in schema.items():
        if key.startswith("x-"):
            out += _field(31, _vendor_extension(key, value))
    return out


def document_protobuf(document: Mapping[str, Any]) -> bytes:
    """The ``Document`` message of a Swagger 2.0 document (no paths)."""
    info = document.get("info", {})
    out = _text(1, document.get("swagger", "2.0"))
    out += _field(2, _text(1, info.get("title", "")) + _text(2, info.get("version", "")))
    out += _field(8, b"")  # Paths: kubectl does not read them
    definitions = b"".join(
        _field(1, _named(name, schema_protobuf(schema)))
        for name, schema in document.get("definitions", {}).items()
    )
    return out + _field(9, definitions)
