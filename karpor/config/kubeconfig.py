"""Kubeconfig documents (``kind: Config``) as cluster definitions (sans-IO).

Each context becomes a cluster named after the context, reaching that
context's cluster (``server``, ``certificate-authority-data`` or
``certificate-authority``, ``insecure-skip-tls-verify``, ``tls-server-name``)
with that context's user (``token``, ``tokenFile``, ``client-certificate``
/ ``client-key`` as data or files, or ``exec``).  A user with no credential
gives a cluster without one.

Rules, and how they differ from the Karpor form:

* Read leniently, as client-go reads kubeconfigs: unknown fields (and
  ``extensions``, ``preferences``, ``current-context``, a context's
  ``namespace``) are ignored.  What the gateway cannot honour is an error
  for the contexts that use it: ``username``/``password``, ``auth-provider``,
  impersonation (``as``, ``as-groups``…) and ``proxy-url``.
* Only entries used by a context are validated; a broken entry is reported
  once, naming the contexts it takes down; other contexts still load.
* A context whose name is not a DNS-1123 label is an error naming it (rename
  it with ``kubectl config rename-context``).
* Exactly one credential form per user (``token``, ``tokenFile``, a client
  certificate, or ``exec``).
* Relative paths resolve against the kubeconfig's directory, as kubectl does
  (an exec ``command`` only when it contains a ``/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from karpor.config.clusters import DocumentContext, Validator, is_dns_label
from karpor.config.model import Cluster, Credential, TokenCredential, X509Credential
from karpor.config.validation import describe, quote

_UNSUPPORTED_USER = {
    "username": "username/password authentication is not supported",
    "password": "username/password authentication is not supported",
    "auth-provider": "auth-provider plugins are not supported (use an exec plugin)",
    "as": "impersonation in a kubeconfig user is not supported",
    "as-uid": "impersonation in a kubeconfig user is not supported",
    "as-groups": "impersonation in a kubeconfig user is not supported",
    "as-user-extra": "impersonation in a kubeconfig user is not supported",
}


class _Access(NamedTuple):
    endpoint: str
    ca_pem: bytes | None
    ca_file: str | None
    insecure: bool
    tls_server_name: str | None


class _Entry(NamedTuple):
    position: int
    body: Any


def parse_kubeconfig(obj: Mapping[str, Any], ctx: DocumentContext) -> None:
    """Parse a kubeconfig object into ``ctx``: one cluster per context."""
    api_version = obj.get("apiVersion")
    if api_version not in (None, "v1"):
        ctx.fail("apiVersion", "a kubeconfig must have apiVersion v1", None)
        return
    clusters = _entries(obj, "clusters", "cluster", ctx)
    users = _entries(obj, "users", "user", ctx)
    contexts = obj.get("contexts")
    if contexts is None:
        ctx.fail("contexts", "no contexts: each context becomes a cluster", ())
        return
    if not isinstance(contexts, list):
        ctx.fail("contexts", f"must be a list, not {describe(contexts)}", None)
        return

    # Which contexts use which entries: an entry's problems name them.
    wanted: list[tuple[int, str, str, str]] = []
    users_of_cluster: dict[str, list[str]] = {}
    users_of_user: dict[str, list[str]] = {}
    seen: set[str] = set()
    for i, item in enumerate(contexts):
        path = f"contexts[{i}]"
        if not isinstance(item, Mapping):
            ctx.fail(path, f"must be a mapping, not {describe(item)}", ())
            continue
        name = item.get("name")
        if not isinstance(name, str) or not name:
            ctx.fail(f"{path}.name", "required", ())
            continue
        if not is_dns_label(name):
            ctx.fail(
                f"{path}.name",
                f"context {quote(name, 253)} is not a DNS-1123 label (lower-case letters, "
                "digits and '-', at most 63 characters): rename it "
                f"(kubectl config rename-context {quote(name, 253)} NEW-NAME)",
                (),
            )
            continue
        if name in seen:
            ctx.fail(f"{path}.name", f"duplicate context {quote(name)}", ())
            continue
        seen.add(name)
        body = item.get("context")
        if not isinstance(body, Mapping):
            ctx.fail(f"{path}.context", f"must be a mapping, not {describe(body)}", (name,))
            continue
        cluster_ref = body.get("cluster")
        user_ref = body.get("user")
        if not isinstance(cluster_ref, str) or cluster_ref not in clusters:
            ctx.fail(f"{path}.context.cluster", f"no cluster {_ref(cluster_ref)}", (name,))
            continue
        if user_ref in (None, ""):
            user_ref = ""
        elif not isinstance(user_ref, str) or user_ref not in users:
            ctx.fail(f"{path}.context.user", f"no user {_ref(user_ref)}", (name,))
            continue
        wanted.append((i, name, cluster_ref, user_ref))
        users_of_cluster.setdefault(cluster_ref, []).append(name)
        if user_ref:
            users_of_user.setdefault(user_ref, []).append(name)

    accesses = {ref: _access(clusters[ref], ctx, users_of_cluster[ref]) for ref in users_of_cluster}
    credentials = {ref: _credential(users[ref], ctx, users_of_user[ref]) for ref in users_of_user}
    for i, name, cluster_ref, user_ref in wanted:
        access = accesses[cluster_ref]
        credential = credentials[user_ref] if user_ref else None
        if access is None or credential is False:
            continue
        assert not isinstance(credential, bool)
        ctx.define(
            Cluster(
                name=name,
                endpoint=access.endpoint,
                credential=credential,
                ca_pem=access.ca_pem,
                ca_file=access.ca_file,
                insecure=access.insecure,
                tls_server_name=access.tls_server_name,
                source=ctx.source,
                document=ctx.document,
                created=ctx.created,
            ),
            f"contexts[{i}].name",
        )


def _ref(value: object) -> str:
    return quote(value) if isinstance(value, str) else "given"


def _entries(
    obj: Mapping[str, Any], key: str, body_key: str, ctx: DocumentContext
) -> dict[str, _Entry]:
    """The named entries of ``clusters`` or ``users``: the first of a name wins."""
    out: dict[str, _Entry] = {}
    items = obj.get(key)
    if items is None:
        return out
    if not isinstance(items, list):
        ctx.fail(key, f"must be a list, not {describe(items)}", None)
        return out
    for i, item in enumerate(items):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            ctx.fail(f"{key}[{i}]", "must be a mapping with a name", None)
            continue
        name = item["name"]
        if name in out:
            ctx.fail(f"{key}[{i}].name", f"duplicate {body_key} {quote(name)} (the first wins)", ())
            continue
        out[name] = _Entry(i, item.get(body_key))
    return out


def _contexts_suffix(names: list[str]) -> str:
    word = "context" if len(names) == 1 else "contexts"
    return f" (used by {word} {', '.join(names)})"


def _access(entry: _Entry, ctx: DocumentContext, used_by: list[str]) -> _Access | None:
    path = f"clusters[{entry.position}].cluster"
    v = ctx.validator()
    result = _parse_access(entry.body, path, v)
    if v.errors or result is None:
        ctx.report(v, tuple(used_by), _contexts_suffix(used_by))
        return None
    return result


def _parse_access(body: Any, path: str, v: Validator) -> _Access | None:
    obj = v.mapping(body, path)
    if obj is None:
        return None
    if obj.get("proxy-url"):
        v.error(f"{path}.proxy-url", "proxies are not supported")
    server = v.string(obj, "server", path, required=True)
    endpoint = v.endpoint(server, f"{path}.server") if server else None
    ca_pem = ca_file = None
    data = v.string(obj, "certificate-authority-data", path, empty=False)
    name = v.string(obj, "certificate-authority", path, empty=False)
    if data is not None:
        # client-go prefers the data when both are given
        field = f"{path}.certificate-authority-data"
        ca_pem = v.base64(data, field)
        if ca_pem is not None:
            v.certificates(ca_pem, field)
    elif name is not None:
        field = f"{path}.certificate-authority"
        found = v.read(name, field)
        if found is not None:
            ca_file = found[0]
            v.certificates(found[1], field)
    insecure = v.boolean(obj, "insecure-skip-tls-verify", path)
    if insecure and (data is not None or name is not None):
        v.error(
            f"{path}.insecure-skip-tls-verify",
            "insecure-skip-tls-verify cannot be combined with a certificate authority",
        )
    server_name = v.string(obj, "tls-server-name", path, empty=False)
    if server_name is not None:
        server_name = v.server_name(server_name, f"{path}.tls-server-name")
    if endpoint is None:
        return None
    return _Access(endpoint, ca_pem, ca_file, insecure, server_name)


def _credential(entry: _Entry, ctx: DocumentContext, used_by: list[str]) -> Credential | bool:
    """The user's credential; ``False`` when the user entry is broken."""
    path = f"users[{entry.position}].user"
    v = ctx.validator()
    result = _parse_user(entry.body, path, v)
    if v.errors:
        ctx.report(v, tuple(used_by), _contexts_suffix(used_by))
        return False
    return result


def _parse_user(body: Any, path: str, v: Validator) -> Credential:
    if body is None:
        return None
    obj = v.mapping(body, path)
    if obj is None:
        return None
    reported: set[str] = set()
    for key, message in _UNSUPPORTED_USER.items():
        if obj.get(key) not in (None, "", [], {}) and message not in reported:
            reported.add(message)
            v.error(f"{path}.{key}", message)
    forms = [
        key
        for key, present in (
            ("token", obj.get("token") not in (None, "")),
            ("tokenFile", obj.get("tokenFile") not in (None, "")),
            ("client certificate", any(obj.get(k) for k in _CERT_KEYS)),
            ("exec", obj.get("exec") is not None),
        )
        if present
    ]
    if len(forms) > 1:
        v.error(path, f"give exactly one credential, not {' and '.join(forms)}")
        return None
    if v.errors or not forms:
        return None
    form = forms[0]
    if form == "token":
        token = v.string(obj, "token", path)
        token = token and v.token(token, f"{path}.token")
        return TokenCredential(token=token) if token else None
    if form == "tokenFile":
        name = v.string(obj, "tokenFile", path)
        token_path = name and v.token_file(name, f"{path}.tokenFile")
        return TokenCredential(token_file=token_path) if token_path else None
    if form == "exec":
        exec_obj = v.mapping(obj["exec"], f"{path}.exec")
        return v.exec_config(exec_obj, f"{path}.exec", strict=False) if exec_obj else None
    return _client_certificate(obj, path, v)


_CERT_KEYS = ("client-certificate-data", "client-certificate", "client-key-data", "client-key")


def _client_certificate(obj: Mapping[str, Any], path: str, v: Validator) -> Credential:
    cert, cert_field, cert_file = _pem_half(obj, path, "client-certificate", v)
    key, key_field, key_file = _pem_half(obj, path, "client-key", v)
    if cert is None or key is None:
        return None
    if not v.key_pair(cert, cert_field, key, key_field):
        return None
    return X509Credential(
        certificate=None if cert_file else cert,
        private_key=None if key_file else key,
        certificate_file=cert_file,
        private_key_file=key_file,
    )


def _pem_half(
    obj: Mapping[str, Any], path: str, key: str, v: Validator
) -> tuple[bytes | None, str, str | None]:
    """One half of a client certificate: ``(pem, field, file path or None)``."""
    data = v.string(obj, f"{key}-data", path, empty=False)
    name = v.string(obj, key, path, empty=False)
    if data is not None:
        field = f"{path}.{key}-data"
        return v.base64(data, field), field, None
    field = f"{path}.{key}"
    if name is None:
        v.error(field, f"required: give {key} or {key}-data")
        return None, field, None
    found = v.read(name, field)
    if found is None:
        return None, field, None
    return found[1], field, found[0]
