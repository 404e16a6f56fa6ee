"""The ``Status`` errors about the gateway's ``clusters`` resource
(``clusters.cluster.karpor.io``), worded as kube-apiserver words them.

They live this low because authorization (:mod:`karpor.auth.access`) and
the gateway's own API (:mod:`karpor.gatewayapi.clusters`) both answer them:
a caller who may not learn whether a cluster exists gets :func:`forbidden`
whether it does or not.
"""

from __future__ import annotations

from karpor.kube.discovery import GROUP
from karpor.kube.status import ApiError

#: the resource's name in URLs and RBAC terms
RESOURCE = "clusters"


def not_found(name: str) -> ApiError:
    """kube's 404 for a cluster that does not exist."""
    return ApiError(
        404,
        f'{RESOURCE}.{GROUP} "{name}" not found',
        "NotFound",
        {"name": name, "group": GROUP, "kind": RESOURCE},
    )


def forbidden(name: str, user: str) -> ApiError:
    """kube's 403 for ``get clusters NAME`` by a caller who may not see a
    cluster of that name (whether it exists or not)."""
    return ApiError(
        403,
        f'{RESOURCE}.{GROUP} "{name}" is forbidden: User "{user}" cannot get resource '
        f'"{RESOURCE}" in API group "{GROUP}" at the cluster scope',
        "Forbidden",
        {"group": GROUP, "kind": RESOURCE, "name": name},
    )
