"""What the request pipeline needs of the request it handles: :class:`Front`,
implemented by an HTTP/1.1 connection
(:class:`~karpor.front.protocol.GatewayProtocol`, one request at a time) and
by an HTTP/2 stream (:class:`~karpor.front.h2protocol.H2Request`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from karpor.auth.access import Peer
from karpor.front.record import RequestRecord
from karpor.gatewayapi.request import Responder
from karpor.http.connection import RequestHead
from karpor.kube.status import ApiError
from karpor.upstream.forward import Channel

if TYPE_CHECKING:
    from karpor.front.protocol import GatewayProtocol


class ClientExchange(Protocol):
    """What a front tells the exchange answering its request: a
    :class:`~karpor.upstream.forward.Forwarder`, or a fan-out across
    clusters (:class:`~karpor.front.fanout.Fanout`)."""

    def client_lost(self) -> None:
        """The client went away."""

    def end_stream(self) -> None:
        """The worker drains: end the response now."""


class FrontResponder(Responder, Protocol):
    """The own API's :class:`~karpor.gatewayapi.request.Responder` on a front."""

    @property
    def started(self) -> bool:
        """Whether a response began."""


class Front(Channel, Protocol):
    """The client side of one request, for the pipeline: a forwarder's
    :class:`~karpor.upstream.forward.Channel`, plus what the pipeline notes
    and answers on it."""

    #: the request's audit record (``None``: none kept)
    audit: RequestRecord | None
    #: the cluster the request goes to (its streams end if it is removed)
    cluster_name: str | None
    #: the caller's address (for ``X-Forwarded-For``)
    client_address: bytes
    #: the cluster the connection's TLS server name routes to (host routing:
    #: a name, the ``ApiError`` of a bad one, or ``None``)
    server_route: str | ApiError | None
    #: the exchange of the proxied request
    forwarder: ClientExchange | None
    #: where the request body goes, and its end
    on_body: Callable[[bytes], None] | None
    on_end: Callable[[], None] | None

    def peer(self) -> Peer:
        """What the connection's client certificate proves."""

    def audit_id(self) -> str:
        """The request's ``Audit-Id`` (for log lines)."""

    def upgradable(self) -> GatewayProtocol:
        """The HTTP/1.1 connection an upgrade request is spliced on; raises
        the ``ApiError`` refusing it where none can be."""

    def api_responder(self, head: RequestHead) -> FrontResponder:
        """How the own API answers this request (noted as its responder)."""
