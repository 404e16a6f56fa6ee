"""Reads across many clusters at once (``clusters/*/proxy``, ``clusters/SELECTOR/proxy``)
through the session gateway: sim-1 and sim-2 answer, ``closed`` (a cluster on
a closed port) fails and is named in a warning; kubectl and the Python client
(lists, gets, merged watches).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from kubernetes import client, config, watch
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


class _Lines:
    """A streaming kubectl's output lines, read in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def until(self, *texts: str) -> list[str]:
        """The lines up to the one holding every text (each seen in some line)."""
        seen: list[str] = []
        while True:
            line = self.lines.get(timeout=60)
            if line is None:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"kubectl ended early: {stderr}")
            seen.append(line)
            if all(any(text in s for s in seen) for text in texts):
                return seen

    def stop(self) -> str:
        self.proc.terminate()
        _, stderr = self.proc.communicate(timeout=10)
        return stderr


def _pod(name: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
    )


def test_kubectl_watches_pods_changing_in_two_clusters(
    kubectl_binary: Path, everywhere: Path, gateway_kubeconfig: Path
) -> None:
    tag = f"fw-{uuid.uuid4().hex[:6]}"
    apis = {
        name: client.CoreV1Api(config.new_client_from_config(str(gateway_kubeconfig), context=name))
        for name in ("sim-1", "sim-2")
    }
    created: list[tuple[str, str]] = []

    def create(cluster: str, suffix: str) -> str:
        name = f"{tag}-{suffix}"
        apis[cluster].create_namespaced_pod("default", _pod(name))
        created.append((cluster, name))
        return name

    listed = create("sim-1", "listed")  # so kubectl prints the list (and its header)
    watch = _Lines(Kubectl(kubectl_binary, everywhere).popen("get", "pods", "-A", "-w"))
    try:
        header, *_ = watch.until(listed)  # the merged list came: the watch is next
        assert "CLUSTER" in header.split()
        later = [(cluster, create(cluster, f"later-{cluster}")) for cluster in apis]
        lines = watch.until(*(name for _, name in later))
        for cluster, name in later:
            row = next(line for line in lines if name in line)
            assert cluster in row.split(), row  # the CLUSTER cell
    finally:
        stderr = watch.stop()
        for cluster, name in created:
            apis[cluster].delete_namespaced_pod(name, "default", grace_period_seconds=0)
    # the unreachable cluster is named in a warning, the others served
    assert "closed" in stderr, stderr


def test_python_watch_resumes_from_a_merged_lists_resource_version(
    gateway_kubeconfig: Path, simulated: Path
) -> None:
    tag = f"fw-{uuid.uuid4().hex[:6]}"
    apis = {
        name: client.CoreV1Api(config.new_client_from_config(str(gateway_kubeconfig), context=name))
        for name in ("sim-1", "sim-2")
    }
    fan = client.CoreV1Api(config.new_client_from_config(str(simulated), context="fan"))
    made: list[tuple[str, str]] = []

    def make(cluster: str, suffix: str) -> str:
        name = f"{tag}-{suffix}"
        meta = client.V1ObjectMeta(name=name)
        apis[cluster].create_namespaced_config_map("default", client.V1ConfigMap(metadata=meta))
        made.append((cluster, name))
        return name

    def watched(rv: str, count: int) -> tuple[list[tuple[str, str, str]], str]:
        """The first ``count`` events of ours from ``rv``, and the RV to resume from."""
        w = watch.Watch()
        out: list[tuple[str, str, str]] = []
        stream = w.stream(
            fan.list_namespaced_config_map, "default", resource_version=rv, timeout_seconds=30
        )
        for event in stream:
            obj = event["object"]
            if obj.metadata.name.startswith(tag):
                cluster = obj.metadata.annotations[CLUSTER_ANNOTATION]
                out.append((event["type"], cluster, obj.metadata.name))
                if len(out) == count:
                    w.stop()
        assert w.resource_version is not None
        return out, w.resource_version

    try:
        make("sim-1", "before")
        listed: Any = fan.list_namespaced_config_map("default")
        a, b = make("sim-1", "a"), make("sim-2", "b")
        events, last = watched(listed.metadata.resource_version, 2)
        # only the changes after the list, from both clusters
        assert sorted(events) == [("ADDED", "sim-1", a), ("ADDED", "sim-2", b)]
        # each event's resourceVersion is the composite one as of it
        assert set(decode_versions(last)) == {"sim-1", "sim-2"}
        c = make("sim-2", "c")
        resumed, _ = watched(last, 1)
        assert resumed == [("ADDED", "sim-2", c)]
    finally:
        for cluster, name in made:
            apis[cluster].delete_namespaced_config_map(name, "default")
