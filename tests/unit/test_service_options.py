"""``twistd karpor``: options, settings from the config file, and the service start."""

import json
from pathlib import Path
from typing import Any, cast

import pytest
from OpenSSL import SSL
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import ILogObserver, Logger, formatEvent
from twisted.python import usage

from karpor.app import state
from karpor.app.plugin import makeService
from karpor.app.processes import ProcessPoolService, worker_command
from karpor.app.service import (
    GatewayService,
    Options,
    Serving,
    resolve_settings,
)
from karpor.front.protocol import GatewayFactory
from karpor.net.tlstransport import TLSPort

GOOD = """\
apiVersion: cluster.karpor.io/v1beta1
kind: Cluster
metadata: {name: one}
spec:
  access:
    endpoint: https://127.0.0.1:6443
    insecure: true
    credential: {type: ServiceAccountToken, serviceAccountToken: tok-secret}
---
kind: Cluster
metadata: {name: BAD NAME}
"""


def parse(*argv: str, cwd: Path | None = None) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def test_flags(tmp_path):
    options = parse(
        "--clusters-dir", str(tmp_path), "--state-dir", str(tmp_path / "s"),
        "--port", "9443", "--host", "0.0.0.0", "--workers", "3",
    )  # fmt: skip
    settings = options.settings
    assert (settings.port, settings.host, settings.workers) == (9443, "0.0.0.0", 3)
    assert settings.clusters_dir == str(tmp_path)
    assert settings.state_dir == str(tmp_path / "s")


def test_config_file_and_flags_win(tmp_path):
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    config = tmp_path / "karpor.yaml"
    config.write_text("port: 7443\nhost: localhost\nclustersDir: clusters\nstateDir: state\n")
    settings = parse("--config", str(config), "--port", "6443").settings
    assert settings.port == 6443
    assert settings.host == "localhost"
    assert settings.clusters_dir == str(clusters)
    assert settings.state_dir == str(tmp_path / "state")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--clusters-dir and --state-dir required"),
        (["--clusters-dir", "."], "--state-dir required"),
        (["--clusters-dir", "/nonexistent", "--state-dir", "s"], "not a directory"),
        (["--clusters-dir", ".", "--state-dir", "s", "--port", "0"], "--port: must be a port"),
        (["--demo", "--clusters-dir", "."], "--demo writes its own clusters directory"),
        (["--config", "/nonexistent.yaml"], "cannot read"),
    ],
)
def test_usage_errors(argv, message):
    with pytest.raises(usage.UsageError, match=message):
        parse(*argv)


def test_bad_config_key(tmp_path):
    config = tmp_path / "karpor.yaml"
    config.write_text("prot: 1\n")
    with pytest.raises(usage.UsageError, match="prot: unknown key"):
        parse("--config", str(config))


def test_demo_defaults_to_karpor_demo_in_the_working_directory(tmp_path):
    settings = resolve_settings(None, {}, demo=True, cwd=str(tmp_path))
    assert settings.state_dir == str(tmp_path / "karpor-demo")


def test_make_service_builds_a_gateway_in_process_with_zero_workers(tmp_path):
    options = parse(
        "--clusters-dir", str(tmp_path), "--state-dir", str(tmp_path / "s"), "--workers", "0"
    )
    service = makeService(options)
    [gateway] = list(service)  # type: ignore[call-overload]
    assert isinstance(gateway, GatewayService)


def test_make_service_builds_a_supervisor_with_workers(tmp_path):
    options = parse(
        "--clusters-dir", str(tmp_path), "--state-dir", str(tmp_path / "s"), "--workers", "3"
    )
    service = makeService(options)
    [pool] = list(service)  # type: ignore[call-overload]
    assert isinstance(pool, ProcessPoolService)
    assert pool.settings.workers == 3
    argv = worker_command(options.worker_arguments(), python="py")(1, 7)
    assert argv[:8] == [
        "py",
        "-m",
        "karpor.app.gatewayworker",
        "--slot",
        "1",
        "--generation",
        "7",
        "--",
    ]
    assert "--workers" in argv and "--clusters-dir" in argv


def test_start_loads_listens_and_records(tmp_path, monkeypatch):
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    (clusters / "c.yaml").write_text(GOOD)
    settings = resolve_settings(
        None,
        {"clusters_dir": str(clusters), "state_dir": str(tmp_path / "state"), "port": "9443"},
        demo=False,
    )
    reactor = MemoryReactorClock()
    listened: list[tuple[Any, ...]] = []

    def listen(reactor: Any, port: int, factory: Any, context: Any, interface: str = "") -> Any:
        listened.append((reactor, port, factory, context, interface))
        return reactor.listenTCP(port, factory, interface=interface)

    monkeypatch.setattr(TLSPort, "listen", listen)
    seen: list[Serving] = []
    service = GatewayService(settings, reactor=reactor, on_serving=seen.append)
    events: list[dict[str, Any]] = []
    service.log = Logger(observer=cast(ILogObserver, events.append))
    service.startService()
    lines = [formatEvent(e) for e in events]
    assert any(
        "karpor gateway serving https://127.0.0.1:9443 on 127.0.0.1:9443: 1 cluster loaded" in line
        and "(3 problems logged above)" in line
        for line in lines
    ), lines
    problems = [line for line in lines if line.startswith(f"{clusters / 'c.yaml'}: document 2: ")]
    assert len(problems) == 3, lines
    assert not any("tok-secret" in line for line in lines)
    [(_, port, factory, context, interface)] = listened
    assert (port, interface) == (9443, "127.0.0.1")
    assert isinstance(context, SSL.Context) and context is service.tls_context
    assert list(service.clusters()) == ["one"]
    [serving] = seen
    assert serving.url == "https://127.0.0.1:9443"
    assert serving.clusters == 1
    record = json.loads((tmp_path / "state" / "gateway.json").read_text())
    assert record == {
        "clustersDir": str(clusters),
        "server": "https://127.0.0.1:9443",
        "hostSuffix": "clusters.karpor",
    }
    assert cast(GatewayFactory, factory).clusters() is service.registry.current.clusters
    service.stopService()
    assert state.read_record(tmp_path / "state") is not None
