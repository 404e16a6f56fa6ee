"""An agent's credentials file (placeholder until the agent-credentials work lands)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class AgentCredentialsError(ValueError):
    """A credentials file that cannot be used (``file: field: message``)."""


@dataclass(frozen=True)
class AgentCredentials:
    """What an agent needs to reach its gateway."""

    cluster: str
    server: str
    ca_pem: bytes = field(repr=False)
    certificate_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    tls_server_name: str | None = None


def load_agent_credentials(path: str) -> AgentCredentials:
    """Read the credentials file at ``path``."""
    try:
        doc: Any = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise AgentCredentialsError(f"{path}: cannot read: {exc}") from None
    if not isinstance(doc, dict):
        raise AgentCredentialsError(f"{path}: not a mapping")

    def text(key: str) -> str:
        value = doc.get(key)
        if not isinstance(value, str) or not value:
            raise AgentCredentialsError(f"{path}: {key}: required")
        return value

    def pem(key: str) -> bytes:
        return base64.b64decode(text(key))

    return AgentCredentials(
        cluster=text("cluster"),
        server=text("server"),
        ca_pem=pem("certificateAuthorityData"),
        certificate_pem=pem("clientCertificateData"),
        key_pem=pem("clientKeyData"),
        tls_server_name=doc.get("tlsServerName") or None,
    )
