"""The gateway's own API as a kube-apiserver serves it, through real clients.

With the session's gateway (``sim-1``, ``sim-2`` and ``closed``, a cluster
on a closed port the health probe finds unhealthy): ``kubectl get clusters
--chunk-size=1`` pages with continue tokens and prints what the unchunked
list prints; ``kubectl explain clusters`` and ``clusters.spec.access``
(kubectl 1.27 reads OpenAPI v2 as protobuf, 1.30 and 1.33 OpenAPI v3); the
Python client pages with ``limit``/``_continue`` and resumes a watch from a
list's resourceVersion; kubectl prints the health probe's message as a
``Warning`` when a cluster is unhealthy.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config, watch
from support.gateway import CLOSED_CLUSTER, GatewayRun, closed_port, cluster_document
from support.kubectl import MATRIX_VERSIONS, Kubectl, normalize
from support.waits import wait_for

pytest_plugins = ("support.gateway",)

GROUP, VERSION = "cluster.karpor.io", "v1beta1"


@pytest.fixture(params=MATRIX_VERSIONS)
def kubectl(
    request: pytest.FixtureRequest, kubectl_bins: dict[str, Path], gateway_kubeconfig: Path
) -> Kubectl:
    """kubectl 1.33, 1.30 and 1.27 with the admin kubeconfig."""
    binary = kubectl_bins.get(request.param)
    if binary is None:
        pytest.skip(f"kubectl {request.param} is not installed")
    return Kubectl(binary, gateway_kubeconfig, request.param)


@pytest.fixture
def custom(gateway_kubeconfig: Path) -> Any:
    """The Python client's CustomObjectsApi on the ``karpor`` context."""
    api_client = config.new_client_from_config(str(gateway_kubeconfig), context="karpor")
    return client.CustomObjectsApi(api_client)


def test_get_clusters_in_chunks_prints_the_same(kubectl: Kubectl) -> None:
    whole = kubectl.out("--context", "karpor", "get", "clusters")
    chunked = kubectl.run("--context", "karpor", "get", "clusters", "--chunk-size=1", "-v=6")
    # one request per cluster, each but the first with the continue token
    assert chunked.stderr.count("/clusters?continue=") == len(whole.splitlines()) - 2
    assert normalize(chunked.stdout) == normalize(whole)
    assert {"sim-1", "sim-2", CLOSED_CLUSTER} <= {line.split()[0] for line in whole.splitlines()}


def test_explain_clusters(kubectl: Kubectl) -> None:
    top = kubectl.out("--context", "karpor", "explain", "clusters")
    assert "KIND:" in top and "Cluster" in top
    for field in ("apiVersion", "metadata", "spec", "status"):
        assert f"  {field}\t<" in top, top
    access = kubectl.out("--context", "karpor", "explain", "clusters.spec.access")
    assert "FIELD: access <Object>" in access or "RESOURCE: access <Object>" in access, access
    # a tunnelled cluster has no endpoint (spec.access.tunnel: true)
    assert "endpoint\t<string>\n" in access and "tunnel\t<boolean>" in access, access
    assert "credential\t<Object>" in access and "caBundle\t<string>" in access


def test_a_bad_continue_token_is_a_400_status(kubectl: Kubectl) -> None:
    result = kubectl.run(
        "--context",
        "karpor",
        "get",
        "--raw",
        f"/apis/{GROUP}/{VERSION}/clusters?limit=1&continue=forged",
        check=False,
    )
    assert result.returncode != 0
    assert "Error from server (BadRequest): invalid continue token" in result.stderr


def test_python_client_pages_with_limit_and_continue(custom: Any) -> None:
    everything = custom.list_cluster_custom_object(GROUP, VERSION, "clusters")
    names: list[str] = []
    token = None
    versions: set[str] = set()
    while True:
        kwargs: dict[str, str] = {"_continue": token} if token else {}
        page = custom.list_cluster_custom_object(GROUP, VERSION, "clusters", limit=1, **kwargs)
        names += [item["metadata"]["name"] for item in page["items"]]
        versions.add(page["metadata"]["resourceVersion"])
        token = page["metadata"].get("continue")
        if not token:
            break
        assert page["metadata"]["remainingItemCount"] == len(everything["items"]) - len(names)
        assert len(page["items"]) == 1
    assert names == [item["metadata"]["name"] for item in everything["items"]]
    assert len(versions) == 1  # one list, as of its first page


@pytest.fixture
def added_cluster(gateway: GatewayRun, custom: Any) -> Iterator[Path]:
    """Where a test may write a cluster file; removed afterwards, and gone
    from the gateway before the next test (others compare the cluster list)."""
    path = gateway.clusters_dir / f"added-{uuid.uuid4().hex[:6]}.yaml"
    yield path
    path.unlink(missing_ok=True)

    def gone() -> bool:
        listed = custom.list_cluster_custom_object(GROUP, VERSION, "clusters")
        return path.stem not in {item["metadata"]["name"] for item in listed["items"]}

    wait_for(gone, 30, f"the gateway to drop cluster {path.stem}")


def test_a_watch_resumed_from_a_list_sees_a_later_change(custom: Any, added_cluster: Path) -> None:
    listed = custom.list_cluster_custom_object(GROUP, VERSION, "clusters")
    rv = listed["metadata"]["resourceVersion"]
    name = added_cluster.stem
    document = cluster_document(name, f"https://127.0.0.1:{closed_port()}")
    added_cluster.write_text(yaml.safe_dump(document))
    # the watch starts after the change may have happened: it comes from the history
    stream = watch.Watch().stream(
        custom.list_cluster_custom_object,
        GROUP,
        VERSION,
        "clusters",
        resource_version=rv,
        timeout_seconds=30,
    )
    for event in stream:
        obj = event["object"]
        if obj["metadata"]["name"] == name:
            assert event["type"] == "ADDED"
            assert int(obj["metadata"]["resourceVersion"]) > int(rv)
            break
    else:
        raise AssertionError(f"the watch ended without ADDED {name}")


def test_kubectl_prints_why_a_cluster_is_unavailable(
    gateway_kubeconfig: Path, kubectl_bins: dict[str, Path]
) -> None:
    binary = kubectl_bins.get("1.33") or kubectl_bins.get("path")
    if binary is None:
        pytest.skip("no kubectl")
    kubectl = Kubectl(binary, gateway_kubeconfig)

    def unhealthy() -> Any:
        result = kubectl.run("--context", CLOSED_CLUSTER, "get", "pods", check=False)
        return result if "is unhealthy" in result.stderr else None

    result = wait_for(unhealthy, 30, "the closed cluster to be found unhealthy")
    assert result.returncode != 0
    assert f'Warning: cluster "{CLOSED_CLUSTER}" is unhealthy: GET /readyz: ' in result.stderr
    assert "is unreachable" in result.stderr
    assert result.stderr.count("Warning:") == 1  # kubectl prints each warning once
