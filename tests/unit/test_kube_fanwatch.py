"""Merging many clusters' watch streams into one (sans-IO): events, composite resourceVersions."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.fanout import CLUSTER_ANNOTATION, decode_versions, encode_versions
from karpor.kube.fanwatch import (
    INITIAL_EVENTS_END,
    MAX_EVENT,
    MAX_WATCH_SECONDS,
    REWATCH_LIMIT,
    REWATCH_MAX,
    EventStream,
    MergedWatch,
    WatchError,
    rewatch_delay,
    watch_target,
    watch_timeout,
)

clusters = st.sampled_from(["a", "b", "c"])


def added(name: str, rv: str, event_type: str = "ADDED") -> dict[str, Any]:
    return {
        "type": event_type,
        "object": {"kind": "Pod", "metadata": {"name": name, "resourceVersion": rv}},
    }


def lines(data: bytes) -> list[Any]:
    return [json.loads(line) for line in data.splitlines()]


@given(st.lists(st.integers(0, 3), min_size=1, max_size=6), st.randoms())
def test_events_split_at_any_boundary_come_out_whole(sizes: list[int], rnd: Any) -> None:
    events = [added(f"p{i}-{n}", str(i)) for i, n in enumerate(sizes)]
    raw = b"".join(json.dumps(e).encode() + b"\n" for e in events)
    stream = EventStream()
    out: list[Any] = []
    pos = 0
    while pos < len(raw):
        step = rnd.randint(1, 30)
        out += stream.feed(raw[pos : pos + step])
        pos += step
    out += stream.end()
    assert out == events


def test_a_last_event_without_newline_and_concatenated_objects_are_read() -> None:
    stream = EventStream()
    assert stream.feed(b'{"a":1}{"b":2}\n{"c"') == [{"a": 1}, {"b": 2}]
    assert stream.feed(b":3}") == []
    assert stream.end() == [{"c": 3}]


def test_an_event_larger_than_the_bound_is_refused() -> None:
    stream = EventStream()
    piece = b"x" * (1 << 20)
    with pytest.raises(WatchError, match="larger"):
        for _ in range(MAX_EVENT // len(piece) + 2):
            stream.feed(piece)
    with pytest.raises(WatchError):
        EventStream().feed(b"not json\n")


@given(st.lists(st.tuples(clusters, st.integers(1, 10**6)), max_size=20))
def test_each_events_resource_version_is_the_composite_as_of_it(
    sequence: list[tuple[str, int]],
) -> None:
    start = {"a": "1", "b": "2", "c": "3"}
    merged = MergedWatch(start, ["a", "b", "c"], table=False)
    expected = dict(start)
    for i, (cluster, rv) in enumerate(sequence):
        event_type = "BOOKMARK" if i % 3 == 2 else "MODIFIED"
        (out,) = lines(merged.event(cluster, added(f"p{i}", str(rv), event_type)))
        expected[cluster] = str(rv)
        metadata = out["object"]["metadata"]
        # a client resuming from this event's resourceVersion resumes every cluster
        assert decode_versions(metadata["resourceVersion"]) == expected
        assert out["type"] == event_type
        if event_type != "BOOKMARK":
            assert metadata["annotations"] == {CLUSTER_ANNOTATION: cluster}
    assert merged.versions == expected


def test_the_initial_events_end_only_once_every_cluster_sent_its_own() -> None:
    merged = MergedWatch({}, ["a", "b"], table=False)
    mark = {
        "type": "BOOKMARK",
        "object": {
            "metadata": {"resourceVersion": "5", "annotations": {INITIAL_EVENTS_END: "true"}}
        },
    }
    (first,) = lines(merged.event("a", json.loads(json.dumps(mark))))
    assert "annotations" not in first["object"]["metadata"]
    (second,) = lines(merged.event("b", json.loads(json.dumps(mark))))
    assert second["object"]["metadata"]["annotations"] == {INITIAL_EVENTS_END: "true"}
    # a cluster that failed at the start is not waited for
    alone = MergedWatch({}, ["a", "b"], table=False)
    alone.drop("b")
    (only,) = lines(alone.event("a", json.loads(json.dumps(mark))))
    assert only["object"]["metadata"]["annotations"] == {INITIAL_EVENTS_END: "true"}
    assert decode_versions(second["object"]["metadata"]["resourceVersion"]) == {"a": "5", "b": "5"}


def test_an_error_ends_the_stream_and_a_410_says_list_again() -> None:
    merged = MergedWatch({}, ["a"], table=False)
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    (out,) = lines(merged.event("a", {"type": "ERROR", "object": status}))
    assert merged.finished
    assert out["type"] == "ERROR" and out["object"]["code"] == 410
    assert "cluster a" in out["object"]["message"] and "list again" in out["object"]["message"]
    other = MergedWatch({}, ["a"], table=False)
    (out,) = lines(other.event("a", {"type": "ERROR", "object": {"code": 500, "message": "boom"}}))
    assert out["object"]["code"] == 500 and out["object"]["message"] == "cluster a: boom"
    with pytest.raises(WatchError):
        other.event("a", ["not", "an", "event"])


def test_table_events_get_the_cluster_cell_in_the_first_clusters_column_order() -> None:
    merged = MergedWatch({}, ["a", "b"], table=True)

    def table(defs: list[str], cells: list[str], rv: str) -> dict[str, Any]:
        return {
            "type": "ADDED",
            "object": {
                "kind": "Table",
                "columnDefinitions": [{"name": n} for n in defs],
                "metadata": {"resourceVersion": rv},
                "rows": [{"cells": cells, "object": {"metadata": {"name": cells[0]}}}],
            },
        }

    (first,) = lines(merged.event("a", table(["Name", "Age"], ["p1", "1d"], "7")))
    assert [c["name"] for c in first["object"]["columnDefinitions"]] == ["Cluster", "Name", "Age"]
    assert first["object"]["rows"][0]["cells"] == ["a", "p1", "1d"]
    row_meta = first["object"]["rows"][0]["object"]["metadata"]
    assert row_meta["annotations"] == {CLUSTER_ANNOTATION: "a"}
    (second,) = lines(merged.event("b", table(["Age", "Name"], ["2d", "p2"], "9")))
    assert second["object"]["columnDefinitions"] == []  # kubectl keeps the ones it has
    assert second["object"]["rows"][0]["cells"] == ["b", "p2", "2d"]
    rv = second["object"]["metadata"]["resourceVersion"]
    assert decode_versions(rv) == {"a": "7", "b": "9"}


def test_rewatches_back_off_and_give_up() -> None:
    assert rewatch_delay(0) == 0.0
    delays = [rewatch_delay(n) for n in range(1, REWATCH_LIMIT + 1)]
    assert all(d is not None and 0 < d <= REWATCH_MAX for d in delays)
    assert delays == sorted(delays)  # type: ignore[type-var]
    assert rewatch_delay(REWATCH_LIMIT + 1) is None


def test_a_rewatch_asks_from_the_last_resource_version_without_initial_events() -> None:
    target = b"/api/v1/pods?watch=true&resourceVersion=&sendInitialEvents=true&timeoutSeconds=60"
    assert watch_target(target, "42", 17) == (
        b"/api/v1/pods?watch=true&resourceVersion=42&timeoutSeconds=17"
    )
    assert watch_target(target, None, None) == target
    assert watch_timeout({"timeoutSeconds": ["30"]}) == 30.0
    # none, or a longer one: the cap
    assert watch_timeout({"timeoutSeconds": ["0"]}) == MAX_WATCH_SECONDS
    assert watch_timeout({"timeoutSeconds": ["99999"]}) == MAX_WATCH_SECONDS
    assert watch_timeout({}) == MAX_WATCH_SECONDS


def test_a_composite_start_is_what_the_first_event_extends() -> None:
    merged = MergedWatch(decode_versions(encode_versions({"a": "1"})), ["a", "b"], table=False)
    (out,) = lines(merged.event("b", added("p", "8")))
    assert decode_versions(out["object"]["metadata"]["resourceVersion"]) == {"a": "1", "b": "8"}
