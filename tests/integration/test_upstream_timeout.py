"""A cluster that accepts a request and never answers gets a 504 Status
after ``upstream.responseHeaderTimeout``; a watch whose events come slower
than that is not cut.

A real gateway (one worker, ``responseHeaderTimeout: 0.5``) in front of a
tiny HTTPS upstream (HTTP/1.1) in this process: it never answers
``/api/v1/namespaces``, answers ``/slow`` after 0.2 s, and for a watch sends
its head at once and an event 1.5 s later (and answers the health
probes).  kubectl and the kubernetes Python client are the judges.
"""

from __future__ import annotations

import json
import socketserver
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml
from support.access import write_yaml
from support.gateway import GatewayRun, cluster_document, start_gateway, write_kubeconfig
from support.kubectl import Kubectl, find_kubectls

from karpor.auth.ca import CertificateAuthority

TIMEOUT = 0.5
PROXY = "/apis/cluster.karpor.io/v1beta1/clusters/silent/proxy"
EVENT = {"type": "ADDED", "object": {"kind": "Namespace", "metadata": {"name": "late"}}}


class _Upstream(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        context: ssl.SSLContext = self.server.context  # type: ignore[attr-defined]
        try:
            sock = context.wrap_socket(self.request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            self.serve(sock)
        except OSError:
            pass  # the gateway gave up
        finally:
            sock.close()

    def serve(self, sock: ssl.SSLSocket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = sock.recv(65536)
            if not data:
                return
            head += data
        target = head.split(b" ", 2)[1]
        if b"watch=" in target:
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n"
            )
            time.sleep(3 * TIMEOUT)  # not a wait: the watch's event comes later than the timeout
            line = json.dumps(EVENT).encode() + b"\n"
            sock.sendall(b"%x\r\n%b\r\n0\r\n\r\n" % (len(line), line))
            return
        if target.startswith((b"/readyz", b"/livez", b"/healthz")):  # the health probes
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            return
        if target.startswith(b"/slow"):
            time.sleep(0.4 * TIMEOUT)  # not a wait: a slow answer, within the timeout
            body = b'{"kind":"Status","status":"Success"}'
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            return
        while sock.recv(65536):  # never answer; wait for the gateway to give up
            pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    context: ssl.SSLContext


@pytest.fixture(scope="module")
def silent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayRun, Path]]:
    tmp = tmp_path_factory.mktemp("upstream-timeout")
    server = _Server(("127.0.0.1", 0), _Upstream)
    serving = CertificateAuthority.create("upstream-ca").issue_server("up", ["127.0.0.1"])
    serving.write(tmp / "up.crt", tmp / "up.key")
    server.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.context.load_cert_chain(tmp / "up.crt", tmp / "up.key")
    server.context.set_alpn_protocols(["http/1.1"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    clusters = tmp / "clusters"
    clusters.mkdir()
    port = server.server_address[1]
    write_yaml(clusters / "silent.yaml", cluster_document("silent", f"https://127.0.0.1:{port}"))
    write_yaml(tmp / "config.yaml", {"upstream": {"responseHeaderTimeout": TIMEOUT}})
    gateway = start_gateway(
        clusters, tmp / "state", "--workers", "1", "--config", str(tmp / "config.yaml")
    )
    try:
        kubeconfig = write_kubeconfig(gateway.state_dir, tmp / "admin.kubeconfig", gateway.url)
        yield gateway, kubeconfig
    finally:
        gateway.stop()
        server.shutdown()
        server.server_close()


def test_kubectl_gets_a_504_status_naming_the_cluster(silent: tuple[GatewayRun, Path]) -> None:
    _, kubeconfig = silent
    found = find_kubectls()
    if not found:
        pytest.skip("no kubectl")
    kubectl = Kubectl(next(iter(found.values())), kubeconfig, "timeout")
    started = time.monotonic()
    # --raw ignores the server URL's path: name the proxy path itself
    result = kubectl.run("get", "--raw", f"{PROXY}/api/v1/namespaces", check=False)
    assert result.returncode != 0
    assert "Timeout" in result.stderr and '"silent"' in result.stderr, result.stderr
    assert time.monotonic() - started < 30  # not held for ever
    ok = kubectl.run("get", "--raw", f"{PROXY}/slow")
    assert json.loads(ok.stdout)["status"] == "Success"


def test_the_python_client_gets_a_504_status(silent: tuple[GatewayRun, Path]) -> None:
    _, kubeconfig = silent
    client = kubernetes.config.new_client_from_config(str(kubeconfig), context="silent")
    try:
        api = kubernetes.client.CoreV1Api(client)
        with pytest.raises(kubernetes.client.ApiException) as failed:
            api.list_namespace(_request_timeout=30)
        assert failed.value.status == 504
        status = json.loads(failed.value.body or "")
        assert status["kind"] == "Status" and status["reason"] == "Timeout"
        assert status["code"] == 504 and "silent" in status["message"]
    finally:
        client.close()


def test_a_slow_watch_is_not_cut(silent: tuple[GatewayRun, Path]) -> None:
    _, kubeconfig = silent
    client = kubernetes.config.new_client_from_config(str(kubeconfig), context="silent")
    try:
        api = kubernetes.client.CoreV1Api(client)
        started = time.monotonic()
        response: Any = api.list_namespace(watch=True, _preload_content=False, _request_timeout=30)
        lines = [json.loads(line) for line in response.read().splitlines() if line]
        assert response.status == 200
        assert lines == [EVENT]
        assert time.monotonic() - started >= 2 * TIMEOUT
    finally:
        client.close()


def test_the_gateway_kubeconfig_names_the_cluster(silent: tuple[GatewayRun, Path]) -> None:
    _, kubeconfig = silent
    contexts = [c["name"] for c in yaml.safe_load(kubeconfig.read_text())["contexts"]]
    assert "silent" in contexts
