"""The official ``kubernetes`` Python client against a simulated cluster, and raw 401s."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import portforward
from support.sim import SimCluster, SimRun, start_sim
from support.waits import wait_for

from karpor.sim import protobuf


@pytest.fixture(scope="module")
def short_history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimRun]:
    """A cluster whose store keeps only 5 changes, to reach a 410 quickly."""
    run = start_sim(tmp_path_factory.mktemp("sim-short"), 1, "--history", "5")
    try:
        yield run
    finally:
        run.stop()


def _core(cluster: SimCluster, kubeconfig: Path | None = None) -> Any:
    # Any: the client's models type every field Optional
    api_client = config.new_client_from_config(config_file=str(kubeconfig or cluster.kubeconfig))
    return client.CoreV1Api(api_client)


@pytest.fixture
def core(sim_clusters: SimRun) -> Any:
    return _core(sim_clusters["sim-1"])


@pytest.fixture
def namespace(core: Any) -> Iterator[str]:
    name = f"py-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def _configmap(name: str, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name), data=data)


def test_list_and_create(core: Any, namespace: str) -> None:
    names = [ns.metadata.name for ns in core.list_namespace().items]
    assert {"default", "kube-system", namespace} <= set(names)
    created = core.create_namespaced_config_map(namespace, _configmap("one", a="1"))
    assert created.metadata.uid
    assert created.metadata.resource_version
    listed = core.list_namespaced_config_map(namespace, label_selector="")
    assert "one" in [cm.metadata.name for cm in listed.items]
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_config_map(namespace, _configmap("one"))
    assert exists.value.status == 409
    assert json.loads(str(exists.value.body))["reason"] == "AlreadyExists"


def test_replace_with_stale_resource_version_conflicts(core: Any, namespace: str) -> None:
    created = core.create_namespaced_config_map(namespace, _configmap("racy", a="1"))
    stale = created.metadata.resource_version
    created.data = {"a": "2"}
    core.replace_namespaced_config_map("racy", namespace, created)
    created.data = {"a": "3"}
    created.metadata.resource_version = stale
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_config_map("racy", namespace, created)
    assert conflict.value.status == 409
    body = json.loads(str(conflict.value.body))
    assert body["kind"] == "Status"
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]


def test_watch_stream_and_resume(core: Any, namespace: str) -> None:
    start = core.list_namespaced_config_map(namespace).metadata.resource_version
    core.create_namespaced_config_map(namespace, _configmap("w1"))
    core.patch_namespaced_config_map("w1", namespace, {"data": {"k": "v"}})
    core.delete_namespaced_config_map("w1", namespace)
    seen: list[tuple[str, str]] = []
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        namespace,
        resource_version=start,
        timeout_seconds=2,
    )
    for event in stream:
        seen.append((event["type"], event["object"].metadata.name))
    assert seen == [("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]
    # resuming from the ADDED event's resourceVersion replays only what followed
    resumed = []
    added_rv = None
    for event in watch.Watch().stream(
        core.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=1
    ):
        if added_rv is None:
            added_rv = event["object"].metadata.resource_version
    assert added_rv is not None
    for event in watch.Watch().stream(
        core.list_namespaced_config_map, namespace, resource_version=added_rv, timeout_seconds=1
    ):
        resumed.append(event["type"])
    assert resumed == ["MODIFIED", "DELETED"]


def test_watch_without_resource_version_sends_current_objects(core: Any, namespace: str) -> None:
    core.create_namespaced_config_map(namespace, _configmap("present"))
    names = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(core.list_namespaced_config_map, namespace, timeout_seconds=1)
    ]
    assert ("ADDED", "present") in names


def test_watch_too_old_resource_version_is_410(short_history: SimRun) -> None:
    core = _core(short_history.clusters[0])
    name = f"old-{uuid.uuid4().hex[:6]}"
    first = core.create_namespaced_config_map("default", _configmap(name, n="0"))
    for index in range(1, 10):
        core.patch_namespaced_config_map(name, "default", {"data": {"n": str(index)}})
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        "default",
        resource_version=first.metadata.resource_version,
        timeout_seconds=2,
    )
    with pytest.raises(ApiException) as gone:
        for _ in stream:
            pass
    assert gone.value.status == 410
    assert "Expired" in str(gone.value.reason)


def test_raw_410_error_event(short_history: SimRun) -> None:
    cluster = short_history.clusters[0]
    status, headers, body = _request(
        cluster,
        "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=1",
        token=cluster.token,
    )
    assert status == 200
    assert headers["transfer-encoding"] == "chunked"
    event = json.loads(body.splitlines()[0])
    assert event["type"] == "ERROR"
    assert event["object"]["kind"] == "Status"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"


def _request(
    cluster: SimCluster,
    path: str,
    *,
    token: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    context = ssl.create_default_context(cadata=cluster.ca_pem.decode())
    conn = http.client.HTTPSConnection(cluster.host, cluster.port, context=context, timeout=30)
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    try:
        conn.request("GET", path, headers=sent)
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


UNAUTHORIZED: dict[str, Any] = {
    "kind": "Status",
    "apiVersion": "v1",
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}


@pytest.mark.parametrize("token", [None, "wrong-token"])
def test_without_valid_credential_401(sim_clusters: SimRun, token: str | None) -> None:
    status, headers, body = _request(sim_clusters["sim-1"], "/api/v1/namespaces", token=token)
    assert status == 401
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-cache, private"
    assert headers["audit-id"]
    assert json.loads(body) == UNAUTHORIZED


def test_token_of_another_cluster_is_refused(sim_clusters: SimRun) -> None:
    status, _, _ = _request(sim_clusters["sim-1"], "/version", token=sim_clusters["sim-2"].token)
    assert status == 401


def test_token_auth_headers_and_version(sim_clusters: SimRun) -> None:
    cluster = sim_clusters["sim-1"]
    status, headers, body = _request(cluster, "/version", token=cluster.token)
    assert status == 200
    assert headers["content-type"] == "application/json"
    assert headers["cache-control"] == "no-cache, private"
    assert "server" not in headers
    version = json.loads(body)
    assert version["gitVersion"].startswith("v1.")
    assert version["platform"] == "linux/amd64"
    status, headers, body = _request(cluster, "/healthz", token=cluster.token)
    assert (status, body) == (200, b"ok")


def test_client_certificate_auth_with_python_client(sim_clusters: SimRun) -> None:
    cluster = sim_clusters["sim-1"]
    api_client = config.new_client_from_config(config_file=str(cluster.cert_kubeconfig))
    auth: Any = client.AuthenticationV1Api(api_client)
    review = auth.create_self_subject_review(client.V1SelfSubjectReview())
    assert review.status.user_info.username == "sim-admin"
    assert "system:masters" in review.status.user_info.groups


def test_aggregated_discovery(sim_clusters: SimRun) -> None:
    cluster = sim_clusters["sim-1"]
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    status, headers, body = _request(
        cluster, "/apis", token=cluster.token, headers={"Accept": accept + ",application/json"}
    )
    assert status == 200
    assert headers["content-type"] == accept
    doc = json.loads(body)
    assert doc["kind"] == "APIGroupDiscoveryList"
    groups = {item["metadata"]["name"] for item in doc["items"]}
    assert {"apps", "authentication.k8s.io"} <= groups
    for item in doc["items"]:
        for version in item["versions"]:
            for resource in version["resources"]:
                assert resource["responseKind"]["kind"]


def test_request_head_limit_is_go_1mib(sim_clusters: SimRun) -> None:
    """A 100 KiB header (a big OIDC token, many impersonated groups) passes, as
    through kube-apiserver; a head past Go's 1 MiB is a bare 431."""
    cluster = sim_clusters["sim-1"]
    big = {"X-Big": "a" * (100 * 1024)}
    status, _, body = _request(cluster, "/version", token=cluster.token, headers=big)
    assert status == 200, body
    huge = {"X-Big": "a" * ((1 << 20) + 8192)}
    status, headers, body = _request(cluster, "/version", token=cluster.token, headers=huge)
    assert status == 431
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body == b"431 Request Header Fields Too Large"


def test_paged_list_carries_remaining_item_count(core: Any, namespace: str) -> None:
    for index in range(5):
        core.create_namespaced_config_map(namespace, _configmap(f"cm-{index}"))
    first = core.list_namespaced_config_map(namespace, limit=2)
    assert [cm.metadata.name for cm in first.items] == ["cm-0", "cm-1"]
    # kube-root-ca.crt is in every namespace, as on a real cluster
    assert first.metadata.remaining_item_count == 4
    second = core.list_namespaced_config_map(namespace, limit=2, _continue=first.metadata._continue)
    assert [cm.metadata.name for cm in second.items] == ["cm-2", "cm-3"]
    assert second.metadata.remaining_item_count == 2
    last = core.list_namespaced_config_map(namespace, limit=10, _continue=second.metadata._continue)
    assert last.metadata.remaining_item_count is None and not last.metadata._continue
    # with a selector kube cannot count what remains, and says nothing
    selected = core.list_namespaced_config_map(namespace, limit=2, label_selector="!absent")
    assert selected.metadata._continue and selected.metadata.remaining_item_count is None


def _running_pod(
    core: Any, namespace: str, name: str, annotations: dict[str, str] | None = None
) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, annotations=annotations),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox")]),
    )
    core.create_namespaced_pod(namespace, pod)

    def running() -> bool:
        return bool(core.read_namespaced_pod(name, namespace).status.phase == "Running")

    wait_for(running, 10, f"pod {name} to start")


def test_port_forward_over_the_older_websocket_protocol(core: Any, namespace: str) -> None:
    """The Python client's portforward (``v4.channel.k8s.io``: a data and an error
    channel per port, the port number first on each) reaches the echo service."""
    _running_pod(core, namespace, "echo")
    forward = portforward(
        core.connect_get_namespaced_pod_portforward, "echo", namespace, ports="8080,9090"
    )
    try:
        for port in (8080, 9090):
            sock = forward.socket(port)
            sock.settimeout(10)
            payload = f"hello {port}\n".encode() * 1000
            sock.sendall(payload)
            received = b""
            while len(received) < len(payload):
                chunk = sock.recv(65536)
                assert chunk, "the forward closed early"
                received += chunk
            assert received == payload
            assert forward.error(port) is None
    finally:
        forward.close()

    # a port whose target refuses: the kubelet's message on the error channel
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    _running_pod(core, namespace, "refused", {"sim.karpor.io/port-80": f"127.0.0.1:{refused}"})
    failing = portforward(
        core.connect_get_namespaced_pod_portforward, "refused", namespace, ports="80"
    )
    try:
        sock = failing.socket(80)
        sock.settimeout(10)
        assert sock.recv(10) == b""  # the client closes it on the error
        error = failing.error(80)
        assert error is not None and error.startswith("error forwarding port 80 to pod refused")
    finally:
        failing.close()


def test_protobuf_answers_for_clients_that_prefer_it(sim_clusters: SimRun) -> None:
    """As client-go with ``ContentType: application/vnd.kubernetes.protobuf`` asks:
    namespaces and configmaps in protobuf, equal to their JSON; Tables stay JSON."""
    cluster = sim_clusters["sim-1"]
    client_go = {"Accept": "application/vnd.kubernetes.protobuf, application/json"}
    for path, kind in (
        ("/api/v1/namespaces", "NamespaceList"),
        ("/api/v1/namespaces/kube-system/configmaps", "ConfigMapList"),
        ("/api/v1/namespaces/default", "Namespace"),
    ):
        status, headers, body = _request(cluster, path, token=cluster.token, headers=client_go)
        assert status == 200
        assert headers["content-type"] == protobuf.PROTOBUF
        api_version, got_kind, raw = protobuf.split_envelope(body)
        assert (api_version, got_kind) == ("v1", kind)
        _, _, as_json = _request(cluster, path, token=cluster.token)
        want = json.loads(as_json)
        if kind.endswith("List"):
            want["metadata"]["resourceVersion"] = ANY  # the lists were not taken at once
        got = protobuf.decode_message(raw, kind)
        assert got == {k: v for k, v in want.items() if k not in ("kind", "apiVersion")}
    table = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    _, headers, _ = _request(cluster, "/api/v1/namespaces", token=cluster.token, headers=table)
    assert headers["content-type"] == "application/json"
