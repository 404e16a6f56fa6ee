"""What karpor.tlstransport takes from pyOpenSSL beyond its public API: the
cffi binding (``OpenSSL._util``) with its functions and constants, and a
Connection's internals.  A
pyOpenSSL release that moves one of them fails here, by name, before any
connection does."""

from __future__ import annotations

from OpenSSL import SSL
from OpenSSL._util import ffi, lib


def test_the_binding_has_every_function_and_constant_used() -> None:
    for name in (
        "BIO_read",
        "BIO_write",
        "SSL_read",
        "SSL_write",
        "SSL_get_error",
        "SSL_clear_mode",
        "SSL_ERROR_WANT_READ",
        "SSL_MODE_ENABLE_PARTIAL_WRITE",
    ):
        assert hasattr(lib, name), name
    for name in ("new", "buffer", "from_buffer"):
        assert callable(getattr(ffi, name)), name


def test_a_memory_connection_has_the_internals_used() -> None:
    connection = SSL.Connection(SSL.Context(SSL.TLS_CLIENT_METHOD), None)
    for name in ("_ssl", "_into_ssl", "_from_ssl"):
        assert getattr(connection, name, None) is not None, name
    assert callable(connection._raise_ssl_error)
