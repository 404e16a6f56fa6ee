"""karpor as an aggregated APIService of a host cluster, as its replicas run on Kubernetes.

The host cluster is a simulated cluster of its own holding the ConfigMap
``kube-system/extension-apiserver-authentication`` (made here, as
kube-apiserver publishes it); karpor runs with
``requestHeader.fromCluster`` (the service account's token and CA in files,
``KUBERNETES_SERVICE_HOST``/``_PORT`` in its environment) and with a
read-only state directory made as ``karpor certificates`` says (every file
it wrote but the CA key).  The test
plays the aggregator: the official ``kubernetes`` client presents the
front-proxy client certificate, verifies karpor's serving certificate
against the printed ``caBundle`` for the Service name
``karpor.karpor.svc``, and sends the caller in ``X-Remote-User`` /
``X-Remote-Group`` to list through karpor what it lists straight from a
simulated cluster.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from support.access import Cert, issue, write_yaml
from support.gateway import GatewayRun, Response, client_context, request, start_gateway
from support.procs import ProcessError
from support.sim import SimCluster, SimRun, karpor_command, start_sim
from support.waits import wait_for

from karpor.auth.ca import CertificateAuthority
from karpor.auth.frontproxy import CONFIGMAP_NAME, CONFIGMAP_NAMESPACE
from karpor.cli.certificates import DEFAULT_NAMES
from karpor.kube.discovery import GROUP, VERSION

#: the Service name kube-apiserver verifies karpor's certificate for
SERVICE_NAME = "karpor.karpor.svc"
AGGREGATOR_CN = "front-proxy-client"
USERS_GROUP = "aggregated-users"
PROXY = f"/apis/{GROUP}/{VERSION}/clusters/sim-1/proxy"


@dataclass
class Aggregated:
    """The module's gateway, its host cluster and the front-proxy credentials."""

    gateway: GatewayRun
    host: SimCluster
    front_ca: CertificateAuthority
    aggregator: Cert
    ca_bundle: str
    tmp: Path
    state_listing: dict[str, bytes]
    configmap_data: dict[str, str]

    @property
    def ca_pem(self) -> bytes:
        """The CA that verifies karpor (the APIService caBundle)."""
        return base64.b64decode(self.ca_bundle)

    def get(self, path: str, cert: Cert | None, headers: dict[str, str] | None = None) -> Response:
        """One request on a fresh connection, with ``cert`` as client certificate."""
        context = client_context(
            self.ca_pem, cert.cert_pem if cert else None, cert.key_pem if cert else None
        )
        return request(self.gateway.port, path, context, headers=headers)


def host_core(host: SimCluster) -> Any:
    """The host cluster's core API (Any: the client's models type every field Optional)."""
    return client.CoreV1Api(config.new_client_from_config(config_file=str(host.kubeconfig)))


def authentication_data(ca_pem: bytes, allowed: list[str]) -> dict[str, str]:
    """The ConfigMap's data as kube-apiserver writes it (kubeadm's header names)."""
    return {
        "requestheader-client-ca-file": ca_pem.decode(),
        "requestheader-allowed-names": json.dumps(allowed),
        "requestheader-username-headers": '["X-Remote-User"]',
        "requestheader-group-headers": '["X-Remote-Group"]',
        "requestheader-extra-headers-prefix": '["X-Remote-Extra-"]',
    }


def put_configmap(host: SimCluster, data: dict[str, str]) -> None:
    core = host_core(host)
    body = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=CONFIGMAP_NAME, namespace=CONFIGMAP_NAMESPACE),
        data=data,
    )
    try:
        core.read_namespaced_config_map(CONFIGMAP_NAME, CONFIGMAP_NAMESPACE)
    except client.ApiException as exc:
        assert exc.status == 404, exc
        core.create_namespaced_config_map(CONFIGMAP_NAMESPACE, body)
    else:
        core.replace_namespaced_config_map(CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, body)


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def start_in_pod(host: SimCluster, *args: Any) -> GatewayRun:
    """``start_gateway`` with the environment a pod has (the host apiserver's address)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KUBERNETES_SERVICE_HOST", host.host)
        env.setenv("KUBERNETES_SERVICE_PORT", str(host.port))
        return start_gateway(*args)


def settings_file(tmp: Path, name: str, token_file: Path, refresh: float = 0.5) -> Path:
    path = tmp / name
    write_yaml(
        path,
        {
            "stateReadOnly": True,
            "servingNames": list(DEFAULT_NAMES),
            "authentication": {
                "clientCertificates": True,
                "requestHeader": {
                    "fromCluster": {
                        "tokenFile": str(token_file),
                        "caFile": str(tmp / "serviceaccount" / "ca.crt"),
                        "refreshInterval": refresh,
                    }
                },
            },
            "authorization": {"policyFile": str(tmp / "policy.yaml")},
        },
    )
    return path


@pytest.fixture(scope="module")
def host_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimRun]:
    """The cluster karpor is an aggregated API of (not one it serves)."""
    run = start_sim(tmp_path_factory.mktemp("host-cluster"), 1)
    try:
        yield run
    finally:
        run.stop()


@pytest.fixture(scope="module")
def setup(
    host_cluster: SimRun, sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Aggregated]:
    tmp = tmp_path_factory.mktemp("aggregated")
    host = host_cluster.clusters[0]
    front_ca = CertificateAuthority.create("front-proxy-ca")
    data = authentication_data(front_ca.cert_pem, [AGGREGATOR_CN])
    put_configmap(host, data)
    account = tmp / "serviceaccount"
    account.mkdir()
    (account / "token").write_text(host.token + "\n")
    (account / "ca.crt").write_bytes(host.ca_pem)
    # the operator's directory (with the CA key), written once
    written = tmp / "karpor-state"
    made = subprocess.run(
        [*karpor_command(), "certificates", str(written)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ca_bundle = made.stdout.strip()
    # the Secret karpor-state, made as the command says, mounted read-only
    state = tmp / "karpor-state-secret"
    state.mkdir()
    (command,) = [line for line in made.stderr.splitlines() if "create secret" in line]
    for word in command.split():
        if word.startswith("--from-file="):
            source = Path(word.removeprefix("--from-file="))
            shutil.copy(source, state / source.name)
    clusters = tmp / "clusters"
    clusters.mkdir()
    shutil.copy(sim_clusters["sim-1"].cluster_file, clusters / "sim-1.yaml")
    policy = {"rules": [{"groups": [USERS_GROUP], "clusters": ["*"], "verbs": ["*"]}]}
    write_yaml(tmp / "policy.yaml", policy)
    settings = settings_file(tmp, "karpor.yaml", account / "token")
    before = listing(state)
    state.chmod(0o500)
    try:
        gateway = start_in_pod(host, clusters, state, "--config", str(settings), "--workers", "1")
        try:
            yield Aggregated(
                gateway,
                host,
                front_ca,
                issue(front_ca, AGGREGATOR_CN),
                ca_bundle,
                tmp,
                before,
                data,
            )
        finally:
            gateway.stop()
    finally:
        state.chmod(0o700)


def aggregator_client(setup: Aggregated, user: str, groups: str) -> Any:
    """The kubernetes client as kube-apiserver's proxy to karpor: the
    front-proxy certificate, the caBundle for the Service's name, the caller
    in headers."""
    tmp = setup.tmp
    (tmp / "front-proxy-client.crt").write_bytes(setup.aggregator.cert_pem)
    (tmp / "front-proxy-client.key").write_bytes(setup.aggregator.key_pem)
    (tmp / "ca-bundle.crt").write_bytes(setup.ca_pem)
    configuration = client.Configuration(
        host=f"https://127.0.0.1:{setup.gateway.port}{PROXY}",
        ssl_ca_cert=str(tmp / "ca-bundle.crt"),
        cert_file=str(tmp / "front-proxy-client.crt"),
        key_file=str(tmp / "front-proxy-client.key"),
        tls_server_name=SERVICE_NAME,
    )
    api = client.ApiClient(configuration, header_name="X-Remote-User", header_value=user)
    api.set_default_header("X-Remote-Group", groups)
    return client.CoreV1Api(api)


@pytest.fixture
def namespace(sim_clusters: SimRun) -> Iterator[str]:
    """A namespace of sim-1 with two pods and two ConfigMaps."""
    core = host_core(sim_clusters["sim-1"])
    name = f"agg-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    for i in range(2):
        container = client.V1Container(name="c", image="busybox")
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=f"pod-{i}"),
            spec=client.V1PodSpec(containers=[container]),
        )
        core.create_namespaced_pod(name, pod)
        configmap = client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name=f"cm-{i}"), data={"i": str(i)}
        )
        core.create_namespaced_config_map(name, configmap)
    yield name
    core.delete_namespace(name)


# --- the aggregator's requests -------------------------------------------------------


def test_the_aggregator_lists_through_karpor_what_the_cluster_lists(
    setup: Aggregated, sim_clusters: SimRun, namespace: str
) -> None:
    through = aggregator_client(setup, "alice", USERS_GROUP)
    direct = host_core(sim_clusters["sim-1"])
    pods = through.list_namespaced_pod(namespace)
    assert sorted(p.metadata.name for p in pods.items) == ["pod-0", "pod-1"]
    assert sorted(p.metadata.name for p in pods.items) == sorted(
        p.metadata.name for p in direct.list_namespaced_pod(namespace).items
    )
    maps = through.list_namespaced_config_map(namespace)
    expected = direct.list_namespaced_config_map(namespace)
    assert [(m.metadata.name, m.metadata.resource_version, m.data) for m in maps.items] == [
        (m.metadata.name, m.metadata.resource_version, m.data) for m in expected.items
    ]


def test_the_identity_in_headers_is_authorized_by_the_policy(setup: Aggregated) -> None:
    path = f"{PROXY}/api/v1/namespaces/default/configmaps"
    allowed = setup.get(
        path, setup.aggregator, {"X-Remote-User": "bob", "X-Remote-Group": USERS_GROUP}
    )
    assert allowed.status == 200, allowed.body
    denied = setup.get(path, setup.aggregator, {"X-Remote-User": "bob"})
    assert denied.status == 403, denied.body
    assert 'User "bob"' in denied.json()["message"]


def test_discovery_for_the_aggregator(setup: Aggregated) -> None:
    headers = {"X-Remote-User": "system:kube-aggregator", "X-Remote-Group": "system:masters"}
    response = setup.get(f"/apis/{GROUP}/{VERSION}", setup.aggregator, headers)
    assert response.status == 200, response.body
    names = {r["name"] for r in response.json()["resources"]}
    assert {"clusters", "clusters/proxy"} <= names


def test_other_certificates_are_401_even_with_x_remote_user(setup: Aggregated) -> None:
    path = f"{PROXY}/api/v1/namespaces/default/configmaps"
    headers = {"X-Remote-User": "alice", "X-Remote-Group": USERS_GROUP}
    not_the_ca = issue(CertificateAuthority.create("front-proxy-ca"), AGGREGATOR_CN)
    not_allowed = issue(setup.front_ca, "someone-else")
    for cert in (not_the_ca, not_allowed, None):
        response = setup.get(path, cert, headers)
        assert response.status == 401, (cert, response.body)
        assert response.json()["reason"] == "Unauthorized"
    # the aggregator's certificate without a user: no identity either
    assert setup.get(path, setup.aggregator, {"X-Remote-Group": USERS_GROUP}).status == 401


def test_a_changed_configmap_is_followed(setup: Aggregated) -> None:
    """CA rotation and a new allowed name hold after a refresh (0.5 s here)."""
    rotated = CertificateAuthority.create("front-proxy-ca-2")
    second = issue(rotated, "aggregator-2")
    path = f"{PROXY}/api/v1/namespaces/default/configmaps"
    headers = {"X-Remote-User": "alice", "X-Remote-Group": USERS_GROUP}
    assert setup.get(path, second, headers).status == 401
    bundle = setup.front_ca.cert_pem + rotated.cert_pem
    put_configmap(setup.host, authentication_data(bundle, [AGGREGATOR_CN, "aggregator-2"]))
    try:
        wait_for(lambda: setup.get(path, second, headers).status == 200, 20, "the new CA trusted")
        assert setup.get(path, setup.aggregator, headers).status == 200
    finally:
        put_configmap(setup.host, setup.configmap_data)
    wait_for(lambda: setup.get(path, second, headers).status == 401, 20, "the old settings back")


def test_nothing_was_written_to_the_state_directory(setup: Aggregated) -> None:
    state = setup.gateway.state_dir
    assert listing(state) == setup.state_listing
    # the CA key stays with the operator: replicas verify, never issue
    assert sorted(setup.state_listing) == ["ca.crt", "serving.crt", "serving.key"]
    assert "is read-only" in setup.gateway.process.output


# --- start-up failures --------------------------------------------------------------


def failed_start(setup: Aggregated, settings: Path, state: Path) -> str:
    with pytest.raises(ProcessError) as error:
        run = start_in_pod(setup.host, setup.tmp / "clusters", state, "--config", str(settings))
        run.stop()
    return str(error.value)


def test_a_refused_service_account_stops_the_start(setup: Aggregated) -> None:
    wrong = setup.tmp / "wrong-token"
    wrong.write_text("not-the-token-0123456789\n")
    settings = settings_file(setup.tmp, "wrong.yaml", wrong)
    output = failed_start(setup, settings, setup.gateway.state_dir)
    assert (
        "karpor: requestHeader.fromCluster: cannot read the ConfigMap "
        f"kube-system/extension-apiserver-authentication: {setup.host.endpoint}: "
        "HTTP 401: the service account token was refused"
    ) in output
    assert "not-the-token" not in output
    assert setup.host.token not in output


def test_an_incomplete_state_directory_stops_the_start(setup: Aggregated) -> None:
    state = setup.tmp / "incomplete-state"
    state.mkdir()
    for name in ("ca.crt", "serving.crt"):
        shutil.copy(setup.gateway.state_dir / name, state / name)
    settings = settings_file(setup.tmp, "incomplete.yaml", setup.tmp / "serviceaccount" / "token")
    output = failed_start(setup, settings, state)
    assert (
        f"karpor: {state / 'serving.key'}: missing from the read-only state directory; "
        "create the state with `karpor certificates DIR --name NAME...`"
    ) in output
    assert sorted(p.name for p in state.iterdir()) == ["ca.crt", "serving.crt"]
    assert yaml.safe_load(settings.read_text())["stateReadOnly"] is True
