"""The cluster an agent serves: from a kubeconfig context, or the pod's service account.

``karpor agent --kubeconfig FILE [--context CTX]`` serves the cluster of
context ``CTX`` (the file's ``current-context`` without ``--context``),
read by the gateway's own kubeconfig parser
(:func:`karpor.config.kubeconfig.parse_kubeconfig`: the server, its CA, the
user's token, token file, client certificate or exec plugin, and the same
problems reported the same way).  The context may have any name (an EKS
ARN, ``kind-kind``): the cluster is named after the agent's credentials.

Without ``--kubeconfig`` the agent runs in a pod of the cluster it serves
and uses its service account, found as the ``kubernetes`` package's
in-cluster loader finds it (:class:`~kubernetes.config.incluster_config.InClusterConfigLoader`:
``KUBERNETES_SERVICE_HOST`` and ``KUBERNETES_SERVICE_PORT``, the token and
CA files under ``/var/run/secrets/kubernetes.io/serviceaccount``).  The
token stays a token *file*, re-read when it changes, so the kubelet's
rotation of projected tokens just works, and so does a rotated CA file.

Either way the credential stays in the cluster's own network: the agent
uses it, the gateway never sees it.  Errors (:class:`AgentTargetError`)
say what is missing or wrong, never a credential.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from kubernetes.client import Configuration
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import (
    SERVICE_CERT_FILENAME,
    SERVICE_TOKEN_FILENAME,
    InClusterConfigLoader,
)

from karpor.config.clusters import DocumentContext, Validator, is_dns_label
from karpor.config.directory import LocalFiles
from karpor.config.kubeconfig import parse_kubeconfig
from karpor.config.model import Cluster, TokenCredential
from karpor.config.validation import YamlError, describe, load_yaml, quote


class AgentTargetError(ValueError):
    """The cluster to serve cannot be found (the message is safe to print and log)."""


def load_agent_cluster(name: str, kubeconfig: str | None, context: str | None) -> Cluster:
    """The cluster the agent serves, named ``name`` (its credentials' cluster):
    context ``context`` of ``kubeconfig`` (its current context when ``None``),
    or without ``kubeconfig`` the in-cluster service account (blocking: it
    reads files).  Raises :class:`AgentTargetError`."""
    if not is_dns_label(name):
        raise AgentTargetError(f"{quote(name)} is not a cluster name (a DNS-1123 label)")
    if kubeconfig is None:
        if context is not None:
            raise AgentTargetError("--context needs --kubeconfig")
        return in_cluster(name)
    return from_kubeconfig(name, kubeconfig, context)


def _read_kubeconfig(path: str) -> Mapping[str, Any]:
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as exc:
        raise AgentTargetError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise AgentTargetError(f"{path}: not UTF-8 text") from None
    try:
        obj = load_yaml(text)
    except YamlError as exc:
        raise AgentTargetError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(obj, Mapping):
        raise AgentTargetError(f"{path}: not a kubeconfig (a mapping), but {describe(obj)}")
    if obj.get("kind") not in (None, "Config"):
        raise AgentTargetError(f"{path}: kind: not a kubeconfig (kind: Config)")
    return obj


def _context_names(contexts: list[Any]) -> str:
    names = [c.get("name") for c in contexts if isinstance(c, Mapping)]
    shown = [quote(n, 253) for n in names if isinstance(n, str)]
    return ", ".join(shown) or "none"


def from_kubeconfig(name: str, path: str, context: str | None) -> Cluster:
    """The cluster of ``context`` (else the current context) of the kubeconfig ``path``."""
    obj = _read_kubeconfig(path)
    contexts = obj.get("contexts")
    if not isinstance(contexts, list):
        raise AgentTargetError(f"{path}: contexts: the kubeconfig has no contexts")
    wanted = context if context is not None else obj.get("current-context")
    if not isinstance(wanted, str) or not wanted:
        raise AgentTargetError(
            f"{path}: current-context: not set: give --context "
            f"(contexts: {_context_names(contexts)})"
        )
    found = [
        (i, c) for i, c in enumerate(contexts) if isinstance(c, Mapping) and c.get("name") == wanted
    ]
    if not found:
        how = "--context" if context is not None else "current-context"
        raise AgentTargetError(
            f"{path}: {how}: no context {quote(wanted, 253)} (contexts: {_context_names(contexts)})"
        )
    index, entry = found[0]
    # parse just that context, under a name the parser accepts; its entries
    # keep their positions, so a problem names the field as it is in the file
    label = wanted if is_dns_label(wanted) else name
    single = {
        "apiVersion": obj.get("apiVersion"),
        "clusters": obj.get("clusters"),
        "users": obj.get("users"),
        "contexts": [{**entry, "name": label}],
    }
    document = DocumentContext(path, 0, os.path.dirname(path), LocalFiles(), "")
    parse_kubeconfig(single, document)
    if document.problems:
        lines = []
        for problem in document.problems:
            field = problem.field
            if field.startswith("contexts[0]"):
                field = f"contexts[{index}]" + field[len("contexts[0]") :]
            lines.append(str(dataclasses.replace(problem, field=field)))
        raise AgentTargetError("\n".join(lines))
    (definition,) = document.definitions
    return dataclasses.replace(definition.cluster, name=name)


def in_cluster(
    name: str,
    environ: Mapping[str, str] | None = None,
    token_file: str | None = None,
    ca_file: str | None = None,
) -> Cluster:
    """The cluster the pod runs in, reached with its service account (the
    ``kubernetes`` package's in-cluster loader decides what is there);
    ``environ`` and the files default to the process's and the loader's."""
    environ = os.environ if environ is None else environ
    token_file = token_file or SERVICE_TOKEN_FILENAME
    ca_file = ca_file or SERVICE_CERT_FILENAME
    configuration = Configuration()
    loader = InClusterConfigLoader(
        token_filename=token_file,
        cert_filename=ca_file,
        try_refresh_token=False,
        environ=environ,
    )
    try:
        loader.load_and_set(configuration)
    except ConfigException as exc:
        raise AgentTargetError(
            f"not running in a Kubernetes pod with a service account ({exc}): give "
            "--kubeconfig FILE to serve a cluster from outside"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentTargetError(f"the service account: cannot read: {exc}") from None
    v = Validator("", LocalFiles())
    endpoint = v.endpoint(
        str(configuration.host),
        "KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT",
    )
    found = v.read(ca_file, "the service account CA")
    if found is not None:
        v.certificates(found[1], f"the service account CA {ca_file}")
    v.token_file(token_file, "the service account token")
    if v.errors or endpoint is None:
        raise AgentTargetError("; ".join(f"{field}: {message}" for field, message in v.errors))
    return Cluster(
        name=name,
        endpoint=endpoint,
        credential=TokenCredential(token_file=token_file),
        ca_file=ca_file,
        source="in-cluster service account",
    )
