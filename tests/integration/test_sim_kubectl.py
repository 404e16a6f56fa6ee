"""kubectl against a simulated cluster, straight (no gateway): issue 2's acceptance.

The full verb set runs on the newest kubectl present; a smoke subset runs on
each other version of the matrix (1.33, 1.30, 1.27 and the one on PATH).
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.kubectl import Kubectl, normalize
from support.sim import SimRun

pytestmark = pytest.mark.kubectl

#: a safety net for streams: a broken simulator fails instead of hanging
STREAM_DEADLINE = 30.0

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {{app: web}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: nginx:1.27}}]
"""


def _pick(bins: dict[str, Path], label: str | None = None) -> tuple[str, Path]:
    if label is not None:
        if label not in bins:
            pytest.skip(f"kubectl {label} is not installed on this machine")
        return label, bins[label]
    for candidate in ("1.33", "1.30", "1.27", "path"):
        if candidate in bins:
            return candidate, bins[candidate]
    pytest.skip("no kubectl found (neither /usr/lib/google-cloud-sdk/bin/kubectl.1.NN nor PATH)")


@pytest.fixture(scope="module")
def kubectl(kubectl_bins: dict[str, Path], sim_clusters: SimRun) -> Kubectl:
    """The newest kubectl, with a token kubeconfig for ``sim-1``."""
    label, binary = _pick(kubectl_bins)
    return Kubectl(binary, sim_clusters["sim-1"].kubeconfig, label)


@pytest.fixture
def namespace(kubectl: Kubectl) -> Iterator[str]:
    """A fresh namespace, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl.out("create", "namespace", name)
    yield name
    kubectl.run("delete", "namespace", name, "--wait=false", check=False)


class _Lines:
    """The output lines of a streaming kubectl, read in a thread."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.queue.put(line.rstrip("\n"))
        self.queue.put(None)

    def until(self, predicate: str) -> list[str]:
        """Lines up to and including the first containing ``predicate``."""
        seen: list[str] = []
        while True:
            try:
                line = self.queue.get(timeout=STREAM_DEADLINE)
            except queue.Empty:
                raise AssertionError(f"no line with {predicate!r}; got {seen}") from None
            if line is None:
                stderr = self.proc.stderr.read() if self.proc.stderr else ""
                raise AssertionError(f"stream ended before {predicate!r}; got {seen}\n{stderr}")
            seen.append(line)
            if predicate in line:
                return seen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _run_pod(kubectl: Kubectl, namespace: str, name: str) -> None:
    kubectl.out("run", name, "-n", namespace, "--image=busybox:1.36", "--", "sleep", "3600")
    kubectl.out("wait", "-n", namespace, "--for=condition=Ready", f"pod/{name}", "--timeout=30s")


# -- the full verb set, newest kubectl -------------------------------------


def test_get_pods_prints_table_columns(kubectl: Kubectl, namespace: str) -> None:
    _run_pod(kubectl, namespace, "tabled")
    out = normalize(kubectl.out("get", "pods", "-n", namespace))
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert lines[1].split() == ["tabled", "1/1", "Running", "0", "<AGE>"]
    wide = kubectl.out("get", "pods", "-n", namespace, "-o", "wide").splitlines()
    assert wide[0].split()[:7] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]


def test_create_get_yaml_and_describe(kubectl: Kubectl, namespace: str) -> None:
    assert "configmap/settings created" in kubectl.out(
        "create", "configmap", "settings", "-n", namespace, "--from-literal=color=blue"
    )
    obj = json.loads(kubectl.out("get", "configmap", "settings", "-n", namespace, "-o", "json"))
    assert obj["data"] == {"color": "blue"}
    yaml_out = kubectl.out("get", "configmap", "settings", "-n", namespace, "-o", "yaml")
    assert "kind: ConfigMap" in yaml_out
    assert "color: blue" in yaml_out
    jsonpath = kubectl.out(
        "get", "cm", "settings", "-n", namespace, "-o", "jsonpath={.metadata.name}"
    )
    assert jsonpath == "settings"
    described = kubectl.out("describe", "configmap", "settings", "-n", namespace)
    assert "Name:" in described and "settings" in described
    assert "color:" in described
    failed = kubectl.run("create", "configmap", "settings", "-n", namespace, check=False)
    assert failed.returncode != 0
    assert 'configmaps "settings" already exists' in failed.stderr


def test_describe_pod(kubectl: Kubectl, namespace: str) -> None:
    _run_pod(kubectl, namespace, "described")
    described = kubectl.out("describe", "pod", "described", "-n", namespace)
    assert "Status:           Running" in described
    assert "Ready             True" in described
    # the lifecycle events, as a cluster shows them
    events = described[described.index("Events:") :].splitlines()
    assert events[1].split() == ["Type", "Reason", "Age", "From", "Message"]
    rows = [line.split() for line in events[3:]]
    assert [(row[0], row[1], row[3]) for row in rows] == [
        ("Normal", "Scheduled", "default-scheduler"),
        ("Normal", "Pulled", "kubelet"),
        ("Normal", "Created", "kubelet"),
        ("Normal", "Started", "kubelet"),
    ]
    assert "Successfully assigned " + namespace + "/described to " in events[3]
    listed = kubectl.out("get", "events", "-n", namespace).splitlines()
    assert listed[0].split() == ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [line.split()[2] for line in listed[1:]] == ["Scheduled", "Pulled", "Created", "Started"]
    assert all(line.split()[3] == "pod/described" for line in listed[1:])
    modern = json.loads(
        kubectl.out("get", "events.v1.events.k8s.io", "-n", namespace, "-o", "json")
    )
    assert {item["regarding"]["name"] for item in modern["items"]} == {"described"}
    kubectl.out("delete", "pod", "described", "-n", namespace, "--wait")
    killing = kubectl.out(
        "get", "events", "-n", namespace, "--field-selector=reason=Killing", "-o", "name"
    )
    assert killing.strip().startswith("event/described.")


def test_apply_twice_updates(kubectl: Kubectl, namespace: str) -> None:
    first = kubectl.out("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.format(replicas=2))
    assert "deployment.apps/web created" in first
    second = kubectl.out("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.format(replicas=3))
    assert "deployment.apps/web configured" in second
    same = kubectl.out("apply", "-n", namespace, "-f", "-", input=DEPLOYMENT.format(replicas=3))
    assert "deployment.apps/web unchanged" in same
    replicas = kubectl.out(
        "get", "deploy", "web", "-n", namespace, "-o", "jsonpath={.spec.replicas}"
    )
    assert replicas == "3"


def test_patch_label_delete(kubectl: Kubectl, namespace: str) -> None:
    kubectl.out("create", "configmap", "patched", "-n", namespace, "--from-literal=a=1")
    merge = kubectl.out("patch", "cm", "patched", "-n", namespace, "-p", '{"data":{"b":"2"}}')
    assert "configmap/patched patched" in merge
    kubectl.out(
        "patch",
        "cm",
        "patched",
        "-n",
        namespace,
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/data/a","value":"9"}]',
    )
    data = json.loads(kubectl.out("get", "cm", "patched", "-n", namespace, "-o", "json"))["data"]
    assert data == {"a": "9", "b": "2"}
    assert "configmap/patched labeled" in kubectl.out(
        "label", "cm", "patched", "-n", namespace, "tier=gold"
    )
    selected = kubectl.out("get", "cm", "-n", namespace, "-l", "tier=gold", "-o", "name")
    assert selected.split() == ["configmap/patched"]
    assert 'configmap "patched" deleted' in kubectl.out("delete", "cm", "patched", "-n", namespace)
    gone = kubectl.run("get", "cm", "patched", "-n", namespace, check=False)
    assert gone.returncode != 0
    assert 'Error from server (NotFound): configmaps "patched" not found' in gone.stderr


def test_get_watch_sees_change_by_another_client(kubectl: Kubectl, namespace: str) -> None:
    lines = _Lines(kubectl.popen("get", "configmaps", "-n", namespace, "-w"))
    try:
        lines.until("kube-root-ca.crt")
        kubectl.out("create", "configmap", "watched", "-n", namespace)
        assert lines.until("watched")[-1].split()[:2] == ["watched", "0"]
        kubectl.out("patch", "cm", "watched", "-n", namespace, "-p", '{"data":{"k":"v"}}')
        assert lines.until("watched")[-1].split()[:2] == ["watched", "1"]
    finally:
        lines.stop()


def test_logs_follow_streams_new_lines(kubectl: Kubectl, namespace: str) -> None:
    _run_pod(kubectl, namespace, "chatty")
    lines = _Lines(kubectl.popen("logs", "-f", "chatty", "-n", namespace, "--tail=1"))
    try:
        first = lines.until("line ")[-1]
        start = int(first.rsplit(" ", 1)[1])
        later = lines.until(f"line {start + 2}")
        assert later[-1] == f"{namespace}/chatty/chatty line {start + 2}"
    finally:
        lines.stop()
    tail = kubectl.out("logs", "chatty", "-n", namespace, "--tail=2", "--timestamps")
    stamped = tail.splitlines()
    assert len(stamped) == 2
    assert all(normalize(s).startswith(f"<TIME> {namespace}/chatty/chatty line ") for s in stamped)


def test_auth_whoami(kubectl: Kubectl, sim_clusters: SimRun) -> None:
    me = kubectl.out("auth", "whoami")
    assert "system:serviceaccount:kube-system:karpor" in me
    other = kubectl.out("auth", "whoami", "--as", "alice", "--as-group", "devs")
    rows = {line.split()[0]: line.split(None, 1)[1] for line in other.splitlines()[1:]}
    assert rows["Username"] == "alice"
    assert rows["Groups"] == "[devs system:authenticated]"


def test_request_head_of_100k_over_http2(kubectl: Kubectl) -> None:
    """kubectl speaks HTTP/2 to the simulator: 1,500 impersonated groups (about
    100 KiB of headers) pass, as below Go's 1 MiB header limit."""
    groups = [f"group-{i:04d}-{'x' * 50}" for i in range(1500)]
    flags = [arg for group in groups for arg in ("--as-group", group)]
    review = json.loads(kubectl.out("auth", "whoami", "--as", "alice", *flags, "-o", "json"))
    assert review["status"]["userInfo"]["groups"][:1500] == groups


def test_client_certificate_auth(kubectl: Kubectl, sim_clusters: SimRun) -> None:
    cert = Kubectl(kubectl.binary, sim_clusters["sim-1"].cert_kubeconfig, kubectl.label)
    me = cert.out("auth", "whoami")
    assert "sim-admin" in me
    assert "system:masters" in me


def test_pagination_with_chunk_size(kubectl: Kubectl, namespace: str) -> None:
    for index in range(5):
        kubectl.out("create", "cm", f"page-{index}", "-n", namespace)
    result = kubectl.run(
        "get", "cm", "-n", namespace, "-l", "!absent", "--chunk-size=2", "-o", "name", "-v=6"
    )
    names = result.stdout.split()
    assert names == ["configmap/kube-root-ca.crt"] + [f"configmap/page-{i}" for i in range(5)]
    requests = [line for line in result.stderr.splitlines() if "limit=2" in line]
    assert len(requests) == 3
    assert sum("continue=" in line for line in requests) == 2


def test_other_cluster_is_separate(kubectl: Kubectl, sim_clusters: SimRun) -> None:
    other = Kubectl(kubectl.binary, sim_clusters["sim-2"].kubeconfig, kubectl.label)
    name = f"only-{uuid.uuid4().hex[:6]}"
    kubectl.out("create", "cm", name)
    try:
        assert other.run("get", "cm", name, check=False).returncode != 0
    finally:
        kubectl.out("delete", "cm", name)


# -- a smoke subset on every version of the matrix ----------------------------


@pytest.mark.parametrize("label", ["1.33", "1.30", "1.27", "path"])
def test_smoke(label: str, kubectl_bins: dict[str, Path], sim_clusters: SimRun) -> None:
    _, binary = _pick(kubectl_bins, label)
    k = Kubectl(binary, sim_clusters["sim-2"].kubeconfig, label)
    namespaces = k.out("get", "namespaces")
    assert namespaces.splitlines()[0].split() == ["NAME", "STATUS", "AGE"]
    assert "kube-system" in namespaces
    ns = f"smoke-{label.replace('.', '-')}-{uuid.uuid4().hex[:6]}"
    k.out("create", "namespace", ns)
    try:
        manifest = DEPLOYMENT.format(replicas=1)
        assert "created" in k.out("apply", "-n", ns, "-f", "-", input=manifest)
        assert "configured" in k.out(
            "apply", "-n", ns, "-f", "-", input=DEPLOYMENT.format(replicas=2)
        )
        table = k.out("get", "deploy", "-n", ns).splitlines()
        assert table[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
        whoami = k.out("auth", "whoami", "--as", "smoke-user")
        assert "smoke-user" in whoami
        k.out("run", "smoke", "-n", ns, "--image=busybox:1.36")
        k.out("wait", "-n", ns, "--for=condition=Ready", "pod/smoke", "--timeout=30s")
        pods = k.out("get", "pods", "-n", ns).splitlines()
        assert pods[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        assert pods[1].split()[:3] == ["smoke", "1/1", "Running"]
    finally:
        k.run("delete", "namespace", ns, "--wait=false", check=False)
