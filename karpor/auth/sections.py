"""The access sections of the settings file: ``auditLog``, ``authentication``, ``authorization``.

::

    auditLog: /var/log/karpor/audit.jsonl      # "-" for standard output
    authentication:
      clientCertificates: true                 # default true
      tokenFile: /etc/karpor/tokens.csv
      requestHeader:
        clientCAFile: /etc/karpor/front-proxy-ca.crt     # required (or fromCluster)
        allowedNames: [front-proxy-client]               # default []: any CN
        usernameHeaders: [X-Remote-User]                 # the defaults shown
        groupHeaders: [X-Remote-Group]
        extraHeadersPrefix: [X-Remote-Extra-]
        uidHeaders: []
      anonymous: false
    authorization:
      policyFile: /etc/karpor/policy.yaml

In a pod serving an aggregated ``APIService``, the host cluster publishes the
front-proxy CA, allowed names and header names in the ConfigMap
``kube-system/extension-apiserver-authentication``; ``fromCluster`` reads
them from there instead (:mod:`karpor.auth.frontproxy`), and no other
``requestHeader`` key may be given::

    authentication:
      requestHeader:
        fromCluster: true          # or a mapping, for tests and unusual setups:
        # fromCluster:
        #   server: https://10.96.0.1:443    # default: $KUBERNETES_SERVICE_HOST:_PORT
        #   tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token  # defaults
        #   caFile: /var/run/secrets/kubernetes.io/serviceaccount/ca.crt
        #   refreshInterval: 60              # seconds between re-reads

The ConfigMap is read by :mod:`karpor.auth.frontproxysource`.

:func:`parse_audit_log`, :func:`parse_authentication` and
:func:`parse_authorization` are :class:`karpor.app.settings.Key` parsers
(``parse(value, base_dir)``, raising :class:`ValueError` with the message;
nested problems read ``requestHeader.clientCAFile: required``), to be listed
in :data:`karpor.app.settings.KEYS`.  This module does not import
``karpor.app.settings`` (which imports it).  Relative paths resolve
against ``base_dir`` (the settings file's directory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from karpor.auth.frontproxy import (
    DEFAULT_REFRESH_INTERVAL,
    SERVICE_ACCOUNT_CA_FILE,
    SERVICE_ACCOUNT_TOKEN_FILE,
)
from karpor.auth.requestheader import RequestHeaderConfig
from karpor.config.clusters import describe, quote


@dataclass(frozen=True)
class FromClusterSettings:
    """``authentication.requestHeader.fromCluster``: where the host cluster is."""

    #: the host apiserver's URL (``None``: from ``KUBERNETES_SERVICE_HOST``/``_PORT``)
    server: str | None = None
    token_file: str = SERVICE_ACCOUNT_TOKEN_FILE
    ca_file: str = SERVICE_ACCOUNT_CA_FILE
    #: seconds between re-reads of the ConfigMap
    refresh_interval: float = DEFAULT_REFRESH_INTERVAL


@dataclass(frozen=True)
class RequestHeaderSettings:
    """``authentication.requestHeader``: front-proxy authentication."""

    client_ca_file: str = ""
    allowed_names: tuple[str, ...] = ()
    username_headers: tuple[str, ...] = ("X-Remote-User",)
    group_headers: tuple[str, ...] = ("X-Remote-Group",)
    extra_headers_prefix: tuple[str, ...] = ("X-Remote-Extra-",)
    uid_headers: tuple[str, ...] = ()
    #: read the CA, names and headers from the host cluster (``None``: from these settings)
    from_cluster: FromClusterSettings | None = None

    @property
    def config(self) -> RequestHeaderConfig:
        """The header-reading part, for :func:`karpor.auth.requestheader.authenticate_headers`."""
        return RequestHeaderConfig(
            allowed_names=self.allowed_names,
            username_headers=self.username_headers,
            group_headers=self.group_headers,
            extra_headers_prefix=self.extra_headers_prefix,
            uid_headers=self.uid_headers,
        )


@dataclass(frozen=True)
class AuthenticationSettings:
    """``authentication``: which ways of proving who one is the gateway accepts."""

    client_certificates: bool = True
    token_file: str | None = None
    request_header: RequestHeaderSettings | None = None
    anonymous: bool = False


@dataclass(frozen=True)
class AuthorizationSettings:
    """``authorization``: the policy file (``None``: everyone authenticated may do everything)."""

    policy_file: str | None = field(default=None)


def parse_path(value: Any, base_dir: str) -> str:
    """A file path, relative to ``base_dir``."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a path, not {describe(value)}")
    return os.path.join(base_dir, value)


def parse_audit_log(value: Any, base_dir: str) -> str:
    """``auditLog``: a file path, or ``-`` for standard output."""
    if value == "-":
        return "-"
    return parse_path(value, base_dir)


def parse_bool(value: Any, base_dir: str) -> bool:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {describe(value)}")
    return value


def parse_names(value: Any, base_dir: str) -> tuple[str, ...]:
    """A list of non-empty strings."""
    if not isinstance(value, list):
        raise ValueError(f"must be a list of strings, not {describe(value)}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"must be a list of non-empty strings, not one with {describe(item)}")
    return tuple(value)


def parse_header_names(value: Any, base_dir: str) -> tuple[str, ...]:
    """A list of header names (or name prefixes)."""
    names = parse_names(value, base_dir)
    for name in names:
        if any(c.isspace() or c in ':()<>@,;\\"/[]?={}' or ord(c) < 0x21 for c in name):
            raise ValueError(f"not a header name: {name[:64]!r}")
    return names


_Parser = Callable[[Any, str], Any]
_T = TypeVar("_T")


def _section(
    cls: Callable[..., _T], keys: Mapping[str, tuple[str, _Parser]]
) -> Callable[[Any, str], _T]:
    """A parser for a mapping of ``keys`` (file key -> attribute, parser)
    building ``cls(**attributes)``; every problem is reported, joined by
    ``; `` as ``key: message`` (the caller prefixes its own key)."""

    def parse(value: Any, base_dir: str) -> _T:
        if not isinstance(value, Mapping):
            raise ValueError(f"must be a mapping, not {describe(value)}")
        errors: list[str] = []
        values: dict[str, Any] = {}
        for name, item in value.items():
            known = keys.get(name) if isinstance(name, str) else None
            if known is None:
                shown = quote(name)[1:-1] if isinstance(name, str) else repr(name)
                errors.append(f"{shown}: unknown key (known: {', '.join(keys)})")
                continue
            if item is None:
                continue
            attribute, parser = known
            try:
                values[attribute] = parser(item, base_dir)
            except ValueError as exc:
                errors.append(f"{name}: {exc}")
        if errors:
            raise ValueError("; ".join(errors))
        return cls(**values)

    return parse


def parse_server(value: Any, base_dir: str) -> str:
    """An ``https://`` URL."""
    if not isinstance(value, str) or not value.startswith("https://") or len(value) <= 8:
        raise ValueError(f"must be an https:// URL, not {describe(value)}")
    return value.rstrip("/")


def parse_seconds(value: Any, base_dir: str) -> float:
    """A positive number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"must be a positive number of seconds, not {describe(value)}")
    return float(value)


_parse_from_cluster_section = _section(
    FromClusterSettings,
    {
        "server": ("server", parse_server),
        "tokenFile": ("token_file", parse_path),
        "caFile": ("ca_file", parse_path),
        "refreshInterval": ("refresh_interval", parse_seconds),
    },
)


def parse_from_cluster(value: Any, base_dir: str) -> FromClusterSettings | None:
    """``requestHeader.fromCluster``: ``true`` (the in-cluster defaults),
    ``false`` (off) or a mapping of overrides."""
    if isinstance(value, bool):
        return FromClusterSettings() if value else None
    if not isinstance(value, Mapping):
        raise ValueError(f"must be true, false or a mapping, not {describe(value)}")
    return _parse_from_cluster_section(value, base_dir)


_parse_request_header_section = _section(
    RequestHeaderSettings,
    {
        "clientCAFile": ("client_ca_file", parse_path),
        "allowedNames": ("allowed_names", parse_names),
        "usernameHeaders": ("username_headers", parse_header_names),
        "groupHeaders": ("group_headers", parse_header_names),
        "extraHeadersPrefix": ("extra_headers_prefix", parse_header_names),
        "uidHeaders": ("uid_headers", parse_header_names),
        "fromCluster": ("from_cluster", parse_from_cluster),
    },
)

#: the ``requestHeader`` keys the host cluster's ConfigMap sets with ``fromCluster``
_FROM_CLUSTER_SETS = (
    "clientCAFile",
    "allowedNames",
    "usernameHeaders",
    "groupHeaders",
    "extraHeadersPrefix",
    "uidHeaders",
)


def parse_request_header(value: Any, base_dir: str) -> RequestHeaderSettings:
    """``authentication.requestHeader``."""
    settings = _parse_request_header_section(value, base_dir)
    if settings.from_cluster is not None:
        given = [k for k in _FROM_CLUSTER_SETS if value.get(k) is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)}: not with fromCluster (the host cluster's ConfigMap "
                "kube-system/extension-apiserver-authentication sets them)"
            )
        return settings
    if not settings.client_ca_file:
        raise ValueError("clientCAFile: required")
    if not settings.username_headers:
        raise ValueError("usernameHeaders: must name at least one header")
    return settings


#: ``authentication``
parse_authentication = _section(
    AuthenticationSettings,
    {
        "clientCertificates": ("client_certificates", parse_bool),
        "tokenFile": ("token_file", parse_path),
        "requestHeader": ("request_header", parse_request_header),
        "anonymous": ("anonymous", parse_bool),
    },
)

#: ``authorization``
parse_authorization = _section(AuthorizationSettings, {"policyFile": ("policy_file", parse_path)})
