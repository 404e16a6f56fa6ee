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
:func:`parse_authorization` are parsers of settings keys
(:data:`karpor.config.validation.FieldParser`, listed in
:data:`karpor.app.settings.KEYS`): they record problems in the
:class:`~karpor.config.validation.Checker` with the path of their field
(``authentication.requestHeader.clientCAFile: required``).  This module does
not import ``karpor.app.settings`` (which imports it).  Relative paths
resolve against the checker's ``base_dir`` (the settings file's directory).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from karpor.auth.frontproxy import (
    DEFAULT_REFRESH_INTERVAL,
    SERVICE_ACCOUNT_CA_FILE,
    SERVICE_ACCOUNT_TOKEN_FILE,
)
from karpor.auth.requestheader import RequestHeaderConfig
from karpor.config.validation import Checker, Key, describe, item, join, section_parser


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


def parse_audit_log(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """``auditLog``: a file path, or ``-`` for standard output."""
    if obj.get(key) == "-":
        return "-"
    return c.path(obj, key, path)


def parse_names(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    """A list of non-empty strings."""
    return c.strings(obj, key, path, empty_items=False)


def parse_header_names(
    c: Checker, obj: Mapping[str, Any], key: str, path: str
) -> tuple[str, ...] | None:
    """A list of header names (or name prefixes)."""
    names = parse_names(c, obj, key, path)
    for i, name in enumerate(names or ()):
        if any(ch.isspace() or ch in ':()<>@,;\\"/[]?={}' or ord(ch) < 0x21 for ch in name):
            c.error(item(join(path, key), i), f"not a header name: {name[:64]!r}")
    return names


def parse_server(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """An ``https://`` URL."""
    value = obj.get(key)
    if not isinstance(value, str) or not value.startswith("https://") or len(value) <= 8:
        c.error(join(path, key), f"must be an https:// URL, not {describe(value)}")
        return None
    return value.rstrip("/")


_parse_from_cluster_section = section_parser(
    FromClusterSettings,
    (
        Key("server", "server", parse_server),
        Key("tokenFile", "token_file", Checker.path),
        Key("caFile", "ca_file", Checker.path),
        Key("refreshInterval", "refresh_interval", Checker.seconds),
    ),
)


def parse_from_cluster(
    c: Checker, obj: Mapping[str, Any], key: str, path: str
) -> FromClusterSettings | None:
    """``requestHeader.fromCluster``: ``true`` (the in-cluster defaults),
    ``false`` (off) or a mapping of overrides."""
    value = obj.get(key)
    if isinstance(value, bool):
        return FromClusterSettings() if value else None
    if not isinstance(value, Mapping):
        c.error(join(path, key), f"must be true, false or a mapping, not {describe(value)}")
        return None
    parsed: FromClusterSettings | None = _parse_from_cluster_section(c, obj, key, path)
    return parsed


_parse_request_header_section = section_parser(
    RequestHeaderSettings,
    (
        Key("clientCAFile", "client_ca_file", Checker.path),
        Key("allowedNames", "allowed_names", parse_names),
        Key("usernameHeaders", "username_headers", parse_header_names),
        Key("groupHeaders", "group_headers", parse_header_names),
        Key("extraHeadersPrefix", "extra_headers_prefix", parse_header_names),
        Key("uidHeaders", "uid_headers", parse_header_names),
        Key("fromCluster", "from_cluster", parse_from_cluster),
    ),
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


def parse_request_header(
    c: Checker, obj: Mapping[str, Any], key: str, path: str
) -> RequestHeaderSettings | None:
    """``authentication.requestHeader``."""
    settings: RequestHeaderSettings | None = _parse_request_header_section(c, obj, key, path)
    if settings is None:
        return None
    field = join(path, key)
    if settings.from_cluster is not None:
        given = [k for k in _FROM_CLUSTER_SETS if obj[key].get(k) is not None]
        for name in given:
            c.error(
                join(field, name),
                "not with fromCluster (the host cluster's ConfigMap "
                "kube-system/extension-apiserver-authentication sets it)",
            )
        return None if given else settings
    if not settings.client_ca_file:
        c.error(join(field, "clientCAFile"), "required")
        return None
    if not settings.username_headers:
        c.error(join(field, "usernameHeaders"), "must name at least one header")
        return None
    return settings


#: ``authentication``
parse_authentication = section_parser(
    AuthenticationSettings,
    (
        Key("clientCertificates", "client_certificates", Checker.boolean),
        Key("tokenFile", "token_file", Checker.path),
        Key("requestHeader", "request_header", parse_request_header),
        Key("anonymous", "anonymous", Checker.boolean),
    ),
)

#: ``authorization``
parse_authorization = section_parser(
    AuthorizationSettings, (Key("policyFile", "policy_file", Checker.path),)
)
