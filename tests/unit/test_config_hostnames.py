"""Serving names: what may be a SAN, the ``servingNames`` and ``stateReadOnly`` settings."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.app.settings import SettingsError, merge, parse_settings
from karpor.config.hostnames import check_host, normal_host, parse_host_names
from karpor.config.validation import parse_value


@pytest.mark.parametrize(
    ("value", "normal"),
    [
        ("karpor.karpor.svc", "karpor.karpor.svc"),
        ("Karpor.Example.COM.", "karpor.example.com"),
        ("*.apps.example.com", "*.apps.example.com"),
        ("10.0.0.1", "10.0.0.1"),
        ("[::1]", "::1"),
        ("FD00:0::1", "fd00::1"),
        ("localhost", "localhost"),
    ],
)
def test_names_and_addresses(value: str, normal: str) -> None:
    assert check_host(value) == normal


@pytest.mark.parametrize(
    "value", ["", "a b", "-x.example", "x-.example", "a..b", "*", "a.*.b", "x_y", "é.example"]
)
def test_not_names(value: str) -> None:
    with pytest.raises(ValueError, match="not a DNS name or IP address"):
        check_host(value)


@given(st.ip_addresses())
def test_every_address_is_a_name_in_canonical_form(address: ipaddress._BaseAddress) -> None:
    assert check_host(str(address)) == str(address)
    assert normal_host(f"[{address}]") == str(address)


@given(st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?(\.[a-z0-9]{1,10}){0,3}", fullmatch=True))
def test_dns_names_pass_unchanged(name: str) -> None:
    assert check_host(name) == name


def test_parse_host_names() -> None:
    def parse(value: object) -> object:
        return parse_value(parse_host_names, value, "servingNames")

    assert parse(["a.example", "A.example", "10.0.0.1"]) == ("a.example", "10.0.0.1")
    assert parse("a.example, b.example,,") == ("a.example", "b.example")
    with pytest.raises(ValueError, match="must be a list of DNS names or IP addresses, not a"):
        parse({"a": 1})
    with pytest.raises(ValueError, match=r"^servingNames: .*not one with a number"):
        parse(["a", 1])


def test_settings_keys_and_flag() -> None:
    settings = parse_settings(
        "servingNames: [karpor.karpor.svc, karpor.karpor.svc.cluster.local]\nstateReadOnly: true\n",
        "/etc/karpor/karpor.yaml",
    )
    assert settings.serving_names == ("karpor.karpor.svc", "karpor.karpor.svc.cluster.local")
    assert settings.state_read_only is True
    flagged = merge(settings, {"serving_names": "gw.example,10.1.2.3"})
    assert flagged.serving_names == ("gw.example", "10.1.2.3")
    with pytest.raises(SettingsError) as error:
        parse_settings("servingNames: [bad name]\nstateReadOnly: yes please\n", "/k.yaml")
    assert error.value.problems == (
        "/k.yaml: servingNames: not a DNS name or IP address: 'bad name'",
        "/k.yaml: stateReadOnly: must be true or false, not a string",
    )
    with pytest.raises(SettingsError) as error:
        merge(settings, {"serving_names": "a b"})
    assert error.value.problems == ("--serving-names: not a DNS name or IP address: 'a b'",)
