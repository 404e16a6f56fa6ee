"""A tiny kube-apiserver stand-in serving only what the streaming verbs need.

It exists to drive :class:`karpor.sim.streaming.StreamServer` with real
``kubectl`` and the official Python client without the simulator's HTTP
server: legacy discovery (``/api``, ``/api/v1``, ``/apis``), ``GET`` of the
pods below, and their ``exec`` / ``attach`` / ``portforward`` subresources.
Plain HTTP on loopback, no authentication: test use only.

Run ``python -m support.streamfixture WORKDIR`` (with ``tests`` on the path);
it prints ``PORT <n>`` once listening and stops on SIGTERM.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _installed
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from karpor.sim.streaming import StreamServer

NAMESPACE = "default"
_reactor: Any = _installed


def make_pod(name: str, phase: str = "Running", **annotations: str) -> dict[str, Any]:
    """A pod with one container ``main``."""
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": f"uid-{name}",
            "annotations": annotations,
        },
        "spec": {
            "containers": [
                {"name": "main", "image": "sim", "env": [{"name": "GREETING", "value": "hi"}]}
            ],
            "nodeName": "sim-node",
        },
        "status": {
            "phase": phase,
            "containerStatuses": [
                {"name": "main", "ready": phase == "Running", "state": {"running": {}}}
            ],
        },
    }


API_VERSIONS = {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}
API_GROUPS = {"kind": "APIGroupList", "apiVersion": "v1", "groups": []}
API_V1 = {
    "kind": "APIResourceList",
    "groupVersion": "v1",
    "resources": [
        {
            "name": "pods",
            "singularName": "pod",
            "namespaced": True,
            "kind": "Pod",
            "verbs": ["get", "list"],
        },
        {
            "name": "pods/exec",
            "singularName": "",
            "namespaced": True,
            "kind": "PodExecOptions",
            "verbs": ["create", "get"],
        },
        {
            "name": "pods/attach",
            "singularName": "",
            "namespaced": True,
            "kind": "PodAttachOptions",
            "verbs": ["create", "get"],
        },
        {
            "name": "pods/portforward",
            "singularName": "",
            "namespaced": True,
            "kind": "PodPortForwardOptions",
            "verbs": ["create", "get"],
        },
    ],
}


class Root(Resource):
    """Routes every path by hand (twisted.web's tree is overkill here)."""

    isLeaf = True

    def __init__(self, streams: StreamServer, pods: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.streams = streams
        self.pods = pods

    def render(self, request: Request) -> bytes | int:
        path = request.path.decode()
        parts = [p for p in path.split("/") if p]
        request.setHeader(b"content-type", b"application/json")
        if path == "/api":
            return json.dumps(API_VERSIONS).encode()
        if path == "/apis":
            return json.dumps(API_GROUPS).encode()
        if path == "/api/v1":
            return json.dumps(API_V1).encode()
        if len(parts) >= 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            pod = self.pods.get(parts[5]) if parts[3] == NAMESPACE else None
            if pod is None:
                request.setResponseCode(404)
                return json.dumps(
                    {
                        "kind": "Status",
                        "apiVersion": "v1",
                        "metadata": {},
                        "status": "Failure",
                        "message": f'pods "{parts[5]}" not found',
                        "reason": "NotFound",
                        "code": 404,
                    }
                ).encode()
            if len(parts) == 6:
                return json.dumps(pod).encode()
            if len(parts) == 7 and parts[6] in ("exec", "attach", "portforward"):
                return self.streams.handle(request, parts[6], pod)  # type: ignore[arg-type]
        request.setResponseCode(404)
        return (
            b'{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404}'
        )


def main(argv: list[str]) -> None:
    """Serve on a free loopback port; print it; run until killed."""
    workdir = Path(argv[0])
    target = argv[1] if len(argv) > 1 else ""
    pods = {
        "demo": make_pod("demo"),
        "pending": make_pod("pending", phase="Pending"),
    }
    if target:
        pods["mapped"] = make_pod("mapped", **{"sim.karpor.io/port-8080": target})
    streams = StreamServer(_reactor, workdir)
    port = _reactor.listenTCP(0, Site(Root(streams, pods)), interface="127.0.0.1")
    print(f"PORT {port.getHost().port}", flush=True)
    _reactor.addSystemEventTrigger("before", "shutdown", streams.stop)
    _reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
