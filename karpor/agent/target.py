"""The cluster an agent serves (placeholder until the agent-credentials work lands)."""

from __future__ import annotations

import dataclasses

from karpor.config.directory import load_path
from karpor.config.model import Cluster


def load_agent_cluster(name: str, kubeconfig: str | None, context: str | None) -> Cluster:
    """The cluster ``name`` as the agent reaches it: a kubeconfig's context."""
    if kubeconfig is None:
        raise ValueError("placeholder: in-cluster configuration is not supported here")
    result = load_path(kubeconfig)
    clusters = {c.name: c for c in result.clusters}
    if not clusters:
        raise ValueError(f"{kubeconfig}: no usable context")
    chosen = clusters.get(context) if context else next(iter(clusters.values()))
    if chosen is None:
        raise ValueError(f"{kubeconfig}: no context {context!r}")
    return dataclasses.replace(chosen, name=name)
