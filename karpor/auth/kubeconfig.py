"""User kubeconfigs for the gateway (sans-IO): what ``karpor kubeconfig`` writes.

One context per cluster the user may reach, named after the cluster, the
fan-out contexts (:data:`FANOUT_CONTEXT` for every cluster, and one per
label selector the user names: their server is the fan-out proxy path
``clusters/*/proxy`` or ``clusters/SELECTOR/proxy``, whatever the
routing, since a host name cannot hold a selector), plus a context
``karpor`` for the gateway's own API (``https://HOST:PORT``).  A cluster's
context reaches it one of two ways (``routing``):

* :data:`PATH_ROUTING`: its server is the cluster's proxy path on the
  gateway (``https://HOST:PORT/apis/cluster.karpor.io/v1beta1/clusters/NAME/proxy``);
* :data:`HOST_ROUTING`: its server is the gateway itself
  (``https://HOST:PORT``) with ``tls-server-name: NAME.<suffix>``, so the
  request path is the cluster's own (``kubectl get --raw /version``,
  ``kubectl proxy``) and no DNS name is needed.
Every context trusts the gateway CA and authenticates with the same client
certificate (inline, so the file is self-contained), a token, or the exec
credential plugin ``karpor login`` (:func:`login_exec`: the user signs in at
an OpenID provider).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlsplit

import yaml

from karpor.kube.discovery import GROUP_VERSION

#: the context (and kubeconfig cluster) of the gateway's own API
GATEWAY_CONTEXT = "karpor"
#: the context reading every cluster the user may reach at once (``clusters/*/proxy``)
FANOUT_CONTEXT = "all"
#: cluster contexts by TLS server name (``tls-server-name: NAME.<suffix>``)
HOST_ROUTING = "host"
#: cluster contexts by proxy path
PATH_ROUTING = "path"
#: the values of ``routing``
ROUTINGS = (HOST_ROUTING, PATH_ROUTING)

_DURATION_PART = re.compile(r"(\d+)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def normalize_server(server: str) -> str:
    """The gateway URL as ``https://HOST[:PORT]``; ``ValueError`` when it is not one.

    The gateway serves HTTPS only, at the root of its address: a path, query
    or fragment is refused rather than silently dropped.
    """
    parts = urlsplit(server.strip())
    if parts.scheme != "https":
        raise ValueError(f"{server!r}: the gateway URL must start with https://")
    if not parts.hostname:
        raise ValueError(f"{server!r}: the gateway URL has no host")
    try:
        parts.port  # noqa: B018 (validates the port)
    except ValueError:
        raise ValueError(f"{server!r}: invalid port") from None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{server!r}: give the gateway's address only (https://HOST:PORT)")
    if parts.username or parts.password:
        raise ValueError("the gateway URL must not contain credentials")
    return f"https://{parts.netloc}"


def cluster_server(server: str, cluster: str) -> str:
    """The URL of ``cluster`` through the gateway at ``server``."""
    return f"{normalize_server(server)}/apis/{GROUP_VERSION}/clusters/{cluster}/proxy"


def fanout_server(server: str, selector: str) -> str:
    """The URL of the fan-out over the clusters ``selector`` (a label
    selector; ``""``: every cluster, ``*``) picks, through the gateway at
    ``server`` (the selector percent-encoded as one path segment)."""
    segment = quote(selector, safe="") if selector else "*"
    return f"{normalize_server(server)}/apis/{GROUP_VERSION}/clusters/{segment}/proxy"


def _cluster_entry(base: str, name: str, ca: str, routing: str, host_suffix: str) -> dict[str, str]:
    """The kubeconfig ``cluster`` of cluster ``name`` through the gateway at ``base``."""
    if routing == HOST_ROUTING:
        return {
            "server": base,
            "tls-server-name": f"{name}.{host_suffix}",
            "certificate-authority-data": ca,
        }
    return {"server": cluster_server(base, name), "certificate-authority-data": ca}


#: the apiVersion of the exec credential plugin's ExecCredential
EXEC_API_VERSION = "client.authentication.k8s.io/v1"


def login_exec(
    issuer: str,
    client_id: str,
    extra_scopes: Sequence[str] = (),
    certificate_authority: str | None = None,
    device_code: bool = False,
    command: str = "karpor",
    listen_address: str | None = None,
) -> dict[str, Any]:
    """The kubeconfig ``exec`` entry running ``karpor login`` for ``issuer``
    (with ``device_code``: the device-code flow, for machines without a browser)."""
    args = ["login", "--issuer", issuer, "--client-id", client_id]
    if device_code:
        args.append("--device-code")
    if listen_address:
        args += ["--listen-address", listen_address]
    for scope in extra_scopes:
        args += ["--extra-scope", scope]
    if certificate_authority:
        args += ["--certificate-authority", certificate_authority]
    return {
        "apiVersion": EXEC_API_VERSION,
        "command": command,
        "args": args,
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": False,
    }


def build_kubeconfig(
    server: str,
    ca_pem: bytes,
    user: str,
    cert_pem: bytes | None,
    key_pem: bytes | None,
    clusters: Iterable[str],
    token: str | None = None,
    exec_plugin: dict[str, Any] | None = None,
    *,
    routing: str = PATH_ROUTING,
    host_suffix: str = "",
    fanouts: Sequence[tuple[str, str]] = (),
) -> dict[str, Any]:
    """A kubeconfig for ``user`` reaching ``clusters`` through the gateway,
    authenticated by a client certificate and key or, with ``token``, by that
    bearer token (a user of the gateway's token file), or with
    ``exec_plugin`` by that exec credential plugin (:func:`login_exec`); the
    cluster contexts by ``routing`` (:data:`HOST_ROUTING` needs the
    gateway's ``host_suffix``); ``fanouts``: the fan-out contexts, each
    ``(context name, label selector)`` (``""``: every cluster), always by
    path (:func:`fanout_server`).

    Contexts are sorted by cluster name, then the fan-out contexts in the
    order given, then ``karpor``; the current context is the first cluster,
    or ``karpor`` when there is none.
    """
    base = normalize_server(server)
    if routing not in ROUTINGS:
        raise ValueError(f"routing must be one of {', '.join(ROUTINGS)}, not {routing!r}")
    if routing == HOST_ROUTING and not host_suffix:
        raise ValueError(
            "host routing is off on this gateway (hostRouting.suffix is empty): use path routing"
        )
    names = sorted(set(clusters))
    if GATEWAY_CONTEXT in names:
        raise ValueError(
            f"a cluster is named {GATEWAY_CONTEXT!r}, the name of the gateway's own context"
        )
    ca = _b64(ca_pem)
    credential: dict[str, Any]
    if exec_plugin is not None:
        credential = {"exec": exec_plugin}
    elif token is not None:
        credential = {"token": token}
    elif cert_pem is not None and key_pem is not None:
        credential = {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}
    else:
        raise ValueError("a kubeconfig needs a client certificate and key, or a token")
    entries: list[tuple[str, dict[str, str]]] = [
        (name, _cluster_entry(base, name, ca, routing, host_suffix)) for name in names
    ]
    for name, selector in fanouts:
        if name == GATEWAY_CONTEXT or any(name == taken for taken, _ in entries):
            raise ValueError(f"the context name {name!r} is taken (by a cluster or a context)")
        server = fanout_server(base, selector)
        entries.append((name, {"server": server, "certificate-authority-data": ca}))
    entries.append((GATEWAY_CONTEXT, {"server": base, "certificate-authority-data": ca}))
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": name, "cluster": entry} for name, entry in entries],
        "users": [{"name": user, "user": credential}],
        "contexts": [
            {"name": name, "context": {"cluster": name, "user": user}} for name, _ in entries
        ],
        "current-context": names[0] if names else GATEWAY_CONTEXT,
    }


def dump_kubeconfig(config: dict[str, Any]) -> bytes:
    """The kubeconfig as YAML (keys in the order built, as kubectl writes them)."""
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False).encode()


def parse_duration(text: str) -> int:
    """A duration like ``90d``, ``12h``, ``1h30m`` or ``2160h`` in seconds.

    Units: ``s``, ``m``, ``h``, ``d`` (days) and ``w`` (weeks); ``ValueError``
    for anything else or a zero duration.
    """
    text = text.strip()
    pos = 0
    total = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError(f"invalid duration {text!r} (examples: 90d, 12h, 1h30m)")
    if total <= 0:
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return total
