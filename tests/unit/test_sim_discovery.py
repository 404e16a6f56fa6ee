"""karpor.sim.discovery and karpor.sim.openapi: the documents kubectl reads."""

from __future__ import annotations

from karpor.sim import discovery, openapi
from karpor.sim.resources import CATALOG


def test_legacy_documents() -> None:
    api = discovery.api_versions(CATALOG, "127.0.0.1:6443")
    assert api["kind"] == "APIVersions" and api["versions"] == ["v1"]
    groups = discovery.api_group_list(CATALOG)
    names = [g["name"] for g in groups["groups"]]
    assert "apps" in names and "" not in names
    auth = next(g for g in groups["groups"] if g["name"] == "authentication.k8s.io")
    assert auth["preferredVersion"] == {"groupVersion": "authentication.k8s.io/v1", "version": "v1"}
    core = discovery.api_resource_list(CATALOG, "", "v1")
    assert core is not None and "apiVersion" not in core
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["pods"]["shortNames"] == ["po"]
    assert by_name["pods/log"]["verbs"] == ["get"]
    assert by_name["pods/eviction"]["group"] == "policy"
    apps = discovery.api_resource_list(CATALOG, "apps", "v1")
    assert apps is not None and apps["apiVersion"] == "v1"
    assert discovery.api_resource_list(CATALOG, "nope", "v1") is None
    assert discovery.api_group_document(CATALOG, "apps") is not None
    assert discovery.api_group_document(CATALOG, "nope") is None


def test_aggregated_documents_have_response_kinds() -> None:
    for version in ("v2", "v2beta1"):
        for legacy in (True, False):
            doc = discovery.aggregated_discovery(CATALOG, legacy=legacy, version=version)
            assert doc["apiVersion"] == f"apidiscovery.k8s.io/{version}"
            assert doc["items"]
            for item in doc["items"]:
                assert ("name" in item["metadata"]) is not legacy
                for gv in item["versions"]:
                    assert gv["freshness"] == "Current"
                    for res in gv["resources"]:
                        assert res["responseKind"]["kind"]
                        assert res["scope"] in ("Namespaced", "Cluster")
                        for sub in res.get("subresources", []):
                            assert sub["responseKind"]["kind"]
    doc = discovery.aggregated_discovery(CATALOG, legacy=False, version="v2")
    assert discovery.etag(doc) == discovery.etag(doc)


def test_openapi_v3_advertises_field_validation_on_patch() -> None:
    root = openapi.root_document(CATALOG, "v1.31.0")
    assert "api/v1" in root["paths"] and "apis/apps/v1" in root["paths"]
    doc = openapi.group_version_document(CATALOG, "apps", "v1", "v1.31.0")
    assert doc is not None
    item = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]
    patch = item["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    assert any(p["name"] == "fieldValidation" and p["in"] == "query" for p in patch["parameters"])
    assert openapi.group_version_document(CATALOG, "nope", "v1", "v1.31.0") is None


def test_openapi_v2_protobuf_is_a_valid_message() -> None:
    data = openapi.v2_document_protobuf("v1.31.0")
    assert data.startswith(b"\x0a\x032.0\x12")
    assert b"v1.31.0" in data
