"""Reads across many clusters at once (``clusters/*/proxy``, ``clusters/SELECTOR/proxy``)
through the session gateway: sim-1 and sim-2 answer, ``closed`` (a cluster on
a closed port) fails and is named in a warning; kubectl and the Python client.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from support.gateway import GatewayRun
from support.kubectl import Kubectl
from support.tables import printed_row

from karpor.kube.fanout import CLUSTER_ANNOTATION, decode_versions

#: the gateway fixtures (gateway, gateway_clusters_dir, gateway_kubeconfig), registered
#: once for the session however many modules name them
pytest_plugins = ("support.gateway",)

PREFIX = "/apis/cluster.karpor.io/v1beta1/clusters"
SIMULATED = quote("karpor.io/simulated=true", safe="")


def _fanout_kubeconfig(admin: Path, gateway: GatewayRun, segment: str, out: Path) -> Path:
    """The admin kubeconfig with one more context, ``fan``, whose server is the
    fan-out form ``clusters/SEGMENT/proxy``."""
    config_doc = yaml.safe_load(admin.read_text())
    template = next(c for c in config_doc["clusters"] if c["name"] == "sim-1")
    user = config_doc["contexts"][0]["context"]["user"]
    cluster = dict(template["cluster"], server=f"{gateway.url}{PREFIX}/{segment}/proxy")
    config_doc["clusters"].append({"name": "fan", "cluster": cluster})
    config_doc["contexts"].append({"name": "fan", "context": {"cluster": "fan", "user": user}})
    config_doc["current-context"] = "fan"
    out.write_text(yaml.safe_dump(config_doc))
    return out


@pytest.fixture(scope="module")
def everywhere(gateway: GatewayRun, gateway_kubeconfig: Path, tmp_path_factory: Any) -> Path:
    return _fanout_kubeconfig(
        gateway_kubeconfig, gateway, "*", tmp_path_factory.mktemp("fan") / "all.kubeconfig"
    )


@pytest.fixture(scope="module")
def simulated(gateway: GatewayRun, gateway_kubeconfig: Path, tmp_path_factory: Any) -> Path:
    return _fanout_kubeconfig(
        gateway_kubeconfig, gateway, SIMULATED, tmp_path_factory.mktemp("fan") / "sim.kubeconfig"
    )


@pytest.fixture(scope="module")
def kubectl_binary(kubectl_bins: dict[str, Path]) -> Path:
    binary = kubectl_bins.get("1.33") or kubectl_bins.get("path")
    if binary is None:
        pytest.skip("no kubectl on this machine")
    return binary


def test_kubectl_lists_every_cluster_with_a_cluster_column(
    kubectl_binary: Path, everywhere: Path
) -> None:
    kubectl = Kubectl(kubectl_binary, everywhere)
    result = kubectl.run("get", "namespaces", check=False)
    assert result.returncode == 0, result.stderr
    header, *lines = result.stdout.splitlines()
    rows = [printed_row(header, line) for line in lines]
    assert {(r["CLUSTER"], r["NAME"]) for r in rows} >= {("sim-1", "default"), ("sim-2", "default")}
    # the unreachable cluster fails, the others answer; kubectl prints the warning
    assert "closed" in result.stderr and "Warning" in result.stderr, result.stderr


def test_json_items_carry_their_cluster_and_a_composite_resource_version(
    kubectl_binary: Path, simulated: Path
) -> None:
    kubectl = Kubectl(kubectl_binary, simulated)
    result = kubectl.run("get", "namespaces", "-o", "json", check=False)
    assert result.returncode == 0, result.stderr
    assert "closed" not in result.stderr  # the selector leaves it out
    listed = json.loads(result.stdout)
    clusters = {i["metadata"]["annotations"][CLUSTER_ANNOTATION] for i in listed["items"]}
    assert clusters == {"sim-1", "sim-2"}


def test_python_client_lists_across_clusters(simulated: Path) -> None:
    api = client.CoreV1Api(config.new_client_from_config(str(simulated), context="fan"))
    listed: Any = api.list_namespace()
    names = {(n.metadata.annotations[CLUSTER_ANNOTATION], n.metadata.name) for n in listed.items}
    assert {("sim-1", "default"), ("sim-2", "default")} <= names
    assert set(decode_versions(listed.metadata.resource_version)) == {"sim-1", "sim-2"}


def test_get_one_object_finds_the_cluster_that_has_it(
    gateway_kubeconfig: Path, simulated: Path
) -> None:
    name = f"fan-{uuid.uuid4().hex[:8]}"
    sim1 = client.CoreV1Api(config.new_client_from_config(str(gateway_kubeconfig), context="sim-1"))
    sim1.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name))
    )
    fan = client.CoreV1Api(config.new_client_from_config(str(simulated), context="fan"))
    try:
        found: Any = fan.read_namespaced_config_map(name, "default")
        assert found.metadata.annotations[CLUSTER_ANNOTATION] == "sim-1"
        # in both clusters: a conflict naming them
        with pytest.raises(ApiException) as several:
            fan.read_namespace("default")
        assert several.value.status == 409 and "sim-1, sim-2" in str(several.value.body)
        # in none: not found
        with pytest.raises(ApiException) as none:
            fan.read_namespaced_config_map(name + "-missing", "default")
        assert none.value.status == 404
    finally:
        sim1.delete_namespaced_config_map(name, "default")


def test_writes_are_refused_and_reach_no_cluster(
    kubectl_binary: Path, everywhere: Path, gateway_kubeconfig: Path
) -> None:
    name = f"fan-{uuid.uuid4().hex[:8]}"
    kubectl = Kubectl(kubectl_binary, everywhere)
    result = kubectl.run("create", "configmap", name, "-n", "default", check=False)
    assert result.returncode != 0
    assert "may only read" in result.stderr, result.stderr
    assert "sim-1" in result.stderr and "sim-2" in result.stderr
    for context in ("sim-1", "sim-2"):
        api = client.CoreV1Api(
            config.new_client_from_config(str(gateway_kubeconfig), context=context)
        )
        with pytest.raises(ApiException) as missing:
            api.read_namespaced_config_map(name, "default")
        assert missing.value.status == 404


def test_chunked_lists_page_through_every_cluster(kubectl_binary: Path, simulated: Path) -> None:
    kubectl = Kubectl(kubectl_binary, simulated)
    whole = kubectl.run("get", "namespaces", "-o", "name", check=False)
    paged = kubectl.run("get", "namespaces", "-o", "name", "--chunk-size=1", check=False)
    assert whole.returncode == 0 and paged.returncode == 0, paged.stderr
    # every namespace of both clusters, each once, though each page held one per cluster
    assert sorted(paged.stdout.split()) == sorted(whole.stdout.split())
    assert len(whole.stdout.split()) > 2
