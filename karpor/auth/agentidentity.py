"""Agent identities: who may open a tunnel, and for which cluster.

An agent (``karpor agent``) proves itself with a client certificate of the
gateway CA that ``karpor agent-credentials --cluster NAME`` issued: user
``system:karpor:agent:NAME`` (:data:`AGENT_USER_PREFIX`), group
``system:karpor:agents`` (:data:`AGENT_GROUP`).  :func:`tunnel_cluster`
is the one decision the tunnel endpoint asks: the cluster an authenticated
identity may serve, ``None`` for anyone else.  It takes the identity only
from a gateway-CA certificate (:attr:`Identity.client_certificate
<karpor.auth.identity.Identity.client_certificate>`): a static token,
front-proxy headers (``X-Remote-User``) or ``Impersonate-*`` headers naming
an agent never make one, whoever asserts them.

Those names are reserved the other way round too (:func:`is_reserved`): an
identity with an agent's user name or group is no user.
:class:`karpor.auth.access.Access` refuses it every cluster and every
gateway path whatever the policy says (also without a policy file, where
every authenticated caller may do everything), so an agent's credentials,
which sit in a member cluster, reach nothing but that cluster's tunnel, and
no policy rule (``system:authenticated``, a wildcard) grants an agent
anything by accident.
"""

from __future__ import annotations

from karpor.auth.identity import Identity
from karpor.config.clusters import is_dns_label

#: the group of every agent's certificate (its ``O``)
AGENT_GROUP = "system:karpor:agents"
#: an agent's user name (its certificate's ``CN``) is this and the cluster name
AGENT_USER_PREFIX = "system:karpor:agent:"


def agent_user(cluster: str) -> str:
    """The user name of the agent serving ``cluster``."""
    return AGENT_USER_PREFIX + cluster


def is_reserved(identity: Identity) -> bool:
    """Whether ``identity`` bears an agent's user name or group (however it
    was authenticated): such an identity is refused as a user."""
    return identity.user.startswith(AGENT_USER_PREFIX) or AGENT_GROUP in identity.groups


def tunnel_cluster(identity: Identity) -> str | None:
    """The cluster ``identity`` may open a tunnel for: ``NAME`` when a
    gateway-CA client certificate proved user ``system:karpor:agent:NAME``
    in group ``system:karpor:agents`` and ``NAME`` is a cluster name (a
    DNS-1123 label); ``None`` otherwise."""
    if not identity.client_certificate or AGENT_GROUP not in identity.groups:
        return None
    user = identity.user
    if not user.startswith(AGENT_USER_PREFIX):
        return None
    name = user[len(AGENT_USER_PREFIX) :]
    return name if is_dns_label(name) else None
