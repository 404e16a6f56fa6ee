"""Both values of ``tlsImplementation`` (:mod:`karpor.net.implementation`):
``fast``, the default (the session's gateway), serves with karpor's socket
transport on the installed Twisted and pyOpenSSL; ``twisted`` serves and
reaches its clusters with Twisted's own TLS and runs its workers on
Twisted's stock reactor.  kubectl works through either alike: get, watch,
exec with stdin and an exit code; both serve HTTP/2 (ALPN ``h2``) and
HTTP/1.1."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.gateway import (
    GatewayRun,
    client_context,
    credentials_of,
    request,
    start_gateway,
    write_kubeconfig,
)
from support.h2client import H2Client
from support.kubectl import Kubectl
from support.sim import SimRun

from karpor.auth.ca import CertificateAuthority

pytest_plugins = ("support.gateway",)

pytestmark = pytest.mark.kubectl


@pytest.fixture(scope="module", params=["fast", "twisted"])
def served(
    request: pytest.FixtureRequest,
    gateway_clusters_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, GatewayRun]]:
    if request.param == "fast":
        yield "fast", request.getfixturevalue("gateway")  # the default, shared
        return
    base = tmp_path_factory.mktemp("tls-fallback")
    config = base / "karpor.yaml"
    config.write_text("tlsImplementation: twisted\n")
    run = start_gateway(
        gateway_clusters_dir, base / "state", "--workers", "1", "--config", str(config)
    )
    try:
        yield "twisted", run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def via(
    served: tuple[str, GatewayRun], sim_clusters: SimRun, kubectl_bins: dict[str, Path]
) -> Iterator[tuple[Kubectl, str]]:
    """kubectl through the gateway, and the name of a running pod of ``sim-1``."""
    implementation, gateway = served
    pod = f"tls-{implementation}-box"
    label = next((v for v in ("path", "1.33", "1.30", "1.27") if v in kubectl_bins), None)
    if label is None:
        pytest.skip("no kubectl found")
    kubeconfig = write_kubeconfig(
        gateway.state_dir, gateway.state_dir.parent / f"{implementation}.kubeconfig", gateway.url
    )
    admin = Kubectl(kubectl_bins[label], sim_clusters["sim-1"].kubeconfig, label)
    admin.out("run", pod, "--image=busybox", "--restart=Never")
    admin.out("wait", "--for=condition=Ready", f"pod/{pod}", "--timeout=30s")
    try:
        yield Kubectl(kubectl_bins[label], kubeconfig, label), pod
    finally:
        admin.run("delete", "pod", pod, "--wait=false", check=False)


def test_what_serves_is_what_was_asked(served: tuple[str, GatewayRun]) -> None:
    implementation, gateway = served
    said = {
        "fast": "tlsImplementation fast: karpor's socket TLS transport and worker reactor",
        "twisted": "tlsImplementation twisted: Twisted's own TLS and stock epoll reactor",
    }
    assert said[implementation] in gateway.process.output
    assert "falling back" not in gateway.process.output
    # the socket transport answers plain HTTP with Go's 400; Twisted's TLS
    # only ends the connection
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
    refused = b"Client sent an HTTP request to an HTTPS server" in answer
    assert refused is (implementation == "fast")


def test_get_and_watch(via: tuple[Kubectl, str]) -> None:
    k, pod = via
    pods = k.out("--context", "sim-1", "get", "pods", "-A")
    assert pods.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert pod in pods
    clusters = k.out("--context", "karpor", "get", "clusters")
    assert "sim-2" in clusters
    watch = k.popen("--context", "sim-1", "get", "pod", pod, "--watch", "--output=name")
    try:
        assert watch.stdout is not None
        ready, _, _ = select.select([watch.stdout], [], [], 30)
        assert ready, "the watch printed nothing"
        assert watch.stdout.readline().strip() == f"pod/{pod}"
    finally:
        watch.kill()
        watch.communicate(timeout=10)


def test_exec(via: tuple[Kubectl, str]) -> None:
    k, pod = via
    context = ("--context", "sim-1")
    result = k.run(*context, "exec", pod, "--", "echo", "hello")
    assert (result.returncode, result.stdout) == (0, "hello\n"), result.stderr
    data = "".join(f"stdin line {i}\n" for i in range(2000))
    result = k.run(*context, "exec", "-i", pod, "--", "cat", input=data)
    assert (result.returncode, result.stdout) == (0, data), result.stderr
    result = k.run(*context, "exec", pod, "--", "sh", "-c", "exit 3", check=False)
    assert result.returncode == 3, result.stderr
    assert "command terminated with exit code 3" in result.stderr


def test_host_routing_reads_the_server_name(
    served: tuple[str, GatewayRun], sim_clusters: SimRun
) -> None:
    """Either TLS implementation gives the client's SNI to host routing."""
    _, gateway = served
    admin = CertificateAuthority.load(gateway.state_dir).issue_client("admin", ["system:masters"])
    context = client_context(gateway.ca_pem, admin.cert_pem, admin.key_pem)
    answer = request(gateway.port, "/api", context, server_name="sim-2.clusters.karpor")
    assert answer.status == 200, answer.body
    address = answer.json()["serverAddressByClientCIDRs"][0]["serverAddress"]
    assert address.endswith(f":{sim_clusters['sim-2'].port}")


def test_http2_and_http11_are_served(served: tuple[str, GatewayRun]) -> None:
    implementation, gateway = served
    kubeconfig = write_kubeconfig(
        gateway.state_dir, gateway.state_dir.parent / f"{implementation}-h2.kubeconfig", gateway.url
    )
    context = client_context(*credentials_of(kubeconfig, "sim-1"))
    path = "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api/v1/namespaces/default"
    client = H2Client(gateway.port, context)
    try:
        assert client.alpn == "h2"
        answer = client.get(path)
        assert answer.status == 200, answer.body
        assert answer.headers.get(b"audit-id")
    finally:
        client.close()
    context = client_context(*credentials_of(kubeconfig, "sim-1"))
    assert request(gateway.port, path, context).status == 200
