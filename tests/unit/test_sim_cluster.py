"""karpor.sim.cluster: loopback only, manifests and kubeconfigs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml
from twisted.internet.task import Clock

from karpor.sim.cluster import NonLoopbackAddress, SimulatedCluster, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
     ("0.0.0.0", False), ("10.0.0.1", False), ("example.com", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_refuses_non_loopback_without_flag() -> None:
    with pytest.raises(NonLoopbackAddress):
        SimulatedCluster("x", host="0.0.0.0", reactor=Clock())
    allowed = SimulatedCluster("x", host="10.1.2.3", allow_non_loopback=True, reactor=Clock())
    assert allowed.endpoint == "https://10.1.2.3:0"


def test_manifest_and_kubeconfigs(tmp_path: Path) -> None:
    cluster = SimulatedCluster("sim-9", token="tok", port=6443, reactor=Clock())
    manifest = cluster.cluster_manifest()
    assert manifest["apiVersion"] == "cluster.karpor.io/v1beta1"
    assert manifest["kind"] == "Cluster"
    access = manifest["spec"]["access"]
    assert access["endpoint"] == "https://127.0.0.1:6443"
    assert base64.b64decode(access["caBundle"]) == cluster.ca_pem
    assert access["credential"] == {"type": "ServiceAccountToken", "serviceAccountToken": "tok"}
    assert "tok" not in repr(cluster)
    files = cluster.write_files(tmp_path)
    assert files.cluster.name == "sim-9.yaml"
    assert files.cluster.stat().st_mode & 0o077 == 0
    kubeconfig = yaml.safe_load(files.kubeconfig.read_text())
    assert kubeconfig["current-context"] == "sim-9"
    assert kubeconfig["users"][0]["user"] == {"token": "tok"}
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    cert = yaml.safe_load(files.cert_kubeconfig.read_text())
    assert set(cert["users"][0]["user"]) == {"client-certificate-data", "client-key-data"}
    assert not list(tmp_path.glob("*.yml"))
    assert sorted(p.name for p in tmp_path.glob("*.yaml")) == ["sim-9.yaml"]
