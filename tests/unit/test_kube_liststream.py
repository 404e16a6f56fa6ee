"""A list response read in pieces of any size yields its elements as json.loads reads them."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube import liststream
from karpor.kube.liststream import ListError, ListStream, value_end

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)


def pod(i: int) -> dict[str, Any]:
    return {"metadata": {"name": f"p{i}", "annotations": {"a": 'x"}]\\{'}}, "spec": {"n": i}}


def read(raw: bytes, cuts: list[int], array: str = "items") -> tuple[list[Any], ListStream]:
    """The elements of ``raw`` fed in pieces cut at ``cuts``; each element's
    text (:attr:`ListStream.texts`) checked to decode to it."""
    stream = ListStream(array, keep_text=True)
    out: list[Any] = []
    last = 0
    for cut in [*sorted(set(cuts)), len(raw)]:
        elements = stream.feed(raw[last:cut])
        assert [json.loads(text) for text in stream.texts] == elements
        out += elements
        last = cut
    stream.end()
    return out, stream


@given(
    items=st.lists(values, max_size=8),
    meta=st.dictionaries(st.text(max_size=5), values, max_size=3),
    indent=st.none() | st.integers(0, 2),
    data=st.data(),
)
def test_any_split_of_any_list_yields_its_items_and_fields(
    items: list[Any], meta: dict[str, Any], indent: int | None, data: st.DataObject
) -> None:
    doc = {"kind": "PodList", "apiVersion": "v1", "metadata": meta, "items": items}
    raw = json.dumps(doc, indent=indent, ensure_ascii=False).encode()
    cuts = data.draw(st.lists(st.integers(0, len(raw)), max_size=12))
    out, stream = read(raw, cuts)
    assert out == json.loads(raw)["items"]
    assert stream.fields == {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": json.loads(raw)["metadata"],
    }
    assert stream.done and stream.seen_array


def test_elements_come_as_soon_as_they_are_complete() -> None:
    raw = json.dumps({"kind": "PodList", "metadata": {}, "items": [pod(1), pod(2)]}).encode()
    second = raw.index(b'{"metadata": {"name": "p2"')
    stream = ListStream()
    assert stream.feed(raw[: second - 1]) == [pod(1)]
    assert stream.feed(raw[second - 1 :]) == [pod(2)]


def test_table_rows_and_fields_after_the_array() -> None:
    table = {"kind": "Table", "rows": [{"cells": ["a", 1]}], "columnDefinitions": [{"name": "N"}]}
    out, stream = read(json.dumps(table).encode(), [5, 17, 30], array="rows")
    assert out == [{"cells": ["a", 1]}] and stream.fields["columnDefinitions"] == [{"name": "N"}]


@pytest.mark.parametrize(
    "raw",
    [
        b"[1,2]",
        b'{"items": 5}',
        b'{"items": [1,,2]}',
        b'{"items": [tru]}',
        b'{"a" 1}',
        b'{"items": []} x',
    ],
)
def test_what_is_not_a_list_is_refused(raw: bytes) -> None:
    with pytest.raises(ListError):
        read(raw, [])


def test_a_response_that_ends_early_is_refused() -> None:
    with pytest.raises(ListError, match="ended early"):
        read(b'{"items": [{"a": 1}', [])


def test_a_piece_over_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(liststream, "MAX_PENDING", 100)
    stream = ListStream()
    stream.feed(b'{"items": [')
    with pytest.raises(ListError, match="larger than"):
        stream.feed(b'{"a": "' + b"x" * 200)


@given(values)
def test_value_end_finds_the_end_of_any_value(value: Any) -> None:
    text = json.dumps(value)
    assert value_end(text + ",", 0) == len(text)
    if len(text) > 1 and text[0] in '{["':
        assert value_end(text[:-1], 0) is None
