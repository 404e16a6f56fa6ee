"""The front-proxy trust a host cluster publishes, for an aggregated APIService (sans-IO).

kube-apiserver publishes how it talks to aggregated API servers in the
ConfigMap ``kube-system/extension-apiserver-authentication`` (readable with
the Role ``extension-apiserver-authentication-reader``):

- ``requestheader-client-ca-file``: the front-proxy CA bundle (PEM) that
  signed the client certificate the apiserver presents when it proxies;
- ``requestheader-allowed-names``: the CNs that certificate may have (JSON
  list; empty: any);
- ``requestheader-username-headers``, ``requestheader-group-headers``,
  ``requestheader-extra-headers-prefix`` and (kube 1.32+)
  ``requestheader-uid-headers``: JSON lists of header names.

:func:`parse_configmap` turns the ConfigMap into a :class:`FrontProxyTrust`
(the CA and a :class:`~karpor.auth.requestheader.RequestHeaderConfig`);
:func:`interpret_response` does so for the apiserver's answer to
``GET`` :data:`CONFIGMAP_PATH`, with an error that says what to fix for a
401, 403 or 404.  :func:`in_cluster_server` is the apiserver a pod reaches
(``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``), and
:func:`refreshed` decides what a re-read changes: the CA and allowed names
follow the ConfigMap; the header names stay as first read (the front
strips them from forwarded requests, a list fixed when it starts), with a
warning to restart.  The I/O is in :mod:`karpor.auth.frontproxysource`.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from karpor.auth.requestheader import RequestHeaderConfig
from karpor.config.hostnames import url_host

CONFIGMAP_NAMESPACE = "kube-system"
CONFIGMAP_NAME = "extension-apiserver-authentication"
#: the ConfigMap as ``namespace/name``, for messages
CONFIGMAP = f"{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}"
CONFIGMAP_PATH = f"/api/v1/namespaces/{CONFIGMAP_NAMESPACE}/configmaps/{CONFIGMAP_NAME}"
#: the Role that may read the ConfigMap (kube-apiserver creates it)
READER_ROLE = "extension-apiserver-authentication-reader"

CA_KEY = "requestheader-client-ca-file"
ALLOWED_NAMES_KEY = "requestheader-allowed-names"
USERNAME_HEADERS_KEY = "requestheader-username-headers"
GROUP_HEADERS_KEY = "requestheader-group-headers"
EXTRA_HEADERS_PREFIX_KEY = "requestheader-extra-headers-prefix"
UID_HEADERS_KEY = "requestheader-uid-headers"

#: where a pod's service account credentials are mounted
SERVICE_ACCOUNT_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"  # noqa: S105
SERVICE_ACCOUNT_CA_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
DEFAULT_REFRESH_INTERVAL = 60.0

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class FrontProxyError(Exception):
    """The host cluster's front-proxy settings cannot be used (safe to log)."""


@dataclass(frozen=True)
class FrontProxyTrust:
    """The front-proxy CA bundle and how to read the identity headers."""

    ca_pem: bytes
    config: RequestHeaderConfig

    def describe(self) -> str:
        """One line for the log: the CA subjects, allowed names, header names."""
        subjects = ", ".join(
            c.subject.rfc4514_string() for c in x509.load_pem_x509_certificates(self.ca_pem)
        )
        names = ", ".join(self.config.allowed_names) or "any"
        return (
            f"CA {subjects}; allowed names {names}; user headers "
            f"{', '.join(self.config.username_headers)}; group headers "
            f"{', '.join(self.config.group_headers) or 'none'}"
        )


def _strings(data: Mapping[str, Any], key: str, headers: bool) -> tuple[str, ...]:
    """A JSON list of strings kept under ``key`` (missing or empty: none)."""
    raw = data.get(key)
    if raw is None or raw == "":
        return ()
    try:
        value = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise FrontProxyError(f"{key}: not a JSON list of strings")
    if headers:
        for name in value:
            if not _TOKEN.fullmatch(name):
                raise FrontProxyError(f"{key}: not a header name: {name[:64]!r}")
    return tuple(v for v in value if v)


def parse_configmap(doc: Any) -> FrontProxyTrust:
    """The trust a ``ConfigMap`` object (decoded JSON) publishes;
    :class:`FrontProxyError` saying which key is wrong."""
    if not isinstance(doc, Mapping) or doc.get("kind") not in (None, "ConfigMap"):
        raise FrontProxyError("the answer is not a ConfigMap")
    data = doc.get("data")
    if not isinstance(data, Mapping):
        data = {}
    ca = data.get(CA_KEY)
    if not isinstance(ca, str) or not ca.strip():
        raise FrontProxyError(
            f"{CA_KEY}: missing (the host apiserver runs without --requestheader-client-ca-file: "
            "it cannot proxy to aggregated API servers)"
        )
    try:
        certs = x509.load_pem_x509_certificates(ca.encode())
    except ValueError:
        raise FrontProxyError(f"{CA_KEY}: no PEM certificate") from None
    if not certs:
        raise FrontProxyError(f"{CA_KEY}: no PEM certificate")
    username = _strings(data, USERNAME_HEADERS_KEY, headers=True)
    if not username:
        raise FrontProxyError(f"{USERNAME_HEADERS_KEY}: names no header")
    config = RequestHeaderConfig(
        allowed_names=_strings(data, ALLOWED_NAMES_KEY, headers=False),
        username_headers=username,
        group_headers=_strings(data, GROUP_HEADERS_KEY, headers=True),
        extra_headers_prefix=_strings(data, EXTRA_HEADERS_PREFIX_KEY, headers=True),
        uid_headers=_strings(data, UID_HEADERS_KEY, headers=True),
    )
    return FrontProxyTrust(ca.encode(), config)


_HINTS = {
    401: "the service account token was refused",
    403: (
        f"the service account may not read it: bind it to the Role {READER_ROLE} in "
        f"{CONFIGMAP_NAMESPACE} (etc/kubernetes/rbac.yaml)"
    ),
    404: "there is no such ConfigMap (is this the host cluster's apiserver?)",
}


def _status_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
    except ValueError:
        return ""
    message = doc.get("message") if isinstance(doc, dict) else None
    return message[:200] if isinstance(message, str) else ""


def interpret_response(status: int, body: bytes) -> FrontProxyTrust:
    """The trust from the apiserver's answer to ``GET`` :data:`CONFIGMAP_PATH`."""
    if status != 200:
        hint = _HINTS.get(status) or _status_message(body) or "unexpected answer"
        raise FrontProxyError(f"HTTP {status}: {hint}")
    try:
        doc = json.loads(body)
    except ValueError:
        raise FrontProxyError("the answer is not JSON") from None
    return parse_configmap(doc)


def in_cluster_server(env: Mapping[str, str]) -> str:
    """The apiserver URL a pod reaches, from ``KUBERNETES_SERVICE_HOST`` and
    ``KUBERNETES_SERVICE_PORT`` (as client-go's in-cluster config)."""
    host = env.get("KUBERNETES_SERVICE_HOST", "")
    port = env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise FrontProxyError(
            "KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set: not in a pod "
            "(give authentication.requestHeader.fromCluster.server)"
        )
    return f"https://{url_host(host)}:{port}"


def refreshed(
    current: FrontProxyTrust, new: FrontProxyTrust
) -> tuple[FrontProxyTrust, list[tuple[str, str]]]:
    """What to apply after a re-read, and ``(level, message)`` pairs to log.

    The CA and the allowed names follow the ConfigMap; header names that
    changed keep their first values (with a warning: a restart applies them).
    """
    notes: list[tuple[str, str]] = []
    old, fresh = current.config, new.config
    header_fields = ("username_headers", "group_headers", "extra_headers_prefix", "uid_headers")
    kept = {f: getattr(old, f) for f in header_fields if getattr(old, f) != getattr(fresh, f)}
    if kept:
        notes.append(
            (
                "warn",
                f"the header names in {CONFIGMAP} changed ({', '.join(kept)}): restart karpor "
                "to use them; the names read at start stay in use",
            )
        )
        new = FrontProxyTrust(new.ca_pem, dataclasses.replace(fresh, **kept))
    if new.ca_pem != current.ca_pem or new.config.allowed_names != old.allowed_names:
        notes.append(("info", f"front-proxy settings from {CONFIGMAP} changed: {new.describe()}"))
    return new, notes
