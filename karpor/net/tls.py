"""TLS context factories built once per server or per cluster, never per request.

Both sides pin ALPN to ``http/1.1`` by default: with Twisted 26 and
pyOpenSSL 26 a server that sets no ``acceptableProtocols`` fails the
handshake of clients that offer ALPN (kubectl, curl), and an upgrade
connection must never negotiate HTTP/2.  :data:`H2` offers ``h2`` first:
the gateway's HTTP/2 stream connections to clusters, its serving context
(unless ``clientConnections.http2`` is off: kubectl and client-go ask for
``http/1.1`` alone on their upgrade connections) and the simulator's
listener use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import ssl

from karpor.net import implementation, openssl_internals, twistedtls
from karpor.net.tlstransport import ClientTLS

__all__ = ["H2", "HTTP11", "ClientTLS", "client_options", "load_certificates", "server_options"]

HTTP11: tuple[bytes, ...] = (b"http/1.1",)
#: HTTP/2 preferred, HTTP/1.1 accepted (a cluster's stream connections; a
#: server that serves both, as kube-apiserver does)
H2: tuple[bytes, ...] = (b"h2", b"http/1.1")


def load_certificates(pem: bytes) -> list[crypto.X509]:
    """Every certificate in a PEM bundle."""
    marker = b"-----END CERTIFICATE-----"
    out = []
    for part in pem.split(marker):
        if b"-----BEGIN CERTIFICATE-----" in part:
            out.append(crypto.load_certificate(crypto.FILETYPE_PEM, part + marker))
    if not out:
        raise ValueError("no PEM certificate found")
    return out


def _accept_any(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    return True


#: the TLS 1.3 cipher suites of every context, in the order Go's crypto/tls
#: prefers on hardware with AES instructions (kube-apiserver, client-go,
#: kubectl): AES-128-GCM first.  OpenSSL's own order puts AES-256-GCM first,
#: and Twisted's server contexts impose their order: kubectl and the gateway
#: would spend a quarter more CPU on every byte of a stream (exec, cp, logs,
#: a large LIST) at each end for no gain a cluster's own connections have.
TLS13_SUITES = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"


def _prefer_aes_128(context: SSL.Context) -> None:
    """Set :data:`TLS13_SUITES` on ``context`` (pyOpenSSL 25.2 or later; with
    an older one through its binding, unless the process does without it:
    OpenSSL's order then)."""
    set_suites = getattr(context, "set_tls13_ciphersuites", None)
    if set_suites is not None:
        set_suites(TLS13_SUITES)
    elif implementation.current().openssl_binding:
        openssl_internals.set_tls13_suites(context, TLS13_SUITES)


def _alpn_chooser(offered: Sequence[bytes]) -> Callable[[SSL.Connection, list[bytes]], bytes]:
    """A server's ALPN choice: its first protocol the client offers.

    Twisted's own chooser asks the connection's ``TLSMemoryBIOProtocol`` for
    its factory; this one depends on nothing but the list, so it serves the
    socket transports of :mod:`karpor.net.tlstransport` as well.
    """

    def choose(conn: SSL.Connection, client: list[bytes]) -> bytes:
        for protocol in offered:
            if protocol in client:
                return protocol
        return b""  # no overlap: the handshake fails, as Twisted's does

    return choose


class _ServerOptions(ssl.CertificateOptions):
    """Server options whose context chooses ALPN with :func:`_alpn_chooser`
    and prefers :data:`TLS13_SUITES`.

    Twisted's context, built once, is adjusted before anything uses it: the
    public ``getContext()`` then returns it (to karpor's socket transport
    and to Twisted's own TLS alike).
    """

    request_client_certificate = False
    #: the ALPN protocols served, most preferred first
    alpn: Sequence[bytes] = HTTP11
    _karpor_context: SSL.Context | None = None

    def getContext(self) -> SSL.Context:
        """The server context (built and adjusted on the first call)."""
        if self._karpor_context is None:
            ctx: SSL.Context = super().getContext()
            _prefer_aes_128(ctx)
            if self.alpn:
                ctx.set_alpn_select_callback(_alpn_chooser(self.alpn))
            if self.request_client_certificate:
                ctx.set_verify(SSL.VERIFY_PEER, _accept_any)
            self._karpor_context = ctx
        return self._karpor_context


class _RequestClientCertificate(_ServerOptions):
    """Server options that ask for a client certificate and accept any.

    The handshake never fails on a client certificate: the application
    verifies it against the CAs it trusts and answers a 401 ``Status`` as a
    kube-apiserver does (Go's ``tls.RequestClientCert``).  No CA names are
    sent, so Go clients present whatever certificate they hold.
    """

    request_client_certificate = True


def server_options(
    cert_pem: bytes,
    key_pem: bytes,
    request_client_certificate: bool = True,
    alpn: Sequence[bytes] = HTTP11,
    chain_pem: bytes = b"",
) -> ssl.CertificateOptions:
    """Server TLS options, built once per listening server (an
    ``IOpenSSLServerConnectionCreator``; ``getContext()`` is the context).

    With ``request_client_certificate`` the server asks for a client
    certificate and accepts any; check it with the peer certificate of the
    transport (``transport.getPeerCertificate()``) in the application.
    """
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem)
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    chain = load_certificates(chain_pem) if chain_pem else []
    factory = _RequestClientCertificate if request_client_certificate else _ServerOptions
    opts = factory(
        privateKey=key,
        certificate=cert,
        extraCertChain=chain,
        acceptableProtocols=list(alpn),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    opts.alpn = tuple(alpn)
    return opts


def client_options(
    hostname: str,
    ca_pem: bytes | None,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    insecure: bool = False,
    alpn: Sequence[bytes] = HTTP11,
) -> ClientTLS:
    """Client TLS for one upstream (:class:`karpor.net.tlstransport.ClientTLS`,
    its context built here, once): verified against ``ca_pem`` (or the
    system roots when ``None``) with the name or IP address checked, unless
    ``insecure``; presenting a client certificate when given one."""
    kwargs: dict[str, Any] = {}
    if cert_pem and key_pem:
        client_cert = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
        kwargs = {
            "privateKey": client_cert.privateKey.original,
            "certificate": client_cert.original,
        }
    if insecure:
        opts = ssl.CertificateOptions(
            verify=False,
            acceptableProtocols=list(alpn),
            raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
            **kwargs,
        )
        return ClientTLS(_offering(opts.getContext(), alpn), hostname, verify=False)
    trust: Any
    if ca_pem:
        trust = ssl.trustRootFromCertificates(
            [ssl.Certificate(c) for c in load_certificates(ca_pem)]
        )
    else:
        trust = ssl.platformTrust()
    opts = ssl.CertificateOptions(
        trustRoot=trust,
        acceptableProtocols=list(alpn),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
        **kwargs,
    )
    tls = ClientTLS(_offering(opts.getContext(), alpn), hostname, verify=True)
    twistedtls.verify_on_handshake(tls.context, hostname, tls.is_ip)
    return tls


def _offering(context: SSL.Context, alpn: Sequence[bytes]) -> SSL.Context:
    """``context`` offering ``alpn`` on every connection (Twisted offers
    per connection of its own TLS protocol) and the TLS 1.3 suites of
    :data:`TLS13_SUITES`."""
    if alpn:
        context.set_alpn_protos(list(alpn))
    _prefer_aes_128(context)
    return context
