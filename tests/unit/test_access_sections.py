"""The auditLog, authentication and authorization settings sections."""

from __future__ import annotations

from typing import Any

import pytest

from karpor.auth.requestheader import RequestHeaderConfig
from karpor.auth.sections import (
    AuditLogSettings,
    AuthenticationSettings,
    AuthorizationSettings,
    RequestHeaderSettings,
    parse_audit_log,
    parse_authentication,
    parse_authorization,
)
from karpor.config.validation import FieldParser, FileProblems, parse_value


def parse(parser: FieldParser, value: Any, base_dir: str, key: str = "authentication") -> Any:
    """``value`` read as the settings key ``key`` by ``parser``."""
    return parse_value(parser, value, key, base_dir)


def test_audit_log():
    assert parse(parse_audit_log, "-", "/etc/karpor") == AuditLogSettings("-")
    assert parse(parse_audit_log, "audit.jsonl", "/var/log") == AuditLogSettings(
        "/var/log/audit.jsonl"
    )
    assert parse(parse_audit_log, "/abs/a.jsonl", "/var/log") == AuditLogSettings("/abs/a.jsonl")
    with pytest.raises(ValueError, match=r"^auditLog: must be a path"):
        parse(parse_audit_log, 3, "/", "auditLog")


def test_authentication_full_and_defaults():
    value = {
        "clientCertificates": False,
        "tokenFile": "tokens.csv",
        "requestHeader": {
            "clientCAFile": "fp-ca.crt",
            "allowedNames": ["front-proxy-client"],
            "usernameHeaders": ["X-Remote-User"],
            "groupHeaders": ["X-Remote-Group"],
            "extraHeadersPrefix": ["X-Remote-Extra-"],
        },
        "anonymous": True,
    }
    parsed = parse(parse_authentication, value, "/etc/karpor")
    assert parsed == AuthenticationSettings(
        client_certificates=False,
        token_file="/etc/karpor/tokens.csv",
        request_header=RequestHeaderSettings(
            client_ca_file="/etc/karpor/fp-ca.crt", allowed_names=("front-proxy-client",)
        ),
        anonymous=True,
    )
    assert parsed.request_header is not None
    assert parsed.request_header.config == RequestHeaderConfig(
        allowed_names=("front-proxy-client",)
    )
    assert parse(parse_authentication, {}, "/") == AuthenticationSettings()
    assert parse(parse_authorization, {"policyFile": "p.yaml"}, "/e") == AuthorizationSettings(
        "/e/p.yaml"
    )


def test_authentication_errors_name_every_field():
    with pytest.raises(FileProblems) as info:
        parse(
            parse_authentication,
            {"anonymous": "yes", "tokenFle": "x", "requestHeader": {"usernameHeaders": "X"}},
            "/",
        )
    assert info.value.problems == (
        "authentication.anonymous: must be true or false, not a string",
        "authentication.tokenFle: unknown key (did you mean tokenFile?)",
        "authentication.requestHeader.usernameHeaders: must be a list of strings, not a string",
    )
    with pytest.raises(ValueError, match=r"requestHeader\.clientCAFile: required"):
        parse(parse_authentication, {"requestHeader": {}}, "/")
    with pytest.raises(ValueError, match=r"groupHeaders\[0\]: not a header name"):
        parse(
            parse_authentication,
            {"requestHeader": {"clientCAFile": "c", "groupHeaders": ["X Y"]}},
            "/",
        )
    with pytest.raises(ValueError, match=r"^authorization: must be a mapping"):
        parse(parse_authorization, ["x"], "/", "authorization")
