"""Record reads and writes on a pyOpenSSL connection (karpor.net.tlstransport's
tls_recv and tls_send): the same bytes and the same exceptions as
Connection.recv and Connection.send, through the direct OpenSSL calls
(karpor.net.openssl_internals) and through pyOpenSSL's public methods (the
fallback)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from OpenSSL import SSL

from karpor.auth.ca import CertificateAuthority
from karpor.net import openssl_internals, tlstransport
from karpor.net.tls import client_options, server_options

_Recv = Callable[[SSL.Connection, int], bytes]
_Send = Callable[[SSL.Connection, "bytes | memoryview"], int]
tls_recv: _Recv
tls_send: _Send


def _pump(a: SSL.Connection, b: SSL.Connection) -> None:
    """Move what each side wrote to the other (memory BIOs)."""
    for src, dst in ((a, b), (b, a)):
        try:
            while True:
                dst.bio_write(src.bio_read(65536))
        except SSL.WantReadError:
            pass


def _handshaken(
    server_context: SSL.Context, client_context: SSL.Context
) -> tuple[SSL.Connection, SSL.Connection]:
    """A client and a server connection after their handshake, in memory."""
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    client = SSL.Connection(client_context, None)
    client.set_tlsext_host_name(b"localhost")
    client.set_connect_state()
    for _ in range(10):
        for side in (client, server):
            with contextlib.suppress(SSL.WantReadError):
                side.do_handshake()
        _pump(client, server)
    return client, server


@pytest.fixture(params=[True, False], ids=["direct", "public-methods"])
def pair(request: pytest.FixtureRequest) -> Iterator[tuple[SSL.Connection, SSL.Connection]]:
    ca = CertificateAuthority.create("records-ca")
    serving = ca.issue_server("server", ["localhost"])
    client, server = _handshaken(
        server_options(serving.cert_pem, serving.key_pem).getContext(),
        SSL.Context(SSL.TLS_CLIENT_METHOD),
    )
    global tls_recv, tls_send
    if request.param:
        assert openssl_internals.check() is None
        tls_recv, tls_send = openssl_internals.recv, openssl_internals.send
    else:
        tls_recv, tls_send = tlstransport._public_recv, tlstransport._public_send
    yield client, server


def test_bytes_round_trip_and_memoryviews_are_written(
    pair: tuple[SSL.Connection, SSL.Connection],
) -> None:
    client, server = pair
    assert tls_send(client, b"hello ") == 6
    assert tls_send(client, memoryview(b"xxworld")[2:]) == 5
    _pump(client, server)
    got = b""
    while len(got) < 11:
        got += tls_recv(server, 65536)
    assert got == b"hello world"
    big = bytes(range(256)) * 256  # 64 KiB: four records
    sent = 0
    while sent < len(big):
        sent += tls_send(server, big[sent:])
    _pump(client, server)
    received = b""
    while len(received) < len(big):
        piece = tls_recv(client, 65536)
        assert 0 < len(piece) <= 16384  # one record per read
        received += piece
    assert received == big


def test_nothing_to_read_raises_want_read(pair: tuple[SSL.Connection, SSL.Connection]) -> None:
    client, server = pair
    _pump(client, server)  # the session tickets
    with pytest.raises(SSL.WantReadError):
        tls_recv(client, 65536)
    with pytest.raises(SSL.WantReadError):
        tls_recv(server, 65536)


def test_close_notify_raises_zero_return(pair: tuple[SSL.Connection, SSL.Connection]) -> None:
    client, server = pair
    client.shutdown()
    _pump(client, server)
    with pytest.raises(SSL.ZeroReturnError):
        tls_recv(server, 65536)


def test_a_broken_record_raises_the_ssl_error(pair: tuple[SSL.Connection, SSL.Connection]) -> None:
    client, server = pair
    tls_send(client, b"payload")
    record = bytearray(client.bio_read(65536))
    record[-1] ^= 0xFF  # the authentication tag no longer matches
    server.bio_write(bytes(record))
    with pytest.raises(SSL.Error):
        tls_recv(server, 65536)


def test_gateway_contexts_prefer_aes_128_gcm() -> None:
    """Client and server contexts agree on AES-128-GCM, as Go's crypto/tls
    (kube-apiserver, kubectl) prefers on AES hardware."""
    ca = CertificateAuthority.create("suites-ca")
    serving = ca.issue_server("server", ["localhost"])
    options = server_options(serving.cert_pem, serving.key_pem)
    # the gateway's client context; OpenSSL's default one (AES-256-GCM first)
    for client_context in (
        client_options("localhost", ca.cert_pem).context,
        SSL.Context(SSL.TLS_CLIENT_METHOD),
    ):
        client, server = _handshaken(options.getContext(), client_context)
        assert client.get_protocol_version_name() == "TLSv1.3"
        assert client.get_cipher_name() == "TLS_AES_128_GCM_SHA256"
        assert server.get_cipher_name() == "TLS_AES_128_GCM_SHA256"
