"""The tunnel endpoint: an agent's upgrade request accepted on the front.

An agent's request (:mod:`karpor.http.tunnelwire`: ``GET``
:data:`~karpor.http.tunnelwire.TUNNEL_PATH` upgrading to
:data:`~karpor.http.tunnelwire.PROTOCOL`) is accepted only when all hold:

- the connection presented a gateway-CA client certificate that is still
  accepted (not revoked, not expired): a token, front-proxy headers or
  anonymous access never open a tunnel;
- that certificate's identity is an agent's
  (:func:`karpor.auth.agentidentity.tunnel_cluster`) for cluster ``NAME``;
- cluster ``NAME`` is defined with ``spec.access.tunnel: true``.

Then the front answers ``101`` (with this worker's index and the worker
count) and hands the connection to an
:class:`~karpor.upstream.tunnel.AgentLink`.  Anything else is not a tunnel
request: it goes on through the pipeline like any request for an unknown
path (``404``, or ``403`` where a policy says so), so the endpoint is
invisible to users; an agent refused for its cluster is logged.

An agent's identity opens its tunnel and nothing else: any other request
it authenticates (a cluster, the gateway's own API) is refused with a
``403`` (:func:`refuse_agent`), whatever the policy says, so agent
credentials (which live in the member clusters) never reach another
cluster through the gateway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from karpor.auth.agentidentity import AGENT_GROUP, tunnel_cluster
from karpor.auth.identity import Identity
from karpor.http.connection import RequestHead
from karpor.http.tunnelwire import VERSION_HEADER, clean_version, is_tunnel_request, switch_response
from karpor.kube.status import ApiError
from karpor.upstream.tunnel import AgentLink, Tunnels

if TYPE_CHECKING:
    from karpor.front.protocol import GatewayFactory, GatewayProtocol

log = Logger()

_UPGRADE = b"upgrade"
_VERSION = VERSION_HEADER.lower()


def _header(head: RequestHead, lname: bytes) -> bytes | None:
    for name, value in head.headers:
        if name.lower() == lname:
            return value.strip()
    return None


def refuse_agent(identity: Identity) -> None:
    """Raise the ``403`` of an agent identity making any request but its
    tunnel's (see the module docstring)."""
    if AGENT_GROUP in identity.groups:
        raise ApiError(
            403,
            f'User "{identity.user}" is an agent identity: it may only open its tunnel',
            "Forbidden",
        )


def accept_tunnel(
    factory: GatewayFactory, tunnels: Tunnels, front: GatewayProtocol, head: RequestHead
) -> bool:
    """Open a tunnel for the agent's request ``head`` on ``front`` when it
    may (see the module docstring); ``False``: not a tunnel request, the
    pipeline answers it as any other."""
    if not head.upgrade or not is_tunnel_request(head.target, _header(head, _UPGRADE)):
        return False
    access = factory.access
    peer = front.peer()
    identity = peer.identity
    if identity is None:
        return False
    try:
        if access.authenticate(peer, ()) is not identity:
            return False
    except ApiError:
        return False
    name = tunnel_cluster(identity)
    if name is None:
        return False
    address = front.client_address.decode("ascii", "replace")
    cluster = factory.clusters().get(name)
    if cluster is None or not cluster.tunnel:
        log.warn(
            "tunnel refused: agent {agent} at {address} asks for cluster {cluster}, "
            "which is not a tunnel cluster of this gateway",
            agent=identity.user,
            address=address,
            cluster=name,
        )
        return False
    version = clean_version(_header(head, _VERSION) or b"").decode("ascii")
    transport = front.client

    def authorized() -> bool:
        try:
            return access.authenticate(peer, ()) is identity
        except ApiError:
            return False

    link = AgentLink(
        tunnels,
        name,
        transport,
        agent=identity.user,
        address=address,
        version=version,
        authorized=authorized,
    )
    front.cluster_name = name
    front.status = 101
    transport.write(switch_response(tunnels.worker, tunnels.workers))
    early = front.spliced(link)
    link.start(early)
    return True
