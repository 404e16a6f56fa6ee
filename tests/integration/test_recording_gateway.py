"""Session recording and session audit lines through a real gateway and
kubectl (issue 20): exec through kubectl 1.27 (SPDY) and 1.33 (WebSocket),
with and without a terminal, gives an asciicast v2 recording whose output
is what kubectl printed, and a ``SessionEnd`` audit line with the exit
code and the recording's name; a cluster that is not recorded is audited
only; a recording directory that cannot be written refuses the session
with a ``Status``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from support.asciicast import Cast, read_cast
from support.gateway import (
    GatewayRun,
    client_context,
    credentials_of,
    request,
    start_gateway,
    write_kubeconfig,
)
from support.kubectl import Kubectl
from support.sim import SimRun
from support.streams import wait_until
from support.terminal import run_in_pty

pytestmark = pytest.mark.kubectl

DEADLINE = 60.0
RECORDED = "sim-1"
#: sim-1 again, under a name the recording settings do not name
NOT_RECORDED = "sim-1-plain"
POD = "box"


@dataclass
class Setup:
    gateway: GatewayRun
    kubeconfig: Path
    recordings: Path
    audit: Path
    namespace: str
    bins: dict[str, Path]

    def command(self, version: str, cluster: str, *args: str) -> list[str]:
        if version not in self.bins:
            pytest.skip(f"kubectl {version} is not installed")
        return [
            str(self.bins[version]),
            "--kubeconfig",
            str(self.kubeconfig),
            "--context",
            cluster,
            "-n",
            self.namespace,
            *args,
        ]

    def env(self) -> dict[str, str]:
        return {**os.environ, "KUBECACHEDIR": str(self.kubeconfig.parent / ".kube-cache")}

    def sessions(self) -> list[dict[str, object]]:
        """The audit log's SessionEnd lines so far."""
        if not self.audit.exists():
            return []
        lines = [json.loads(line) for line in self.audit.read_text().splitlines()]
        return [line for line in lines if line.get("kind") == "SessionEnd"]

    def session_of(self, command: list[str]) -> dict[str, object]:
        """The SessionEnd line of the one session that ran ``command`` (waits for it)."""
        found: list[dict[str, object]] = []

        def ended() -> bool:
            found[:] = [s for s in self.sessions() if s["command"] == command]
            return bool(found)

        assert wait_until(ended, DEADLINE), f"no SessionEnd line for {command}"
        assert len(found) == 1, found
        return found[0]


@pytest.fixture(scope="module")
def setup(
    sim_clusters: SimRun, kubectl_bins: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    base = tmp_path_factory.mktemp("session-recording")
    clusters = base / "clusters"
    clusters.mkdir()
    sim = sim_clusters[RECORDED]
    shutil.copy(sim.cluster_file, clusters / sim.cluster_file.name)
    document = yaml.safe_load(sim.cluster_file.read_text())
    document["metadata"] = {"name": NOT_RECORDED}
    (clusters / f"{NOT_RECORDED}.yaml").write_text(yaml.safe_dump(document))
    recordings, audit = base / "recordings", base / "audit.jsonl"
    config = base / "karpor.yaml"
    config.write_text(
        json.dumps(
            {
                "workers": 1,
                "auditLog": {"path": str(audit), "maxSizeMB": 10},
                "sessionRecording": {"dir": str(recordings), "clusters": [RECORDED]},
            }
        )
    )
    label = next((v for v in ("1.33", "1.27", "path") if v in kubectl_bins), None)
    if label is None:
        pytest.skip("no kubectl found")
    namespace = f"rec-{uuid.uuid4().hex[:8]}"
    admin = Kubectl(kubectl_bins[label], sim.kubeconfig, label)
    admin.out("create", "namespace", namespace)
    admin.out("run", POD, "-n", namespace, "--image=busybox", "--restart=Never")
    admin.out("wait", "-n", namespace, "--for=condition=Ready", f"pod/{POD}", "--timeout=30s")
    run = start_gateway(clusters, base / "state", "--config", str(config))
    try:
        kubeconfig = write_kubeconfig(run.state_dir, base / "admin.kubeconfig", run.url)
        yield Setup(run, kubeconfig, recordings, audit, namespace, kubectl_bins)
    finally:
        run.stop()
        admin.run("delete", "namespace", namespace, "--wait=false", check=False)


def the_recording(setup: Setup, session: dict[str, object]) -> Cast:
    name = session["recording"]
    assert isinstance(name, str) and name.endswith(".cast"), session
    path = setup.recordings / name
    assert path.stat().st_mode & 0o777 == 0o600
    return read_cast(path)


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_an_exec_is_recorded_and_audited_with_its_exit_code(setup: Setup, version: str) -> None:
    marker = f"{version}-{uuid.uuid4().hex[:6]}"
    command = ["sh", "-c", f"echo out {marker}; echo err >&2; printf 'caf\\303\\251\\n'; exit 3"]
    result = subprocess.run(
        setup.command(version, RECORDED, "exec", POD, "--", *command),
        capture_output=True,
        timeout=DEADLINE,
        env=setup.env(),
        check=False,
    )
    assert result.returncode == 3, result.stderr
    session = setup.session_of(command)
    assert session["exitCode"] == 3 and session["user"] == "admin", session
    assert session["cluster"] == RECORDED and session["pod"] == POD and session["tty"] is False
    assert session["namespace"] == setup.namespace
    protocol = str(session["protocol"])
    assert protocol.startswith("SPDY/3.1") if version == "1.27" else protocol == "v5.channel.k8s.io"
    assert int(str(session["bytesToClient"])) > len(result.stdout)
    cast = the_recording(setup, session)
    # stdout and stderr are both output (their order between pipes is the process's)
    output = cast.output()
    printed = (result.stdout + result.stderr).decode().splitlines()
    printed.remove("command terminated with exit code 3")  # kubectl's own line
    assert sorted(output.splitlines()) == sorted(printed)
    assert f"out {marker}" in output and "café" in output
    assert str(session["requestID"]) in str(session["recording"])


@pytest.mark.parametrize("version", ["1.27", "1.33"])
def test_a_terminal_session_plays_back_what_kubectl_showed(setup: Setup, version: str) -> None:
    marker = uuid.uuid4().hex[:8]
    command = ["sh", "-c", f"stty size; echo done {marker}"]
    status, shown = run_in_pty(
        setup.command(version, RECORDED, "exec", "-it", POD, "--", *command), setup.env(), 33, 101
    )
    assert status == 0, shown
    session = setup.session_of(command)
    assert session["tty"] is True and session["exitCode"] == 0
    cast = the_recording(setup, session)
    if version != "1.27":
        # kubectl 1.27 (SPDY) may send the terminal's size after this short
        # session's output and end, past the recording: its size is not checked
        assert (cast.header["width"], cast.header["height"]) == (101, 33)
    assert cast.header["env"]["TERM"] == "xterm-256color"
    assert cast.output().encode() == shown


def test_a_cluster_not_recorded_is_audited_only(setup: Setup) -> None:
    command = ["sh", "-c", "exit 0"]
    result = subprocess.run(
        setup.command("1.33", NOT_RECORDED, "exec", POD, "--", *command),
        capture_output=True,
        timeout=DEADLINE,
        env=setup.env(),
        check=False,
    )
    assert result.returncode == 0, result.stderr
    session = setup.session_of(command)
    assert session["exitCode"] == 0 and session["recording"] is None
    assert session["notRecorded"] == "the cluster is not recorded"


def test_an_unwritable_directory_refuses_the_session(setup: Setup) -> None:
    aside = setup.recordings.with_name("recordings-aside")
    setup.recordings.rename(aside)
    setup.recordings.write_text("")  # a file where the directory was: nothing can be created
    try:
        before = len(os.listdir(aside))
        result = subprocess.run(
            setup.command("1.33", RECORDED, "exec", POD, "--", "echo", "never"),
            capture_output=True,
            timeout=DEADLINE,
            env=setup.env(),
            check=False,
        )
        assert result.returncode != 0 and b"never" not in result.stdout
        stderr = result.stderr.decode()
        assert "the session recording directory is not writable" in stderr, stderr
        assert str(setup.recordings) not in stderr
        assert len(os.listdir(aside)) == before
        # loud in health and metrics (the refusal's worker is the only one)
        ca, cert, key = credentials_of(setup.kubeconfig, RECORDED)
        context = client_context(ca, cert, key)
        health = request(setup.gateway.port, "/readyz?verbose", context)
        assert health.status == 200, health.body  # every other request is still served
        assert b"[+]session-recording ok: warning: the session recording directory is not " in (
            health.body
        )
        metrics = request(setup.gateway.port, "/metrics", context).body.decode()
        assert f'karpor_recording_failures_total{{cluster="{RECORDED}"}}' in metrics
        assert "karpor_recording_directory_writable 0.0" in metrics
    finally:
        setup.recordings.unlink()
        aside.rename(setup.recordings)
    assert not [s for s in setup.sessions() if s["command"] == ["echo", "never"]]
