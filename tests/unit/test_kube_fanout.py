"""Merging many clusters' lists into one response, and the composite values it carries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.fanout import (
    CLUSTER_ANNOTATION,
    MergedList,
    cluster_target,
    decode_continue,
    decode_versions,
    encode_continue,
    encode_versions,
    union_discovery,
)
from karpor.kube.liststream import ListStream
from karpor.kube.status import ApiError

names = st.text(st.characters(codec="ascii", categories=["Ll", "Nd"]), min_size=1, max_size=8)


def pods(cluster: str, n: int) -> dict[str, Any]:
    return {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": f"{cluster}-rv"},
        "items": [{"metadata": {"name": f"{cluster}-{i}"}} for i in range(n)],
    }


@given(st.dictionaries(names, st.integers(0, 4), min_size=1, max_size=4), st.randoms())
def test_merged_items_interleaved_in_any_order_form_one_valid_list(
    sizes: dict[str, int], rnd: Any
) -> None:
    merged = MergedList(table=False)
    streams = {c: ListStream() for c in sizes}
    raws = {c: json.dumps(pods(c, n)).encode() for c, n in sizes.items()}
    offsets = dict.fromkeys(sizes, 0)
    out = [merged.start()]
    while any(offsets[c] < len(raws[c]) for c in sizes):
        c = rnd.choice([c for c in sizes if offsets[c] < len(raws[c])])
        step = rnd.randint(1, 40)
        elements = streams[c].feed(raws[c][offsets[c] : offsets[c] + step])
        offsets[c] += step
        merged.fields(c, streams[c].fields)
        out.append(merged.elements(c, elements))
    out.append(merged.finish({c: f"{c}-rv" for c in sizes}, {}))
    doc = json.loads(b"".join(out))
    assert doc["kind"] == "PodList" and doc["apiVersion"] == "v1"
    got = sorted(
        (i["metadata"]["annotations"][CLUSTER_ANNOTATION], i["metadata"]["name"])
        for i in doc["items"]
    )
    assert got == sorted((c, f"{c}-{i}") for c, n in sizes.items() for i in range(n))
    assert decode_versions(doc["metadata"]["resourceVersion"]) == {c: f"{c}-rv" for c in sizes}
    assert "continue" not in doc["metadata"]


def test_tables_get_a_cluster_column_and_rows_in_the_first_clusters_order() -> None:
    merged = MergedList(table=True)
    a = {"columnDefinitions": [{"name": "Name"}, {"name": "Age"}]}
    b = {"columnDefinitions": [{"name": "Age"}, {"name": "Name"}, {"name": "Extra"}]}
    merged.fields("a", a)
    merged.fields("b", b)
    out = merged.start()
    out += merged.elements("a", [{"cells": ["p1", "1d"], "object": {"metadata": {"name": "p1"}}}])
    out += merged.elements("b", [{"cells": ["2d", "p2", "x"]}])
    out += merged.finish({"a": "1", "b": "2"}, {"b": "next"})
    doc = json.loads(out)
    assert [c["name"] for c in doc["columnDefinitions"]] == ["Cluster", "Name", "Age"]
    assert [r["cells"] for r in doc["rows"]] == [["a", "p1", "1d"], ["b", "p2", "2d"]]
    assert doc["rows"][0]["object"]["metadata"]["annotations"] == {CLUSTER_ANNOTATION: "a"}
    assert doc["kind"] == "Table" and decode_continue(doc["metadata"]["continue"]) == {"b": "next"}


@given(st.dictionaries(names, st.text(max_size=20), max_size=5))
def test_composite_values_round_trip(values: dict[str, str]) -> None:
    assert decode_versions(encode_versions(values)) == values
    if values:
        assert decode_continue(encode_continue(values)) == values
    else:
        assert encode_continue(values) == ""


@pytest.mark.parametrize("value", ["123", "karpor.!!!", "karpor.e30", "karpor." + "A" * 70000])
def test_a_malformed_composite_value_is_a_400(value: str) -> None:
    with pytest.raises(ApiError) as caught:
        decode_versions(value)
    assert caught.value.code == 400


def test_a_continue_token_is_not_a_resource_version() -> None:
    with pytest.raises(ApiError):
        decode_versions(encode_continue({"a": "x"}))


def test_discovery_is_the_union_of_the_clusters() -> None:
    assert union_discovery(
        [
            {"kind": "APIVersions", "versions": ["v1"]},
            {"kind": "APIVersions", "versions": ["v1", "v2"]},
        ]
    )["versions"] == ["v1", "v2"]
    groups = union_discovery(
        [
            {"kind": "APIGroupList", "groups": [
                {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}]},
            ]},
            {"kind": "APIGroupList", "groups": [
                {"name": "apps", "versions": [{"groupVersion": "apps/v2", "version": "v2"}]},
                {"name": "example.com", "versions": [{"groupVersion": "example.com/v1"}]},
            ]},
        ]
    )["groups"]  # fmt: skip
    assert [g["name"] for g in groups] == ["apps", "example.com"]
    assert [v["groupVersion"] for v in groups[0]["versions"]] == ["apps/v1", "apps/v2"]
    resources = union_discovery(
        [
            {"kind": "APIResourceList", "groupVersion": "v1", "resources": [{"name": "pods"}]},
            {"kind": "APIResourceList", "groupVersion": "v1",
             "resources": [{"name": "pods"}, {"name": "widgets"}]},
        ]
    )["resources"]  # fmt: skip
    assert [r["name"] for r in resources] == ["pods", "widgets"]
    version = {"major": "1", "minor": "33"}
    assert union_discovery([version, {"major": "1", "minor": "30"}]) == version


def test_each_cluster_is_asked_with_its_own_continue_token_and_resource_version() -> None:
    token = encode_continue({"a": "tok/a=", "b": "tb"})
    rv = encode_versions({"a": "10"})
    target = (
        f"/api/v1/pods?limit=5&continue={token}&resourceVersion={rv}&labelSelector=x%3Dy".encode()
    )
    assert cluster_target(target, "a", decode_continue(token), decode_versions(rv)) == (
        b"/api/v1/pods?limit=5&continue=tok%2Fa=&resourceVersion=10&labelSelector=x=y"
    )
    # b has no resourceVersion in the composite one: asked without one
    assert cluster_target(target, "b", decode_continue(token), decode_versions(rv)) == (
        b"/api/v1/pods?limit=5&continue=tb&labelSelector=x=y"
    )
    assert cluster_target(b"/api/v1/pods?limit=5", "a", None, None) == b"/api/v1/pods?limit=5"
