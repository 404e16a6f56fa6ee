"""Merge, JSON, strategic merge and apply patches."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.status import ApiError
from karpor.sim.patch import (
    apply,
    json_patch,
    merge_patch,
    merge_patch_diff,
    strategic_merge_patch,
)

# --- RFC 7386 -----------------------------------------------------------------------

_scalars = st.one_of(st.booleans(), st.integers(-5, 5), st.text("abc", max_size=3))
# JSON documents without null inside objects (a merge patch cannot say "set to null")
_documents = st.recursive(
    _scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text("xyz", min_size=1, max_size=2), children, max_size=4),
    ),
    max_leaves=12,
)
_objects = st.dictionaries(st.text("xyz", min_size=1, max_size=2), _documents, max_size=4)
_patches = st.recursive(
    st.one_of(_scalars, st.none()),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text("xyz", min_size=1, max_size=2), children, max_size=4),
    ),
    max_leaves=12,
)


@pytest.mark.parametrize(
    ("target", "patch", "result"),
    [  # the examples of RFC 7386, appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_rfc7386_examples(target, patch, result):
    assert merge_patch(target, patch) == result


@given(_objects, _objects)
def test_the_diff_of_a_and_b_applied_to_a_gives_b(a, b):
    assert merge_patch(a, merge_patch_diff(a, b)) == b


@given(_objects, _patches)
def test_merge_patches_are_idempotent(a, patch):
    once = merge_patch(a, patch)
    assert merge_patch(once, patch) == once


@given(_objects, _patches)
def test_merge_patch_leaves_its_arguments_alone(a, patch):
    before = json.dumps([a, patch], sort_keys=True)
    merge_patch(a, patch)
    assert json.dumps([a, patch], sort_keys=True) == before


# --- RFC 6902 -------------------------------------------------------------------------


def test_json_patch_operations():
    doc = {"a": {"b": [1, 2]}, "c": "x"}
    ops: list[dict[str, Any]] = [
        {"op": "add", "path": "/a/b/1", "value": 9},
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "replace", "path": "/c", "value": "y"},
        {"op": "copy", "from": "/c", "path": "/d"},
        {"op": "move", "from": "/d", "path": "/e~1f"},
        {"op": "remove", "path": "/a/b/0"},
        {"op": "test", "path": "/e~1f", "value": "y"},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [9, 2, 3]}, "c": "y", "e/f": "y"}
    assert doc == {"a": {"b": [1, 2]}, "c": "x"}


@pytest.mark.parametrize(
    "ops",
    [
        [{"op": "test", "path": "/c", "value": "nope"}],
        [{"op": "remove", "path": "/missing"}],
        [{"op": "replace", "path": "/missing", "value": 1}],
        [{"op": "add", "path": "/a/b/9", "value": 1}],
        [{"op": "add", "path": "/no/such/parent", "value": 1}],
        [{"op": "jump", "path": "/c"}],
        [{"op": "test", "path": "/a/b/0", "value": True}],
    ],
)
def test_json_patch_failures_are_422(ops: list[dict[str, Any]]) -> None:
    with pytest.raises(ApiError) as caught:
        json_patch({"a": {"b": [1]}, "c": "x"}, ops)
    assert caught.value.code == 422
    assert caught.value.reason == "Invalid"


# --- strategic merge patch --------------------------------------------------------------


def pod(*containers, **spec):
    return {"metadata": {"name": "p"}, "spec": {"containers": list(containers), **spec}}


def test_strategic_merge_merges_containers_by_name():
    original = pod({"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"})
    patched = strategic_merge_patch(
        original, {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}
    )
    assert patched["spec"]["containers"] == [
        {"name": "a", "image": "a:1"},
        {"name": "b", "image": "b:2"},
    ]
    added = strategic_merge_patch(
        original, {"spec": {"containers": [{"name": "c", "image": "c:1"}]}}
    )
    assert [c["name"] for c in added["spec"]["containers"]] == ["a", "b", "c"]


def test_strategic_merge_directives():
    original = pod(
        {
            "name": "a",
            "image": "a:1",
            "env": [{"name": "X", "value": "1"}, {"name": "Y", "value": "2"}],
        },
        {"name": "b", "image": "b:1"},
    )
    patch = {
        "spec": {
            "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
            "containers": [
                {"name": "a", "env": [{"name": "X", "$patch": "delete"}]},
            ],
        }
    }
    patched = strategic_merge_patch(original, patch)
    assert [c["name"] for c in patched["spec"]["containers"]] == ["b", "a"]
    assert patched["spec"]["containers"][1]["env"] == [{"name": "Y", "value": "2"}]
    assert "$setElementOrder/containers" not in patched["spec"]


def test_strategic_merge_replace_and_delete_maps():
    original = {"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": {"y": 1}}}
    patched = strategic_merge_patch(
        original,
        {
            "metadata": {"labels": {"$patch": "replace", "c": "3"}},
            "spec": {"x": {"$patch": "delete"}},
        },
    )
    assert patched == {"metadata": {"labels": {"c": "3"}}, "spec": {}}


def test_strategic_merge_replace_a_list():
    original = pod({"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"})
    patched = strategic_merge_patch(
        original, {"spec": {"containers": [{"$patch": "replace"}, {"name": "c", "image": "c"}]}}
    )
    assert patched["spec"]["containers"] == [{"name": "c", "image": "c"}]


def test_strategic_merge_retain_keys():
    original = {"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}}
    patched = strategic_merge_patch(
        original,
        {
            "spec": {
                "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}
            }
        },
    )
    assert patched == {"spec": {"strategy": {"type": "Recreate"}}}


def test_strategic_merge_primitive_lists():
    original = {"metadata": {"finalizers": ["a", "b"]}, "spec": {"args": ["x", "y"]}}
    patched = strategic_merge_patch(
        original,
        {
            "metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"args": ["z"]},
        },
    )
    assert patched == {"metadata": {"finalizers": ["b", "c"]}, "spec": {"args": ["z"]}}


def test_strategic_merge_ports_keys():
    container = {"name": "a", "ports": [{"containerPort": 80, "name": "http"}]}
    patched = strategic_merge_patch(
        pod(container),
        {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 80, "name": "web"}]}]}},
    )
    assert patched["spec"]["containers"][0]["ports"] == [{"containerPort": 80, "name": "web"}]
    service = {"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}]}}
    patched = strategic_merge_patch(
        service, {"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}
    )
    assert patched["spec"]["ports"] == [
        {"port": 80, "targetPort": 8080},
        {"port": 443, "targetPort": 8443},
    ]


def test_strategic_merge_is_a_merge_patch_elsewhere():
    original = {"metadata": {"labels": {"a": "1"}}, "data": {"k": "v"}}
    patched = strategic_merge_patch(original, {"metadata": {"labels": {"a": None, "b": "2"}}})
    assert patched == {"metadata": {"labels": {"b": "2"}}, "data": {"k": "v"}}


# --- dispatch ------------------------------------------------------------------------------


def test_apply_dispatches_on_content_type():
    original = {"metadata": {"name": "x", "labels": {"a": "1"}}}
    merged = apply(
        "application/merge-patch+json; charset=utf-8",
        original,
        b'{"metadata":{"labels":{"b":"2"}}}',
    )
    assert merged["metadata"]["labels"] == {"a": "1", "b": "2"}
    patched = apply(
        "application/json-patch+json",
        original,
        b'[{"op":"add","path":"/metadata/labels/c","value":"3"}]',
    )
    assert patched["metadata"]["labels"] == {"a": "1", "c": "3"}
    applied = apply("application/apply-patch+yaml", original, b"metadata:\n  labels:\n    d: '4'\n")
    assert applied["metadata"]["labels"] == {"a": "1", "d": "4"}


def test_unknown_patch_type_is_415():
    with pytest.raises(ApiError) as caught:
        apply("application/json", {}, b"{}")
    assert caught.value.code == 415
    assert caught.value.reason == "UnsupportedMediaType"
    assert caught.value.message == (
        "the body of the request was in an unknown format - accepted media types include: "
        "application/json-patch+json, application/merge-patch+json, "
        "application/strategic-merge-patch+json, application/apply-patch+yaml"
    )


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/merge-patch+json", b"{nope"),
        ("application/json-patch+json", b'{"op": "add"}'),
        ("application/apply-patch+yaml", b"- a list\n"),
    ],
)
def test_bodies_that_do_not_parse_are_400(content_type, body):
    with pytest.raises(ApiError) as caught:
        apply(content_type, {}, body)
    assert caught.value.code == 400
