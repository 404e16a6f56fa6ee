"""TLS context factories built once per server or per cluster, never per request.

Both sides pin ALPN to ``http/1.1`` by default: with Twisted 26 and
pyOpenSSL 26 a server that sets no ``acceptableProtocols`` fails the
handshake of clients that offer ALPN (kubectl, curl), and an upgrade
connection must never negotiate HTTP/2.  :data:`H2` offers ``h2`` first:
the gateway's HTTP/2 stream connections to clusters and the simulator's
listener use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet._sslverify import IOpenSSLTrustRoot
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
)

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


class _RequestClientCertificate(ssl.CertificateOptions):
    """Server options that ask for a client certificate and accept any.

    The handshake never fails on a client certificate: the application
    verifies it against the CAs it trusts and answers a 401 ``Status`` as a
    kube-apiserver does (Go's ``tls.RequestClientCert``).  No CA names are
    sent, so Go clients present whatever certificate they hold.
    """

    def _makeContext(self, skipCiphers: bool = False) -> SSL.Context:
        ctx: SSL.Context = super()._makeContext(skipCiphers)
        ctx.set_verify(SSL.VERIFY_PEER, _accept_any)
        return ctx


def server_options(
    cert_pem: bytes,
    key_pem: bytes,
    request_client_certificate: bool = True,
    alpn: Sequence[bytes] = HTTP11,
    chain_pem: bytes = b"",
) -> IOpenSSLServerConnectionCreator:
    """Server TLS options, built once per listening server.

    With ``request_client_certificate`` the server asks for a client
    certificate and accepts any; check it with the peer certificate of the
    transport (``transport.getPeerCertificate()``) in the application.
    """
    cert = crypto.load_certificate(crypto.FILETYPE_PEM, cert_pem)
    key = crypto.load_privatekey(crypto.FILETYPE_PEM, key_pem)
    chain = load_certificates(chain_pem) if chain_pem else []
    factory = _RequestClientCertificate if request_client_certificate else ssl.CertificateOptions
    opts = factory(
        privateKey=key,
        certificate=cert,
        extraCertChain=chain,
        acceptableProtocols=list(alpn),
        raiseMinimumTo=ssl.TLSVersion.TLSv1_2,
    )
    return opts


def client_options(
    hostname: str,
    ca_pem: bytes | None,
    cert_pem: bytes | None = None,
    key_pem: bytes | None = None,
    insecure: bool = False,
    alpn: Sequence[bytes] = HTTP11,
) -> IOpenSSLClientConnectionCreator:
    """Client TLS options for one upstream: verified against ``ca_pem`` (or
    the system roots when ``None``) with hostname/IP checks, unless
    ``insecure``; presenting a client certificate when given one."""
    client_cert: ssl.PrivateCertificate | None = None
    if cert_pem and key_pem:
        client_cert = ssl.PrivateCertificate.loadPEM(key_pem + b"\n" + cert_pem)
    if insecure:
        kwargs: dict[str, object] = {}
        if client_cert is not None:
            kwargs = {
                "privateKey": client_cert.privateKey.original,
                "certificate": client_cert.original,
            }
        opts = ssl.CertificateOptions(
            verify=False,
            acceptableProtocols=list(alpn),
            **kwargs,  # type: ignore[arg-type]
        )
        return opts
    trust: IOpenSSLTrustRoot
    if ca_pem:
        trust = ssl.trustRootFromCertificates(
            [ssl.Certificate(c) for c in load_certificates(ca_pem)]
        )
    else:
        trust = ssl.platformTrust()
    return ssl.optionsForClientTLS(
        hostname,
        trustRoot=trust,
        clientCertificate=client_cert,
        acceptableProtocols=list(alpn),
    )
