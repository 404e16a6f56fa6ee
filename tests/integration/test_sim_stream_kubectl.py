"""Real kubectl (1.27, 1.30, 1.33; WebSocket and SPDY) against StreamServer.

Uses ``support.streamfixture``: a subprocess serving discovery, the pods and
their streaming subresources on loopback, stopped at the end.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client, config
from kubernetes.stream import stream

KUBECTL_DIR = Path("/usr/lib/google-cloud-sdk/bin")
VERSIONS = ["1.27", "1.30", "1.33"]
MODES = [
    (v, ws) for v in VERSIONS for ws in ((True, False) if v != "1.27" else (False,))
]  # 1.27 speaks SPDY only
TESTS = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.kubectl


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("streams")
    proc = subprocess.Popen(
        [sys.executable, "-m", "support.streamfixture", str(base / "pods")],
        cwd=TESTS,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(TESTS)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line
        port = int(line.split()[1])
        kubeconfig = base / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: c, cluster: {{server: 'http://127.0.0.1:{port}'}}}}]\n"
            "users: [{name: u, user: {token: t}}]\n"
            "contexts: [{name: c, context: {cluster: c, user: u, namespace: default}}]\n"
            "current-context: c\n"
        )
        yield kubeconfig, base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def kubectl(version: str, websockets: bool, kubeconfig: Path, *args: str, **kw):
    binary = KUBECTL_DIR / f"kubectl.{version}"
    if not binary.exists():
        pytest.skip(f"{binary} not installed")
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    if not websockets:
        env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
    return subprocess.run(
        [str(binary), *args], env=env, capture_output=True, timeout=120, check=False, **kw
    )


@pytest.mark.parametrize(("version", "websockets"), MODES)
def test_exec_echo_stdin_and_exit_code(cluster, version, websockets) -> None:
    kubeconfig, _ = cluster
    r = kubectl(
        version, websockets, kubeconfig, "exec", "demo", "--", "sh", "-c", "echo out; echo err >&2"
    )
    assert (r.returncode, r.stdout, r.stderr) == (0, b"out\n", b"err\n")
    r = kubectl(
        version, websockets, kubeconfig, "exec", "-i", "demo", "--", "cat", input=b"abc\n" * 1000
    )
    assert (r.returncode, r.stdout) == (0, b"abc\n" * 1000)
    r = kubectl(version, websockets, kubeconfig, "exec", "demo", "--", "sh", "-c", "exit 3")
    assert r.returncode == 3
    assert b"command terminated with exit code 3" in r.stderr


@pytest.mark.parametrize(("version", "websockets"), MODES)
def test_cp_both_ways(cluster, version, websockets, tmp_path) -> None:
    kubeconfig, _ = cluster
    src = tmp_path / "in.bin"
    src.write_bytes(os.urandom(3 * 1000 * 1000))
    name = f"copy-{version}-{websockets}.bin"
    r = kubectl(version, websockets, kubeconfig, "cp", str(src), f"demo:{name}")
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back.bin"
    r = kubectl(version, websockets, kubeconfig, "cp", f"demo:{name}", str(back))
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == src.read_bytes()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(("version", "websockets"), MODES)
def test_port_forward_round_trip(cluster, version, websockets) -> None:
    kubeconfig, _ = cluster
    binary = KUBECTL_DIR / f"kubectl.{version}"
    if not binary.exists():
        pytest.skip(f"{binary} not installed")
    port = free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    if not websockets:
        env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
    proc = subprocess.Popen(
        [str(binary), "port-forward", "--address", "127.0.0.1", "pod/demo", f"{port}:80"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert b"Forwarding from" in proc.stdout.readline()
        payload = b"round trip\n" * 5000
        with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := s.recv(65536):
                got += chunk
        assert got == payload
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_python_client_exec(cluster) -> None:
    kubeconfig, _ = cluster
    api = client.CoreV1Api(config.new_client_from_config(str(kubeconfig)))
    out = stream(
        api.connect_get_namespaced_pod_exec,
        "demo",
        "default",
        command=["sh", "-c", "echo py-out"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
    )
    assert out == "py-out\n"
    resp = stream(
        api.connect_get_namespaced_pod_exec,
        "demo",
        "default",
        command=["sh", "-c", "exit 3"],
        stdout=True,
        stderr=True,
        stdin=False,
        tty=False,
        _preload_content=False,
    )
    deadline = time.monotonic() + 30
    while resp.is_open() and time.monotonic() < deadline:
        resp.update(timeout=1)
    assert resp.returncode == 3


def test_attach_echoes_stdin(cluster) -> None:
    kubeconfig, _ = cluster
    r = kubectl("1.33", True, kubeconfig, "attach", "-i", "demo", input=b"one\ntwo\n")
    assert (r.returncode, r.stdout) == (0, b"one\ntwo\n")
    r = kubectl("1.27", False, kubeconfig, "attach", "-i", "demo", input=b"three")
    # The main process echoes lines: an unterminated last line is terminated.
    assert (r.returncode, r.stdout) == (0, b"three\n")
