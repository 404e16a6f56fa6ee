"""karpor.sim.watch: a WatchStream over a real Store on a fake clock."""

from __future__ import annotations

import json
from typing import Any

import pytest
from twisted.internet.task import Clock

from karpor.kube.status import ApiError
from karpor.sim.resources import CATALOG, ResourceType
from karpor.sim.store import Store
from karpor.sim.watch import INITIAL_EVENTS_END, WatchParams, WatchStream, encode_event


def _configmaps() -> ResourceType:
    rt = CATALOG.lookup("", "v1", "configmaps")
    assert rt is not None
    return rt


CM = _configmaps()


def _cm(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "data": {}}


class Sink:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self.finished = False

    def write(self, data: bytes) -> None:
        self.lines.extend(json.loads(line) for line in data.splitlines())

    def finish(self) -> None:
        self.finished = True


def _stream(store: Store, clock: Clock, sink: Sink, **query: str) -> WatchStream:
    params = WatchParams.from_query({k: [v] for k, v in query.items()})
    return WatchStream(store, CM, "default", params, clock, sink.write, sink.finish)


def test_encode_event_is_one_compact_line() -> None:
    assert encode_event("ADDED", {"a": 1}) == b'{"type":"ADDED","object":{"a":1}}\n'


def test_initial_then_live_then_timeout() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds)
    store.create(CM, "default", _cm("before"))
    sink = Sink()
    stream = _stream(store, clock, sink, timeoutSeconds="5")
    for line in stream.start():
        sink.write(line)
    names = [(e["type"], e["object"]["metadata"]["name"]) for e in sink.lines]
    assert ("ADDED", "before") in names
    store.create(CM, "default", _cm("after"))
    store.delete(CM, "default", "after")
    assert [e["type"] for e in sink.lines[-2:]] == ["ADDED", "DELETED"]
    clock.advance(5)
    assert sink.finished
    count = len(sink.lines)
    store.create(CM, "default", _cm("late"))
    assert len(sink.lines) == count


def test_resume_and_too_old() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds, history=3)
    first = store.create(CM, "default", _cm("a"))
    sink = Sink()
    stream = _stream(store, clock, sink, resourceVersion=first["metadata"]["resourceVersion"])
    assert stream.start() == []
    stream.stop()
    for i in range(6):
        store.update(CM, "default", "a", {**store.get(CM, "default", "a"), "data": {"i": str(i)}})
    old = _stream(store, clock, Sink(), resourceVersion=first["metadata"]["resourceVersion"])
    lines = old.start()
    assert old.ended
    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert (event["object"]["code"], event["object"]["reason"]) == (410, "Expired")


def test_bookmarks_and_initial_events_end() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds)
    sink = Sink()
    stream = WatchStream(
        store,
        CM,
        "default",
        WatchParams.from_query(
            {
                "allowWatchBookmarks": ["true"],
                "sendInitialEvents": ["true"],
                "resourceVersionMatch": ["NotOlderThan"],
            }
        ),
        clock,
        sink.write,
        sink.finish,
        bookmark_interval=10,
    )
    for line in stream.start():
        sink.write(line)
    end = sink.lines[-1]
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {INITIAL_EVENTS_END: "true"}
    clock.advance(10)
    assert sink.lines[-1]["type"] == "BOOKMARK"
    assert sink.lines[-1]["object"]["metadata"]["resourceVersion"] == str(store.resource_version)
    stream.stop()
    assert not clock.getDelayedCalls()


def test_params() -> None:
    params = WatchParams.from_query({"fieldSelector": ["a=b"]}, name="x")
    assert params.field_selector == "a=b,metadata.name=x"
    with pytest.raises(ApiError):
        WatchParams.from_query({"timeoutSeconds": ["soon"]})
    with pytest.raises(ApiError) as err:
        WatchParams.from_query({"sendInitialEvents": ["true"]})
    assert err.value.code == 422


def test_streams_share_an_event_line_and_keyed_transforms() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds)
    rv = str(store.resource_version)
    params = WatchParams(resource_version=rv)
    calls: list[str] = []

    def table(event_type: str, obj: dict[str, Any]) -> dict[str, Any]:
        calls.append(event_type)
        return {"kind": "Table", "rows": [obj["metadata"]["name"]]}

    plain: list[bytes] = []
    keyed: list[bytes] = []
    unkeyed: list[bytes] = []
    for _ in range(2):
        for sink, transform, key in (
            (plain, None, None),
            (keyed, table, "table"),
            (unkeyed, table, None),
        ):
            stream = WatchStream(
                store,
                CM,
                "default",
                params,
                clock,
                sink.append,
                lambda: None,
                transform=transform,
                transform_key=key,
            )
            assert stream.start() == []
    created = store.create(CM, "default", _cm("a"))
    assert plain == [encode_event("ADDED", created)] * 2
    assert plain[0] is plain[1]
    assert keyed == [b'{"type":"ADDED","object":{"kind":"Table","rows":["a"]}}\n'] * 2
    assert unkeyed == keyed
    assert calls == ["ADDED"] * 3  # once for both keyed streams, once per unkeyed stream
