"""Host (SNI) routing end to end (issue 17, item 1): a request whose TLS
server name is ``NAME.clusters.karpor`` goes to cluster ``NAME`` with its
path used as is, so ``kubectl get --raw /version`` and ``kubectl proxy``
work unchanged through a context that ``karpor kubeconfig --routing host``
wrote (``server: https://GATEWAY``, ``tls-server-name``).

Every answer is compared with the same command straight to the simulated
cluster, normalised.  One gateway with an access policy and an audit log
serves the module; kubectl 1.27, 1.30 and 1.33 and the Python client.
"""

from __future__ import annotations

import json
import queue
import re
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from kubernetes import client, config, watch
from kubernetes.stream import stream
from support.access import Cert, issue, write_yaml
from support.gateway import (
    CLOSED_CLUSTER,
    GatewayRun,
    Response,
    client_context,
    closed_port,
    cluster_document,
    request,
    start_gateway,
    write_kubeconfig,
)
from support.kubectl import Kubectl, normalize
from support.sim import SimRun
from support.waits import wait_for

from karpor.app.state import certificate_hosts
from karpor.auth.ca import CertificateAuthority
from karpor.cli import main

pytest_plugins = ("support.gateway",)

pytestmark = pytest.mark.kubectl

SUFFIX = "clusters.karpor"
RAW_PATHS = ("/version", "/api", "/apis", "/openapi/v3", "/api/v1/namespaces")
VERSIONS = ("1.27", "1.30", "1.33")
#: a safety net for streams: a broken gateway fails the test instead of hanging it
STREAM_DEADLINE = 30.0

POLICY = {
    "rules": [
        {"users": ["admin"], "clusters": ["*"], "verbs": ["*"]},
        {"users": ["admin"], "clusters": ["*"], "nonResourceURLs": ["*"], "verbs": ["*"]},
        {"users": ["admin", "scraper"], "nonResourceURLs": ["/metrics"], "verbs": ["get"]},
        {
            "users": ["viewer"],
            "clusters": ["sim-1"],
            "verbs": ["get", "list", "watch"],
            "namespaces": ["default"],
        },
        {"users": ["scraper"], "clusters": ["sim-1"], "verbs": ["get"], "namespaces": ["default"]},
    ]
}


@dataclass
class Setup:
    """The module's gateway, its kubeconfigs and the simulated clusters."""

    gateway: GatewayRun
    ca: CertificateAuthority
    audit: Path
    sim: SimRun
    tmp: Path
    host_admin: Path
    path_admin: Path
    host_viewer: Path
    path_viewer: Path

    def cert(self, user: str) -> Cert:
        return issue(self.ca, user)

    def raw(
        self,
        path: str,
        user: str = "admin",
        server_name: str | None = None,
        headers: dict[str, str] | None = None,
        verify: bool = True,
    ) -> Response:
        """One HTTPS request to the gateway (TLS server name ``server_name``)."""
        cert = self.cert(user)
        context = client_context(self.gateway.ca_pem, cert.cert_pem, cert.key_pem)
        if not verify:
            context.check_hostname = False
        return request(self.gateway.port, path, context, headers=headers, server_name=server_name)


@pytest.fixture(scope="module")
def setup(sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("host-routing")
    clusters = tmp / "clusters"
    clusters.mkdir()
    for cluster in sim_clusters.clusters:
        (clusters / cluster.cluster_file.name).write_text(cluster.cluster_file.read_text())
    closed = cluster_document(CLOSED_CLUSTER, f"https://127.0.0.1:{closed_port()}")
    write_yaml(clusters / "closed.yaml", closed)
    write_yaml(tmp / "policy.yaml", POLICY)
    audit = tmp / "audit.jsonl"
    config = {"auditLog": str(audit), "authorization": {"policyFile": str(tmp / "policy.yaml")}}
    write_yaml(tmp / "config.yaml", config)
    state_dir = tmp / "state"
    gateway = start_gateway(
        clusters, state_dir, "--workers", "1", "--config", str(tmp / "config.yaml")
    )
    try:
        url = gateway.url
        admin = ("admin", ("system:masters",))

        def in_process(out: Path, user: str, *extra: str) -> Path:
            # the command itself, without one more interpreter start each
            argv = ["kubeconfig", "--state-dir", str(state_dir), "--user", user]
            assert main([*argv, "--server", url, "-o", str(out), *extra]) == 0
            return out

        yield Setup(
            gateway,
            CertificateAuthority.load(state_dir),
            audit,
            sim_clusters,
            tmp,
            write_kubeconfig(state_dir, tmp / "host-admin", url, *admin, "--routing", "host"),
            in_process(tmp / "path-admin", "admin", "--group", "system:masters"),
            in_process(tmp / "host-viewer", "viewer", "--routing", "host"),
            in_process(tmp / "path-viewer", "viewer"),
        )
    finally:
        gateway.stop()


def kubectl(kubectl_bins: dict[str, Path], version: str, kubeconfig: Path) -> Kubectl:
    if version not in kubectl_bins:
        pytest.skip(f"kubectl {version} not found")
    return Kubectl(kubectl_bins[version], kubeconfig, version)


def canon(text: str | bytes) -> Any:
    """A JSON answer without what changes from call to call."""

    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: strip(v)
                for k, v in value.items()
                if k not in ("resourceVersion", "managedFields")
            }
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip(json.loads(text))


# -- the kubeconfig and the certificate ------------------------------------------------


def test_kubeconfig_forms_and_the_wildcard_certificate(setup: Setup) -> None:
    host = yaml.safe_load(setup.host_admin.read_text())
    clusters = {c["name"]: c["cluster"] for c in host["clusters"]}
    assert clusters["sim-1"]["server"] == setup.gateway.url
    assert clusters["sim-1"]["tls-server-name"] == f"sim-1.{SUFFIX}"
    assert clusters["sim-2"]["tls-server-name"] == f"sim-2.{SUFFIX}"
    assert "tls-server-name" not in clusters["karpor"]
    path = yaml.safe_load(setup.path_admin.read_text())
    servers = {c["name"]: c["cluster"]["server"] for c in path["clusters"]}
    assert servers["sim-1"].endswith("/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy")
    serving = x509.load_pem_x509_certificate((setup.gateway.state_dir / "serving.crt").read_bytes())
    assert f"*.{SUFFIX}" in certificate_hosts(serving)


# -- the cluster's own paths, through real clients ---------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_get_raw_is_the_clusters(setup: Setup, kubectl_bins: dict[str, Path], version: str) -> None:
    via = kubectl(kubectl_bins, version, setup.host_admin)
    direct = kubectl(kubectl_bins, version, setup.sim["sim-1"].kubeconfig)
    for path in RAW_PATHS:
        through = via.out("--context", "sim-1", "get", "--raw", path)
        assert canon(through) == canon(direct.out("get", "--raw", path)), path
    # the gateway's own /version is another answer: this one was the cluster's
    own = via.out("--context", "karpor", "get", "--raw", "/version")
    assert canon(own) != canon(direct.out("get", "--raw", "/version"))


def raw_get(api: Any, path: str) -> bytes:
    """``GET path`` with the Python client's ``ApiClient`` (its credentials)."""
    method, url, headers, _, _ = api.param_serialize("GET", path, auth_settings=["BearerToken"])
    response = api.call_api(method, url, headers)
    response.read()
    assert response.status == 200, (path, response.status, response.data)
    data: bytes = response.data
    return data


def test_python_client_is_the_clusters(setup: Setup) -> None:
    via = config.new_client_from_config(str(setup.host_admin), context="sim-2")
    direct = config.new_client_from_config(str(setup.sim["sim-2"].kubeconfig))
    try:
        for path in RAW_PATHS:
            answers = [raw_get(api, path) for api in (via, direct)]
            assert canon(answers[0]) == canon(answers[1]), path
        names = [
            sorted(
                str(n.metadata and n.metadata.name)
                for n in client.CoreV1Api(api).list_namespace().items
            )
            for api in (via, direct)
        ]
        assert names[0] == names[1]
        versions = [client.VersionApi(api).get_code().git_version for api in (via, direct)]
        assert versions[0] == versions[1]
    finally:
        via.close()
        direct.close()


class _Proxy:
    """``kubectl proxy --port 0`` for a kubeconfig (stopped by :meth:`stop`)."""

    def __init__(self, kubectl: Kubectl, *args: str) -> None:
        self.process = kubectl.popen(*args, "proxy", "--port", "0")
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert match, line
        self.url = f"http://127.0.0.1:{match[1]}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url + path, timeout=STREAM_DEADLINE) as answer:
            data: bytes = answer.read()
            return data

    def stop(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=STREAM_DEADLINE)


@pytest.mark.parametrize("version", VERSIONS)
def test_kubectl_proxy_in_front_of_a_host_routed_context(
    setup: Setup, kubectl_bins: dict[str, Path], version: str
) -> None:
    via = _Proxy(kubectl(kubectl_bins, version, setup.host_admin), "--context", "sim-1")
    try:
        direct = _Proxy(kubectl(kubectl_bins, version, setup.sim["sim-1"].kubeconfig))
        try:
            for path in (*RAW_PATHS, "/api/v1/namespaces/default/configmaps"):
                assert canon(via.get(path)) == canon(direct.get(path)), path
        finally:
            direct.stop()
    finally:
        via.stop()


def _lines(process: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def test_exec_and_watch_through_a_host_routed_context(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    via = kubectl(kubectl_bins, "1.33", setup.host_admin)
    direct = kubectl(kubectl_bins, "1.33", setup.sim["sim-1"].kubeconfig)
    ns = f"host-{uuid.uuid4().hex[:8]}"
    direct.out("create", "namespace", ns)
    try:
        watched = ("get", "configmaps", "-w", "-o", "name")
        watching = via.popen("--context", "sim-1", "-n", ns, *watched)
        try:
            lines = _lines(watching)
            via.out("--context", "sim-1", "-n", ns, "create", "configmap", "watched")

            def seen() -> bool:
                try:
                    return lines.get(timeout=0.2) == "configmap/watched" or seen()
                except queue.Empty:
                    return False

            wait_for(seen, STREAM_DEADLINE, "the watch event through the host-routed context")
        finally:
            watching.terminate()
            watching.communicate(timeout=STREAM_DEADLINE)
        via.out("--context", "sim-1", "-n", ns, "run", "box", "--image=busybox", "--restart=Never")
        via.out("--context", "sim-1", "-n", ns, "wait", "--for=condition=Ready", "pod/box")
        command = ("exec", "box", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
        through = via.run("--context", "sim-1", "-n", ns, *command, check=False)
        straight = direct.run("-n", ns, *command, check=False)
        assert (through.returncode, through.stdout) == (straight.returncode, straight.stdout)
        assert through.returncode == 3 and "err" in through.stderr
        # the Python client: its WebSocket exec and its watch honour tls-server-name too
        api = config.new_client_from_config(str(setup.host_admin), context="sim-1")
        try:
            core = client.CoreV1Api(api)
            said = stream(
                core.connect_get_namespaced_pod_exec,
                "box",
                ns,
                command=["sh", "-c", "echo python"],
                stdout=True,
                stderr=True,
                stdin=False,
                tty=False,
            )
            assert said == "python\n"
            events = watch.Watch().stream(core.list_namespaced_config_map, ns, timeout_seconds=30)
            names = (e["object"].metadata.name for e in events)
            assert "watched" in names
        finally:
            api.close()
    finally:
        direct.run("delete", "namespace", ns, "--wait=false", check=False)


# -- the same features: policy, the gateway's own paths, audit, metrics ------------------


def test_policy_denial_is_the_same_under_both_routings(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    host = kubectl(kubectl_bins, "1.33", setup.host_viewer)
    path = kubectl(kubectl_bins, "1.33", setup.path_viewer)
    for args in (("get", "pods", "-n", "default"), ("get", "pods", "-n", "kube-system")):
        by_host = host.run("--context", "sim-1", *args, check=False)
        by_path = path.run("--context", "sim-1", *args, check=False)
        assert by_host.returncode == by_path.returncode, (by_host.stderr, by_path.stderr)
        assert normalize(by_host.stderr) == normalize(by_path.stderr)
    assert by_host.returncode == 1 and "Forbidden" in by_host.stderr
    assert 'namespace "kube-system"' in by_host.stderr
    # sim-2 is not the viewer's: a 403 by host as by path
    denied = setup.raw("/api/v1/namespaces/default/pods", "viewer", f"sim-2.{SUFFIX}")
    assert denied.status == 403, denied.body


def test_the_gateways_own_paths_under_a_cluster_host_are_the_clusters(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    via = kubectl(kubectl_bins, "1.33", setup.host_admin)
    direct = kubectl(kubectl_bins, "1.33", setup.sim["sim-1"].kubeconfig)
    for path in ("/metrics", "/healthz", "/apis/cluster.karpor.io/v1beta1/clusters"):
        through = via.run("--context", "sim-1", "get", "--raw", path, check=False)
        straight = direct.run("get", "--raw", path, check=False)
        assert (through.returncode, through.stdout, normalize(through.stderr)) == (
            straight.returncode,
            straight.stdout,
            normalize(straight.stderr),
        ), path
    # the scraper may read the gateway's /metrics, not the cluster's
    assert setup.raw("/metrics", "scraper").status == 200
    cluster_metrics = setup.raw("/metrics", "scraper", f"sim-1.{SUFFIX}")
    assert cluster_metrics.status == 403, cluster_metrics.body


def test_the_health_gate_is_the_same_under_both_routings(setup: Setup) -> None:
    prefix = f"/apis/cluster.karpor.io/v1beta1/clusters/{CLOSED_CLUSTER}/proxy"

    def gated() -> list[Response]:
        answer = setup.raw(prefix + "/api/v1/namespaces")
        return [answer] if answer.status == 503 else []

    (by_path,) = wait_for(gated, 30, "the probe to find the closed cluster unhealthy")
    by_host = setup.raw("/api/v1/namespaces", server_name=f"{CLOSED_CLUSTER}.{SUFFIX}")

    def unprobed(status: dict[str, object]) -> dict[str, object]:
        # the probe runs again meanwhile: its time in the message may differ
        message = re.sub(r"\(probed [^)]*\)", "(probed …)", str(status["message"]))
        return {**status, "message": message}

    assert by_host.status == by_path.status == 503
    assert unprobed(by_host.json()) == unprobed(by_path.json())


def test_server_name_and_host_rules(setup: Setup) -> None:
    sim2_port = setup.sim["sim-2"].port
    sim1_port = setup.sim["sim-1"].port

    def address(response: Response) -> str:
        assert response.status == 200, response.body
        return str(response.json()["serverAddressByClientCIDRs"][0]["serverAddress"])

    # SNI names the cluster; a Host naming no cluster (the gateway's address) does not matter
    assert address(setup.raw("/api", server_name=f"sim-1.{SUFFIX}")).endswith(f":{sim1_port}")
    # without SNI the Host header (port dropped, any case) decides
    by_host = setup.raw("/api", headers={"Host": f"SIM-2.{SUFFIX}:{setup.gateway.port}"})
    assert address(by_host).endswith(f":{sim2_port}")
    # SNI and Host naming different clusters: refused
    mismatch = setup.raw("/api", server_name=f"sim-1.{SUFFIX}", headers={"Host": f"sim-2.{SUFFIX}"})
    assert mismatch.status == 421, mismatch.body
    assert mismatch.json()["kind"] == "Status"
    assert mismatch.json()["reason"] == "MisdirectedRequest"
    # a name under the suffix that is no cluster name
    nested = setup.raw("/api", server_name=f"a.b.{SUFFIX}", verify=False)
    assert nested.status == 400 and nested.json()["kind"] == "Status", nested.body
    # neither: the gateway's own API
    own = setup.raw("/apis")
    assert own.status == 200
    assert [g["name"] for g in own.json()["groups"]] == ["cluster.karpor.io"]


def test_audit_and_metrics_name_the_cluster_of_the_host(setup: Setup) -> None:
    marker = f"/api/v1/namespaces/default/configmaps?labelSelector=m%3D{uuid.uuid4().hex}"
    assert setup.raw(marker, server_name=f"sim-2.{SUFFIX}").status == 200

    def audited() -> dict[str, Any]:
        for line in setup.audit.read_text().splitlines():
            record = json.loads(line)
            if record.get("path") == marker:
                return dict(record)
        return {}

    record = wait_for(audited, 10, "the host-routed request in the audit log")
    assert record["cluster"] == "sim-2"
    assert (record["verb"], record["resource"], record["code"]) == ("list", "configmaps", 200)
    metrics = setup.raw("/metrics").body.decode()
    assert re.search(
        r'karpor_requests_total\{cluster="sim-2",code="200",verb="list"\} [1-9]', metrics
    ), metrics[:2000]
