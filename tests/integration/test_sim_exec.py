"""Real kubectl against a ``karpor sim`` process: exec, cp, port-forward, deployments.

Straight to the simulator (no gateway), sharing the session's ``karpor sim``
process.  The streaming verbs run with kubectl 1.27 (SPDY only), 1.33
(WebSocket first) and 1.33 forced to SPDY with
``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`` / ``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``.
Deployments run with 1.33 (whose typed client sends protobuf bodies) and 1.27
(JSON).
"""

from __future__ import annotations

import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.kubectl import DEFAULT_TIMEOUT, Kubectl
from support.procs import free_port
from support.sim import SimRun

pytestmark = pytest.mark.kubectl

#: (label, kubectl version, WebSocket allowed)
STREAM_MODES = [("1.27", "1.27", True), ("1.33", "1.33", True), ("1.33-spdy", "1.33", False)]


@dataclass(frozen=True)
class Client:
    """One kubectl in one streaming mode."""

    kubectl: Kubectl
    websockets: bool

    def env(self) -> dict[str, str]:
        env = {**os.environ, "KUBECACHEDIR": str(self.kubectl.kubeconfig.parent / ".kube-cache")}
        if not self.websockets:
            env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
            env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
        return env

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.kubectl.command(*args),
            input=input,
            capture_output=True,
            timeout=DEFAULT_TIMEOUT,
            env=self.env(),
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.kubectl.command(*args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
        )


def _binary(kubectl_bins: dict[str, Path], version: str) -> Path:
    if version not in kubectl_bins:
        pytest.skip(f"kubectl {version} is not installed on this machine")
    return kubectl_bins[version]


@pytest.fixture(scope="module")
def namespace(kubectl_bins: dict[str, Path], sim_clusters: SimRun) -> Iterator[str]:
    """A namespace with a running pod ``box``, on ``sim-1``."""
    label = next((v for v in ("1.33", "1.27", "path") if v in kubectl_bins), None)
    if label is None:
        pytest.skip(
            "no kubectl found (neither /usr/lib/google-cloud-sdk/bin/kubectl.1.NN nor PATH)"
        )
    k = Kubectl(kubectl_bins[label], sim_clusters["sim-1"].kubeconfig, label)
    name = f"exec-{uuid.uuid4().hex[:8]}"
    k.out("create", "namespace", name)
    k.out("run", "box", "-n", name, "--image=busybox:1.36", "--", "sleep", "infinity")
    k.out("wait", "-n", name, "--for=condition=Ready", "pod/box", "--timeout=30s")
    yield name
    k.run("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(params=STREAM_MODES, ids=[m[0] for m in STREAM_MODES])
def client(
    request: pytest.FixtureRequest, kubectl_bins: dict[str, Path], sim_clusters: SimRun
) -> Client:
    """kubectl in one streaming mode, with the token kubeconfig of ``sim-1``."""
    label, version, websockets = request.param
    binary = _binary(kubectl_bins, version)
    return Client(Kubectl(binary, sim_clusters["sim-1"].kubeconfig, label), websockets)


def test_exec_echo_stdin_and_exit_code(client: Client, namespace: str) -> None:
    r = client.run("exec", "-n", namespace, "box", "--", "sh", "-c", "echo out; echo err >&2")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"out\n", b"err\n")
    data = b"line of stdin\n" * 2000
    r = client.run("exec", "-i", "-n", namespace, "box", "--", "cat", input=data)
    assert (r.returncode, r.stdout) == (0, data)
    r = client.run("exec", "-n", namespace, "box", "--", "sh", "-c", "exit 3")
    assert r.returncode == 3
    assert b"command terminated with exit code 3" in r.stderr


def test_exec_missing_pod_is_not_found(client: Client, namespace: str) -> None:
    r = client.run("exec", "-n", namespace, "nobody", "--", "true")
    assert r.returncode == 1
    assert b'pods "nobody" not found' in r.stderr


def test_cp_in_and_out(client: Client, namespace: str, tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(512 * 1024))
    name = f"copy-{client.kubectl.label}.bin"
    r = client.run("cp", str(source), f"{namespace}/box:{name}")
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back.bin"
    r = client.run("cp", f"{namespace}/box:{name}", str(back))
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == source.read_bytes()


def test_port_forward_round_trip(client: Client, namespace: str) -> None:
    port = free_port()
    proc = client.popen(
        "port-forward", "-n", namespace, "--address", "127.0.0.1", "pod/box", f"{port}:8080"
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert b"Forwarding from 127.0.0.1:" in line, line
        payload = b"round trip\n" * 4000
        with socket.create_connection(("127.0.0.1", port), timeout=DEFAULT_TIMEOUT) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            received = bytearray()
            while chunk := sock.recv(65536):
                received += chunk
        assert bytes(received) == payload
    finally:
        proc.terminate()
        proc.wait(DEFAULT_TIMEOUT)


@pytest.mark.parametrize("version", ["1.33", "1.27"])
def test_deployment_lifecycle(
    version: str, kubectl_bins: dict[str, Path], sim_clusters: SimRun
) -> None:
    k = Kubectl(_binary(kubectl_bins, version), sim_clusters["sim-2"].kubeconfig, version)
    ns = f"deploy-{version.replace('.', '-')}-{uuid.uuid4().hex[:6]}"
    k.out("create", "namespace", ns)
    try:
        created = k.out("create", "deployment", "web", "-n", ns, "--image=nginx:1.27", "--port=80")
        assert "deployment.apps/web created" in created
        rolled = k.out("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
        assert 'deployment "web" successfully rolled out' in rolled
        table = k.out("get", "deploy", "web", "-n", ns).splitlines()
        assert table[1].split()[:4] == ["web", "1/1", "1", "1"]
        pods = k.out("get", "pods", "-n", ns, "-l", "app=web", "-o", "name").split()
        assert len(pods) == 1 and pods[0].startswith("pod/web-")

        assert "deployment.apps/web scaled" in k.out(
            "scale", "deploy/web", "-n", ns, "--replicas=3"
        )
        k.out("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
        table = k.out("get", "deploy", "web", "-n", ns).splitlines()
        assert table[1].split()[:4] == ["web", "3/3", "3", "3"]
        replicas = k.out(
            "get", "deploy", "web", "-n", ns, "-o", "jsonpath={.status.availableReplicas}"
        )
        assert replicas == "3"

        k.out("set", "image", "deploy/web", "-n", ns, "nginx=nginx:1.28")
        k.out("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
        images = k.out(
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ).split()
        assert images == ["nginx:1.28"] * 3

        # ReplicaSets carry the revisions: rollout history and undo work as on a cluster
        assert _revisions(k.out("rollout", "history", "deployment/web", "-n", ns)) == ["1", "2"]
        sets = k.out("get", "rs", "-n", ns, "-l", "app=web").splitlines()
        assert sorted(line.split()[1:4] for line in sets[1:]) == [["0", "0", "0"], ["3", "3", "3"]]
        assert "deployment.apps/web rolled back" in k.out("rollout", "undo", "deploy/web", "-n", ns)
        k.out("rollout", "status", "deployment/web", "-n", ns, "--timeout=30s")
        assert _revisions(k.out("rollout", "history", "deployment/web", "-n", ns)) == ["2", "3"]
        detail = k.out("rollout", "history", "deployment/web", "-n", ns, "--revision=3")
        assert "revision #3" in detail and "nginx:1.27" in detail
        images = k.out(
            "get",
            "pods",
            "-n",
            ns,
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].spec.containers[0].image}",
        ).split()
        assert images == ["nginx:1.27"] * 3
        described = k.out("describe", "deployment", "web", "-n", ns)
        assert "ScalingReplicaSet" in described and "deployment-controller" in described

        service = k.out("create", "service", "clusterip", "web", "-n", ns, "--tcp=80:8080")
        assert "service/web created" in service
        target = k.out("get", "svc", "web", "-n", ns, "-o", "jsonpath={.spec.ports[0].targetPort}")
        assert target == "8080"

        assert 'deployment.apps "web" deleted' in k.out("delete", "deploy", "web", "-n", ns)
        k.out("wait", "-n", ns, "--for=delete", "pod", "-l", "app=web", "--timeout=30s")
        assert k.out("get", "pods", "-n", ns, "-o", "name").strip() == ""
    finally:
        k.run("delete", "namespace", ns, "--wait=false", check=False)


def test_exec_with_a_client_certificate(
    kubectl_bins: dict[str, Path], sim_clusters: SimRun, namespace: str
) -> None:
    binary = _binary(kubectl_bins, "1.33")
    for websockets in (True, False):
        client = Client(Kubectl(binary, sim_clusters["sim-1"].cert_kubeconfig, "1.33"), websockets)
        r = client.run("exec", "-n", namespace, "box", "--", "sh", "-c", "echo $HOSTNAME")
        assert (r.returncode, r.stdout) == (0, b"box\n"), r.stderr


def _revisions(history: str) -> list[str]:
    """The REVISION column of ``kubectl rollout history``."""
    lines = [line for line in history.splitlines() if line.strip()]
    assert lines[1].split()[:2] == ["REVISION", "CHANGE-CAUSE"], history
    return [line.split()[0] for line in lines[2:]]
