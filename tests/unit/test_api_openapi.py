"""OpenAPI documents of cluster.karpor.io (karpor.gatewayapi.openapi, openapiproto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from karpor.config import clusters as cluster_files
from karpor.config.model import Cluster, TokenCredential
from karpor.gatewayapi import openapi
from karpor.gatewayapi.clusters import Entry, cluster_object, cluster_status
from karpor.gatewayapi.openapiproto import document_protobuf
from karpor.health.probe import ClusterStatus

TYPES = {"object", "string", "boolean", "integer", "array"}


def walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from walk(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize(
    ("document", "prefix", "schemas"),
    [
        (openapi.v3_document(), "#/components/schemas/", lambda d: d["components"]["schemas"]),
        (openapi.v2_document(), "#/definitions/", lambda d: d["definitions"]),
    ],
)
def test_documents_are_well_formed(document, prefix, schemas):
    found = schemas(document)
    assert set(found) == {openapi.CLUSTER_SCHEMA, openapi.CLUSTER_LIST_SCHEMA}
    for schema in found.values():
        for path, part in walk(schema):
            if "$ref" in part:
                assert part["$ref"].removeprefix(prefix) in found, path
                continue
            assert part.get("type") in TYPES, path
            if path.count(".") <= 3 and not path.endswith(("{}", "[]")):
                assert part.get("description"), f"{path} has no description"
            for name in part.get("required", ()):
                assert name in part["properties"], path
    for item in document["paths"].values():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["x-kubernetes-group-version-kind"]["kind"] == "Cluster"
            assert op["x-kubernetes-action"] in {"list", "get"}
            assert op["responses"]["200"]
    gvk = found[openapi.CLUSTER_SCHEMA]["x-kubernetes-group-version-kind"]
    assert gvk == [{"group": "cluster.karpor.io", "version": "v1beta1", "kind": "Cluster"}]


def test_the_schema_names_every_field_a_cluster_file_may_set():
    props = openapi.cluster_schema()["properties"]
    spec = props["spec"]["properties"]
    assert set(spec) == set(cluster_files._SPEC_KEYS)
    access = spec["access"]["properties"]
    assert set(access) == set(cluster_files._ACCESS_KEYS)
    credential = access["credential"]["properties"]
    assert set(credential) == set(cluster_files._CREDENTIAL_KEYS)
    assert set(credential["x509"]["properties"]) == set(cluster_files._X509_KEYS)
    assert set(credential["execConfig"]["properties"]) == set(cluster_files._EXEC_KEYS)


def test_the_schema_names_every_field_the_api_shows():
    status = ClusterStatus(True, "/readyz: ok", 0, "v1.31.0")
    entry = Entry(
        Cluster(
            "a",
            "https://a:6443",
            credential=TokenCredential(token="t"),
            ca_pem=b"x",
            tls_server_name="a.example",
            labels={"l": "v"},
            annotations={"a": "b"},
            provider="p",
            display_name="A",
            description="d",
        ),
        "uid",
        1,
        "2025-01-01T00:00:00Z",
        status,
    )
    schema = openapi.cluster_schema()

    def check(obj: dict[str, Any], part: dict[str, Any], path: str) -> None:
        for key, value in obj.items():
            assert key in part["properties"], f"{path}.{key} not in the schema"
            sub = part["properties"][key]
            if isinstance(value, dict) and "properties" in sub:
                check(value, sub, f"{path}.{key}")

    check(cluster_object(entry), schema, "")
    check(cluster_status(None), schema["properties"]["status"], ".status")


def _fields(data: bytes) -> dict[int, list[bytes | int]]:
    """A protobuf message's fields (wire types 0 and 2 only); the whole input parsed."""
    out: dict[int, list[bytes | int]] = {}
    i = 0

    def varint() -> int:
        nonlocal i
        shift = value = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return value

    while i < len(data):
        key = varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            out.setdefault(number, []).append(varint())
        else:
            assert wire == 2
            length = varint()
            out.setdefault(number, []).append(data[i : i + length])
            i += length
            assert i <= len(data)
    return out


def test_the_v2_protobuf_holds_the_definitions():
    doc = _fields(document_protobuf(openapi.v2_document()))
    assert doc[1] == [b"2.0"]
    definitions = _fields(doc[9][0])  # type: ignore[arg-type]
    named = [_fields(d) for d in definitions[1]]  # type: ignore[arg-type]
    assert {n[1][0] for n in named} == {
        openapi.CLUSTER_SCHEMA.encode(),
        openapi.CLUSTER_LIST_SCHEMA.encode(),
    }
    cluster = next(n for n in named if n[1][0] == openapi.CLUSTER_SCHEMA.encode())
    schema = _fields(cluster[2][0])  # type: ignore[arg-type]
    assert _fields(schema[22][0])[1] == [b"object"]  # type: ignore[arg-type]
    props = [_fields(p)[1][0] for p in _fields(schema[25][0])[1]]  # type: ignore[arg-type]
    assert props == [b"apiVersion", b"kind", b"metadata", b"spec", b"status"]
    extension = _fields(schema[31][0])  # type: ignore[arg-type]
    assert extension[1] == [b"x-kubernetes-group-version-kind"]
    assert b"Cluster" in _fields(extension[2][0])[2][0]  # type: ignore[arg-type, operator]
