"""The manifests of ``etc/kubernetes`` agree with karpor, its Dockerfile and its README.

They parse; ``kubectl kustomize`` builds them; the settings they mount parse
with karpor's own parser, and the ports, volumes, probes, command, image,
APIService and RBAC they declare are the ones those settings, the code's
constants, the Dockerfile and the README say.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

import karpor
from karpor.app.settings import Settings, parse_settings
from karpor.auth.frontproxy import CONFIGMAP_NAMESPACE, READER_ROLE
from karpor.cli.certificates import DEFAULT_NAMES
from karpor.kube.discovery import GROUP, VERSION

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "etc" / "kubernetes"
NAMESPACE = "karpor"
#: karpor's settings file, which the kustomization turns into a ConfigMap
SETTINGS_FILE = "karpor.yaml"

Doc = dict[str, Any]


def manifest_files() -> list[Path]:
    return sorted(MANIFESTS.glob("*.yaml"))


@pytest.mark.parametrize("path", manifest_files(), ids=lambda p: p.name)
def test_every_file_parses(path: Path) -> None:
    if path.name == SETTINGS_FILE:
        # karpor's settings (the ConfigMap's content), by karpor's own parser
        parse_settings(path.read_text(), str(path))
        return
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, f"{path.name}: no document"
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("kind"), f"{path.name}: a document without kind"


@pytest.fixture(scope="module")
def built() -> list[Doc]:
    """``kubectl kustomize etc/kubernetes`` (kubectl is present in CI)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH")
    result = subprocess.run(
        [kubectl, "kustomize", str(MANIFESTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d is not None]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


@pytest.fixture(scope="module")
def deployment(built: list[Doc]) -> Doc:
    return one(built, "Deployment")


@pytest.fixture(scope="module")
def container(deployment: Doc) -> Doc:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(only)


@pytest.fixture(scope="module")
def settings(built: list[Doc], container: Doc) -> Settings:
    """The settings file the container runs with, parsed by karpor."""
    config = container["command"][container["command"].index("--config") + 1]
    mount = mount_of(container, Path(config).parent)
    configmap = volume(built_deployment(built), mount["name"])["configMap"]["name"]
    data = one(built, "ConfigMap", configmap)["data"]
    return parse_settings(data[Path(config).name], config)


def built_deployment(built: list[Doc]) -> Doc:
    return one(built, "Deployment")


def mount_of(container: Doc, path: str | Path) -> Doc:
    mounts = [m for m in container["volumeMounts"] if m["mountPath"] == str(path)]
    assert len(mounts) == 1, f"no single volume mounted at {path}"
    return dict(mounts[0])


def volume(deployment: Doc, name: str) -> Doc:
    (found,) = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == name]
    return dict(found)


def container_port(container: Doc, port: int | str) -> int:
    """A port of the container, by number or name."""
    for declared in container["ports"]:
        if port in (declared["containerPort"], declared.get("name")):
            return int(declared["containerPort"])
    raise AssertionError(f"the container declares no port {port!r}")


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no section {title!r}"
    return match.group(1)


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def exec_form(instruction: str) -> list[str]:
    match = re.search(rf"^{instruction} (\[.*\])$", dockerfile(), re.M)
    assert match, f"the Dockerfile has no {instruction} in exec form"
    value = json.loads(match.group(1))
    assert isinstance(value, list)
    return [str(v) for v in value]


# --- the checks ------------------------------------------------------------------------


def test_settings_parse_and_say_what_replicas_need(settings: Settings) -> None:
    assert settings.state_read_only
    assert settings.clusters_dir and settings.state_dir
    header = settings.authentication.request_header
    assert header is not None and header.from_cluster is not None
    assert settings.host == "0.0.0.0"


def test_ports(built: list[Doc], container: Doc, settings: Settings) -> None:
    service = one(built, "Service")
    apiservice = one(built, "APIService")
    (port,) = service["spec"]["ports"]
    assert container_port(container, port["targetPort"]) == settings.port
    assert apiservice["spec"]["service"]["port"] == port["port"]
    assert apiservice["spec"]["service"]["name"] == service["metadata"]["name"]
    assert apiservice["spec"]["service"]["namespace"] == service["metadata"]["namespace"]
    pod_labels = built_deployment(built)["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()


def test_apiservice_names_karpors_group_and_version(built: list[Doc]) -> None:
    apiservice = one(built, "APIService")
    assert apiservice["apiVersion"] == "apiregistration.k8s.io/v1"
    assert apiservice["metadata"]["name"] == f"{VERSION}.{GROUP}"
    assert (apiservice["spec"]["group"], apiservice["spec"]["version"]) == (GROUP, VERSION)
    assert not apiservice["spec"].get("insecureSkipTLSVerify")


def test_serving_names_cover_the_service(built: list[Doc], settings: Settings) -> None:
    service = one(built, "Service")
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    expected = (f"{name}.{namespace}.svc", f"{name}.{namespace}.svc.cluster.local")
    assert set(expected) <= set(settings.serving_names)
    # `karpor certificates DIR` without --name issues for these names
    assert set(settings.serving_names) <= set(DEFAULT_NAMES)


def test_probes(container: Doc, settings: Settings) -> None:
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
        get = container[probe]["httpGet"]
        assert (get["path"], get["scheme"]) == (path, "HTTPS")
        assert container_port(container, get["port"]) == settings.port


def test_command_is_the_documented_one(container: Doc) -> None:
    section = readme_section("Running on Kubernetes")
    lines = [line.strip() for line in section.splitlines() if line.strip().startswith("twistd ")]
    assert lines, "the README's Kubernetes section shows no twistd command"
    assert shlex.split(lines[0]) == container["command"]
    assert exec_form("ENTRYPOINT") + exec_form("CMD") == container["command"]


def test_image_is_the_dockerfiles(container: Doc) -> None:
    match = re.search(r"docker build -t (\S+) \.", dockerfile())
    assert match, "the Dockerfile does not say how it is built"
    assert container["image"] == match.group(1) == f"karpor:{karpor.__version__}"


def test_volumes_are_where_the_settings_say(
    built: list[Doc], container: Doc, settings: Settings
) -> None:
    deployment = built_deployment(built)
    assert settings.clusters_dir and settings.state_dir
    secrets = {settings.clusters_dir: "karpor-clusters", settings.state_dir: "karpor-state"}
    for path, secret in secrets.items():
        mount = mount_of(container, path)
        assert mount["readOnly"] is True
        assert volume(deployment, mount["name"])["secret"]["secretName"] == secret
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True


def test_rbac_grants_only_the_front_proxy_configmap(built: list[Doc], deployment: Doc) -> None:
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    one(built, "ServiceAccount", account)
    binding = one(built, "RoleBinding")
    assert binding["metadata"]["namespace"] == CONFIGMAP_NAMESPACE
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": READER_ROLE,
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    ]
    assert not [d for d in built if d["kind"] == "ClusterRoleBinding"]
    # the users' ClusterRole names karpor's own group
    role = one(built, "ClusterRole")
    assert {g for rule in role["rules"] for g in rule["apiGroups"]} == {GROUP}


def test_everything_else_is_in_namespace_karpor(built: list[Doc]) -> None:
    one(built, "Namespace", NAMESPACE)
    cluster_scoped = {"Namespace", "ClusterRole", "APIService"}
    for doc in built:
        if doc["kind"] in cluster_scoped:
            assert "namespace" not in doc["metadata"]
        elif doc["kind"] != "RoleBinding":
            assert doc["metadata"]["namespace"] == NAMESPACE, doc["kind"]


def test_replicas_and_draining(deployment: Doc, settings: Settings) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] >= 2
    grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > settings.drain_timeout
