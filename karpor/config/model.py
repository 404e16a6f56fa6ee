"""The cluster model: what the gateway knows of one cluster.

Parsing (``karpor.config.clusters``) produces these; the registry holds
them; the upstream pool builds TLS contexts and credentials from them.
Secret fields are excluded from ``repr`` so they never reach a log line.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class TokenCredential:
    """A bearer token, inline or read from ``token_file`` (re-read on change)."""

    token: str | None = field(default=None, repr=False)
    token_file: str | None = None


@dataclass(frozen=True)
class X509Credential:
    """A client certificate and key, inline PEM or by file."""

    certificate: bytes | None = field(default=None, repr=False)
    private_key: bytes | None = field(default=None, repr=False)
    certificate_file: str | None = None
    private_key_file: str | None = None


@dataclass(frozen=True)
class ExecCredential:
    """A client-go exec credential plugin (``client.authentication.k8s.io``)."""

    command: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    api_version: str = "client.authentication.k8s.io/v1"
    install_hint: str = ""
    provide_cluster_info: bool = False
    interactive_mode: str = "Never"


Credential = TokenCredential | X509Credential | ExecCredential | None


@dataclass(frozen=True)
class Cluster:
    """One cluster: where it is, how to trust it, how to authenticate to it."""

    name: str
    endpoint: str
    credential: Credential = None
    ca_pem: bytes | None = field(default=None, repr=False)
    ca_file: str | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    impersonate: bool = False
    labels: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    annotations: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    provider: str = ""
    display_name: str = ""
    description: str = ""
    #: reached only through an agent's tunnel (``spec.access.tunnel``; no endpoint)
    tunnel: bool = False
    #: where the definition came from: file path and 1-based document number
    source: str = ""
    document: int = 0
    #: RFC 3339 time the definition was first seen (the file's mtime)
    created: str = ""

    def files(self) -> tuple[str, ...]:
        """The files this definition names (CA, token, certificate, key):
        their contents are read when connecting, and re-read when they change."""
        named = [self.ca_file]
        credential = self.credential
        if isinstance(credential, TokenCredential):
            named.append(credential.token_file)
        elif isinstance(credential, X509Credential):
            named += [credential.certificate_file, credential.private_key_file]
        return tuple(f for f in named if f)
