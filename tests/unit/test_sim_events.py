"""karpor.sim.events: pod lifecycle events, their TTL, and the events.k8s.io/v1 view."""

from __future__ import annotations

import io
import json
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyRequest

from karpor.kube.selectors import object_fields
from karpor.sim.auth import Authenticator
from karpor.sim.events import (
    EventRecorder,
    container_events,
    event_name,
    format_micro_time,
    from_events_v1,
    kubelet_event,
    scheduled_event,
    to_events_v1,
)
from karpor.sim.kubelet import Kubelet
from karpor.sim.resources import CATALOG, ResourceType
from karpor.sim.server import ApiServer
from karpor.sim.store import Store


def _type(group: str, version: str, plural: str) -> ResourceType:
    rt = CATALOG.lookup(group, version, plural)
    assert rt is not None
    return rt


PODS = _type("", "v1", "pods")
EVENTS = _type("", "v1", "events")


def _pod(policy: str = "IfNotPresent") -> dict[str, Any]:
    return {
        "metadata": {"name": "web"},
        "spec": {
            "containers": [
                {"name": "a", "image": "nginx:1.27", "imagePullPolicy": policy},
                {"name": "b", "image": "busybox"},
            ]
        },
    }


def _events(store: Store) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = store.list(EVENTS, "default")["items"]
    return sorted(items, key=lambda e: e["metadata"]["name"])


def test_kubelet_records_the_lifecycle_of_a_pod() -> None:
    clock = Clock()
    clock.advance(1_700_000_000.25)
    store = Store(clock=clock.seconds)
    kubelet = Kubelet(store, clock, start_delay=0.5, events=EventRecorder(store, clock))
    kubelet.startService()
    pod = store.create(PODS, "default", _pod())
    clock.advance(0.5)
    events = _events(store)
    assert [(e["reason"], e["involvedObject"].get("fieldPath", "")) for e in events] == [
        ("Scheduled", ""),
        ("Pulled", "spec.containers{a}"),
        ("Created", "spec.containers{a}"),
        ("Started", "spec.containers{a}"),
        ("Pulling", "spec.containers{b}"),
        ("Pulled", "spec.containers{b}"),
        ("Created", "spec.containers{b}"),
        ("Started", "spec.containers{b}"),
    ]
    scheduled = events[0]
    assert scheduled["message"] == "Successfully assigned default/web to sim-node"
    assert scheduled["eventTime"] == "2023-11-14T22:13:20.750000Z"
    assert scheduled["reportingComponent"] == "default-scheduler"
    started = events[3]
    assert started["source"] == {"component": "kubelet", "host": "sim-node"}
    assert started["message"] == "Started container a"
    assert started["count"] == 1 and started["firstTimestamp"] == started["lastTimestamp"]
    # kubectl describe pod finds them with its field selector
    fields = object_fields("", "Event", started)
    assert fields["involvedObject.uid"] == pod["metadata"]["uid"]
    assert fields["involvedObject.kind"] == "Pod" and fields["source"] == "kubelet"
    store.delete(PODS, "default", "web")
    clock.advance(0)
    killing = [e for e in _events(store) if e["reason"] == "Killing"]
    assert [e["message"] for e in killing] == ["Stopping container a", "Stopping container b"]
    kubelet.stopService()


def test_recorder_forgets_its_events_after_the_ttl() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds)
    recorder = EventRecorder(store, clock, ttl=10)
    pod = store.create(PODS, "default", _pod())
    for _ in range(3):
        recorder.record(
            kubelet_event(
                pod, "n", clock.seconds(), recorder.next_name("web"), reason="R", message="m"
            )
        )
        clock.advance(4)
    assert len(_events(store)) == 3
    recorder.record(scheduled_event(pod, "n", clock.seconds(), recorder.next_name("web")))
    assert len(_events(store)) == 3 and len(recorder) == 3
    # an event deleted by a client meanwhile is no error
    store.delete(EVENTS, "default", _events(store)[0]["metadata"]["name"])
    clock.advance(20)
    recorder.record(scheduled_event(pod, "n", clock.seconds(), recorder.next_name("web")))
    assert len(_events(store)) == 1
    # an event in a namespace that is gone is dropped
    recorder.record(
        kubelet_event(
            {"metadata": {"name": "x", "namespace": "gone"}},
            "n",
            clock.seconds(),
            "x.1",
            reason="R",
            message="m",
        )
    )
    assert len(recorder) == 1


def test_names_and_pull_messages() -> None:
    assert event_name("web", 1.5, 1) == "web." + format(1_500_000_001, "x")
    assert format_micro_time(1_700_000_000.9999999) == "2023-11-14T22:13:21.000000Z"
    reasons = [r for r, _, _ in container_events(_pod("Always"))]
    assert reasons[:2] == ["Pulling", "Pulled"]


_TEXT = st.text(max_size=8)


@settings(max_examples=50)
@given(
    st.fixed_dictionaries(
        {
            "metadata": st.fixed_dictionaries({"name": _TEXT, "namespace": _TEXT}),
            "involvedObject": st.dictionaries(_TEXT, _TEXT, max_size=3),
            "reason": _TEXT,
            "message": _TEXT,
            "type": st.sampled_from(["Normal", "Warning"]),
            "reportingComponent": _TEXT,
            "reportingInstance": _TEXT,
        },
        optional={
            "source": st.fixed_dictionaries({"component": _TEXT}),
            "count": st.integers(1, 100),
            "firstTimestamp": _TEXT,
            "action": _TEXT,
        },
    )
)
def test_the_two_shapes_round_trip(event: dict[str, Any]) -> None:
    shown = to_events_v1(event)
    assert shown["apiVersion"] == "events.k8s.io/v1"
    assert shown.get("note", "") == (event["message"] or "")
    assert shown["reportingController"] == event["reportingComponent"]
    back = from_events_v1(shown)
    for key in ("reason", "type", "metadata", "reportingComponent", "reportingInstance"):
        assert back[key] == event[key]
    if event["message"]:
        assert back["message"] == event["message"]
    if event["involvedObject"]:
        assert back["involvedObject"] == event["involvedObject"]


def _api_call(api: Any, method: str, uri: str, body: Any = None) -> tuple[int, Any]:
    request = DummyRequest([b""])
    request.method = method.encode()
    request.uri = uri.encode()
    request.content = io.BytesIO(b"" if body is None else json.dumps(body).encode())  # type: ignore[attr-defined]
    request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer t"])
    if body is not None:
        content_type = b"application/merge-patch+json" if method == "PATCH" else b"application/json"
        request.requestHeaders.setRawHeaders(b"content-type", [content_type])
    result = api.handle(cast(Request, request))
    if result is NOT_DONE_YET:
        return 200, b"".join(request.written)
    return request.responseCode or 200, json.loads(result)


def test_events_k8s_io_is_a_view_of_core_events() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds)
    api = ApiServer(store, Authenticator("t", []), clock)
    pod = store.create(PODS, "default", _pod())
    recorder = EventRecorder(store, clock)
    recorder.record(scheduled_event(pod, "n", clock.seconds(), "web.1"))
    base = "/apis/events.k8s.io/v1/namespaces/default/events"
    code, got = _api_call(api, "GET", f"{base}/web.1")
    assert code == 200 and got["apiVersion"] == "events.k8s.io/v1"
    assert got["regarding"]["name"] == "web" and got["note"].startswith("Successfully assigned")
    assert got["reportingController"] == "default-scheduler"
    code, listed = _api_call(api, "GET", base)
    assert listed["kind"] == "EventList" and listed["apiVersion"] == "events.k8s.io/v1"
    assert [item["reason"] for item in listed["items"]] == ["Scheduled"]
    assert "kind" not in listed["items"][0]
    modern = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {"name": "web.2"},
        "regarding": {"kind": "Pod", "name": "web", "namespace": "default"},
        "reason": "Custom",
        "note": "from a new client",
        "type": "Normal",
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "reportingController": "me",
        "reportingInstance": "me-1",
        "action": "Doing",
    }
    code, created = _api_call(api, "POST", base, modern)
    assert code == 201 and created["note"] == "from a new client"
    core = store.get(EVENTS, "default", "web.2")
    assert core["message"] == "from a new client" and core["involvedObject"]["name"] == "web"
    assert core["reportingComponent"] == "me"
    code, patched = _api_call(api, "PATCH", f"{base}/web.2", {"note": "changed"})
    assert code == 200 and patched["note"] == "changed"
    assert store.get(EVENTS, "default", "web.2")["message"] == "changed"
    code, table = _api_call(api, "GET", "/api/v1/namespaces/default/events")
    assert len(table["items"]) == 2
    code, deleted = _api_call(api, "DELETE", f"{base}/web.2")
    assert code == 200 and deleted["apiVersion"] == "events.k8s.io/v1"
    code, written = _api_call(api, "GET", f"{base}?watch=true&timeoutSeconds=1")
    line = json.loads(written.splitlines()[0])
    assert line["type"] == "ADDED" and line["object"]["apiVersion"] == "events.k8s.io/v1"
    assert line["object"]["regarding"]["name"] == "web"
