"""Exec credential plugins: input, output, the per-cluster cache, the runners."""

from __future__ import annotations

import base64
import datetime
import json
import sys
import textwrap
from pathlib import Path
from typing import Any, cast

import pytest
from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from karpor.config.model import Cluster, ExecCredential
from karpor.upstream.execcredential import (
    EXEC_INFO_ENV,
    ExecCredentialCache,
    ExecPluginError,
    ExecResult,
    ProcessResult,
    SpawnRunner,
    _PluginProtocol,
    check_process,
    exec_info,
    parse_exec_output,
    plugin_environment,
    subprocess_runner,
)

V1 = "client.authentication.k8s.io/v1"
T0 = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC).timestamp()
SECRET = "tok-very-secret"
PLUGIN = ExecCredential(command="/usr/bin/get-token", args=("--x",), env=(("A", "1"),))


def output(status: dict[str, object], api_version: str = V1, kind: str = "ExecCredential") -> bytes:
    return json.dumps({"kind": kind, "apiVersion": api_version, "status": status}).encode()


def stamp(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the plugin's input and output -----------------------------------------------


def test_exec_info_and_environment():
    cluster = Cluster(
        "c", "https://10.0.0.1:6443", ca_pem=b"PEM", tls_server_name="k8s", insecure=True
    )
    assert exec_info(PLUGIN, cluster) == {
        "kind": "ExecCredential",
        "apiVersion": V1,
        "spec": {"interactive": False},
    }
    beta = ExecCredential(
        "x", api_version="client.authentication.k8s.io/v1beta1", provide_cluster_info=True
    )
    assert exec_info(beta, cluster, b"PEM")["spec"] == {
        "interactive": False,
        "cluster": {
            "server": "https://10.0.0.1:6443",
            "tls-server-name": "k8s",
            "insecure-skip-tls-verify": True,
            "certificate-authority-data": base64.b64encode(b"PEM").decode(),
        },
    }
    env = plugin_environment(PLUGIN, cluster, {"PATH": "/bin", "A": "0"})
    assert env["PATH"] == "/bin" and env["A"] == "1"
    assert json.loads(env[EXEC_INFO_ENV])["apiVersion"] == V1


def test_parse_token_and_certificate():
    result = parse_exec_output(
        output({"token": SECRET, "expirationTimestamp": stamp(T0)}), PLUGIN, "c"
    )
    assert result == ExecResult(token=SECRET, expiry=T0)
    assert SECRET not in repr(result)
    pair = parse_exec_output(
        output({"clientCertificateData": "CERT", "clientKeyData": "KEY"}), PLUGIN, "c"
    )
    assert (pair.client_certificate_pem, pair.client_key_pem, pair.expiry) == (
        b"CERT",
        b"KEY",
        None,
    )
    assert "KEY" not in repr(pair)


@pytest.mark.parametrize(
    ("stdout", "message"),
    [
        (b"not json " + SECRET.encode(), "returned invalid JSON (Expecting value)"),
        (b"[1]", "returned JSON that is not an object"),
        (output({"token": SECRET}, kind="Secret"), "an object whose kind is not ExecCredential"),
        (
            output({"token": SECRET}, api_version="client.authentication.k8s.io/v1beta1"),
            'returned API version "client.authentication.k8s.io/v1beta1"; '
            "it is configured to use client.authentication.k8s.io/v1",
        ),
        (json.dumps({"kind": "ExecCredential", "apiVersion": V1}).encode(), "returned no status"),
        (output({}), "neither a token nor a client certificate and key"),
        (output({"clientKeyData": SECRET}), "only a client certificate or key, not both"),
        (
            output({"token": SECRET, "expirationTimestamp": "soon"}),
            "expirationTimestamp that is not",
        ),
        (output({"token": SECRET + "\n"}), "a token with characters not allowed"),
    ],
)
def test_bad_output_names_the_cluster_never_the_secret(stdout, message):
    with pytest.raises(ExecPluginError) as info:
        parse_exec_output(stdout, PLUGIN, "eks-1")
    text = str(info.value)
    assert text.startswith('cluster "eks-1": exec plugin "get-token" ')
    assert message in text
    assert SECRET not in text and SECRET not in info.value.detail
    assert info.value.api_error().code == 502


def test_failed_process():
    result = ProcessResult(3, output({"token": SECRET}), b"credentials expired\n")
    with pytest.raises(ExecPluginError) as info:
        check_process(result, PLUGIN, "eks-1")
    assert str(info.value) == 'cluster "eks-1": exec plugin "get-token" failed (exit status 3)'
    assert info.value.detail == "credentials expired"
    with pytest.raises(ExecPluginError, match="killed by a signal"):
        check_process(ProcessResult(None), PLUGIN, "eks-1")
    with pytest.raises(ExecPluginError, match="did not finish within 60 s"):
        check_process(ProcessResult(None, stopped="did not finish within 60 s"), PLUGIN, "eks-1")


def test_process_protocol_collects_output():
    done: Deferred[ProcessResult] = Deferred()
    proto = _PluginProtocol(done, limit=10)
    proto.outReceived(b"{}")
    proto.errReceived(b"warn")
    proto.processEnded(Failure(error.ProcessDone(0)))
    results: list[ProcessResult] = []
    done.addCallback(results.append)
    assert results == [ProcessResult(0, b"{}", b"warn")]

    failed: Deferred[ProcessResult] = Deferred()
    proto = _PluginProtocol(failed, limit=4)
    proto.outReceived(b"12345")  # over the limit: stopped (no transport to signal here)
    proto.processEnded(Failure(error.ProcessTerminated(exitCode=None, signal=9)))
    failed.addCallback(results.append)
    assert results[1].stopped == "wrote more than 1 MiB of output"
    assert results[1].exit_code is None


# -- the cache with fake runs ------------------------------------------------------


class FakeRunner:
    """Records runs; each returns a Deferred the test fires."""

    def __init__(self) -> None:
        self.runs: list[Deferred[ProcessResult]] = []
        self.envs: list[dict[str, str]] = []

    def __call__(self, argv, env):
        self.envs.append(dict(env))
        d: Deferred[ProcessResult] = Deferred()
        self.runs.append(d)
        return d


def fake_cluster(name: str = "eks-1", **changes) -> Cluster:
    plugin = ExecCredential(command=sys.executable, **changes)
    return Cluster(name, "https://h", credential=plugin)


def collect(d: Deferred[Any]) -> list[Any]:
    out: list[Any] = []
    d.addBoth(out.append)
    return out


def test_concurrent_callers_share_one_run():
    clock = Clock()
    clock.advance(T0)
    runner = FakeRunner()
    cache = ExecCredentialCache(clock, runner, environ={})
    cluster = fake_cluster()
    first, second = collect(cache.get(cluster)), collect(cache.get(cluster))
    assert len(runner.runs) == 1 and first == second == []
    runner.runs[0].callback(
        ProcessResult(0, output({"token": "t1", "expirationTimestamp": stamp(T0 + 600)}))
    )
    assert first == second == [ExecResult("t1", expiry=T0 + 600)]
    assert collect(cache.get(cluster)) == first
    assert len(runner.runs) == 1
    other = collect(cache.get(fake_cluster("gke-1")))
    assert len(runner.runs) == 2 and other == []


def test_refresh_in_background_then_wait_once_expired():
    clock = Clock()
    clock.advance(T0)
    runner = FakeRunner()
    cache = ExecCredentialCache(clock, runner, refresh_margin=60, environ={})
    cluster = fake_cluster()
    collect(cache.get(cluster))
    runner.runs[0].callback(
        ProcessResult(0, output({"token": "t1", "expirationTimestamp": stamp(T0 + 300)}))
    )
    clock.advance(239)
    assert collect(cache.get(cluster))[0].token == "t1"
    assert len(runner.runs) == 1
    clock.advance(1)  # 60 s before expiry: a refresh starts, the old token is still served
    assert collect(cache.get(cluster))[0].token == "t1"
    assert collect(cache.get(cluster))[0].token == "t1"
    assert len(runner.runs) == 2
    clock.advance(60)  # expired, refresh still running: callers wait for it
    waiting = collect(cache.get(cluster))
    assert waiting == []
    runner.runs[1].callback(
        ProcessResult(0, output({"token": "t2", "expirationTimestamp": stamp(T0 + 900)}))
    )
    assert waiting[0].token == "t2"


def test_failure_is_shared_and_remembered_for_the_backoff():
    clock = Clock()
    runner = FakeRunner()
    cache = ExecCredentialCache(clock, runner, failure_backoff=5, environ={})
    cluster = fake_cluster()
    a, b = collect(cache.get(cluster)), collect(cache.get(cluster))
    runner.runs[0].callback(ProcessResult(1, output({"token": SECRET}), b"boom"))
    for got in (a, b):
        assert isinstance(got[0], Failure)
        got[0].trap(ExecPluginError)
        assert 'cluster "eks-1"' in str(got[0].value) and SECRET not in str(got[0].value)
    clock.advance(4)
    again = collect(cache.get(cluster))
    assert isinstance(again[0], Failure) and len(runner.runs) == 1
    again[0].trap(ExecPluginError)
    clock.advance(1)
    collect(cache.get(cluster))
    assert len(runner.runs) == 2


def test_no_expiry_kept_until_invalidated_and_definition_change_reruns():
    clock = Clock()
    runner = FakeRunner()
    cache = ExecCredentialCache(clock, runner, environ={})
    cluster = fake_cluster()
    collect(cache.get(cluster))
    runner.runs[0].callback(ProcessResult(0, output({"token": "t1"})))
    clock.advance(10**7)
    assert collect(cache.get(cluster))[0].token == "t1"
    cache.invalidate("eks-1")
    collect(cache.get(cluster))
    assert len(runner.runs) == 2
    runner.runs[1].callback(ProcessResult(0, output({"token": "t2"})))
    changed = fake_cluster(args=("--region", "x"))
    collect(cache.get(changed))
    assert len(runner.runs) == 3


def test_missing_command_and_unreadable_ca_fail_without_a_run(tmp_path):
    clock = Clock()
    runner = FakeRunner()
    cache = ExecCredentialCache(clock, runner, environ={"PATH": str(tmp_path)})
    missing = Cluster(
        "aks-1",
        "https://h",
        credential=ExecCredential("kubelogin", install_hint="install kubelogin"),
    )
    (got,) = collect(cache.get(missing))
    got.trap(ExecPluginError)
    assert str(got.value) == 'cluster "aks-1": exec plugin "kubelogin" not found'
    assert got.value.detail == "install kubelogin"
    no_ca = Cluster(
        "gke-1",
        "https://h",
        ca_file=str(tmp_path / "none.crt"),
        credential=ExecCredential(sys.executable, provide_cluster_info=True),
    )
    (got,) = collect(cache.get(no_ca))
    got.trap(ExecPluginError)
    assert "cannot read the CA file" in str(got.value)
    assert runner.runs == []


# -- a real plugin, run through the same code path by subprocess ---------------------


def write_plugin(tmp_path: Path) -> Path:
    script = tmp_path / "plugin.py"
    script.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            """
            import json, os, sys
            here = os.path.dirname(os.path.abspath(__file__))
            counter = os.path.join(here, "runs")
            runs = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
            open(counter, "w").write(str(runs))
            info = os.environ["KUBERNETES_EXEC_INFO"]
            open(os.path.join(here, "exec-info.json"), "w").write(info)
            if os.environ.get("PLUGIN_FAIL"):
                print("tok-leaked-on-failure")
                print("the plugin failed", file=sys.stderr)
                sys.exit(2)
            expiry = open(os.path.join(here, "expiry")).read().strip()
            print(json.dumps({
                "kind": "ExecCredential",
                "apiVersion": "client.authentication.k8s.io/v1",
                "status": {"token": "tok-%d" % runs, "expirationTimestamp": expiry},
            }))
            """
        )
    )
    script.chmod(0o755)
    return script


def test_real_plugin_cached_until_near_expiry(tmp_path):
    script = write_plugin(tmp_path)
    (tmp_path / "expiry").write_text(stamp(T0 + 120))
    clock = Clock()
    clock.advance(T0)
    cache = ExecCredentialCache(clock, subprocess_runner(timeout=120), refresh_margin=30)
    cluster = Cluster(
        "eks-1",
        "https://10.0.0.1",
        ca_pem=b"CA",
        credential=ExecCredential(
            str(script), env=(("PLUGIN_FAIL", ""),), provide_cluster_info=True
        ),
    )

    def token() -> str | None:
        (result,) = collect(cache.get(cluster))
        assert isinstance(result, ExecResult), result
        return result.token

    runs = tmp_path / "runs"
    assert token() == "tok-1"
    info = json.loads((tmp_path / "exec-info.json").read_text())
    assert info["spec"] == {
        "interactive": False,
        "cluster": {"server": "https://10.0.0.1", "certificate-authority-data": "Q0E="},
    }
    clock.advance(89)
    assert token() == "tok-1"
    assert runs.read_text() == "1"
    (tmp_path / "expiry").write_text(stamp(T0 + 600))
    clock.advance(1)  # 30 s before expiry: refreshed (synchronously with this runner)
    assert token() == "tok-1"
    assert runs.read_text() == "2"
    assert token() == "tok-2"
    assert runs.read_text() == "2"


def test_real_plugin_failure_names_the_cluster(tmp_path):
    script = write_plugin(tmp_path)
    cache = ExecCredentialCache(Clock(), subprocess_runner(timeout=120))
    cluster = Cluster(
        "eks-2", "https://h", credential=ExecCredential(str(script), env=(("PLUGIN_FAIL", "1"),))
    )
    (got,) = collect(cache.get(cluster))
    got.trap(ExecPluginError)
    assert str(got.value) == 'cluster "eks-2": exec plugin "plugin.py" failed (exit status 2)'
    assert got.value.detail == "the plugin failed"
    assert "tok-leaked" not in str(got.value) + got.value.detail


class FakeProcessReactor:
    """Records spawnProcess calls; the test plays the process."""

    def __init__(self) -> None:
        self.spawned: list[tuple[Any, ...]] = []
        self.signals: list[str] = []

    def spawnProcess(self, proto, executable, args, env=None, **kwargs):
        reactor = self

        class Transport:
            def closeStdin(self):
                pass

            def signalProcess(self, name):
                reactor.signals.append(name)

        proto.makeConnection(Transport())
        self.spawned.append((proto, executable, args, env, kwargs))
        return proto.transport


def test_spawn_runner_kills_a_plugin_that_hangs():
    reactor, clock = FakeProcessReactor(), Clock()
    runner = SpawnRunner(cast(IReactorProcess, reactor), clock, timeout=10)
    results = collect(runner(["/bin/plugin", "a"], {"K": "v"}))
    (proto, executable, args, env, _) = reactor.spawned[0]
    assert (executable, args, env) == ("/bin/plugin", ["/bin/plugin", "a"], {"K": "v"})
    clock.advance(10)
    assert reactor.signals == ["KILL"]
    proto.processEnded(Failure(error.ProcessTerminated(exitCode=None, signal=9)))
    assert results == [ProcessResult(None, b"", b"", "did not finish within 10 s")]

    quick = collect(runner(["/bin/plugin"], {}))
    proto = reactor.spawned[1][0]
    proto.outReceived(b"out")
    proto.processEnded(Failure(error.ProcessDone(0)))
    assert quick == [ProcessResult(0, b"out", b"")]
    assert clock.getDelayedCalls() == []
