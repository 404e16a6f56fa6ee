"""The official ``kubernetes`` Python client through the gateway: list, create, watch.

The client is built from a context of the kubeconfig ``karpor kubeconfig``
wrote, exactly as a user would (``new_client_from_config``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch

#: the gateway fixtures (gateway, gateway_clusters_dir, gateway_kubeconfig), registered
#: once for the session however many modules name them
pytest_plugins = ("support.gateway",)


@pytest.fixture
def core(gateway_kubeconfig: Path) -> Any:
    api_client = config.new_client_from_config(str(gateway_kubeconfig), context="sim-1")
    return client.CoreV1Api(api_client)


@pytest.fixture
def namespace(core: Any) -> Iterator[str]:
    name = f"py-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


def test_list_create_watch(core: Any, namespace: str):
    before = core.list_namespaced_config_map(namespace)
    names = {cm.metadata.name for cm in before.items}
    assert "kube-root-ca.crt" in names
    created = core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="from-python"), data={"a": "1"}),
    )
    assert created.metadata.uid
    assert created.data == {"a": "1"}
    # a watch from the list's resourceVersion reports the object created since
    stream = watch.Watch().stream(
        core.list_namespaced_config_map,
        namespace,
        resource_version=before.metadata.resource_version,
        timeout_seconds=30,
    )
    for event in stream:
        if event["object"].metadata.name == "from-python":
            assert event["type"] == "ADDED"
            break
    else:
        raise AssertionError("the watch ended without the ADDED event")
    listed = core.list_namespaced_config_map(namespace, label_selector="")
    assert "from-python" in {cm.metadata.name for cm in listed.items}


def test_cluster_scoped_list(core: Any):
    namespaces = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system"} <= namespaces


def test_own_api_with_the_karpor_context(gateway_kubeconfig: Path):
    api_client = config.new_client_from_config(str(gateway_kubeconfig), context="karpor")
    custom: Any = client.CustomObjectsApi(api_client)
    clusters = custom.list_cluster_custom_object("cluster.karpor.io", "v1beta1", "clusters")
    assert {"sim-1", "sim-2"} <= {c["metadata"]["name"] for c in clusters["items"]}
    one = custom.get_cluster_custom_object("cluster.karpor.io", "v1beta1", "clusters", "sim-2")
    assert one["spec"]["access"]["credential"] == {"type": "ServiceAccountToken"}
