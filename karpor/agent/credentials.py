"""An agent's credentials file: where the gateway is, how to trust it, who the agent is.

``karpor agent-credentials`` writes it (:func:`write_agent_credentials`),
``karpor agent --credentials FILE`` reads it (:func:`load_agent_credentials`).

The file is a kubeconfig (``kind: Config``), because operators already know
how to read, inspect and ship one (``kubectl config view``, a Secret with
one key, ``openssl`` on the base64 data) and every tool that handles
kubeconfigs with care (no key in logs, mode 0600) handles it too::

    apiVersion: v1
    kind: Config
    clusters:
    - name: karpor                         # the gateway, not the member cluster
      cluster:
        server: https://GATEWAY:PORT
        certificate-authority-data: ...    # the gateway CA (required: the agent verifies it)
        tls-server-name: NAME              # optional
    users:
    - name: system:karpor:agent:CLUSTER
      user:
        client-certificate-data: ...       # CN system:karpor:agent:CLUSTER, O system:karpor:agents
        client-key-data: ...
    contexts:
    - name: CLUSTER                        # the cluster the agent serves
      context: {cluster: karpor, user: system:karpor:agent:CLUSTER}
    current-context: CLUSTER

It holds no credential of the member cluster: the agent takes that from
where it runs (:mod:`karpor.agent.target`).  Reading is as lenient as
client-go's for what does not matter (unknown keys, other entries) and
strict for what does: the current context names the cluster (a DNS-1123
label); its cluster entry has an ``https://`` server and the CA inline
(``insecure-skip-tls-verify`` is refused); its user has the client
certificate and key inline, the key matching the certificate, the
certificate issued to ``system:karpor:agent:CLUSTER`` in
``system:karpor:agents``, and no other credential.  A problem is a line
``FILE: FIELD: MESSAGE`` that never quotes a key or a certificate.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from karpor.auth.agentidentity import AGENT_GROUP, agent_user
from karpor.auth.ca import write_private
from karpor.config.clusters import Validator, is_dns_label
from karpor.config.directory import LocalFiles
from karpor.config.validation import FileProblems, YamlError, describe, load_yaml, quote

#: the kubeconfig's name of the gateway's cluster entry
GATEWAY_ENTRY = "karpor"

_OTHER_CREDENTIALS = (
    "token",
    "tokenFile",
    "exec",
    "auth-provider",
    "username",
    "password",
    "client-certificate",
    "client-key",
)


class AgentCredentialsError(FileProblems):
    """A credentials file that cannot be used; ``problems`` holds its
    ``FILE: FIELD: MESSAGE`` lines (never a key)."""


@dataclass(frozen=True)
class AgentCredentials:
    """What an agent needs to reach the gateway (PEM throughout)."""

    #: the cluster the agent serves (its certificate's user is ``system:karpor:agent:`` this)
    cluster: str
    #: the gateway's URL, ``https://HOST:PORT``
    server: str
    #: the gateway CA: the agent verifies the gateway's serving certificate with it
    ca_pem: bytes = field(repr=False)
    certificate_pem: bytes = field(repr=False)
    key_pem: bytes = field(repr=False)
    #: the name to verify the gateway's certificate for, when not the server's host
    tls_server_name: str | None = None


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def render_agent_credentials(credentials: AgentCredentials) -> bytes:
    """The file's content (see the module docstring)."""
    user = agent_user(credentials.cluster)
    cluster: dict[str, Any] = {
        "server": credentials.server,
        "certificate-authority-data": _b64(credentials.ca_pem),
    }
    if credentials.tls_server_name:
        cluster["tls-server-name"] = credentials.tls_server_name
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": GATEWAY_ENTRY, "cluster": cluster}],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": _b64(credentials.certificate_pem),
                    "client-key-data": _b64(credentials.key_pem),
                },
            }
        ],
        "contexts": [
            {"name": credentials.cluster, "context": {"cluster": GATEWAY_ENTRY, "user": user}}
        ],
        "current-context": credentials.cluster,
    }
    header = (
        f"# karpor agent credentials for cluster {credentials.cluster}: the gateway's address\n"
        f"# and CA, and the agent's client certificate ({user}).\n"
        "# No credential of the cluster itself. Keep it private: karpor agent --credentials FILE\n"
    )
    return (header + yaml.safe_dump(doc, sort_keys=False)).encode()


def write_agent_credentials(path: str, credentials: AgentCredentials) -> None:
    """Write ``credentials`` to ``path``: mode 0600, atomically (a reader
    sees the old file or the new one)."""
    write_private(Path(path), render_agent_credentials(credentials))


def _named(
    obj: Mapping[str, Any], key: str, wanted: str, shown: str, v: Validator
) -> tuple[str, Any] | None:
    """``(field path, body)`` of the entry named ``wanted`` (described as
    ``shown``: a reference is not quoted, it could be anything pasted) in
    the list ``obj[key]``."""
    items = obj.get(key)
    if not isinstance(items, list):
        v.error(key, "required" if items is None else f"must be a list, not {describe(items)}")
        return None
    for i, item in enumerate(items):
        if isinstance(item, Mapping) and item.get("name") == wanted:
            body_key = key[:-1]  # clusters -> cluster, users -> user, contexts -> context
            return f"{key}[{i}].{body_key}", item.get(body_key)
    v.error(key, f"no entry named {shown}")
    return None


def _gateway(body: Any, path: str, v: Validator) -> tuple[str | None, bytes | None, str | None]:
    """``(server, CA, TLS server name)`` of the gateway's cluster entry."""
    obj = v.mapping(body, path)
    if obj is None:
        return None, None, None
    text = v.string(obj, "server", path, required=True)
    server = v.endpoint(text, f"{path}.server") if text else None
    if obj.get("insecure-skip-tls-verify") is True:
        v.error(
            f"{path}.insecure-skip-tls-verify",
            "an agent always verifies the gateway: give certificate-authority-data",
        )
    ca: bytes | None = None
    data = v.string(obj, "certificate-authority-data", path, required=True)
    if data:
        ca = v.base64(data, f"{path}.certificate-authority-data")
        if ca is not None and not v.certificates(ca, f"{path}.certificate-authority-data"):
            ca = None
    name = v.string(obj, "tls-server-name", path, empty=False)
    if name is not None:
        name = v.server_name(name, f"{path}.tls-server-name")
    return server, ca, name


def _agent(body: Any, path: str, cluster: str, v: Validator) -> tuple[bytes | None, bytes | None]:
    """``(certificate, key)`` of the agent's user entry."""
    obj = v.mapping(body, path)
    if obj is None:
        return None, None
    for other in _OTHER_CREDENTIALS:
        if obj.get(other) not in (None, "", [], {}):
            v.error(
                f"{path}.{other}",
                "an agent authenticates with client-certificate-data and client-key-data only",
            )
    halves: list[bytes | None] = []
    for name in ("client-certificate-data", "client-key-data"):
        data = v.string(obj, name, path, required=True)
        halves.append(v.base64(data, f"{path}.{name}") if data else None)
    cert, key = halves
    cert_field, key_field = f"{path}.client-certificate-data", f"{path}.client-key-data"
    if cert is None or key is None or not v.key_pair(cert, cert_field, key, key_field):
        return None, None
    leaf = x509.load_pem_x509_certificates(cert)[0]
    users = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    groups = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    expected = agent_user(cluster)
    if users != [expected] or AGENT_GROUP not in groups:
        shown = quote(users[0]) if users else "no user"
        v.error(
            cert_field,
            f"the certificate is for {shown} (groups: {', '.join(groups) or 'none'}), not "
            f"{expected} in {AGENT_GROUP}: issue it with karpor agent-credentials --cluster "
            f"{cluster}",
        )
        return None, None
    return cert, key


def parse_agent_credentials(obj: Any, source: str) -> AgentCredentials:
    """The credentials of the parsed file ``obj`` (read from ``source``)."""
    v = Validator(os.path.dirname(source), LocalFiles())

    def fail() -> AgentCredentialsError:
        return AgentCredentialsError(v.lines(source))

    doc = v.mapping(obj, "(document)")
    if doc is None:
        raise fail()
    if doc.get("kind") != "Config" or doc.get("apiVersion") not in (None, "v1"):
        v.error("kind", "must be a kubeconfig (apiVersion: v1, kind: Config)")
        raise fail()
    cluster = v.string(doc, "current-context", "", required=True, empty=False)
    if cluster is None:
        raise fail()
    if not is_dns_label(cluster):
        # not quoted: it could be anything pasted
        v.error(
            "current-context",
            "not a cluster name (a DNS-1123 label: lower-case letters, digits and '-')",
        )
        raise fail()
    found = _named(doc, "contexts", cluster, quote(cluster), v)
    if found is None:
        raise fail()
    context_path, body = found
    context = v.mapping(body, context_path)
    if context is None:
        raise fail()
    gateway_ref = v.string(context, "cluster", context_path, required=True)
    user_ref = v.string(context, "user", context_path, required=True)
    if gateway_ref is None or user_ref is None:
        raise fail()
    server = ca = server_name = cert = key = None
    gateway = _named(doc, "clusters", gateway_ref, f"as {context_path}.cluster says", v)
    if gateway is not None:
        server, ca, server_name = _gateway(gateway[1], gateway[0], v)
    agent = _named(doc, "users", user_ref, f"as {context_path}.user says", v)
    if agent is not None:
        cert, key = _agent(agent[1], agent[0], cluster, v)
    if v.errors or server is None or ca is None or cert is None or key is None:
        raise fail()
    return AgentCredentials(cluster, server, ca, cert, key, server_name)


def load_agent_credentials(path: str) -> AgentCredentials:
    """Read the credentials file ``path`` (blocking); raises
    :class:`AgentCredentialsError` naming what is wrong."""
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise AgentCredentialsError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise AgentCredentialsError([f"{path}: not UTF-8 text"]) from None
    try:
        obj = load_yaml(text)
    except YamlError as exc:
        raise AgentCredentialsError([f"{path}: invalid YAML: {exc}"]) from None
    return parse_agent_credentials(obj, path)
