"""Merging many clusters' lists into one response, and the composite values it carries."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.kube.fanout import (
    CLUSTER_ANNOTATION,
    MergedList,
    annotate,
    annotate_text,
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


# -- the items passed on as their text came, but for the annotation -----------------

keys = st.sampled_from(
    ["metadata", "annotations", CLUSTER_ANNOTATION, "name", "spec", "kind", 'x"metadata"']
) | st.text(max_size=6)
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(['"metadata"', 'a\\"metadata":{', "\\u", "\ud800", "é"])
    | st.text(max_size=6)
)
#: a JSON value whose objects are lists of (key, value) pairs: keys may repeat
trees = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3).map(tuple) | st.lists(st.tuples(keys, inner), max_size=4)
    ),
    max_leaves=10,
)
metadata_trees = st.lists(
    st.tuples(keys, trees)
    | st.tuples(st.just("annotations"), st.lists(st.tuples(keys, st.text(max_size=4)), max_size=3))
    | st.tuples(st.just("annotations"), st.none()),
    max_size=4,
)
items = st.lists(
    st.tuples(keys, trees) | st.tuples(st.just("metadata"), metadata_trees), max_size=5
)


def plain(value: Any, data: st.DataObject) -> str:
    """``value`` as JSON, its non-ASCII characters escaped or not as drawn
    (a lone surrogate always escaped: the text is UTF-8)."""
    lone = isinstance(value, str) and any(0xD800 <= ord(c) < 0xE000 for c in value)
    return json.dumps(value, ensure_ascii=lone or data.draw(st.booleans()))


def render(value: Any, data: st.DataObject) -> str:
    """``value`` as JSON text, with whitespace, escapes and key order as drawn."""
    space = data.draw(st.sampled_from(["", " ", "\n  ", "\t"]))
    if isinstance(value, list):  # an object: (key, value) pairs
        pairs = []
        for key, inner in value:
            if data.draw(st.booleans()):
                name = plain(key, data)
            else:  # every character escaped
                name = '"' + "".join(f"\\u{ord(c):04x}" for c in key) + '"'
            pairs.append(f"{space}{name}{space}:{space}{render(inner, data)}")
        return "{" + ",".join(pairs) + space + "}"
    if isinstance(value, tuple):
        return "[" + ",".join(space + render(inner, data) for inner in value) + "]"
    return plain(value, data)


@settings(max_examples=60)
@given(items, st.data())
def test_an_item_passed_on_as_text_is_what_annotating_it_decoded_gives(
    item: list[tuple[str, Any]], data: st.DataObject
) -> None:
    text = render(item, data)
    stream = ListStream(keep_text=True)
    elements = stream.feed(b'{"items":[' + text.encode() + b"]}")
    assert stream.texts == [text]
    merged = MergedList(table=False)
    got = merged.start() + merged.elements("c-1", elements, stream.texts) + merged.finish({}, {})
    expected = annotate(json.loads(text), "c-1")
    assert json.loads(got)["items"] == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"metadata":{"name":"p"},"spec":{"a":"\\u003c"}}',
            '{"metadata":{"annotations":{"karpor.io/cluster":"c"},"name":"p"},"spec":{"a":"\\u003c"}}',
        ),
        (
            '{ "kind" : "Pod", "metadata" : { } }',
            '{ "kind" : "Pod", "metadata" : {"annotations":{"karpor.io/cluster":"c"} } }',
        ),
        (
            '{"metadata":{"annotations":{"a":"b"}},"status":{}}',
            '{"metadata":{"annotations":{"karpor.io/cluster":"c","a":"b"}},"status":{}}',
        ),
        (  # a Deployment: its template's metadata is not the item's
            '{"metadata":{"name":"d"},"spec":{"template":{"metadata":{"name":"t"}}}}',
            '{"metadata":{"annotations":{"karpor.io/cluster":"c"},"name":"d"},'
            '"spec":{"template":{"metadata":{"name":"t"}}}}',
        ),
        (  # the annotation there already, or "annotations" twice: metadata encoded again
            '{"metadata":{"annotations":{"karpor.io/cluster":"x"}}, "spec":{"annotations":{}}}',
            '{"metadata":{"annotations":{"karpor.io/cluster":"c"}}, "spec":{"annotations":{}}}',
        ),
    ],
)
def test_an_ordinary_item_keeps_its_text_but_for_the_annotation(text: str, expected: str) -> None:
    assert annotate_text(text, json.loads(text), "c", '"karpor.io/cluster":"c"') == expected


@pytest.mark.parametrize(
    "text",
    [
        '{"metadata":{"name":"a"},"metadata":{"name":"b"}}',  # a key twice: the last counts
        '{"\\u006detadata":{"name":"a"},"spec":{"metadata":{}}}',  # a key spelled with escapes
        '{"metadata":{"annotations":null}}',
        '{"metadata":[]}',
        "[]",
    ],
)
def test_an_unusual_item_is_decoded_and_encoded_whole(text: str) -> None:
    assert annotate_text(text, json.loads(text), "c", '"karpor.io/cluster":"c"') is None


@pytest.mark.parametrize("table", [False, True])
def test_a_lone_surrogate_a_cluster_escaped_is_passed_on_escaped(table: bool) -> None:
    merged = MergedList(table=table)
    element = {"cells": ["\ud800"]} if table else {"metadata": {}, "a": "\ud800"}
    out = merged.start() + merged.elements("c", [element]) + merged.finish({}, {})
    got = json.loads(out)["rows" if table else "items"][0]
    assert got == ({"cells": ["c", "\ud800"]} if table else annotate(element, "c"))
