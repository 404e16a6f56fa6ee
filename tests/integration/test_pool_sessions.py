"""Upgraded sessions across a drain (issue 14 item 8), with real kubectls.

kubectl 1.27 speaks SPDY, 1.33 WebSocket (``v5.channel.k8s.io``).  On
SIGTERM a session still running at the drain deadline is cut, and kubectl
must see a failure (a ``Failure`` on the error stream / channel: non-zero
exit, a message), never exit 0 with its output cut short.  On SIGHUP a
session keeps running on the old worker, past the drain deadline, until it
ends (bounded by ``--session-drain-timeout``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.gateway import GatewayRun, start_gateway, write_kubeconfig
from support.kubectl import Kubectl
from support.sim import SimRun
from support.waits import wait_for

pytestmark = pytest.mark.kubectl

CLUSTER = "sim-1"
POD = "box"
VERSIONS = ("1.27", "1.33")  # SPDY, WebSocket
DEADLINE = 60.0


@dataclass
class Setup:
    sim: SimRun
    namespace: str
    bins: dict[str, Path]
    base: Path


@pytest.fixture(scope="module")
def setup(
    sim_clusters: SimRun, kubectl_bins: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    missing = [v for v in VERSIONS if v not in kubectl_bins]
    if missing:
        pytest.skip(f"kubectl {missing} not installed in /usr/lib/google-cloud-sdk/bin")
    sim = sim_clusters[CLUSTER]
    namespace = f"sessions-{uuid.uuid4().hex[:8]}"
    admin = Kubectl(kubectl_bins["1.33"], sim.kubeconfig, "1.33")
    admin.out("create", "namespace", namespace)
    admin.out("run", POD, "-n", namespace, "--image=busybox", "--restart=Never")
    admin.out("wait", "-n", namespace, "--for=condition=Ready", f"pod/{POD}", "--timeout=30s")
    try:
        yield Setup(sim_clusters, namespace, kubectl_bins, tmp_path_factory.mktemp("sessions"))
    finally:
        admin.run("delete", "namespace", namespace, "--wait=false", check=False)


def gateway(setup: Setup, name: str, *options: str) -> tuple[GatewayRun, Path]:
    base = setup.base / name
    clusters = base / "clusters"
    clusters.mkdir(parents=True)
    shutil.copy(setup.sim[CLUSTER].cluster_file, clusters / f"{CLUSTER}.yaml")
    run = start_gateway(clusters, base / "state", "--workers", "1", *options)
    return run, write_kubeconfig(run.state_dir, base / "admin.kubeconfig", run.url)


def kubectl_exec(
    setup: Setup, version: str, kubeconfig: Path, script: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            str(setup.bins[version]),
            "--kubeconfig",
            str(kubeconfig),
            "--context",
            CLUSTER,
            "-n",
            setup.namespace,
            "exec",
            POD,
            "--",
            "sh",
            "-c",
            script,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "KUBECACHEDIR": str(kubeconfig.parent / ".kube-cache")},
    )


def started(proc: subprocess.Popen[str]) -> None:
    """Wait for the session's first line (the exec runs)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "started\n", (line, proc.poll(), proc.stderr and proc.stderr.read())


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    return proc.returncode, out, err


def test_sigterm_cuts_sessions_so_kubectl_fails(setup: Setup) -> None:
    run, kubeconfig = gateway(setup, "term", "--drain-timeout", "1")
    procs = {}
    try:
        for version in VERSIONS:
            procs[version] = kubectl_exec(
                setup, version, kubeconfig, "echo started; sleep 30; echo finished"
            )
        for proc in procs.values():
            started(proc)
        os.kill(run.pid, signal.SIGTERM)
        results = {version: finish(proc) for version, proc in procs.items()}
        assert run.process.popen.wait(timeout=30) == 0, run.process.output[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        run.stop()
    for version, (code, out, err) in results.items():
        assert code != 0, (version, out, err)
        assert "finished" not in out
        # the Failure Status on the error stream (SPDY) / channel (WebSocket)
        assert "error: the gateway is shutting down" in err, (version, err)


def test_sighup_lets_sessions_finish_on_the_old_worker(setup: Setup) -> None:
    run, kubeconfig = gateway(setup, "hup", "--drain-timeout", "1", "--session-drain-timeout", "60")
    procs = {}
    try:
        old = run.worker_pids()
        for version in VERSIONS:
            procs[version] = kubectl_exec(
                setup, version, kubeconfig, "echo started; sleep 4; echo finished"
            )
        for proc in procs.values():
            started(proc)
        os.kill(run.pid, signal.SIGHUP)
        results = {version: finish(proc) for version, proc in procs.items()}
        # the old worker served the sessions to their end, past its drain deadline
        assert "worker ready: slot 0" in run.process.output
        assert set(old) & {int(p) for p in _pids_exited(run)}, run.process.output[-3000:]
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
        assert run.stop() == 0, run.process.output[-3000:]
    for version, (code, out, err) in results.items():
        # ("started" was read already)
        assert (code, out) == (0, "finished\n"), (version, err)


def _pids_exited(run: GatewayRun, patience: float = 10.0) -> list[str]:
    """The pids of workers that exited after draining (waits for one)."""

    def exited() -> list[str]:
        return [
            line.split(" pid ")[1].split()[0]
            for line in run.process.lines
            if "worker exited:" in line and " pid " in line
        ]

    return wait_for(exited, patience, "a worker exiting", detail=lambda: run.process.output[-3000:])


def test_sigterm_during_a_roll_cuts_the_old_workers_session(setup: Setup) -> None:
    """A session kept by a worker draining after SIGHUP is cut at the stop's
    drain deadline (not at its own hour), as a failure kubectl reports."""
    run, kubeconfig = gateway(setup, "hup-term", "--drain-timeout", "1")
    proc = kubectl_exec(setup, "1.27", kubeconfig, "echo started; sleep 30; echo finished")
    try:
        started(proc)
        os.kill(run.pid, signal.SIGHUP)
        run.process.wait_for_line(r"worker draining: slot 0")
        # not a wait: the session must outlive the drain deadline (1 s) set
        # above, and nothing happens at that deadline to wait for
        time.sleep(1.5)
        assert proc.poll() is None
        os.kill(run.pid, signal.SIGTERM)
        code, out, err = finish(proc)
        assert run.process.popen.wait(timeout=30) == 0, run.process.output[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        run.stop()
    assert code != 0 and "finished" not in out
    assert "shutting down" in err, err
