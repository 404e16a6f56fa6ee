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
    decode_continue,
    decode_versions,
    encode_continue,
    encode_versions,
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
