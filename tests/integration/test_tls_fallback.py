"""``tlsImplementation: twisted``: the gateway serves and reaches its
clusters with Twisted's own TLS and runs its workers on Twisted's stock
reactor (:mod:`karpor.net.implementation`), and kubectl works through it as
through the fast path: get, watch, exec with stdin and an exit code."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gateway import GatewayRun, start_gateway, write_kubeconfig
from support.kubectl import Kubectl
from support.sim import SimRun

pytest_plugins = ("support.gateway",)

pytestmark = pytest.mark.kubectl

POD = "fallback-box"


@pytest.fixture(scope="module")
def fallback(
    gateway_clusters_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayRun]:
    base = tmp_path_factory.mktemp("tls-fallback")
    config = base / "karpor.yaml"
    config.write_text("tlsImplementation: twisted\n")
    run = start_gateway(
        gateway_clusters_dir, base / "state", "--workers", "1", "--config", str(config)
    )
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def kubectl(
    fallback: GatewayRun, sim_clusters: SimRun, kubectl_bins: dict[str, Path]
) -> Iterator[Kubectl]:
    label = next((v for v in ("path", "1.33", "1.30", "1.27") if v in kubectl_bins), None)
    if label is None:
        pytest.skip("no kubectl found")
    kubeconfig = write_kubeconfig(
        fallback.state_dir, fallback.state_dir.parent / "admin.kubeconfig", fallback.url
    )
    admin = Kubectl(kubectl_bins[label], sim_clusters["sim-1"].kubeconfig, label)
    admin.out("run", POD, "--image=busybox", "--restart=Never")
    admin.out("wait", "--for=condition=Ready", f"pod/{POD}", "--timeout=30s")
    try:
        yield Kubectl(kubectl_bins[label], kubeconfig, label)
    finally:
        admin.run("delete", "pod", POD, "--wait=false", check=False)


def test_the_fallback_is_what_serves(fallback: GatewayRun) -> None:
    assert "tlsImplementation twisted: Twisted's own TLS" in fallback.process.output
    # the socket transport answers plain HTTP with Go's 400; Twisted's TLS
    # only ends the connection
    with socket.create_connection(("127.0.0.1", fallback.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    assert b"Client sent an HTTP request to an HTTPS server" not in answer


def test_get_and_watch_through_the_fallback(kubectl: Kubectl) -> None:
    pods = kubectl.out("--context", "sim-1", "get", "pods", "-A")
    assert pods.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert POD in pods
    clusters = kubectl.out("--context", "karpor", "get", "clusters")
    assert "sim-2" in clusters
    watch = kubectl.popen("--context", "sim-1", "get", "pod", POD, "--watch", "--output=name")
    try:
        assert watch.stdout is not None
        ready, _, _ = select.select([watch.stdout], [], [], 30)
        assert ready, "the watch printed nothing"
        assert watch.stdout.readline().strip() == f"pod/{POD}"
    finally:
        watch.kill()
        watch.communicate(timeout=10)


def test_exec_through_the_fallback(kubectl: Kubectl) -> None:
    context = ("--context", "sim-1")
    result = kubectl.run(*context, "exec", POD, "--", "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "hello\n"), result.stderr
    data = "".join(f"stdin line {i}\n" for i in range(2000))
    result = kubectl.run(*context, "exec", "-i", POD, "--", "cat", input=data)
    assert (result.returncode, result.stdout) == (0, data), result.stderr
    result = kubectl.run(*context, "exec", POD, "--", "sh", "-c", "exit 3", check=False)
    assert result.returncode == 3, result.stderr
    assert "command terminated with exit code 3" in result.stderr
