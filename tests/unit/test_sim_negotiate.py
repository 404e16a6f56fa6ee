"""karpor.kube.negotiate: Accept headers as kube reads them."""

from __future__ import annotations

from karpor.kube.negotiate import (
    JSON,
    YAML,
    Representation,
    negotiate_discovery,
    negotiate_resource,
    parse_accept,
)

KUBECTL_GET = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


def test_parse_accept() -> None:
    ranges = parse_accept("application/json;as=Table;v=v1, */*")
    assert ranges[0].media_type == JSON
    assert ranges[0].params == {"as": "Table", "v": "v1"}
    assert ranges[1].matches("text/plain")
    assert parse_accept(None)[0].matches(JSON)


def test_tables_metadata_and_fallbacks() -> None:
    table = negotiate_resource(KUBECTL_GET, is_list=True)
    assert table is not None
    assert (table.representation, table.meta_version) == (Representation.TABLE, "v1")
    beta = negotiate_resource("application/json;as=Table;v=v1beta1;g=meta.k8s.io", is_list=False)
    assert beta is not None and beta.meta_version == "v1beta1"
    partial = negotiate_resource(
        "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", is_list=True
    )
    assert partial is not None and partial.representation is Representation.PARTIAL_METADATA
    wrong_group = negotiate_resource(
        "application/json;as=Table;v=v1;g=x,application/json", is_list=True
    )
    assert wrong_group is not None and wrong_group.representation is Representation.OBJECT
    yaml_out = negotiate_resource("application/yaml", is_list=False)
    assert yaml_out is not None and yaml_out.media_type == YAML
    assert negotiate_resource("application/vnd.kubernetes.protobuf", is_list=False) is None
    fallback = negotiate_resource(
        "application/vnd.kubernetes.protobuf,application/json", is_list=False
    )
    assert fallback is not None and fallback.representation is Representation.OBJECT


def test_discovery() -> None:
    v2 = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    v2beta1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
    assert negotiate_discovery(f"{v2},{v2beta1},application/json") == "v2"
    assert negotiate_discovery(f"{v2beta1},application/json") == "v2beta1"
    assert negotiate_discovery("application/json") == ""
    assert negotiate_discovery(None) == ""
    assert negotiate_discovery("application/vnd.kubernetes.protobuf") is None
