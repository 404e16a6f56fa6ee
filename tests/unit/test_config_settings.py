"""Gateway settings: the ``--config`` file and flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.app.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    Settings,
    SettingsError,
    default_workers,
    load_settings,
    merge,
    parse_settings,
)
from karpor.config.validation import Checker, Key, parse_section, section_parser


def problems(text: str) -> list[str]:
    with pytest.raises(SettingsError) as info:
        parse_settings(text, "/etc/karpor/karpor.yaml")
    return list(info.value.problems)


def test_defaults() -> None:
    s = parse_settings("", "/etc/karpor.yaml")
    assert (s.port, s.host, s.workers) == (DEFAULT_PORT, DEFAULT_HOST, default_workers())
    assert (s.clusters_dir, s.state_dir, s.source) == (None, None, "/etc/karpor.yaml")
    assert DEFAULT_HOST == "127.0.0.1"
    assert default_workers() >= 1


def test_every_key() -> None:
    text = (
        "port: 9443\nhost: 0.0.0.0\nworkers: 3\nclustersDir: clusters\nstateDir: /var/lib/karpor\n"
        "drainTimeout: 5\nlogFormat: json\n"
    )
    s = parse_settings(text, "/etc/karpor/karpor.yaml")
    assert s == Settings(
        port=9443,
        host="0.0.0.0",
        workers=3,
        clusters_dir="/etc/karpor/clusters",
        state_dir="/var/lib/karpor",
        drain_timeout=5.0,
        log_format="json",
        source="/etc/karpor/karpor.yaml",
    )


def test_errors_name_file_and_key() -> None:
    assert problems("port: 0\nworkers: many\nclusterDir: x\nhost: ''\n") == [
        "/etc/karpor/karpor.yaml: port: must be a port number from 1 to 65535",
        "/etc/karpor/karpor.yaml: workers: must be an integer, not a string",
        "/etc/karpor/karpor.yaml: clusterDir: unknown key (did you mean clustersDir?)",
        "/etc/karpor/karpor.yaml: host: must be an address or host name",
    ]
    assert problems("- a list\n") == ["/etc/karpor/karpor.yaml: must be a mapping, not a list"]
    assert problems("port: [\n") == [
        "/etc/karpor/karpor.yaml: yaml: did not find expected node content (line 2)"
    ]
    assert problems("port: true\n") == [
        "/etc/karpor/karpor.yaml: port: must be an integer, not a boolean"
    ]


def test_flags_win(tmp_path: Path) -> None:
    f = tmp_path / "karpor.yaml"
    f.write_text("port: 9443\nhost: 0.0.0.0\nstateDir: state\n")
    from_file = load_settings(str(f))
    assert from_file.state_dir == str(tmp_path / "state")
    s = merge(from_file, {"port": "10443", "host": None, "clusters_dir": "c", "workers": 2})
    assert (s.port, s.host, s.workers, s.clusters_dir, s.state_dir) == (
        10443,
        "0.0.0.0",
        2,
        "c",
        str(tmp_path / "state"),
    )
    with pytest.raises(SettingsError) as info:
        merge(from_file, {"port": "http", "workers": "-1", "colour": "blue"})
    assert info.value.problems == (
        "--port: must be an integer, not a string",
        "--workers: must be an integer, not a string",
        "colour: not a setting",
    )


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"nope\.yaml: cannot read: No such file"):
        load_settings(str(tmp_path / "nope.yaml"))


@given(port=st.integers(-10, 70000))
def test_port_range(port: int) -> None:
    if 1 <= port <= 65535:
        assert parse_settings(f"port: {port}", "f").port == port
    else:
        assert problems(f"port: {port}") == [
            "/etc/karpor/karpor.yaml: port: must be a port number from 1 to 65535"
        ]


def test_a_later_section_slots_in() -> None:
    """How a nested section (say ``auditLog``) is declared and parsed."""

    @dataclass(frozen=True)
    class AuditLog:
        path: str = ""
        max_size: int = 100

    def size(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> int | None:
        number = c.integer(obj, key, path)
        if number is not None and number < 1:
            c.error(f"{path}.{key}", "must be at least 1")
            return None
        return number

    audit_keys = (
        Key("path", "path", Checker.path, "--audit-path"),
        Key("maxSize", "max_size", size, "--audit-max-size"),
    )
    keys = (Key("auditLog", "audit_log", section_parser(AuditLog, audit_keys), "--audit-log"),)
    c = Checker("/var/log")
    assert parse_section(c, {"auditLog": {"path": "a", "maxSize": 5}}, keys, "") == {
        "audit_log": AuditLog("/var/log/a", 5)
    }
    assert c.errors == []
    parse_section(c, {"auditLog": {"path": 1, "colour": 2, "maxSize": 0}}, keys, "")
    assert c.lines("karpor.yaml") == [
        "karpor.yaml: auditLog.path: must be a path, not a number",
        "karpor.yaml: auditLog.colour: unknown key (known: path, maxSize)",
        "karpor.yaml: auditLog.maxSize: must be at least 1",
    ]


def test_session_drain_timeout() -> None:
    """How long a rolled worker keeps its upgraded sessions: an hour by default."""
    assert parse_settings("", "f").session_drain_timeout == 3600.0
    s = parse_settings("sessionDrainTimeout: 90\n", "f")
    assert s.session_drain_timeout == 90.0
    assert merge(s, {"session_drain_timeout": "15"}).session_drain_timeout == 15.0
    assert problems("sessionDrainTimeout: 0\n") == [
        "/etc/karpor/karpor.yaml: sessionDrainTimeout: must be a positive number of seconds, "
        "not a number"
    ]


def test_host_routing_suffix() -> None:
    assert parse_settings("", "k.yaml").host_routing.suffix == "clusters.karpor"
    settings = parse_settings("hostRouting: {suffix: Kube.Example.}\n", "k.yaml")
    assert settings.host_routing.suffix == "kube.example"
    assert not parse_settings("hostRouting: {suffix: ''}\n", "k.yaml").host_routing.enabled
    assert problems("hostRouting: {suffix: '*.x'}\n") == [
        "/etc/karpor/karpor.yaml: hostRouting.suffix: must be a DNS name "
        "(clusters are NAME.<suffix>) or empty, not '*.x'"
    ]
    assert problems("hostRouting: {suffix: 3}\n")[0].startswith(
        "/etc/karpor/karpor.yaml: hostRouting.suffix: "
    )
