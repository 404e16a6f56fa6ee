"""Cluster definitions: parsing and validating a Karpor ``Cluster`` (sans-IO).

This module reads one parsed YAML object of the Karpor form
(``apiVersion: cluster.karpor.io/v1beta1``, ``kind: Cluster``) into a
:class:`~karpor.config.model.Cluster`, and holds what the kubeconfig form
(:mod:`karpor.config.kubeconfig`) shares with it: :class:`Problem`, the
field :class:`Validator` (the :class:`~karpor.config.validation.Checker` of
every configuration file, with the checks of endpoints, certificates, keys
and tokens) and the :class:`DocumentContext`.  Splitting files
into documents and walking a directory is :mod:`karpor.config.directory`.

Validation is strict for the Karpor form: an unknown field under ``spec``
(or a misspelt ``metadata`` field) is an error, so that a typo such as
``caBundel`` never silently drops a setting.  The fields a Kubernetes server
adds to an exported object (``metadata.uid``, ``resourceVersion``,
``creationTimestamp``, ``managedFields``…, ``spec.finalized`` and the whole
``status``) are accepted and ignored.  Kubeconfigs are read leniently, as
client-go reads them (unknown fields ignored), because tools add their own.

Every problem is a :class:`Problem`, rendered as
``file: document N: field: message``
(:func:`karpor.config.validation.problem_line`); a document with a problem
defines no cluster, the others load.  Messages never quote a credential (token, key,
certificate data, exec environment values).

Files named by a document (``caFile``, ``tokenFile``, certificate and key
files, an exec command containing a ``/``) are resolved relative to the
directory of the file that names them, as kubectl does, and read through a
:class:`FileReader`, so that parsing itself does no I/O and tests pass a fake.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from karpor.config.model import (
    Cluster,
    Credential,
    ExecCredential,
    TokenCredential,
    X509Credential,
)
from karpor.config.validation import Checker, describe, problem_line, quote
from karpor.config.validation import join as _join

#: apiVersion of the Karpor ``Cluster`` kind
CLUSTER_API_VERSION = "cluster.karpor.io/v1beta1"
#: exec plugin API versions client-go still speaks
EXEC_API_VERSIONS = (
    "client.authentication.k8s.io/v1",
    "client.authentication.k8s.io/v1beta1",
)
#: credential types of the Karpor form
CREDENTIAL_TYPES = ("ServiceAccountToken", "X509Certificate", "OIDC")

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_NAME = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\.?")
_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_TOKEN = re.compile(r"[\x21-\x7e]+")
_SPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")

#: ObjectMeta fields a server fills in; accepted in a Cluster and ignored
_OBJECT_META = (
    "name",
    "labels",
    "annotations",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "finalizers",
    "managedFields",
)
_CLUSTER_KEYS = ("apiVersion", "kind", "metadata", "spec", "status")
_SPEC_KEYS = ("provider", "displayName", "description", "impersonate", "finalized", "access")
_ACCESS_KEYS = (
    "endpoint",
    "caBundle",
    "caFile",
    "insecure",
    "tlsServerName",
    "credential",
    "tunnel",
)
_CREDENTIAL_KEYS = ("type", "serviceAccountToken", "tokenFile", "x509", "execConfig")
_X509_KEYS = ("certificate", "privateKey", "certificateFile", "privateKeyFile")
_EXEC_KEYS = (
    "command",
    "args",
    "env",
    "apiVersion",
    "installHint",
    "provideClusterInfo",
    "interactiveMode",
)
_ENV_KEYS = ("name", "value")


@dataclass(frozen=True)
class Problem:
    """Why a file, a document or a definition in it was not loaded.

    ``str(problem)`` is the line users see:
    ``file: document N: field: message`` (``document`` is 1-based; 0 means
    the file as a whole, and the ``document N`` part is left out).

    ``names`` tells a reload which last good definitions to keep
    (:func:`karpor.config.registry.merge`): the names of the clusters the
    broken definition would have defined; ``None`` when they cannot be told
    (a YAML syntax error, a missing name: the reload keeps what the same
    file and document defined before); empty when nothing is withheld.
    """

    source: str
    document: int = 0
    field: str = ""
    message: str = ""
    names: tuple[str, ...] | None = ()

    def __str__(self) -> str:
        return problem_line(self.source, self.document, self.field, self.message)


class FileReader(Protocol):
    """How parsing reaches the files a document names (the only I/O it needs)."""

    def read(self, path: str) -> bytes:
        """The content of ``path``; raises :class:`OSError` when unreadable."""

    def executable(self, path: str) -> bool:
        """Whether ``path`` is a file this process may execute."""


class Definition(NamedTuple):
    """A cluster parsed from a document, with the field that named it."""

    cluster: Cluster
    #: dotted path of the name, e.g. ``metadata.name`` or ``contexts[2].name``
    name_field: str


def is_dns_label(name: str) -> bool:
    """Whether ``name`` is a DNS-1123 label (what a cluster name must be)."""
    return len(name) <= 63 and _DNS_LABEL.fullmatch(name) is not None


def credential_type(credential: Credential) -> str:
    """The credential's type as the Karpor form names it (``none`` for none)."""
    if isinstance(credential, TokenCredential):
        return "ServiceAccountToken"
    if isinstance(credential, X509Credential):
        return "X509Certificate"
    if isinstance(credential, ExecCredential):
        return "OIDC"
    return "none"


class Validator(Checker):
    """The :class:`~karpor.config.validation.Checker` of cluster definitions:
    with the checks of endpoints, names, certificates, keys and tokens, and
    the files a definition names (read through ``files``).

    One validator checks one definition (a Cluster, or one kubeconfig
    cluster or user entry).  Error messages never include the value of a
    credential field.
    """

    def __init__(self, base_dir: str, files: FileReader) -> None:
        super().__init__(base_dir)
        self.files = files

    def string_map(
        self, obj: Mapping[str, Any], key: str, path: str, *, label_values: bool
    ) -> Mapping[str, str]:
        """Labels or annotations: keys are qualified names; label values are checked."""
        field = _join(path, key)
        value = obj.get(key)
        if value is None:
            return MappingProxyType({})
        if not isinstance(value, Mapping):
            self.error(field, f"must be a mapping, not {describe(value)}")
            return MappingProxyType({})
        out: dict[str, str] = {}
        for k, v in value.items():
            if not isinstance(k, str) or not _qualified_name(k):
                shown = quote(k) if isinstance(k, str) else repr(k)
                self.error(field, f"invalid key {shown}: must be [prefix/]name")
                continue
            if not isinstance(v, str):
                self.error(f"{field}.{k}", f"must be a string, not {describe(v)}")
                continue
            if label_values and v and (len(v) > 63 or not _LABEL_NAME.fullmatch(v)):
                self.error(f"{field}.{k}", f"invalid label value {quote(v)}")
                continue
            out[k] = v
        return MappingProxyType(out)

    # -- values ------------------------------------------------------------

    def endpoint(self, value: str, field: str) -> str | None:
        """An ``https://host[:port][/path]`` URL, normalized (no trailing ``/``).

        The value is never quoted in a message: a URL may carry a secret.
        """
        if _SPACE_OR_CONTROL.search(value):
            self.error(field, "must not contain spaces or control characters")
            return None
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError:
            self.error(field, "not a valid URL (bad port or host)")
            return None
        if parts.scheme.lower() != "https":
            shown = f" (found {parts.scheme.lower()}://)" if parts.scheme.isalnum() else ""
            self.error(field, f"must be an https:// URL{shown}")
            return None
        if "@" in parts.netloc:
            self.error(field, "must not contain user information")
            return None
        if parts.query or parts.fragment or value.endswith(("?", "#")):
            self.error(field, "must not have a query or a fragment")
            return None
        host = parts.hostname or ""
        if not host:
            self.error(field, "has no host")
            return None
        if not _valid_host(host):
            self.error(field, f"invalid host {quote(host)}: must be an IP address or DNS name")
            return None
        if port is not None and not 0 < port < 65536:
            self.error(field, f"invalid port {port}")
            return None
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc = f"{netloc}:{port}"
        return f"https://{netloc}{parts.path.rstrip('/')}"

    def server_name(self, value: str, field: str) -> str | None:
        """A TLS server name: a DNS name or an IP address."""
        if not _valid_host(value.lower()):
            self.error(field, f"invalid server name {quote(value)}")
            return None
        return value.lower()

    def base64(self, value: str, field: str) -> bytes | None:
        """Decoded standard base64 (whitespace ignored); never quoted."""
        if value.lstrip().startswith("-----BEGIN"):
            self.error(field, "must be base64-encoded PEM, found raw PEM")
            return None
        try:
            return base64.b64decode("".join(value.split()), validate=True)
        except (binascii.Error, ValueError):
            self.error(field, "not valid base64")
            return None

    def token(self, value: str, field: str) -> str | None:
        """A bearer token: printable ASCII without spaces; never quoted."""
        if not _TOKEN.fullmatch(value):
            self.error(field, "must be printable ASCII without spaces")
            return None
        return value

    def resolve(self, value: str) -> str:
        """``value`` resolved against the directory of the naming file."""
        return os.path.join(self.base_dir, value)

    def read(self, value: str, field: str) -> tuple[str, bytes] | None:
        """The resolved path of a named file and its content."""
        path = self.resolve(value)
        try:
            return path, self.files.read(path)
        except OSError as exc:
            self.error(field, f"cannot read {path}: {exc.strerror or exc}")
            return None

    def token_file(self, value: str, field: str) -> str | None:
        """A token file: readable and holding a token; returns its path."""
        found = self.read(value, field)
        if found is None:
            return None
        path, data = found
        content = data.decode("latin-1").strip()
        if not content:
            self.error(field, f"{path}: file is empty")
        elif not _TOKEN.fullmatch(content):
            self.error(field, f"{path}: token must be printable ASCII without spaces")
        return path

    def certificates(self, data: bytes, field: str) -> list[x509.Certificate] | None:
        """Every certificate of a PEM bundle (at least one)."""
        if b"-----BEGIN CERTIFICATE-----" not in data:
            self.error(field, "no PEM certificate found")
            return None
        try:
            return x509.load_pem_x509_certificates(data)
        except ValueError:
            self.error(field, "not a valid PEM certificate")
            return None

    def private_key(self, data: bytes, field: str) -> bytes | None:
        """The DER public key of a PEM private key (to match its certificate)."""
        try:
            key = serialization.load_pem_private_key(
                data, password=None, unsafe_skip_rsa_key_validation=True
            )
        except TypeError:
            self.error(field, "private key is encrypted (not supported)")
            return None
        except (ValueError, UnsupportedAlgorithm):
            self.error(field, "not a valid PEM private key")
            return None
        return key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def key_pair(
        self, cert: bytes | None, cert_field: str, key: bytes | None, key_field: str
    ) -> bool:
        """Whether both PEMs parse and the key belongs to the (first) certificate."""
        certs = self.certificates(cert, cert_field) if cert is not None else None
        public = self.private_key(key, key_field) if key is not None else None
        if not certs or public is None:
            return False
        leaf = (
            certs[0]
            .public_key()
            .public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        if leaf != public:
            self.error(key_field, "private key does not match the certificate")
            return False
        return True

    def exec_config(
        self, obj: Mapping[str, Any], path: str, *, strict: bool
    ) -> ExecCredential | None:
        """An exec credential plugin (the same fields in both forms)."""
        if strict:
            self.unknown(obj, _EXEC_KEYS, path)
        before = len(self.errors)
        command = self.string(obj, "command", path, required=True)
        args = self.strings(obj, "args", path) or ()
        env: list[tuple[str, str]] = []
        for item_path, item in self.items(obj, "env", path):
            entry = self.mapping(item, item_path, _ENV_KEYS if strict else None)
            if entry is None:
                continue
            name = self.string(entry, "name", item_path, required=True)
            value = entry.get("value")
            if value is None:
                value = ""
            if not isinstance(value, str):
                self.error(_join(item_path, "value"), f"must be a string, not {describe(value)}")
            elif name:
                env.append((name, value))
        api_version = self.string(obj, "apiVersion", path) or EXEC_API_VERSIONS[0]
        if api_version not in EXEC_API_VERSIONS:
            self.error(
                _join(path, "apiVersion"),
                f"unsupported {quote(api_version)}: use {' or '.join(EXEC_API_VERSIONS)}",
            )
        mode = self.string(obj, "interactiveMode", path) or "Never"
        if mode == "Always":
            self.error(
                _join(path, "interactiveMode"),
                "Always is not possible: the gateway has no terminal (use Never or IfAvailable)",
            )
        elif mode not in ("Never", "IfAvailable"):
            self.error(
                _join(path, "interactiveMode"),
                f"unknown mode {quote(mode)}: use Never or IfAvailable",
            )
        hint = self.string(obj, "installHint", path) or ""
        cluster_info = self.boolean(obj, "provideClusterInfo", path)
        if command and "/" in command:
            resolved = self.resolve(command)
            if not self.files.executable(resolved):
                self.error(_join(path, "command"), f"not an executable file: {resolved}")
            command = resolved
        if len(self.errors) > before or not command:
            return None
        return ExecCredential(
            command=command,
            args=args,
            env=tuple(env),
            api_version=api_version,
            install_hint=hint,
            provide_cluster_info=cluster_info,
            interactive_mode=mode,
        )


def _qualified_name(key: str) -> bool:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _DNS_NAME.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and _LABEL_NAME.fullmatch(name) is not None


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and _DNS_NAME.fullmatch(host) is not None
    return True


class DocumentContext:
    """One document being parsed: where it came from, and its problems."""

    def __init__(
        self, source: str, document: int, base_dir: str, files: FileReader, created: str
    ) -> None:
        self.source = source
        self.document = document
        self.base_dir = base_dir
        self.files = files
        self.created = created
        self.problems: list[Problem] = []
        self.definitions: list[Definition] = []

    def validator(self) -> Validator:
        """A fresh validator for one definition of this document."""
        return Validator(self.base_dir, self.files)

    def fail(self, field: str, message: str, names: tuple[str, ...] | None) -> None:
        """Record a problem of this document."""
        self.problems.append(Problem(self.source, self.document, field, message, names))

    def report(self, validator: Validator, names: tuple[str, ...] | None, suffix: str = "") -> None:
        """Record the validator's errors as problems withholding ``names``."""
        for field, message in validator.errors:
            self.fail(field, message + suffix, names)

    def define(self, cluster: Cluster, name_field: str) -> None:
        """Record a cluster this document defines."""
        self.definitions.append(Definition(cluster, name_field))


def parse_cluster(obj: Mapping[str, Any], path: str, ctx: DocumentContext) -> None:
    """Parse one Karpor ``Cluster`` object (at field path ``path``) into ``ctx``."""
    v = ctx.validator()
    v.unknown(obj, _CLUSTER_KEYS, path)
    api_version = obj.get("apiVersion")
    if api_version != CLUSTER_API_VERSION:
        shown = quote(api_version) if isinstance(api_version, str) else describe(api_version)
        v.error(_join(path, "apiVersion"), f"must be {CLUSTER_API_VERSION}, not {shown}")
    meta_path = _join(path, "metadata")
    section = v.section(obj, "metadata", path, required=True)
    meta = section if section is not None else {}
    v.unknown(meta, _OBJECT_META, meta_path)
    name = v.string(meta, "name", meta_path, required=True) if section is not None else None
    names: tuple[str, ...] | None = None
    if name is not None:
        if is_dns_label(name):
            names = (name,)
        else:
            v.error(
                _join(meta_path, "name"),
                f"{quote(name)} is not a DNS-1123 label "
                "(lower-case letters, digits and '-', at most 63 characters)",
            )
    labels = v.string_map(meta, "labels", meta_path, label_values=True)
    annotations = v.string_map(meta, "annotations", meta_path, label_values=False)

    spec_path = _join(path, "spec")
    section = v.section(obj, "spec", path, required=True)
    spec = section if section is not None else {}
    v.unknown(spec, _SPEC_KEYS, spec_path)
    provider = v.string(spec, "provider", spec_path) or ""
    display_name = v.string(spec, "displayName", spec_path) or ""
    description = v.string(spec, "description", spec_path) or ""
    impersonate = v.boolean(spec, "impersonate", spec_path)
    v.boolean(spec, "finalized", spec_path)  # Karpor's; checked, then ignored

    access_path = _join(spec_path, "access")
    section = v.section(spec, "access", spec_path, required=True) if section is not None else None
    access = section if section is not None else {}
    v.unknown(access, _ACCESS_KEYS, access_path)
    tunnel = v.boolean(access, "tunnel", access_path)
    raw_endpoint = (
        v.string(access, "endpoint", access_path, required=not tunnel)
        if section is not None
        else None
    )
    endpoint = raw_endpoint and v.endpoint(raw_endpoint, _join(access_path, "endpoint"))
    if tunnel:
        _tunnel_access(access, access_path, v)
    ca_pem = ca_file = None
    ca_bundle = v.string(access, "caBundle", access_path, empty=False)
    ca_name = v.string(access, "caFile", access_path, empty=False)
    if ca_bundle is not None and ca_name is not None:
        v.error(_join(access_path, "caFile"), "give caBundle or caFile, not both")
    elif ca_bundle is not None:
        field = _join(access_path, "caBundle")
        ca_pem = v.base64(ca_bundle, field)
        if ca_pem is not None:
            v.certificates(ca_pem, field)
    elif ca_name is not None:
        field = _join(access_path, "caFile")
        found = v.read(ca_name, field)
        if found is not None:
            ca_file = found[0]
            v.certificates(found[1], field)
    insecure = v.boolean(access, "insecure", access_path)
    if insecure and (ca_bundle is not None or ca_name is not None):
        v.error(_join(access_path, "insecure"), "insecure cannot be combined with a CA")
    server_name = v.string(access, "tlsServerName", access_path, empty=False)
    if server_name is not None:
        server_name = v.server_name(server_name, _join(access_path, "tlsServerName"))

    credential: Credential = None
    if access.get("credential") is not None:
        cred_path = _join(access_path, "credential")
        cred = v.mapping(access["credential"], cred_path)
        if cred is not None:
            credential = _karpor_credential(cred, cred_path, v)

    if v.errors or name is None or names is None or not (endpoint or tunnel):
        if not v.errors:  # every path above records why; never drop silently
            v.error(path or "spec", "incomplete definition")
        ctx.report(v, names)
        return
    ctx.define(
        Cluster(
            name=name,
            endpoint=endpoint or "",
            credential=credential,
            tunnel=tunnel,
            ca_pem=ca_pem,
            ca_file=ca_file,
            insecure=insecure,
            tls_server_name=server_name,
            impersonate=impersonate,
            labels=labels,
            annotations=annotations,
            provider=provider,
            display_name=display_name,
            description=description,
            source=ctx.source,
            document=ctx.document,
            created=ctx.created,
        ),
        _join(meta_path, "name"),
    )


def _tunnel_access(access: Mapping[str, Any], path: str, v: Validator) -> None:
    """A cluster reached through an agent (``tunnel: true``) names no
    endpoint and no way to reach or trust it: the agent holds those."""
    for key in ("endpoint", "caBundle", "caFile", "insecure", "tlsServerName", "credential"):
        if access.get(key) is not None:
            v.error(_join(path, key), "a tunnel cluster is reached through its agent: remove it")


def _karpor_credential(cred: Mapping[str, Any], path: str, v: Validator) -> Credential:
    v.unknown(cred, _CREDENTIAL_KEYS, path)
    kind = v.string(cred, "type", path, required=True)
    if kind is None:
        return None
    if kind not in CREDENTIAL_TYPES:
        v.error(
            _join(path, "type"),
            f"unknown type {quote(kind)}: use {', '.join(CREDENTIAL_TYPES)}",
        )
        return None
    wanted = {
        "ServiceAccountToken": ("serviceAccountToken", "tokenFile"),
        "X509Certificate": ("x509",),
        "OIDC": ("execConfig",),
    }[kind]
    for key in ("serviceAccountToken", "tokenFile", "x509", "execConfig"):
        if key not in wanted and cred.get(key) is not None:
            v.error(_join(path, key), f"not allowed with type {kind}")
    if kind == "ServiceAccountToken":
        token = v.string(cred, "serviceAccountToken", path, empty=False)
        token_name = v.string(cred, "tokenFile", path, empty=False)
        if (token is None) == (token_name is None):
            v.error(path, "give exactly one of serviceAccountToken or tokenFile")
            return None
        if token is not None:
            token = v.token(token, _join(path, "serviceAccountToken"))
            return TokenCredential(token=token) if token else None
        assert token_name is not None
        token_path = v.token_file(token_name, _join(path, "tokenFile"))
        return TokenCredential(token_file=token_path) if token_path else None
    if kind == "X509Certificate":
        x509_path = _join(path, "x509")
        if cred.get("x509") is None:
            v.error(x509_path, "required with type X509Certificate")
            return None
        obj = v.mapping(cred["x509"], x509_path)
        return _karpor_x509(obj, x509_path, v) if obj is not None else None
    exec_path = _join(path, "execConfig")
    if cred.get("execConfig") is None:
        v.error(exec_path, "required with type OIDC")
        return None
    obj = v.mapping(cred["execConfig"], exec_path)
    return v.exec_config(obj, exec_path, strict=True) if obj is not None else None


def _karpor_x509(obj: Mapping[str, Any], path: str, v: Validator) -> Credential:
    v.unknown(obj, _X509_KEYS, path)
    inline = obj.get("certificate") is not None or obj.get("privateKey") is not None
    by_file = obj.get("certificateFile") is not None or obj.get("privateKeyFile") is not None
    if inline == by_file:
        v.error(
            path,
            "give certificate and privateKey, or certificateFile and privateKeyFile",
        )
        return None
    if inline:
        cert_field, key_field = _join(path, "certificate"), _join(path, "privateKey")
        cert_text = v.string(obj, "certificate", path, required=True)
        key_text = v.string(obj, "privateKey", path, required=True)
        cert = v.base64(cert_text, cert_field) if cert_text else None
        key = v.base64(key_text, key_field) if key_text else None
        if cert is None or key is None or not v.key_pair(cert, cert_field, key, key_field):
            return None
        return X509Credential(certificate=cert, private_key=key)
    cert_field, key_field = _join(path, "certificateFile"), _join(path, "privateKeyFile")
    cert_name = v.string(obj, "certificateFile", path, required=True)
    key_name = v.string(obj, "privateKeyFile", path, required=True)
    cert_found = v.read(cert_name, cert_field) if cert_name else None
    key_found = v.read(key_name, key_field) if key_name else None
    if cert_found is None or key_found is None:
        return None
    if not v.key_pair(cert_found[1], cert_field, key_found[1], key_field):
        return None
    return X509Credential(certificate_file=cert_found[0], private_key_file=key_found[0])
