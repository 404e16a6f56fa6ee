"""exec, attach, cp and port-forward through the gateway (issue 4's acceptance).

A gateway of this module's own (``--workers 1``: one serving process to
measure) serves two clusters that are the same simulated cluster: ``sim-1``
(bearer token) and ``sim-1-cert`` (client certificate); a third,
``sim-1-http11``, reaches it through a loopback relay offering ALPN
``http/1.1`` only, so that its watches travel on pooled HTTP/1.1 connections
whose closing can be seen.

The matrix: the full verb set (exec, ``exec -i``, exit code, ``exec -it``
under a pty, ``attach -i``, cp both ways, port-forward) with kubectl 1.33
(WebSocket) and 1.27 (SPDY); exec, cp and port-forward with 1.30 and with 1.33
forced to SPDY (``KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false``,
``KUBECTL_PORT_FORWARD_WEBSOCKETS=false``); each against both clusters.  Then
the official Python client's ``stream()``, the same output through the
gateway as straight to the simulator, 256 MiB through exec stdout with the
worker's RSS watched, and clients disconnecting mid-exec and mid-watch with
the worker's connections counted.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.stream import stream
from support.gateway import GatewayRun, start_gateway, write_kubeconfig
from support.kubectl import Kubectl
from support.procs import free_port
from support.sim import SimRun
from support.streams import Connection, Http11Relay, PeakRss, established, wait_until
from support.terminal import run_in_pty

pytestmark = pytest.mark.kubectl

#: a safety net for one kubectl call or stream: a broken gateway fails instead of hanging
DEADLINE = 60.0
#: how long the gateway may take to close an upstream connection its client left
CLOSE_WAIT = 5.0
TOKEN_CLUSTER = "sim-1"
CERT_CLUSTER = "sim-1-cert"
HTTP11_CLUSTER = "sim-1-http11"
CLUSTERS = (TOKEN_CLUSTER, CERT_CLUSTER)
POD = "box"

STREAM_BYTES = 256 * 1024 * 1024
RSS_LIMIT = 64 * 1024 * 1024


@dataclass(frozen=True)
class Mode:
    """One kubectl version in one streaming mode."""

    label: str
    version: str
    websockets: bool


WS_133 = Mode("1.33", "1.33", True)
SPDY_127 = Mode("1.27", "1.27", True)  # 1.27 speaks SPDY only
WS_130 = Mode("1.30", "1.30", True)
SPDY_133 = Mode("1.33-spdy", "1.33", False)
#: the full verb set runs on these
FULL = (WS_133, SPDY_127)
#: exec, cp and port-forward run on all of them
ALL = (WS_133, SPDY_127, WS_130, SPDY_133)


def matrix(modes: tuple[Mode, ...]) -> list[object]:
    return [
        pytest.param(mode, cluster, id=f"{mode.label}-{cluster}")
        for mode in modes
        for cluster in CLUSTERS
    ]


@dataclass(frozen=True)
class Client:
    """A kubectl binary, a kubeconfig and context, a streaming mode."""

    binary: Path
    kubeconfig: Path
    context: str | None
    websockets: bool
    namespace: str

    def command(self, *args: str) -> list[str]:
        context = ("--context", self.context) if self.context else ()
        return [
            str(self.binary),
            "--kubeconfig",
            str(self.kubeconfig),
            *context,
            "-n",
            self.namespace,
            *args,
        ]

    def env(self) -> dict[str, str]:
        env = {**os.environ, "KUBECACHEDIR": str(self.kubeconfig.parent / ".kube-cache")}
        if not self.websockets:
            env["KUBECTL_REMOTE_COMMAND_WEBSOCKETS"] = "false"
            env["KUBECTL_PORT_FORWARD_WEBSOCKETS"] = "false"
        return env

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.command(*args),
            input=input,
            capture_output=True,
            timeout=DEADLINE,
            env=self.env(),
            check=False,
        )

    def popen(self, *args: str, stdin: int | None = None) -> subprocess.Popen[bytes]:
        """Start ``kubectl args...`` (stdout and stderr piped); end it with :func:`stop`."""
        return subprocess.Popen(
            self.command(*args),
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env(),
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End a kubectl this test started (it may have ended already)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(DEADLINE)
    for pipe in (proc.stdout, proc.stderr, proc.stdin):
        if pipe is not None:
            pipe.close()


# --- fixtures -----------------------------------------------------------------------------


@dataclass
class Setup:
    """This module's gateway, its admin kubeconfig, the relay, the namespace."""

    gateway: GatewayRun
    kubeconfig: Path
    relay: Http11Relay
    namespace: str
    sim: SimRun
    bins: dict[str, Path]

    def binary(self, version: str) -> Path:
        if version not in self.bins:
            pytest.skip(f"kubectl {version} is not installed in /usr/lib/google-cloud-sdk/bin")
        return self.bins[version]

    def via(self, mode: Mode, cluster: str) -> Client:
        """kubectl through the gateway to ``cluster``."""
        return Client(
            self.binary(mode.version), self.kubeconfig, cluster, mode.websockets, self.namespace
        )

    def direct(self, mode: Mode, cluster: str) -> Client:
        """kubectl straight to the simulator, with the credential ``cluster`` uses."""
        sim = self.sim[TOKEN_CLUSTER]
        kubeconfig = sim.cert_kubeconfig if cluster == CERT_CLUSTER else sim.kubeconfig
        return Client(self.binary(mode.version), kubeconfig, None, mode.websockets, self.namespace)

    @property
    def sim_port(self) -> int:
        return self.sim[TOKEN_CLUSTER].port

    def upstream(self, port: int | None = None) -> set[Connection]:
        """The gateway worker's established connections to the simulator (or ``port``)."""
        return established(self.gateway.serving_pid, remote_port=port or self.sim_port)

    def callers(self) -> set[Connection]:
        """The gateway worker's established connections from its clients."""
        return established(self.gateway.serving_pid, local_port=self.gateway.port)


def cert_cluster(token_document: dict[str, object], cert_kubeconfig: Path) -> dict[str, object]:
    """The token Cluster document turned into ``sim-1-cert``: the same endpoint
    and CA, the client certificate of ``cert_kubeconfig``'s user."""
    config = yaml.safe_load(cert_kubeconfig.read_text())
    user = config["users"][0]["user"]
    document = yaml.safe_load(yaml.safe_dump(token_document))
    document["metadata"] = {"name": CERT_CLUSTER}
    document["spec"]["access"]["credential"] = {
        "type": "X509Certificate",
        "x509": {
            "certificate": user["client-certificate-data"],
            "privateKey": user["client-key-data"],
        },
    }
    return dict(document)


def relay_cluster(token_document: dict[str, object], relay: Http11Relay) -> dict[str, object]:
    """The token Cluster document turned into ``sim-1-http11``, through ``relay``."""
    document = yaml.safe_load(yaml.safe_dump(token_document))
    document["metadata"] = {"name": HTTP11_CLUSTER}
    access = document["spec"]["access"]
    access["endpoint"] = f"https://127.0.0.1:{relay.port}"
    access["caBundle"] = base64.b64encode(relay.cert_pem).decode()
    return dict(document)


@pytest.fixture(scope="module")
def setup(
    sim_clusters: SimRun, kubectl_bins: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("gateway-streams")
    clusters_dir = base / "clusters"
    clusters_dir.mkdir()
    sim = sim_clusters[TOKEN_CLUSTER]
    token_document = yaml.safe_load(sim.cluster_file.read_text())
    (clusters_dir / f"{TOKEN_CLUSTER}.yaml").write_text(sim.cluster_file.read_text())
    (clusters_dir / f"{CERT_CLUSTER}.yaml").write_text(
        yaml.safe_dump(cert_cluster(token_document, sim.cert_kubeconfig))
    )
    relay = Http11Relay(sim.port, sim.ca_pem)
    run: GatewayRun | None = None
    try:
        (clusters_dir / f"{HTTP11_CLUSTER}.yaml").write_text(
            yaml.safe_dump(relay_cluster(token_document, relay))
        )
        run = start_gateway(clusters_dir, base / "state", "--workers", "1")
        kubeconfig = write_kubeconfig(run.state_dir, base / "admin.kubeconfig", run.url)
        label = next((v for v in ("1.33", "1.30", "1.27", "path") if v in kubectl_bins), None)
        if label is None:
            pytest.skip("no kubectl found (neither /usr/lib/google-cloud-sdk/bin nor PATH)")
        namespace = f"streams-{uuid.uuid4().hex[:8]}"
        admin = Kubectl(kubectl_bins[label], sim.kubeconfig, label)
        admin.out("create", "namespace", namespace)
        admin.out("run", POD, "-n", namespace, "--image=busybox", "--restart=Never")
        admin.out("wait", "-n", namespace, "--for=condition=Ready", f"pod/{POD}", "--timeout=30s")
        try:
            yield Setup(run, kubeconfig, relay, namespace, sim_clusters, kubectl_bins)
        finally:
            admin.run("delete", "namespace", namespace, "--wait=false", check=False)
    finally:
        if run is not None:
            run.stop()
        relay.stop()


# --- the verbs, per kubectl and cluster ---------------------------------------------------


@pytest.mark.parametrize(("mode", "cluster"), matrix(ALL))
def test_exec(setup: Setup, mode: Mode, cluster: str) -> None:
    k = setup.via(mode, cluster)
    r = k.run("exec", POD, "--", "echo", "hello", cluster)
    assert (r.returncode, r.stdout) == (0, f"hello {cluster}\n".encode()), r.stderr
    r = k.run("exec", POD, "--", "sh", "-c", "echo out; echo err >&2")
    assert (r.returncode, r.stdout, r.stderr) == (0, b"out\n", b"err\n")
    data = b"".join(b"stdin line %d\n" % i for i in range(5000))
    r = k.run("exec", "-i", POD, "--", "cat", input=data)
    assert (r.returncode, r.stdout) == (0, data), r.stderr
    r = k.run("exec", POD, "--", "sh", "-c", "exit 3")
    assert r.returncode == 3, r.stderr
    assert b"command terminated with exit code 3" in r.stderr


@pytest.mark.parametrize(("mode", "cluster"), matrix(ALL))
def test_cp_in_and_out(setup: Setup, mode: Mode, cluster: str, tmp_path: Path) -> None:
    k = setup.via(mode, cluster)
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(3 * 1000 * 1000))
    name = f"cp-{mode.label}-{cluster}.bin"
    r = k.run("cp", str(source), f"{setup.namespace}/{POD}:{name}")
    assert r.returncode == 0, r.stderr
    back = tmp_path / "back.bin"
    r = k.run("cp", f"{setup.namespace}/{POD}:{name}", str(back))
    assert r.returncode == 0, r.stderr
    assert back.read_bytes() == source.read_bytes()


@pytest.mark.parametrize(("mode", "cluster"), matrix(ALL))
def test_port_forward_round_trip(setup: Setup, mode: Mode, cluster: str) -> None:
    port = free_port()
    proc = setup.via(mode, cluster).popen(
        "port-forward", "--address", "127.0.0.1", f"pod/{POD}", f"{port}:8080"
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"Forwarding from 127.0.0.1:{port}".encode() in line, line
        for round_trip in range(2):  # two connections over the one stream
            payload = os.urandom(256 * 1024) + b"round trip %d\n" % round_trip
            with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
                sock.sendall(payload)
                sock.shutdown(socket.SHUT_WR)
                received = bytearray()
                while chunk := sock.recv(65536):
                    received += chunk
            assert bytes(received) == payload
    finally:
        stop(proc)


@pytest.mark.parametrize(("mode", "cluster"), matrix(FULL))
def test_exec_tty(setup: Setup, mode: Mode, cluster: str) -> None:
    k = setup.via(mode, cluster)
    status, output = run_in_pty(
        k.command("exec", "-it", POD, "--", "sh", "-c", "stty size; tty; echo done"),
        k.env(),
        rows=33,
        cols=101,
    )
    assert status == 0, output
    # the terminal's size travelled as a resize message; output lines end in \r\n
    assert output.startswith(b"33 101\r\n/dev/pts/"), output
    assert output.endswith(b"\r\ndone\r\n"), output


@pytest.mark.parametrize(("mode", "cluster"), matrix(FULL))
def test_attach(setup: Setup, mode: Mode, cluster: str) -> None:
    lines = f"attached {mode.label} {cluster}\nsecond line\n".encode()
    r = setup.via(mode, cluster).run("attach", "-i", POD, input=lines)
    # the pod's main process echoes every line it reads
    assert (r.returncode, r.stdout) == (0, lines), r.stderr


@pytest.mark.parametrize("mode", ALL, ids=[m.label for m in ALL])
def test_upgrade_request_reaches_the_cluster_as_sent(setup: Setup, mode: Mode) -> None:
    """Seen at the cluster (through the relay): kubectl's first choice of
    protocol succeeded (a WebSocket GET, or a SPDY POST, and no fallback),
    with the query string untouched."""
    relay = setup.relay
    k = setup.via(mode, HTTP11_CLUSTER)
    seen = len(relay.connections)
    r = k.run("exec", POD, "--", "echo", "a b", "c&d=e")
    assert (r.returncode, r.stdout) == (0, b"a b c&d=e\n"), r.stderr
    exec_path = f"/api/v1/namespaces/{setup.namespace}/pods/{POD}/exec".encode()
    exec_requests = [
        (method, target)
        for c in relay.connections[seen:]
        for method, target in c.requests
        if target.startswith(exec_path)
    ]
    method = b"GET" if mode.websockets and mode.version != "1.27" else b"POST"
    query = b"command=echo&command=a+b&command=c%26d%3De&container=box&stderr=true&stdout=true"
    assert exec_requests == [(method, exec_path + b"?" + query)]

    port = free_port()
    seen = len(relay.connections)
    proc = k.popen("port-forward", "--address", "127.0.0.1", f"pod/{POD}", f"{port}:8080")
    try:
        assert proc.stdout is not None
        assert b"Forwarding from" in proc.stdout.readline()
        with socket.create_connection(("127.0.0.1", port), timeout=DEADLINE) as sock:
            sock.sendall(b"through the relay\n")
            sock.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := sock.recv(1024):
                received += chunk
            assert received == b"through the relay\n"
    finally:
        stop(proc)
    forward_path = f"/api/v1/namespaces/{setup.namespace}/pods/{POD}/portforward".encode()
    forward_requests = [
        (method, target)
        for c in relay.connections[seen:]
        for method, target in c.requests
        if target.startswith(forward_path)
    ]
    # port-forward speaks WebSocket from kubectl 1.31
    method = b"GET" if mode.websockets and mode.version == "1.33" else b"POST"
    assert forward_requests == [(method, forward_path)]


# --- the official Python client ----------------------------------------------------------


@pytest.mark.parametrize("cluster", CLUSTERS)
def test_python_client_exec(setup: Setup, cluster: str) -> None:
    api = k8s_client.CoreV1Api(
        k8s_config.new_client_from_config(str(setup.kubeconfig), context=cluster)
    )
    try:
        out = stream(
            api.connect_get_namespaced_pod_exec,
            POD,
            setup.namespace,
            command=["sh", "-c", f"echo python {cluster}"],
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
        )
        assert out == f"python {cluster}\n"
        resp = stream(
            api.connect_get_namespaced_pod_exec,
            POD,
            setup.namespace,
            command=["sh", "-c", "read line; echo got $line; echo oops >&2; exit 3"],
            stdout=True,
            stderr=True,
            stdin=True,
            tty=False,
            _preload_content=False,
        )
        resp.write_stdin("from python\n")
        stdout, stderr = "", ""
        end = time.monotonic() + DEADLINE
        while resp.is_open() and time.monotonic() < end:
            resp.update(timeout=1)
            stdout += resp.read_stdout()
            stderr += resp.read_stderr()
        stdout += resp.read_stdout()
        stderr += resp.read_stderr()
        resp.close()
        assert (stdout, stderr, resp.returncode) == ("got from python\n", "oops\n", 3)
    finally:
        api.api_client.close()


# --- the same as straight to the simulator -----------------------------------------------


@pytest.mark.parametrize(("mode", "cluster"), matrix(FULL))
def test_same_output_as_direct(setup: Setup, mode: Mode, cluster: str, tmp_path: Path) -> None:
    via, direct = setup.via(mode, cluster), setup.direct(mode, cluster)
    source = tmp_path / "same.bin"
    source.write_bytes(os.urandom(100_000))
    name = f"same-{mode.label}-{cluster}.bin"
    r = via.run("cp", str(source), f"{setup.namespace}/{POD}:{name}")
    assert r.returncode == 0, r.stderr
    runs: list[tuple[tuple[str, ...], bytes | None]] = [
        (("exec", POD, "--", "sh", "-c", "echo $HOSTNAME; pwd; echo err >&2"), None),
        (("exec", POD, "--", "ls"), None),
        (("exec", POD, "--", "sh", "-c", f"wc -c < {name}; od -An -tx1 {name} | head -3"), None),
        (("exec", "-i", POD, "--", "sh", "-c", "tr a-z A-Z; exit 3"), b"some input\n" * 300),
        (("exec", POD, "-c", "nope", "--", "true"), None),
        (("exec", "nobody", "--", "true"), None),
    ]
    for args, data in runs:
        through, straight = via.run(*args, input=data), direct.run(*args, input=data)
        got = (through.returncode, through.stdout, through.stderr)
        want = (straight.returncode, straight.stdout, straight.stderr)
        assert got == want, f"kubectl {' '.join(args)}: via the gateway {got}, direct {want}"
    for client, out in ((via, tmp_path / "via.bin"), (direct, tmp_path / "direct.bin")):
        r = client.run("cp", f"{setup.namespace}/{POD}:{name}", str(out))
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "via.bin").read_bytes() == (tmp_path / "direct.bin").read_bytes()
    assert (tmp_path / "via.bin").read_bytes() == source.read_bytes()


# --- memory: 256 MiB through exec stdout ----------------------------------------------------


def test_large_exec_stdout_in_bounded_memory(setup: Setup) -> None:
    k = setup.via(WS_133, TOKEN_CLUSTER)
    assert k.run("exec", POD, "--", "true").returncode == 0  # discovery cached, pool warm
    counted = 0
    nonzero = 0
    with PeakRss(setup.gateway.serving_pid) as rss:
        proc = k.popen("exec", POD, "--", "sh", "-c", f"head -c {STREAM_BYTES} /dev/zero")
        try:
            assert proc.stdout is not None
            while chunk := os.read(proc.stdout.fileno(), 1 << 20):
                counted += len(chunk)
                nonzero += len(chunk.translate(None, b"\0"))
            status = proc.wait(DEADLINE)
            assert proc.stderr is not None
            stderr = proc.stderr.read()
        finally:
            stop(proc)
    assert (status, counted, nonzero) == (0, STREAM_BYTES, 0), stderr
    assert rss.growth < RSS_LIMIT, (
        f"the gateway worker's RSS grew by {rss.growth / 2**20:.1f} MiB "
        f"({rss.baseline / 2**20:.1f} -> {rss.peak / 2**20:.1f} MiB) for "
        f"{STREAM_BYTES / 2**20:.0f} MiB streamed"
    )


# --- clients leaving mid-stream --------------------------------------------------------------


@pytest.mark.parametrize(("mode", "cluster"), matrix(FULL))
@pytest.mark.parametrize("command", ["sleep", "cat"])
def test_client_gone_mid_exec_closes_upstream(
    setup: Setup, mode: Mode, cluster: str, command: str
) -> None:
    k = setup.via(mode, cluster)
    assert k.run("exec", POD, "--", "true").returncode == 0  # discovery cached, pool warm
    before, callers = setup.upstream(), setup.callers()
    args = (
        ("exec", POD, "--", "sleep", "600")
        if command == "sleep"
        else ("exec", "-i", POD, "--", "cat")
    )
    proc = k.popen(*args, stdin=subprocess.PIPE)
    try:
        if command == "cat":  # the stream is up once an echo comes back
            assert proc.stdin is not None and proc.stdout is not None
            proc.stdin.write(b"ping\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == b"ping\n"
        assert wait_until(lambda: bool(setup.upstream() - before), DEADLINE), (
            f"no dedicated upstream connection appeared: {setup.upstream()} (before {before})"
        )
        during = setup.upstream()
        assert proc.poll() is None
        proc.kill()
        proc.wait(DEADLINE)
    finally:
        stop(proc)
    closed = wait_until(lambda: setup.upstream() <= before, CLOSE_WAIT)
    assert closed, (
        f"upstream connections before {sorted(before)}, during {sorted(during)}, "
        f"{CLOSE_WAIT}s after the client left {sorted(setup.upstream())}"
    )
    assert not (setup.upstream() & (during - before))
    assert wait_until(lambda: setup.callers() <= callers, CLOSE_WAIT), setup.callers()


def test_client_gone_mid_watch_leaks_nothing(setup: Setup) -> None:
    """Over HTTP/2 (the simulator's choice) a watch is a stream on a shared
    connection: leaving it must leave no socket behind."""
    k = setup.via(WS_133, TOKEN_CLUSTER)
    # a watch the simulator ends after a second: the shared HTTP/2 connection
    # that carries watches is open (and counted in "before") from here on
    # (--raw ignores the server's path: the cluster's proxy prefix is spelt out)
    path = (
        f"/apis/cluster.karpor.io/v1beta1/clusters/{TOKEN_CLUSTER}/proxy"
        f"/api/v1/namespaces/{setup.namespace}/pods?watch=true&timeoutSeconds=1"
    )
    warm = k.run("get", "--raw", path)
    assert warm.returncode == 0 and b'"ADDED"' in warm.stdout, warm.stderr
    # and a list: a pooled HTTP/1.1 connection is idle for the next one
    assert k.run("get", "pods").returncode == 0
    before, callers = setup.upstream(), setup.callers()
    proc = k.popen("get", "pods", "-w")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[0] == b"NAME"
        assert proc.stdout.readline().split()[0] == POD.encode()
        assert wait_until(lambda: bool(setup.callers() - callers), DEADLINE)
        proc.kill()
        proc.wait(DEADLINE)
    finally:
        stop(proc)
    assert wait_until(lambda: setup.callers() <= callers, CLOSE_WAIT), setup.callers()
    assert wait_until(lambda: setup.upstream() <= before, CLOSE_WAIT), (
        f"upstream before {sorted(before)}, after {sorted(setup.upstream())}"
    )


def test_client_gone_mid_watch_closes_http11_upstream(setup: Setup) -> None:
    """Over HTTP/1.1 (through the relay) the gateway must close the pooled
    connection carrying the watch when its client leaves."""
    k = setup.via(WS_133, HTTP11_CLUSTER)
    relay = setup.relay
    assert k.run("get", "pods").returncode == 0
    before = setup.upstream(relay.port)
    proc = k.popen("get", "pods", "-w")
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().split()[0] == b"NAME"
        assert proc.stdout.readline().split()[0] == POD.encode()

        def watching() -> list[int]:
            return [
                i
                for i, c in enumerate(relay.connections)
                if any(b"watch=true" in target for _, target in c.requests)
            ]

        assert wait_until(lambda: bool(watching()), DEADLINE), relay.connections
        [index] = watching()
        carrier = relay.connections[index]
        assert not carrier.caller_closed.is_set()
        during = setup.upstream(relay.port)
        proc.kill()
        proc.wait(DEADLINE)
    finally:
        stop(proc)
    assert carrier.caller_closed.wait(CLOSE_WAIT), (
        f"the gateway kept the connection carrying the watch open {CLOSE_WAIT}s after "
        f"its client left (upstream before {sorted(before)}, during {sorted(during)}, "
        f"now {sorted(setup.upstream(relay.port))})"
    )
    # the gateway closed it: the simulator did not end the watch
    assert carrier.closed_first == "caller"
    assert wait_until(lambda: setup.upstream(relay.port) <= before | during, CLOSE_WAIT)
    assert len(setup.upstream(relay.port)) < len(during)
