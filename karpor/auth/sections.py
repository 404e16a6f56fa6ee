"""The access sections of the settings file: ``auditLog``, ``authentication``, ``authorization``.

::

    auditLog: /var/log/karpor/audit.jsonl      # "-" for standard output; or:
    # auditLog: {path: /var/log/karpor/audit.jsonl, maxSizeMB: 100, maxBackups: 5, stdout: false}
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
      jwt:                                     # OpenID providers (kube-apiserver's form)
      - issuer:
          url: https://issuer.example.com      # the tokens' iss, exactly
          audiences: [karpor]                  # one of them must be in aud
          certificateAuthority: <PEM>          # optional: the issuer's TLS CA
          discoveryURL: https://…              # optional: default url + /.well-known/…
        claimMappings:
          username: {claim: email, prefix: ""} # prefix required unless the claim is email
          groups: {claim: groups, prefix: "oidc:"}   # optional; prefix required
        claimValidationRules:                  # optional
        - {claim: hd, requiredValue: example.com}
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
from urllib.parse import urlsplit

from karpor.auth.audit import DEFAULT_MAX_BACKUPS
from karpor.auth.frontproxy import (
    DEFAULT_REFRESH_INTERVAL,
    SERVICE_ACCOUNT_CA_FILE,
    SERVICE_ACCOUNT_TOKEN_FILE,
)
from karpor.auth.jwt import ClaimMapping, ClaimRule, JwtIssuer
from karpor.auth.requestheader import RequestHeaderConfig
from karpor.config.validation import (
    Checker,
    Key,
    describe,
    item,
    join,
    parse_section,
    section_parser,
)


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
    #: OpenID providers whose tokens are accepted (:mod:`karpor.auth.oidc`)
    jwt: tuple[JwtIssuer, ...] = ()


@dataclass(frozen=True)
class AuthorizationSettings:
    """``authorization``: the policy file (``None``: everyone authenticated may do everything)."""

    policy_file: str | None = field(default=None)


@dataclass(frozen=True)
class AuditLogSettings:
    """``auditLog``: where the audit log goes (:mod:`karpor.auth.audit`)."""

    #: a file path, or ``-`` for standard output only
    path: str
    #: rotate the file past this many MiB (0: never; ``maxSizeMB``)
    max_size_mb: int = 0
    #: rotated files kept (``maxBackups``)
    max_backups: int = DEFAULT_MAX_BACKUPS
    #: write every line to standard output too (``stdout``)
    stdout: bool = False


def _non_negative(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> int | None:
    number = c.integer(obj, key, path)
    if number is not None and number < 0:
        c.error(join(path, key), "must be 0 or more")
        return None
    return number


def _audit_path(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    if obj.get(key) == "-":
        return "-"
    return c.path(obj, key, path)


#: the keys of ``auditLog`` in its mapping form
AUDIT_LOG_KEYS: tuple[Key, ...] = (
    Key("path", "path", _audit_path, "auditLog"),
    Key("maxSizeMB", "max_size_mb", _non_negative, "auditLog"),
    Key("maxBackups", "max_backups", _non_negative, "auditLog"),
    Key("stdout", "stdout", Checker.boolean, "auditLog"),
)


def parse_audit_log(
    c: Checker, obj: Mapping[str, Any], key: str, path: str
) -> AuditLogSettings | None:
    """``auditLog``: a file path, ``-`` for standard output, or a mapping
    (``path``, ``maxSizeMB``, ``maxBackups``, ``stdout``; ``stdout: true``
    without ``path``: standard output only)."""
    value = obj.get(key)
    if not isinstance(value, Mapping):
        where = _audit_path(c, obj, key, path)
        return AuditLogSettings(where) if where is not None else None
    field = join(path, key)
    before = len(c.errors)
    values = parse_section(c, value, AUDIT_LOG_KEYS, field)
    if len(c.errors) > before:
        return None
    if "path" not in values:
        if not values.get("stdout"):
            c.error(join(field, "path"), "is required (or stdout: true)")
            return None
        values["path"] = "-"
    return AuditLogSettings(**values)


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


def _claim_mapping(
    c: Checker, obj: Mapping[str, Any], key: str, path: str, *, prefix_unless_email: bool
) -> ClaimMapping | None:
    section = c.section(obj, key, path, ("claim", "prefix"))
    if section is None:
        return None
    field = join(path, key)
    claim = c.string(section, "claim", field, required=True)
    prefix = c.string(section, "prefix", field)
    if claim is None:
        return None
    if prefix is None:
        if claim != "email" or not prefix_unless_email:
            c.error(
                join(field, "prefix"),
                'required (may be ""): as kube-apiserver, only the email claim has a default',
            )
            return None
        prefix = ""
    return ClaimMapping(claim, prefix)


def _certificate_authority(c: Checker, obj: Mapping[str, Any], path: str) -> str | None:
    pem = c.string(obj, "certificateAuthority", path, empty=False)
    if pem is None:
        return None
    from cryptography import x509  # noqa: PLC0415

    try:
        x509.load_pem_x509_certificates(pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        c.error(join(path, "certificateAuthority"), "not a PEM certificate (or bundle)")
        return None
    return pem


def _issuer_url(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    """An issuer URL, kept exactly as written: a token's ``iss`` and the
    discovery document's ``issuer`` must equal it character for character
    (some providers' end in ``/``), as kube-apiserver compares them."""
    value = obj.get(key)
    parts = urlsplit(value) if isinstance(value, str) else None
    if parts is None or parts.scheme != "https" or not parts.hostname:
        c.error(join(path, key), f"must be an https:// URL, not {describe(value)}")
        return None
    if parts.query or parts.fragment or parts.username or parts.password:
        c.error(join(path, key), "must have no query, fragment or user information")
        return None
    assert isinstance(value, str)
    return value


def _jwt_issuer(c: Checker, value: Any, at: str) -> JwtIssuer | None:
    entry = c.mapping(value, at, ("issuer", "claimMappings", "claimValidationRules"))
    if entry is None:
        return None
    before = len(c.errors)
    issuer_field = join(at, "issuer")
    issuer = c.section(
        entry,
        "issuer",
        at,
        ("url", "audiences", "certificateAuthority", "discoveryURL"),
        required=True,
    )
    url = audiences = ca = discovery = None
    if issuer is not None:
        url = _issuer_url(c, issuer, "url", issuer_field) if "url" in issuer else None
        if "url" not in issuer:
            c.error(join(issuer_field, "url"), "required")
        audiences = c.strings(issuer, "audiences", issuer_field, empty=False, empty_items=False)
        if audiences is None and "audiences" not in issuer:
            c.error(join(issuer_field, "audiences"), "required")
        ca = _certificate_authority(c, issuer, issuer_field)
        if "discoveryURL" in issuer:
            discovery = parse_server(c, issuer, "discoveryURL", issuer_field)
    mappings_field = join(at, "claimMappings")
    mappings = c.section(entry, "claimMappings", at, ("username", "groups"), required=True)
    username = groups = None
    if mappings is not None:
        username = _claim_mapping(c, mappings, "username", mappings_field, prefix_unless_email=True)
        if "username" not in mappings:
            c.error(join(mappings_field, "username"), "required")
        groups = _claim_mapping(c, mappings, "groups", mappings_field, prefix_unless_email=False)
    rules: list[ClaimRule] = []
    for rule_field, rule in c.items(entry, "claimValidationRules", at):
        rule_map = c.mapping(rule, rule_field, ("claim", "requiredValue"))
        if rule_map is None:
            continue
        claim = c.string(rule_map, "claim", rule_field, required=True)
        required_value = c.string(rule_map, "requiredValue", rule_field, required=True)
        if claim is not None and required_value is not None:
            rules.append(ClaimRule(claim, required_value))
    if len(c.errors) > before or url is None or not audiences or username is None:
        return None
    return JwtIssuer(
        url=url,
        audiences=audiences,
        username=username,
        groups=groups,
        rules=tuple(rules),
        certificate_authority=ca,
        discovery_url=discovery,
    )


def parse_jwt(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> tuple[JwtIssuer, ...]:
    """``authentication.jwt``: the OpenID providers whose tokens are accepted
    (one entry per issuer URL)."""
    issuers: list[JwtIssuer] = []
    seen: set[str] = set()
    for at, value in c.items(obj, key, path):
        issuer = _jwt_issuer(c, value, at)
        if issuer is None:
            continue
        if issuer.url in seen:
            c.error(join(join(at, "issuer"), "url"), "names an issuer already configured")
            continue
        seen.add(issuer.url)
        issuers.append(issuer)
    return tuple(issuers)


#: ``authentication``
parse_authentication = section_parser(
    AuthenticationSettings,
    (
        Key("clientCertificates", "client_certificates", Checker.boolean),
        Key("tokenFile", "token_file", Checker.path),
        Key("requestHeader", "request_header", parse_request_header),
        Key("anonymous", "anonymous", Checker.boolean),
        Key("jwt", "jwt", parse_jwt),
    ),
)

#: ``authorization``
parse_authorization = section_parser(
    AuthorizationSettings, (Key("policyFile", "policy_file", Checker.path),)
)
