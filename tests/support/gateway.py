"""The gateway as a real process, for integration tests, and its fixtures.

:func:`start_gateway` runs ``twistd -n karpor --clusters-dir ... --state-dir
... --port <free>`` and waits for its ``karpor gateway serving`` log line;
:func:`write_kubeconfig` runs ``karpor kubeconfig``.  The session-scoped
fixtures build on ``sim_clusters`` (``tests/integration/conftest.py``):

* ``gateway_clusters_dir``: the simulator's two Cluster files plus
  ``closed.yaml``, a cluster on a loopback port nothing listens on;
* ``gateway``: the running gateway (:class:`GatewayRun`), stopped at the end;
* ``gateway_kubeconfig``: an admin kubeconfig (user ``admin``, group
  ``system:masters``) from ``karpor kubeconfig``.

Test modules load the fixtures with ``pytest_plugins = ("support.gateway",)``:
registered once as a plugin, the session-scoped gateway starts once per
session (fixtures imported into several modules would be registered, and
started, once per module).  Assertion rewriting is off for this module
(PYTEST_DONT_REWRITE): test modules import its helpers before pytest loads
it as a plugin, and its helpers raise their own ``AssertionError`` messages.
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from support.procs import Process, free_port
from support.sim import SimRun, karpor_command

#: the identity of the kubeconfig of the ``gateway_kubeconfig`` fixture
ADMIN_USER = "admin"
ADMIN_GROUPS = ("system:masters",)
#: the name of the cluster on a closed port in ``gateway_clusters_dir``
CLOSED_CLUSTER = "closed"


def twistd_command() -> list[str]:
    """How to run ``twistd`` from the test interpreter's environment."""
    script = Path(sys.executable).with_name("twistd")
    if script.exists():
        return [str(script)]
    found = shutil.which("twistd")
    if found:
        return [found]
    return [sys.executable, "-m", "twisted"]


@dataclass
class GatewayRun:
    """A running gateway process."""

    process: Process
    url: str
    port: int
    state_dir: Path
    clusters_dir: Path

    @property
    def pid(self) -> int:
        """The gateway's process id."""
        return self.process.popen.pid

    def worker_pids(self) -> list[int]:
        """The pids of the worker processes (the supervisor's children)."""
        return children(self.pid)

    @property
    def serving_pid(self) -> int:
        """The process serving requests: the only worker (or the process itself)."""
        workers = self.worker_pids()
        if len(workers) > 1:
            raise AssertionError(f"several workers serve: {workers}")
        return workers[0] if workers else self.pid

    @property
    def ca_pem(self) -> bytes:
        """The gateway CA certificate."""
        return (self.state_dir / "ca.crt").read_bytes()

    def stop(self) -> int:
        """Stop the gateway (idempotent); its exit status."""
        return self.process.stop()


def start_gateway(
    clusters_dir: Path, state_dir: Path, *extra: str, port: int | None = None
) -> GatewayRun:
    """Run ``twistd -n karpor`` on a free loopback port and wait until it serves."""
    port = port or free_port()
    argv = [
        *twistd_command(),
        "-n",
        "--pidfile=",
        "karpor",
        "--clusters-dir",
        str(clusters_dir),
        "--state-dir",
        str(state_dir),
        "--port",
        str(port),
        "--host",
        "127.0.0.1",
        *extra,
    ]
    process = Process(argv, cwd=state_dir.parent)
    try:
        match = process.wait_for_line(r"karpor gateway serving (?P<url>https://\S+) ")
    except BaseException:
        process.stop()
        raise
    return GatewayRun(process, match["url"], port, state_dir, clusters_dir)


def write_kubeconfig(
    state_dir: Path,
    out: Path,
    server: str,
    user: str = ADMIN_USER,
    groups: Sequence[str] = ADMIN_GROUPS,
    *extra: str,
) -> Path:
    """Run ``karpor kubeconfig`` writing ``out``."""
    argv = [
        *karpor_command(),
        "kubeconfig",
        "--state-dir",
        str(state_dir),
        "--user",
        user,
        "--server",
        server,
        "-o",
        str(out),
        *extra,
    ]
    for group in groups:
        argv += ["--group", group]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise AssertionError(f"karpor kubeconfig failed:\n{result.stdout}\n{result.stderr}")
    return out


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released: refused at once)."""
    return free_port()


def cluster_document(name: str, endpoint: str, **spec: Any) -> dict[str, Any]:
    """A minimal karpor Cluster document (token credential)."""
    return {
        "apiVersion": "cluster.karpor.io/v1beta1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {
            "access": {
                "endpoint": endpoint,
                "insecure": True,
                "credential": {"type": "ServiceAccountToken", "serviceAccountToken": "unused"},
            },
            **spec,
        },
    }


# --- raw HTTPS requests ------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """A complete HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


def client_context(
    ca_pem: bytes, cert_pem: bytes | None = None, key_pem: bytes | None = None
) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_pem``, presenting a certificate when given."""
    context = ssl.create_default_context(cadata=ca_pem.decode())
    if cert_pem is not None and key_pem is not None:
        with tempfile.TemporaryDirectory() as tmp:
            cert_file = Path(tmp) / "client.crt"
            key_file = Path(tmp) / "client.key"
            cert_file.write_bytes(cert_pem)
            key_file.write_bytes(key_pem)
            context.load_cert_chain(cert_file, key_file)
    return context


def credentials_of(kubeconfig: Path, context_name: str | None = None) -> tuple[bytes, bytes, bytes]:
    """(CA, client certificate, client key) PEM of a kubeconfig's context."""
    config = yaml.safe_load(kubeconfig.read_text())
    name = context_name or config["current-context"]
    context = next(c["context"] for c in config["contexts"] if c["name"] == name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    return (
        base64.b64decode(cluster["certificate-authority-data"]),
        base64.b64decode(user["client-certificate-data"]),
        base64.b64decode(user["client-key-data"]),
    )


def request(
    port: int,
    path: str,
    context: ssl.SSLContext,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    server_name: str | None = None,
) -> Response:
    """One HTTPS request on a fresh connection (TLS server name
    ``server_name`` when given: host routing)."""
    conn = http.client.HTTPSConnection(host, port, context=context, timeout=timeout)
    if server_name is not None:
        raw = socket.create_connection((host, port), timeout=timeout)
        conn.sock = context.wrap_socket(raw, server_hostname=server_name)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return Response(resp.status, {k.lower(): v for k, v in resp.getheaders()}, data)
    finally:
        conn.close()


def children(pid: int) -> list[int]:
    """The child processes of ``pid``."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found += [int(c) for c in text]
    return sorted(found)


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A memory figure of a process from ``/proc/PID/status`` (``VmRSS``, ``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise LookupError(f"{field} not in /proc/{pid}/status")


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def gateway_clusters_dir(sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The simulated clusters' files, plus a cluster on a closed port."""
    directory = tmp_path_factory.mktemp("gateway-clusters")
    for cluster in sim_clusters.clusters:
        shutil.copy(cluster.cluster_file, directory / cluster.cluster_file.name)
    document = cluster_document(CLOSED_CLUSTER, f"https://127.0.0.1:{closed_port()}")
    (directory / f"{CLOSED_CLUSTER}.yaml").write_text(yaml.safe_dump(document))
    return directory


@pytest.fixture(scope="session")
def gateway(
    gateway_clusters_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayRun]:
    """The gateway serving ``gateway_clusters_dir`` (one process for the session)."""
    state_dir = tmp_path_factory.mktemp("gateway") / "state"
    # a supervisor and one worker: the production shape, one serving process to measure
    run = start_gateway(gateway_clusters_dir, state_dir, "--workers", "1")
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="session")
def gateway_kubeconfig(gateway: GatewayRun) -> Path:
    """An admin kubeconfig for the gateway (``karpor kubeconfig``)."""
    return write_kubeconfig(
        gateway.state_dir, gateway.state_dir.parent / "admin.kubeconfig", gateway.url
    )


def port_is_closed(port: int) -> bool:
    """Whether a TCP connection to loopback ``port`` is refused."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
