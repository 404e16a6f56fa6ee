"""Twisted's own TLS (``TLSMemoryBIOProtocol`` over a plain TCP transport),
the fallback of :mod:`karpor.net.tlstransport` (``tlsImplementation: twisted``,
or Twisted internals missing: :mod:`karpor.net.implementation`).

The same SSL contexts serve both (:mod:`karpor.net.tls`, built once per server
or per cluster): a connection creator here makes each connection from the
context as the socket transport does.  A client sends SNI for names and
verifies the server's name or IP address once the handshake is done
(:func:`verify_on_handshake`, installed on every verifying client context),
before its protocol hears of it.  Only public API of Twisted, pyOpenSSL
and service_identity is used.  What the socket transport adds and this one
lacks: the plain-HTTP refusal (a client speaking HTTP to the TLS port is
simply disconnected), bulk mode for spliced sessions, and the held writes
that make one record of a response's pieces.
"""

from __future__ import annotations

import socket
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IProtocol,
    IProtocolFactory,
)
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

log = Logger(namespace="karpor.net")


@implementer(IOpenSSLServerConnectionCreator)
class _ServerConnections:
    """Server connections from one context."""

    def __init__(self, context: SSL.Context) -> None:
        self._ssl_context = context

    def serverConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._ssl_context, None)
        connection.set_app_data(tlsProtocol)
        return connection


@implementer(IOpenSSLClientConnectionCreator)
class _ClientConnections:
    """Client connections from one context, with SNI for a name."""

    def __init__(self, context: SSL.Context, server_name: bytes | None) -> None:
        self._ssl_context = context
        self._server_name = server_name

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._ssl_context, None)
        connection.set_app_data(tlsProtocol)
        if self._server_name is not None:
            connection.set_tlsext_host_name(self._server_name)
        return connection


def listen(
    reactor: Any,
    port: int,
    factory: IProtocolFactory,
    context: SSL.Context,
    interface: str = "",
    backlog: int = 50,
) -> IListeningPort:
    """Listen on ``interface:port`` with TLS from ``context``."""
    tls = TLSMemoryBIOFactory(_ServerConnections(context), False, factory)
    listening: IListeningPort = reactor.listenTCP(port, tls, backlog=backlog, interface=interface)
    return listening


def adopt(
    reactor: Any,
    fd: int,
    family: socket.AddressFamily,
    factory: IProtocolFactory,
    context: SSL.Context,
) -> IListeningPort:
    """Listen on an inherited listening descriptor with TLS from ``context``."""
    tls = TLSMemoryBIOFactory(_ServerConnections(context), False, factory)
    listening: IListeningPort = reactor.adoptStreamPort(fd, family, tls)
    return listening


def connect(
    reactor: Any,
    address: str,
    port: int,
    factory: IProtocolFactory,
    context: SSL.Context,
    server_name: bytes | None,
    timeout: float,
) -> Deferred[IProtocol]:
    """Connect to the IP ``address``; TLS from ``context`` (SNI
    ``server_name``).  Fires with the protocol once TCP is connected, as
    :class:`karpor.net.tlstransport.TLSClientEndpoint` does."""
    tcp = TCP6ClientEndpoint if ":" in address else TCP4ClientEndpoint
    endpoint = wrapClientTLS(
        _ClientConnections(context, server_name), tcp(reactor, address, port, timeout)
    )
    connecting: Deferred[IProtocol] = endpoint.connect(factory)
    return connecting


def server_name(transport: object) -> bytes | None:
    """The TLS server name (SNI) the client sent on a connection of
    Twisted's TLS (``transport``: the ``TLSMemoryBIOProtocol``, whose
    ``getHandle`` is its ``SSL.Connection``); ``None`` without SNI, or for
    any other transport."""
    get_handle = getattr(transport, "getHandle", None)
    connection = get_handle() if get_handle is not None else None
    if not isinstance(connection, SSL.Connection):
        return None
    name: bytes | None = connection.get_servername()
    return name


def verify_on_handshake(context: SSL.Context, hostname: str, is_ip: bool) -> None:
    """Have Twisted's TLS connections made from ``context`` verify the
    server's ``hostname`` (an IP address: ``is_ip``) once the handshake is
    done; a mismatch ends the connection with the ``VerificationError``.
    (The socket transport verifies on its own: its connections are left
    alone.)"""
    verify = verify_ip_address if is_ip else verify_hostname

    def info(connection: SSL.Connection, where: int, ret: int) -> None:
        if not where & SSL.SSL_CB_HANDSHAKE_DONE:
            return
        protocol = connection.get_app_data()
        if not isinstance(protocol, TLSMemoryBIOProtocol):
            return
        try:
            verify(connection, hostname)
        except VerificationError:
            protocol.failVerification(Failure())
        except BaseException:
            # an exception escaping an OpenSSL callback would be lost
            log.failure("while verifying {hostname}", hostname=hostname)
            protocol.failVerification(Failure())

    context.set_info_callback(info)
