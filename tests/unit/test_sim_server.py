"""karpor.sim.server: request dispatch, with twisted.web's DummyRequest and a fake clock."""

from __future__ import annotations

import io
import json
from typing import Any, cast

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET, Request
from twisted.web.test.requesthelper import DummyRequest

from karpor.sim.auth import Authenticator
from karpor.sim.cluster import SimulatedCluster
from karpor.sim.kubelet import Kubelet
from karpor.sim.server import ApiServer, SimulatorSite
from karpor.sim.store import Store

TOKEN = "unit-token"
TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


class Sim:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = Store(clock=self.clock.seconds)
        self.api = ApiServer(self.store, Authenticator(TOKEN, []), self.clock, log_interval=1.0)

    def call(
        self,
        method: str,
        uri: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        headers: dict[str, str] | None = None,
    ) -> tuple[DummyRequest, bytes | int]:
        request = DummyRequest([b""])
        request.method = method.encode()
        request.uri = uri.encode()
        request.content = io.BytesIO(b"" if body is None else json.dumps(body).encode())  # type: ignore[attr-defined]
        if token is not None:
            request.requestHeaders.setRawHeaders(b"authorization", [f"Bearer {token}".encode()])
        if body is not None:
            request.requestHeaders.setRawHeaders(b"content-type", [b"application/json"])
        for name, value in (headers or {}).items():
            request.requestHeaders.setRawHeaders(name.encode(), [value.encode()])
        return request, self.api.handle(cast(Request, request))

    def json(self, method: str, uri: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        request, result = self.call(method, uri, body, **kw)
        assert isinstance(result, bytes)
        return request.responseCode or 200, json.loads(result)


def _header(request: DummyRequest, name: str) -> str:
    values = request.responseHeaders.getRawHeaders(name.encode())
    assert values, name
    return values[0].decode()


def test_unauthorized_status_and_headers() -> None:
    sim = Sim()
    request, result = sim.call("GET", "/api/v1/pods", token="wrong")
    assert request.responseCode == 401
    assert isinstance(result, bytes)
    assert json.loads(result) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }
    assert _header(request, "content-type") == "application/json"
    assert _header(request, "cache-control") == "no-cache, private"
    assert _header(request, "audit-id")


def test_crud_conflict_and_errors() -> None:
    sim = Sim()
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}, "data": {"k": "v"}}
    code, created = sim.json("POST", "/api/v1/namespaces/default/configmaps", cm)
    assert code == 201 and created["metadata"]["resourceVersion"]
    code, status = sim.json("POST", "/api/v1/namespaces/default/configmaps", cm)
    assert (code, status["reason"]) == (409, "AlreadyExists")
    stale = dict(created, data={"k": "x"})
    assert sim.json("PUT", "/api/v1/namespaces/default/configmaps/a", stale)[0] == 200
    code, status = sim.json("PUT", "/api/v1/namespaces/default/configmaps/a", stale)
    assert (code, status["reason"]) == (409, "Conflict")
    code, status = sim.json("POST", "/api/v1/namespaces/other/configmaps", cm)
    assert code in (400, 404)
    code, status = sim.json("GET", "/api/v1/namespaces/default/widgets")
    assert (code, status["reason"]) == (404, "NotFound")
    code, status = sim.json("GET", "/apis/authentication.k8s.io/v1/selfsubjectreviews")
    assert (code, status["reason"]) == (405, "MethodNotAllowed")
    request, result = sim.call(
        "PATCH", "/api/v1/namespaces/default/configmaps/a", {"data": {"n": "1"}}
    )
    assert request.responseCode == 415
    request, result = sim.call(
        "PATCH",
        "/api/v1/namespaces/default/configmaps/a",
        {"data": {"n": "1"}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert isinstance(result, bytes) and json.loads(result)["data"] == {"k": "x", "n": "1"}
    code, deleted = sim.json("DELETE", "/api/v1/namespaces/default/configmaps/a")
    assert code == 200
    assert deleted["metadata"]["name"] == "a"


def test_table_list_and_discovery() -> None:
    sim = Sim()
    code, table = sim.json("GET", "/api/v1/namespaces", headers={"accept": TABLE})
    assert (code, table["kind"], table["apiVersion"]) == (200, "Table", "meta.k8s.io/v1")
    assert table["columnDefinitions"][0]["name"] == "Name"
    request, result = sim.call(
        "GET",
        "/apis",
        headers={
            "accept": "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        },
    )
    assert _header(request, "content-type").endswith("v=v2beta1;as=APIGroupDiscoveryList")
    tag = _header(request, "etag")
    request, result = sim.call(
        "GET",
        "/apis",
        headers={
            "accept": "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList",
            "if-none-match": tag,
        },
    )
    assert request.responseCode == 304
    code, legacy = sim.json("GET", "/api")
    assert legacy["kind"] == "APIVersions"
    request, result = sim.call("GET", "/livez")
    assert result == b"ok"
    code, review = sim.json(
        "POST",
        "/apis/authentication.k8s.io/v1alpha1/selfsubjectreviews",
        {},
        headers={"impersonate-user": "eve"},
    )
    assert (code, review["status"]["userInfo"]["username"]) == (201, "eve")


def test_watch_streams_and_ends_on_timeout() -> None:
    sim = Sim()
    request, result = sim.call(
        "GET", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=3"
    )
    assert result == NOT_DONE_YET
    assert request.responseCode == 200
    sim.store.create(
        sim.store.catalog.lookup("", "v1", "configmaps"),  # type: ignore[arg-type]
        "default",
        {"metadata": {"name": "live"}},
    )
    events = [json.loads(line) for line in b"".join(request.written).splitlines()]
    assert events[-1]["type"] == "ADDED"
    assert events[-1]["object"]["metadata"]["name"] == "live"
    sim.clock.advance(3)
    assert request.finished


def test_logs_and_upgrade_subresources() -> None:
    sim = Sim()
    kubelet = Kubelet(sim.store, sim.clock, start_delay=0)
    kubelet.startService()
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    sim.json("POST", "/api/v1/namespaces/default/pods", pod)
    sim.clock.advance(0)  # the kubelet starts the pod now
    sim.clock.advance(2.5)
    request, result = sim.call("GET", "/api/v1/namespaces/default/pods/p/log?tailLines=1")
    assert result == b"default/p/c line 2\n"
    assert _header(request, "content-type") == "text/plain"
    request, result = sim.call("GET", "/api/v1/namespaces/default/pods/p/log?follow=true")
    assert result == NOT_DONE_YET
    sim.clock.advance(1)
    assert b"".join(request.written).endswith(b"default/p/c line 3\n")
    code, status = sim.json("POST", "/api/v1/namespaces/default/pods/p/exec?command=ls")
    assert code == 400 and "no stream server" in status["message"]
    kubelet.stopService()


class _FakeStreams:
    """Records what the server hands to the stream server."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def handle(self, request: Request, kind: str, pod: dict[str, Any]) -> int:
        self.calls.append((kind, pod["metadata"]["name"]))
        return NOT_DONE_YET


def test_streaming_subresources_go_to_the_stream_server() -> None:
    sim = Sim()
    streams = _FakeStreams()
    sim.api.streams = streams  # type: ignore[assignment]
    pod = {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}
    sim.json("POST", "/api/v1/namespaces/default/pods", pod)
    for method, kind in (("GET", "exec"), ("POST", "attach"), ("GET", "portforward")):
        _, result = sim.call(method, f"/api/v1/namespaces/default/pods/p/{kind}?command=ls")
        assert result == NOT_DONE_YET
    assert streams.calls == [("exec", "p"), ("attach", "p"), ("portforward", "p")]
    code, status = sim.json("POST", "/api/v1/namespaces/default/pods/missing/exec?command=ls")
    assert (code, status["reason"], status["message"]) == (
        404,
        "NotFound",
        'pods "missing" not found',
    )
    code, _ = sim.json("PUT", "/api/v1/namespaces/default/pods/p/exec?command=ls")
    assert code == 405
    code, status = sim.json("GET", "/api/v1/namespaces/default/pods/p/exec", token="bad")
    assert code == 401
    assert len(streams.calls) == 3


def _create_deployment(sim: Sim, replicas: int = 2) -> None:
    sim.json(
        "POST",
        "/apis/apps/v1/namespaces/default/deployments",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                },
            },
        },
    )


def test_deployment_scale_subresource() -> None:
    sim = Sim()
    _create_deployment(sim)
    uri = "/apis/apps/v1/namespaces/default/deployments/web/scale"
    code, scale = sim.json("GET", uri)
    assert code == 200
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2}
    assert scale["status"] == {"replicas": 0, "selector": "app=web"}
    code, patched = sim.json(
        "PATCH",
        uri,
        {"spec": {"replicas": 5}},
        headers={"content-type": "application/merge-patch+json"},
    )
    assert (code, patched["spec"]) == (200, {"replicas": 5})
    _, deployment = sim.json("GET", "/apis/apps/v1/namespaces/default/deployments/web")
    assert deployment["spec"]["replicas"] == 5
    assert deployment["metadata"]["generation"] == 2
    stale = {**scale, "spec": {"replicas": 1}}
    code, status = sim.json("PUT", uri, stale)
    assert (code, status["reason"]) == (409, "Conflict")
    fresh = {**patched, "spec": {}}
    code, updated = sim.json("PUT", uri, fresh)
    assert (code, updated["spec"]) == (200, {})
    negative = {**updated, "spec": {"replicas": -1}}
    code, status = sim.json("PUT", uri, negative)
    assert code == 422
    assert status["message"] == (
        'Scale.autoscaling "web" is invalid: spec.replicas: Invalid value: -1: '
        "must be greater than or equal to 0"
    )
    code, _ = sim.json("GET", "/apis/apps/v1/namespaces/default/deployments/nope/scale")
    assert code == 404


def test_long_running_responses_outlive_the_idle_timeout() -> None:
    sim = Sim()
    site = SimulatorSite(sim.api, reactor=sim.clock)
    protocol = site.buildProtocol(None)
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(
        b"GET /api/v1/namespaces/default/configmaps?watch=true HTTP/1.1\r\n"
        b"Host: sim\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n"
    )
    assert transport.value().startswith(b"HTTP/1.1 200 ")
    sim.clock.advance(site.timeOut * 3)  # type: ignore[operator]
    assert not transport.disconnecting
    sim.json("POST", "/api/v1/namespaces/default/configmaps", {"metadata": {"name": "late"}})
    assert b'"name":"late"' in transport.value()
    protocol.connectionLost(Failure(ConnectionDone()))
    # while an idle connection (no request) is closed by the same timeout
    idle = site.buildProtocol(None)
    idle_transport = StringTransport()
    idle.makeConnection(idle_transport)
    sim.clock.advance(site.timeOut + 1)  # type: ignore[operator]
    assert idle_transport.disconnecting


def test_simulated_cluster_owns_its_stream_server() -> None:
    reactor = MemoryReactorClock()
    cluster = SimulatedCluster("unit", reactor=reactor)
    assert cluster.streams is None and cluster.api.streams is None
    cluster.startService()
    streams = cluster.streams
    assert streams is not None and cluster.api.streams is streams
    assert streams.allow_remote_targets is False
    scratch = streams.workdir.parent
    assert scratch.is_dir()
    pod = {"metadata": {"namespace": "default", "name": "p"}}
    (streams.pod_dir(pod) / "file").write_text("x")
    cluster.stopService()
    assert cluster.streams is None and cluster.api.streams is None
    assert not scratch.exists()
    remote = SimulatedCluster("remote", host="127.0.0.2", reactor=reactor, allow_non_loopback=True)
    remote.startService()
    assert remote.streams is not None and remote.streams.allow_remote_targets is True
    remote.stopService()
