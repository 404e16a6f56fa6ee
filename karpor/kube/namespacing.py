"""A list across all namespaces narrowed to one namespace (sans-IO).

A fan-out LIST of a caller whose access policy lets them list only in some
namespaces of a cluster asks that cluster once per such namespace
(:func:`namespaced_target`) instead of once across all namespaces.
"""

from __future__ import annotations

from urllib.parse import quote

from karpor.kube.requestinfo import RequestInfo


def narrowable(info: RequestInfo) -> bool:
    """Whether ``info`` is a list (or watch) of one resource across all
    namespaces, which :func:`namespaced_target` can narrow (``namespaces``
    itself is cluster-scoped: not narrowable)."""
    return (
        info.is_resource_request
        and info.verb in ("list", "watch")
        and not info.namespace
        and not info.name
        and not info.subresource
        and bool(info.resource)
        and info.resource != "namespaces"
    )


def namespaced_target(target: bytes, info: RequestInfo, namespace: str) -> bytes:
    """The request ``target`` (a :func:`narrowable` request, ``info`` its
    attributes) asking for ``namespace`` only; its query is kept as it is."""
    _, sep, query = target.partition(b"?")
    group = f"/{quote(info.api_group, safe='')}" if info.api_group else ""
    path = (
        f"/{info.api_prefix}{group}/{quote(info.api_version, safe='')}"
        f"/namespaces/{quote(namespace, safe='')}/{quote(info.resource, safe='')}"
    )
    return path.encode("ascii") + sep + query
