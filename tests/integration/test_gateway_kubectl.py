"""kubectl through the gateway equals kubectl straight to the cluster (issue 3's acceptance).

Every command runs twice: through the gateway (context ``sim-1`` of a
kubeconfig from ``karpor kubeconfig``) in one namespace, and straight to the
simulated cluster (its token kubeconfig) in a twin namespace of the same
length; the outputs must be equal once namespace names, ages, timestamps,
uids and resourceVersions are blanked.  The full verb set runs on the newest
kubectl present; a smaller set on every version of the matrix (1.33, 1.30,
1.27 and the one on PATH).  ``get clusters`` goes through the ``karpor``
context.
"""

from __future__ import annotations

import queue
import re
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.gateway import CLOSED_CLUSTER, GatewayRun
from support.kubectl import Kubectl, normalize
from support.sim import SimRun
from support.tables import printed_columns, printed_rows

#: the gateway fixtures (gateway, gateway_clusters_dir, gateway_kubeconfig), registered
#: once for the session however many modules name them
pytest_plugins = ("support.gateway",)

pytestmark = pytest.mark.kubectl

#: a safety net for streams: a broken gateway fails the test instead of hanging it
STREAM_DEADLINE = 60.0
LABELS = ("1.33", "1.30", "1.27", "path")
#: container ids are generated per pod
CONTAINER_ID = re.compile(r"\b(containerd|docker|cri-o)://[0-9a-f]{12,64}\b")

CONFIGMAP = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: applied
data:
  key: {value}
"""

POD = """\
apiVersion: v1
kind: Pod
metadata:
  name: p1
  labels: {app: p1}
spec:
  containers: [{name: main, image: busybox}]
"""


@dataclass
class Twins:
    """One kubectl through the gateway and straight to ``sim-1``, each in its namespace."""

    via: Kubectl
    direct: Kubectl
    ns_via: str
    ns_direct: str

    def via_args(self, args: tuple[str, ...]) -> tuple[str, ...]:
        return ("--context", "sim-1", *args)

    def both(self, *args: str, namespaced: bool = True, input: str | None = None) -> str:
        """Run ``args`` both ways (``{ns}`` in an argument: the side's namespace);
        assert equal normalized outputs; return it."""
        ns_via = ("-n", self.ns_via) if namespaced else ()
        ns_direct = ("-n", self.ns_direct) if namespaced else ()
        args_via = tuple(a.replace("{ns}", self.ns_via) for a in args)
        args_direct = tuple(a.replace("{ns}", self.ns_direct) for a in args)
        through = self.via.run(*self.via_args((*args_via, *ns_via)), input=input)
        straight = self.direct.run(*args_direct, *ns_direct, input=input)
        got = self.clean(through.stdout, self.ns_via)
        want = self.clean(straight.stdout, self.ns_direct)
        assert got == want, f"kubectl {' '.join(args)}:\nvia gateway:\n{got}\ndirect:\n{want}"
        assert self.clean(through.stderr, self.ns_via) == self.clean(
            straight.stderr, self.ns_direct
        )
        return got

    @staticmethod
    def clean(text: str, namespace: str) -> str:
        """Normalized, with the namespace and generated container ids blanked."""
        text = CONTAINER_ID.sub("<CONTAINER-ID>", text.replace(namespace, "<NS>"))
        return normalize(text)

    def popen_via(self, *args: str) -> subprocess.Popen[str]:
        return self.via.popen(*self.via_args((*args, "-n", self.ns_via)))


class Lines:
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

    def next(self) -> str:
        line = self.queue.get(timeout=STREAM_DEADLINE)
        if line is None:
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise AssertionError(f"kubectl ended early: {stderr}")
        return line

    def until(self, text: str) -> list[str]:
        seen = []
        while True:
            line = self.next()
            seen.append(line)
            if text in line:
                return seen

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _twins(
    label: str, bins: dict[str, Path], sim_clusters: SimRun, kubeconfig: Path
) -> Iterator[Twins]:
    if label not in bins:
        pytest.skip(f"kubectl {label} is not installed on this machine")
    binary = bins[label]
    tag = uuid.uuid4().hex[:6]
    twins = Twins(
        via=Kubectl(binary, kubeconfig, label),
        direct=Kubectl(binary, sim_clusters["sim-1"].kubeconfig, label),
        ns_via=f"gw-{tag}-v",
        ns_direct=f"gw-{tag}-d",
    )
    twins.both("create", "namespace", "{ns}", namespaced=False)
    try:
        yield twins
    finally:
        twins.via.run(*twins.via_args(("delete", "namespace", twins.ns_via, "--wait=false")))
        twins.direct.run("delete", "namespace", twins.ns_direct, "--wait=false", check=False)


def newest(bins: dict[str, Path]) -> str:
    for label in LABELS:
        if label in bins:
            return label
    pytest.skip("no kubectl found")


@pytest.fixture(scope="module")
def full(
    kubectl_bins: dict[str, Path], sim_clusters: SimRun, gateway_kubeconfig: Path
) -> Iterator[Twins]:
    """Twins on the newest kubectl, for the full verb set."""
    yield from _twins(newest(kubectl_bins), kubectl_bins, sim_clusters, gateway_kubeconfig)


@pytest.fixture(params=LABELS)
def each(
    request: pytest.FixtureRequest,
    kubectl_bins: dict[str, Path],
    sim_clusters: SimRun,
    gateway_kubeconfig: Path,
) -> Iterator[Twins]:
    """Twins on each kubectl of the matrix."""
    yield from _twins(request.param, kubectl_bins, sim_clusters, gateway_kubeconfig)


# --- the smaller set, on every version -----------------------------------------------


def test_basic_verbs(each: Twins):
    each.both("create", "configmap", "cm", "--from-literal=a=1")
    assert "cm" in each.both("get", "configmaps")
    each.both("get", "configmap", "cm", "-o", "yaml")
    each.both("delete", "configmap", "cm")
    # whoami is the gateway's answer about the caller, not the cluster's (issue 17)
    whoami = each.via.out(*each.via_args(("auth", "whoami")))
    assert "karpor.io/cluster-identity" in whoami, whoami


def test_get_clusters(each: Twins, gateway: GatewayRun):
    out = each.via.out("--context", "karpor", "get", "clusters")
    assert printed_columns(out.splitlines()[0]) == [
        "NAME", "DISPLAY NAME", "PROVIDER", "ENDPOINT", "READY", "VERSION", "AGE", "REACH",
        "AGENT",
    ]  # fmt: skip
    rows = printed_rows(out)
    assert list(rows) == [CLOSED_CLUSTER, "sim-1", "sim-2"]
    assert {(row["REACH"], row["AGENT"]) for row in rows.values()} == {("direct", "<none>")}


# --- the full set, on the newest ------------------------------------------------------


def test_create_apply_patch_label(full: Twins):
    full.both("create", "configmap", "cm1", "--from-literal=a=1")
    full.both("apply", "-f", "-", input=CONFIGMAP.format(value="one"))
    full.both("apply", "-f", "-", input=CONFIGMAP.format(value="two"))
    # one key only: kubectl describe prints a map's keys in Go's random order
    full.both("patch", "configmap", "cm1", "-p", '{"data":{"a":"2"}}')
    full.both("label", "configmap", "cm1", "env=test")
    full.both("get", "configmaps", "--show-labels")
    full.both("get", "configmap", "cm1", "-o", "yaml")
    full.both("get", "configmap", "applied", "-o", "json")
    full.both("describe", "configmap", "cm1")
    full.both("delete", "configmap", "cm1", "applied")


def test_pods_describe_and_logs(full: Twins):
    full.both("apply", "-f", "-", input=POD)
    full.both("wait", "--for=condition=Ready", "pod/p1", "--timeout=60s")
    full.both("get", "pods")
    assert "Started container main" in full.both("describe", "pod", "p1")
    assert "Scheduled" in full.both("get", "events")
    follow = Lines(full.popen_via("logs", "-f", "p1"))
    try:
        streamed = [follow.next() for _ in range(3)]  # arrive while the stream is open
    finally:
        follow.stop()
    assert streamed[0].endswith("line 0") or " line " in streamed[0]
    direct = full.direct.out("logs", "p1", "-n", full.ns_direct).splitlines()
    via = [line.replace(full.ns_via, "<NS>") for line in streamed]
    assert via == [line.replace(full.ns_direct, "<NS>") for line in direct[: len(via)]]
    full.both("delete", "pod", "p1", "--grace-period=0")


def test_get_watch_sees_a_change(full: Twins):
    full.both("create", "configmap", "before", "--from-literal=a=1")
    watch = Lines(full.popen_via("get", "configmaps", "-w"))
    try:
        first = watch.until("before")
        assert first[0].split()[:2] == ["NAME", "DATA"]
        full.via.out(
            *full.via_args(
                ("create", "configmap", "after", "--from-literal=a=1", "-n", full.ns_via)
            )
        )
        assert "after" in watch.until("after")[-1]
    finally:
        watch.stop()


def test_get_clusters_wide_yaml_and_watch(full: Twins):
    yaml_out = full.via.out("--context", "karpor", "get", "cluster", "sim-1", "-o", "yaml")
    assert "kind: Cluster" in yaml_out
    assert "type: ServiceAccountToken" in yaml_out
    assert "serviceAccountToken" not in yaml_out
    watch = Lines(full.via.popen("--context", "karpor", "get", "clusters", "-w"))
    try:
        assert watch.until("sim-2")[0].split()[0] == "NAME"
    finally:
        watch.stop()
    missing = full.via.run("--context", "karpor", "get", "cluster", "nope", check=False)
    assert missing.returncode != 0
    assert 'clusters.cluster.karpor.io "nope" not found' in missing.stderr


def _rolled_out(full: Twins, name: str) -> None:
    """Wait for the rollout on both sides (its progress lines depend on timing)."""
    status = ("rollout", "status", f"deployment/{name}", "--timeout=30s")
    full.via.out(*full.via_args((*status, "-n", full.ns_via)))
    full.direct.out(*status, "-n", full.ns_direct)


def test_deployment_rollout_history_and_undo(full: Twins):
    full.both("create", "deployment", "web", "--image=nginx:1.27")
    _rolled_out(full, "web")
    full.both("set", "image", "deployment/web", "nginx=nginx:1.28")
    _rolled_out(full, "web")
    assert "REVISION" in full.both("rollout", "history", "deployment/web")
    assert "rolled back" in full.both("rollout", "undo", "deployment/web")
    _rolled_out(full, "web")
    assert "nginx:1.27" in full.both("rollout", "history", "deployment/web", "--revision=3")
    full.both("get", "replicasets")
    full.both("delete", "deployment", "web")
