"""karpor.sim.protobuf responses: objects and lists encoded as kube-apiserver
answers a client that prefers protobuf, and what the simulator serves so."""

from __future__ import annotations

import base64
import io
import json
from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyRequest

from karpor.sim import protobuf as pb
from karpor.sim.auth import Authenticator
from karpor.sim.controllers import DeploymentController
from karpor.sim.events import EventRecorder
from karpor.sim.kubelet import Kubelet
from karpor.sim.resources import CATALOG, ResourceType
from karpor.sim.server import ApiServer
from karpor.sim.store import Store

CLIENT_GO = "application/vnd.kubernetes.protobuf, application/json"


def _type(group: str, plural: str) -> ResourceType:
    rt = CATALOG.lookup(group, "v1", plural)
    assert rt is not None
    return rt


def _cluster() -> Store:
    """A store with one of each encodable kind, the pods running, events recorded."""
    clock = Clock()
    clock.advance(1_700_000_000.5)
    store = Store(clock=clock.seconds)
    kubelet = Kubelet(store, clock, start_delay=0.1, events=EventRecorder(store, clock))
    controller = DeploymentController(store, clock)
    kubelet.startService()
    controller.startService()
    pod_spec = {
        "containers": [
            {
                "name": "c",
                "image": "nginx",
                "ports": [{"containerPort": 80}],
                "env": [{"name": "X", "value": "1"}],
                "resources": {"limits": {"cpu": "100m"}},
            }
        ]
    }
    store.create(_type("", "pods"), "default", {"metadata": {"name": "p"}, "spec": pod_spec})
    store.create(
        _type("", "configmaps"),
        "default",
        {"metadata": {"name": "cm"}, "data": {"a": "1", "e": ""}, "binaryData": {"b": "AAE="}},
    )
    store.create(
        _type("", "secrets"), "default", {"metadata": {"name": "s"}, "data": {"x": "eQ=="}}
    )
    store.create(
        _type("apps", "deployments"),
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "w"}},
                "template": {"metadata": {"labels": {"app": "w"}}, "spec": pod_spec},
            },
        },
    )
    store.create(
        _type("", "services"),
        "default",
        {"metadata": {"name": "svc"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}},
    )
    for _ in range(20):
        clock.advance(0.1)
    kubelet.stopService()
    controller.stopService()
    return store


STORE = _cluster()
ENCODED = [
    ("", "pods"),
    ("", "namespaces"),
    ("", "configmaps"),
    ("", "secrets"),
    ("", "serviceaccounts"),
    ("", "events"),
    ("", "services"),
    ("apps", "deployments"),
]


@pytest.mark.parametrize(("group", "plural"), ENCODED)
def test_every_stored_object_and_list_round_trips(group: str, plural: str) -> None:
    rt = _type(group, plural)
    listed = STORE.list(rt, None, limit=2)
    assert listed["items"]
    encoded = pb.encode_object(listed)
    assert encoded.startswith(pb.MAGIC)
    for item in listed["items"]:
        obj = {**item, "kind": rt.kind, "apiVersion": rt.group_version}
        assert pb.decode_message(pb.encode_message(obj, rt.kind), rt.kind) == item
    back = pb.decode_message(pb.encode_message(listed, rt.list_kind), rt.list_kind)
    assert back == {k: v for k, v in listed.items() if k not in ("kind", "apiVersion")}


def test_a_running_pod_keeps_its_status() -> None:
    pod = STORE.get(_type("", "pods"), "default", "p")
    back = pb.decode_message(pb.encode_message(pod, "Pod"), "Pod")
    status = back["status"]
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert status["containerStatuses"][0]["restartCount"] == 0
    assert {c["type"] for c in status["conditions"]} >= {"Ready", "PodScheduled"}
    assert status["conditions"][0]["lastProbeTime"] is None


def test_envelope_and_list_meta() -> None:
    listed = {
        "kind": "ConfigMapList",
        "apiVersion": "v1",
        "metadata": {"resourceVersion": "7", "continue": "tok", "remainingItemCount": 0},
        "items": [{"metadata": {"name": "a"}, "data": {"k": "v"}}],
    }
    body = pb.encode_object(listed)
    # typeMeta {apiVersion "v1", kind "ConfigMapList"}
    assert body[4:25] == b"\x0a\x13\x0a\x02v1\x12\x0dConfigMapList"
    assert body[25] == 0x12  # raw
    assert pb.split_envelope(body)[:2] == ("v1", "ConfigMapList")
    meta = b"\x12\x017\x1a\x03tok\x20\x00"  # resourceVersion, continue, remainingItemCount 0
    assert meta in body
    assert body.endswith(b"\x1a\x00\x22\x00")
    with pytest.raises(ValueError, match="cannot encode ReplicaSet"):
        pb.encode_object({"kind": "ReplicaSet", "apiVersion": "apps/v1"})
    assert not pb.encodable({"kind": "Event", "apiVersion": "events.k8s.io/v1"})


_TEXT = st.text(max_size=12)


@settings(max_examples=60)
@given(
    st.dictionaries(_TEXT, _TEXT, max_size=4),
    st.dictionaries(_TEXT, st.binary(max_size=8), max_size=3),
    st.dictionaries(st.text(min_size=1, max_size=8), _TEXT, max_size=3),
    st.integers(0, 2**40),
)
def test_configmaps_round_trip(
    data: dict[str, str], binary: dict[str, bytes], labels: dict[str, str], generation: int
) -> None:
    obj: dict[str, Any] = {"metadata": {"name": "x", "labels": labels}}
    if generation:
        obj["metadata"]["generation"] = generation
    if not labels:
        del obj["metadata"]["labels"]
    if data:
        obj["data"] = data
    if binary:
        obj["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    assert pb.decode_message(pb.encode_message(obj, "ConfigMap"), "ConfigMap") == obj


@pytest.mark.parametrize(
    ("accept", "wanted"),
    [
        (CLIENT_GO, True),
        ("application/vnd.kubernetes.protobuf", True),
        ("application/json, application/vnd.kubernetes.protobuf", False),
        (
            "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io, application/json",
            False,
        ),
        ("application/json;as=Table;v=v1;g=meta.k8s.io,application/json", False),
        (None, False),
        ("*/*", False),
        ("text/html, application/vnd.kubernetes.protobuf", True),
    ],
)
def test_wants_protobuf(accept: str | None, wanted: bool) -> None:
    assert pb.wants_protobuf(accept) is wanted


def _get(api: ApiServer, uri: str, accept: str) -> tuple[int, str, bytes]:
    request = DummyRequest([b""])
    request.method = b"GET"
    request.uri = uri.encode()
    request.content = io.BytesIO(b"")  # type: ignore[attr-defined]
    request.requestHeaders.setRawHeaders(b"authorization", [b"Bearer t"])
    request.requestHeaders.setRawHeaders(b"accept", [accept.encode()])
    body = api.handle(cast(Request, request))
    assert isinstance(body, bytes)
    content_type = request.responseHeaders.getRawHeaders(b"content-type", [b""])[0].decode()
    return request.responseCode or 200, content_type, body


def test_server_answers_protobuf_to_clients_that_prefer_it() -> None:
    api = ApiServer(STORE, Authenticator("t", []), Clock())
    code, content_type, body = _get(api, "/api/v1/namespaces/default/pods", CLIENT_GO)
    assert (code, content_type) == (200, pb.PROTOBUF)
    _, _, as_json = _get(api, "/api/v1/namespaces/default/pods", "application/json")
    want = json.loads(as_json)
    api_version, kind, raw = pb.split_envelope(body)
    assert (api_version, kind) == ("v1", "PodList")
    assert pb.decode_message(raw, "PodList") == {k: want[k] for k in ("metadata", "items")}
    # a Table stays JSON; so does a kind without an encoding, even protobuf only
    _, content_type, _ = _get(
        api, "/api/v1/namespaces", "application/json;as=Table;v=v1;g=meta.k8s.io"
    )
    assert content_type == "application/json"
    code, content_type, _ = _get(
        api, "/apis/apps/v1/namespaces/default/replicasets", "application/vnd.kubernetes.protobuf"
    )
    assert (code, content_type) == (200, "application/json")
    code, content_type, body = _get(api, "/api/v1/namespaces/default", CLIENT_GO)
    assert (code, content_type) == (200, pb.PROTOBUF)
