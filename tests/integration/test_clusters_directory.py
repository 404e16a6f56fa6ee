"""A clusters directory that cannot be read keeps the last good clusters serving.

Issue 14, items 6 and 15, against a real gateway (one worker) in front of the
simulator, with kubectl: the clusters directory renamed away keeps every
cluster serving, ``/healthz?verbose`` and ``/metrics`` say so, the error is
logged once; renamed back, it reloads and the warning clears.  A symbolic
link to a directory and a file that takes a live cluster over are reported
in the reload's log lines, naming the definition that lost and the one that won.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.gateway import (
    GatewayRun,
    Response,
    client_context,
    credentials_of,
    request,
    start_gateway,
    write_kubeconfig,
)
from support.kubectl import Kubectl
from support.sim import SimRun
from support.waits import wait_for

#: how long a change may take to show (the contract is a second or two; loose
#: because CI machines are shared: this is not a timing test)
PATIENCE = 30.0
CLUSTERS = "/apis/cluster.karpor.io/v1beta1/clusters"


@dataclass
class Setup:
    gateway: GatewayRun
    kubectl: Kubectl
    kubeconfig: Path

    def get(self, path: str) -> Response:
        ca, cert, key = credentials_of(self.kubeconfig)
        return request(self.gateway.port, path, client_context(ca, cert, key))

    def health(self) -> str:
        response = self.get("/healthz?verbose")
        assert response.status == 200, response.body
        return response.body.decode()

    def readable_gauge(self) -> float:
        response = self.get("/metrics")
        assert response.status == 200, response.body
        for line in response.body.decode().splitlines():
            if line.startswith("karpor_config_directory_readable "):
                return float(line.split()[1])
        raise AssertionError("karpor_config_directory_readable not in /metrics")

    def cluster_names(self) -> set[str]:
        response = self.get(CLUSTERS)
        assert response.status == 200, response.body
        return {item["metadata"]["name"] for item in response.json()["items"]}

    def wait_for(self, predicate: Callable[[], bool], what: str) -> None:
        process = self.gateway.process
        wait_for(predicate, PATIENCE, what, detail=lambda: process.output[-4000:], step=0.1)


@pytest.fixture(scope="module")
def setup(
    sim_clusters: SimRun,
    kubectl_bins: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Setup]:
    if not kubectl_bins:
        pytest.skip("no kubectl on this machine")
    base = tmp_path_factory.mktemp("unreadable")
    clusters = base / "clusters"
    clusters.mkdir()
    for cluster in sim_clusters.clusters:
        shutil.copy(cluster.cluster_file, clusters / cluster.cluster_file.name)
    run = start_gateway(clusters, base / "state", "--workers", "1")
    try:
        kubeconfig = write_kubeconfig(run.state_dir, base / "admin.kubeconfig", run.url)
        binary = next(iter(kubectl_bins.values()))
        yield Setup(run, Kubectl(binary, kubeconfig, "unreadable"), kubeconfig)
    finally:
        run.stop()


def _namespaces(setup: Setup, context: str) -> str:
    return setup.kubectl.run("--context", context, "get", "namespaces", "-o", "name").stdout


def test_a_directory_moved_away_keeps_serving_and_recovers(setup: Setup) -> None:
    clusters = setup.gateway.clusters_dir
    away = clusters.with_name("clusters-away")
    assert "namespace/default" in _namespaces(setup, "sim-1")
    warning = (
        f"[+]clusters-directory ok: warning: {clusters}: cannot list: No such file or directory"
    )
    reloaded = "clusters reloaded (generation 2)"
    assert reloaded not in setup.gateway.process.output

    os.rename(clusters, away)
    try:
        setup.wait_for(lambda: reloaded in setup.gateway.process.output, "the reload")
        # every cluster keeps serving, through kubectl too
        assert "namespace/default" in _namespaces(setup, "sim-1")
        assert "namespace/default" in _namespaces(setup, "sim-2")
        assert setup.cluster_names() == {"sim-1", "sim-2"}
        health = setup.health()
        assert warning in health and "(2 clusters)" in health
        assert setup.readable_gauge() == 0
        # changed while away: loaded as it is once back
        (away / "sim-1.yaml").rename(away / "sim-1.yml")
    finally:
        os.rename(away, clusters)
    setup.wait_for(lambda: "clusters-directory" not in setup.health(), "the warning cleared")
    assert setup.readable_gauge() == 1
    assert setup.cluster_names() == {"sim-1", "sim-2"}
    assert "namespace/default" in _namespaces(setup, "sim-2")
    output = setup.gateway.process.output
    # told once (retried at every poll meanwhile), and the recovery once
    assert output.count(f"{clusters}: cannot list: No such file or directory: its last") == 1
    assert output.count(f"clusters directory {clusters} can be read again") == 1


def test_a_link_to_a_directory_and_a_take_over_are_reported(setup: Setup) -> None:
    clusters = setup.gateway.clusters_dir
    (clusters.parent / "elsewhere").mkdir()
    (clusters / "linked.yaml").symlink_to(clusters.parent / "elsewhere")
    setup.wait_for(
        lambda: (
            f"{clusters}/linked.yaml: is a directory, not a cluster file"
            in setup.gateway.process.output
        ),
        "the link to a directory reported",
    )
    # a file that sorts first takes sim-2 over: the loser is named, and the winner
    served = yaml.safe_load((clusters / "sim-2.yaml").read_text())
    (clusters / "a-first.yaml").write_text(yaml.safe_dump(served))
    line = (
        f'{clusters}/sim-2.yaml: document 1: metadata.name: duplicate cluster name "sim-2": '
        f'not loaded any more, "sim-2" now comes from {clusters}/a-first.yaml: document 1, '
        "which sorts first"
    )
    setup.wait_for(lambda: line in setup.gateway.process.output, "the take-over reported")
    ok = setup.get(f"{CLUSTERS}/sim-2")
    assert ok.status == 200 and ok.json()["metadata"]["name"] == "sim-2"
    assert "namespace/default" in _namespaces(setup, "sim-2")
    (clusters / "a-first.yaml").unlink()
    (clusters / "linked.yaml").unlink()
