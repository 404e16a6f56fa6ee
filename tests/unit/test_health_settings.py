"""The ``healthProbe`` settings: the file section, the twistd flags, their
errors, and the flags reaching the worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.python import usage

from karpor.app.service import Options
from karpor.app.settings import Settings, SettingsError, merge, parse_settings
from karpor.health.probe import ProbeSettings

SOURCE = "/etc/karpor/karpor.yaml"


def problems(text: str) -> list[str]:
    with pytest.raises(SettingsError) as info:
        parse_settings(text, SOURCE)
    return list(info.value.problems)


def options(*argv: str, tmp_path: Path) -> Options:
    parsed = Options()
    parsed.parseOptions(["--clusters-dir", str(tmp_path), "--state-dir", "s", *argv])
    return parsed


def test_defaults_and_the_file_section() -> None:
    assert Settings().health_probe == ProbeSettings(interval=10, timeout=4, fail_fast=True)
    text = "healthProbe:\n  interval: 30\n  timeout: 2.5\n  failFast: false\n"
    assert parse_settings(text, SOURCE).health_probe == ProbeSettings(30, 2.5, False)
    assert parse_settings("healthProbe: {interval: 20}\n", SOURCE).health_probe == (
        ProbeSettings(20, 4, True)
    )


def test_file_errors_name_the_file_and_the_field() -> None:
    assert problems("healthProbe: {interval: 5, timeout: 5}\n") == [
        f"{SOURCE}: healthProbe: timeout (5s) must be less than interval (5s)"
    ]
    assert problems("healthProbe: {intervall: 5, failFast: maybe}\n") == [
        f"{SOURCE}: healthProbe.intervall: unknown key (did you mean interval?)",
        f"{SOURCE}: healthProbe.failFast: must be true or false, not a string",
    ]
    assert problems("healthProbe: {interval: -1}\n") == [
        f"{SOURCE}: healthProbe.interval: must be a positive number of seconds, not a number"
    ]
    assert problems("healthProbe: 10\n") == [
        f"{SOURCE}: healthProbe: must be a mapping, not a number"
    ]


def test_flags_override_one_field_each(tmp_path: Path) -> None:
    config = tmp_path / "karpor.yaml"
    config.write_text("healthProbe: {interval: 30, timeout: 3}\n")
    parsed = options(
        "--config", str(config), "--health-probe-timeout", "6", "--health-fail-fast", "false",
        tmp_path=tmp_path,
    )  # fmt: skip
    # the file's interval stays; the flags set the timeout and "try anyway"
    assert parsed.settings.health_probe == ProbeSettings(30, 6, False)
    # the workers get the same flags
    args = parsed.worker_arguments()
    assert args[args.index("--health-probe-timeout") + 1] == "6"
    assert args[args.index("--health-fail-fast") + 1] == "false"
    assert "--health-probe-interval" not in args


def test_flag_errors(tmp_path: Path) -> None:
    with pytest.raises(usage.UsageError, match="--health-probe-interval: must be a positive"):
        options("--health-probe-interval", "soon", tmp_path=tmp_path)
    with pytest.raises(usage.UsageError, match="--health-fail-fast: must be true or false"):
        options("--health-fail-fast", "yes", tmp_path=tmp_path)
    with pytest.raises(
        usage.UsageError,
        match=r"--health-probe-timeout: timeout \(12s\) must be less than interval \(10s\)",
    ):
        options("--health-probe-timeout", "12", tmp_path=tmp_path)
    with pytest.raises(SettingsError, match=r"health_probe\.colour: not a setting"):
        merge(Settings(), {"health_probe.colour": "blue"})


@given(interval=st.floats(0.01, 1e6), timeout=st.floats(0.01, 1e6))
def test_the_timeout_is_below_the_interval(interval: float, timeout: float) -> None:
    text = f"healthProbe: {{interval: {interval!r}, timeout: {timeout!r}}}\n"
    if timeout < interval:
        parsed = parse_settings(text, SOURCE).health_probe
        assert (parsed.interval, parsed.timeout) == (interval, timeout)
        assert 0 < parsed.retry_interval <= parsed.interval
    else:
        assert problems(text) == [
            f"{SOURCE}: healthProbe: timeout ({timeout:g}s) must be less than "
            f"interval ({interval:g}s)"
        ]
