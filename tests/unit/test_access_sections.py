"""The auditLog, authentication and authorization settings sections."""

from __future__ import annotations

import pytest

from karpor.auth.requestheader import RequestHeaderConfig
from karpor.auth.sections import (
    AuthenticationSettings,
    AuthorizationSettings,
    RequestHeaderSettings,
    parse_audit_log,
    parse_authentication,
    parse_authorization,
)


def test_audit_log():
    assert parse_audit_log("-", "/etc/karpor") == "-"
    assert parse_audit_log("audit.jsonl", "/var/log") == "/var/log/audit.jsonl"
    assert parse_audit_log("/abs/a.jsonl", "/var/log") == "/abs/a.jsonl"
    with pytest.raises(ValueError, match="must be a path"):
        parse_audit_log(3, "/")


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
    parsed = parse_authentication(value, "/etc/karpor")
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
    assert parse_authentication({}, "/") == AuthenticationSettings()
    assert parse_authorization({"policyFile": "p.yaml"}, "/e") == AuthorizationSettings("/e/p.yaml")


def test_authentication_errors_name_every_field():
    with pytest.raises(ValueError) as info:
        parse_authentication(
            {"anonymous": "yes", "tokenFle": "x", "requestHeader": {"usernameHeaders": "X"}}, "/"
        )
    assert str(info.value) == (
        "anonymous: must be true or false, not a string; "
        "tokenFle: unknown key (known: clientCertificates, tokenFile, requestHeader, anonymous); "
        "requestHeader: usernameHeaders: must be a list of strings, not a string"
    )
    with pytest.raises(ValueError, match="requestHeader: clientCAFile: required"):
        parse_authentication({"requestHeader": {}}, "/")
    with pytest.raises(ValueError, match="not a header name"):
        parse_authentication({"requestHeader": {"clientCAFile": "c", "groupHeaders": ["X Y"]}}, "/")
    with pytest.raises(ValueError, match="must be a mapping"):
        parse_authorization(["x"], "/")
