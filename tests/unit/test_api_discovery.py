"""Discovery documents and the Accept negotiation kubectl 1.27-1.33 relies on."""

import pytest

from karpor.kube import discovery

# The Accept headers client-go sends for /api and /apis.
ACCEPT_1_27 = (
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"
)
ACCEPT_1_30 = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,"
    "application/json"
)
ACCEPT_1_33 = (
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
)


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (ACCEPT_1_27, "v2beta1"),
        (ACCEPT_1_30, "v2"),
        (ACCEPT_1_33, "v2"),
        ("application/json", "legacy"),
        ("", "legacy"),
        ("*/*", "legacy"),
        ("application/json; as=APIGroupDiscoveryList; v=v2; g=apidiscovery.k8s.io", "v2"),
        ("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList", None),
        ("application/vnd.kubernetes.protobuf", None),
        (
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList;profile=nopeer,"
            "application/json",
            "v2",
        ),
    ],
)
def test_negotiate(accept, expected):
    assert discovery.negotiate(accept) == expected


def test_content_type_names_the_version():
    assert (
        discovery.aggregated_content_type("v2beta1")
        == "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    )


@pytest.mark.parametrize("version", ["v2", "v2beta1"])
def test_aggregated_apis_has_response_kinds(version):
    doc = discovery.aggregated_apis(version)
    assert doc["apiVersion"] == f"apidiscovery.k8s.io/{version}"
    assert doc["kind"] == "APIGroupDiscoveryList"
    [group] = doc["items"]
    assert group["metadata"]["name"] == "cluster.karpor.io"
    [ver] = group["versions"]
    assert ver["version"] == "v1beta1"
    [clusters] = ver["resources"]
    assert clusters["resource"] == "clusters"
    assert clusters["scope"] == "Cluster"
    assert clusters["singularResource"] == "cluster"
    assert clusters["verbs"] == ["get", "list", "watch"]
    assert clusters["responseKind"] == {
        "group": "cluster.karpor.io",
        "version": "v1beta1",
        "kind": "Cluster",
    }
    [proxy] = clusters["subresources"]
    assert proxy["subresource"] == "proxy"
    assert proxy["responseKind"]["kind"] == "ClusterProxyOptions"


def test_aggregated_core_is_empty():
    assert discovery.aggregated_core("v2")["items"] == []


def test_legacy_documents():
    assert discovery.api_versions()["versions"] == []
    groups = discovery.api_group_list()
    assert groups["kind"] == "APIGroupList"
    [group] = groups["groups"]
    assert group == {
        "name": "cluster.karpor.io",
        "versions": [{"groupVersion": "cluster.karpor.io/v1beta1", "version": "v1beta1"}],
        "preferredVersion": {"groupVersion": "cluster.karpor.io/v1beta1", "version": "v1beta1"},
    }
    resources = discovery.api_resource_list()
    assert resources["groupVersion"] == "cluster.karpor.io/v1beta1"
    assert [r["name"] for r in resources["resources"]] == ["clusters", "clusters/proxy"]
    assert resources["resources"][0]["kind"] == "Cluster"
    assert resources["resources"][0]["namespaced"] is False


def test_media_ranges_parse_parameters():
    [first, second] = discovery.media_ranges('application/json; V="v1" ;as=Table, text/*')
    assert (first.type, first.subtype, first.params) == (
        "application",
        "json",
        {"v": "v1", "as": "Table"},
    )
    assert (second.type, second.subtype) == ("text", "*")
    assert not second.matches_json()
