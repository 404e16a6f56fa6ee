"""Agent identities (placeholder until the agent-credentials work lands)."""

from __future__ import annotations

from karpor.auth.identity import Identity

AGENT_GROUP = "system:karpor:agents"
AGENT_USER_PREFIX = "system:karpor:agent:"


def tunnel_cluster(identity: Identity) -> str | None:
    """The cluster ``identity`` (authenticated by a gateway-CA client
    certificate) may open a tunnel for, or ``None``."""
    user = identity.user
    if AGENT_GROUP not in identity.groups or not user.startswith(AGENT_USER_PREFIX):
        return None
    name = user[len(AGENT_USER_PREFIX) :]
    return name or None
