"""Everything karpor takes from pyOpenSSL beyond its public API, and nowhere else.

pyOpenSSL's ``Connection.recv``/``send`` wrap ``SSL_read``/``SSL_write`` in a
few microseconds of Python per call (a fresh 64 KiB buffer per read, a
context manager per write, an error check walking five constants even on
success): on the request path, four calls per proxied request.  The
functions here call the same OpenSSL functions through pyOpenSSL's own cffi
binding (``OpenSSL.SSL._ffi``/``_lib``) on the connection's ``SSL`` object
(``Connection._ssl``), reading into one reused buffer (the reactor is
single-threaded and the bytes are copied out at once); any other result
goes to the connection's own error handling (``Connection._raise_ssl_error``),
which raises exactly what ``recv`` and ``send`` raise.  :class:`BulkBIOs`
moves a connection on a socket to memory BIOs (bulk mode of
:mod:`karpor.net.tlstransport`), and :func:`set_tls13_suites` sets the TLS 1.3
cipher suites where pyOpenSSL has no method for it (before 25.2).

:data:`PRIVATE_NAMES` lists every private name used; :func:`check` verifies
each exists and behaves (an in-memory ClientHello through the direct calls)
and returns why not.  Nothing here may be called unless :func:`check`
returned ``None`` (:mod:`karpor.net.implementation` decides, once per
process).  No other module of karpor touches pyOpenSSL's private names
(``tests/unit/test_tls_bindings.py`` holds the fence).
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL

#: the private names of pyOpenSSL used here: of ``OpenSSL.SSL`` (the cffi
#: binding), of the binding's ``_lib`` and ``_ffi``, of a ``Connection``
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "OpenSSL.SSL": ("_ffi", "_lib"),
    "_lib": (
        "SSL_read",
        "SSL_write",
        "SSL_get_error",
        "SSL_ERROR_WANT_READ",
        "SSL_set_bio",
        "SSL_clear_mode",
        "SSL_MODE_ENABLE_PARTIAL_WRITE",
        "SSL_CTX_set_ciphersuites",
        "BIO_new",
        "BIO_s_mem",
        "BIO_read",
        "BIO_write",
    ),
    "_ffi": ("new", "buffer", "from_buffer", "unpack"),
    "Connection": ("_ssl", "_raise_ssl_error"),
    "Context": ("_context",),
}

_READ_BUFFER_SIZE = 65536

try:
    from OpenSSL.SSL import _ffi, _lib  # type: ignore[attr-defined]

    _SSL_read: Callable[[Any, Any, int], int] = _lib.SSL_read
    _SSL_write: Callable[[Any, Any, int], int] = _lib.SSL_write
    _unpack: Callable[[Any, int], bytes] = _ffi.unpack
    _from_buffer: Callable[[Any], Any] = _ffi.from_buffer
    _read_buffer: Any = _ffi.new("char[]", _READ_BUFFER_SIZE)
    _UNBOUND: str | None = None
except (ImportError, AttributeError) as exc:  # pragma: no cover - another pyOpenSSL
    _UNBOUND = f"pyOpenSSL's binding lacks what is used ({exc})"


def check() -> str | None:
    """Why the direct calls cannot be used with the installed pyOpenSSL
    (``None``: they can)."""
    if _UNBOUND is not None:
        return _UNBOUND
    for holder, names in (("_lib", PRIVATE_NAMES["_lib"]), ("_ffi", PRIVATE_NAMES["_ffi"])):
        missing = [n for n in names if not hasattr(_ffi if holder == "_ffi" else _lib, n)]
        if missing:
            return f"pyOpenSSL's binding lacks {holder}.{', '.join(missing)}"
    try:
        return _try_a_handshake()
    except Exception as exc:
        return f"pyOpenSSL's internals do not behave as expected ({type(exc).__name__}: {exc})"


def _try_a_handshake() -> str | None:
    """Start TLS handshakes through the direct calls: a read on a socket,
    a write on a socket, a read in bulk mode; each must send a ClientHello
    and raise (or report) "want read", as OpenSSL does."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    set_tls13_suites(context, b"TLS_AES_128_GCM_SHA256")
    for step in ("recv", "send", "bulk"):
        ours, theirs = socket.socketpair()
        ours.setblocking(False)
        try:
            connection = SSL.Connection(context, ours)
            connection.set_connect_state()
            if step == "bulk":
                bios = BulkBIOs(connection)
                pieces, error = bios.decrypt(bulk_buffers(1024, 1024, 65536))
                if pieces or error is not None:
                    return "a bulk-mode read did not want to read"
                hello = bios.ciphertext(bulk_buffers(1024, 1024, 65536))
                sent = bytes(hello) if hello is not None else b""
            else:
                try:
                    if step == "recv":
                        recv(connection, 1024)
                    else:
                        send(connection, b"x")
                except SSL.WantReadError:
                    pass
                else:
                    return f"a direct {step} before the handshake did not raise WantReadError"
                sent = theirs.recv(65536)
            if sent[:1] != b"\x16":  # a handshake record
                return f"a direct {step} sent no ClientHello"
        finally:
            ours.close()
            theirs.close()
    return None


def recv(connection: SSL.Connection, size: int) -> bytes:
    """``connection.recv(size)``: the plaintext of (at most) one record."""
    ssl = connection._ssl
    read = _SSL_read(ssl, _read_buffer, min(size, _READ_BUFFER_SIZE))
    if read > 0:
        return _unpack(_read_buffer, read)
    connection._raise_ssl_error(ssl, read)
    return b""


def send(connection: SSL.Connection, data: bytes | memoryview) -> int:
    """``connection.send(data)``: how many bytes of ``data`` were written."""
    if not data:
        return connection.send(data)
    ssl = connection._ssl
    written = _SSL_write(ssl, data if isinstance(data, bytes) else _from_buffer(data), len(data))
    if written > 0:
        return written
    connection._raise_ssl_error(ssl, written)
    return 0


def set_tls13_suites(context: SSL.Context, suites: bytes) -> None:
    """``context.set_tls13_ciphersuites(suites)`` (a method from pyOpenSSL 25.2 on)."""
    if _lib.SSL_CTX_set_ciphersuites(context._context, suites) != 1:
        raise ValueError(f"OpenSSL refused the TLS 1.3 cipher suites {suites!r}")


class BulkBuffers:
    """The buffers every bulk-mode connection of the process works in (the
    reactor is single-threaded; each is copied out before anything else
    runs)."""

    def __init__(self, raw: int, plain: int, cipher: int) -> None:
        self._raw = _ffi.new("char[]", raw)
        #: where a socket read lands (``recv_into``)
        self.raw = memoryview(_ffi.buffer(self._raw))
        self._plain = _ffi.new("char[]", plain)
        self._plain_size = plain
        self._cipher = _ffi.new("char[]", cipher)
        self._cipher_size = cipher


@functools.cache
def bulk_buffers(raw: int, plain: int, cipher: int) -> BulkBuffers:
    """The process's :class:`BulkBuffers` of these sizes, made on first use."""
    return BulkBuffers(raw, plain, cipher)


class BulkBIOs:
    """A connection moved from its socket to memory BIOs (the ``SSL``
    object owns and frees them): ciphertext is fed in and taken out here,
    the socket I/O is the caller's."""

    __slots__ = ("_connection", "_incoming", "_outgoing", "_ssl")

    def __init__(self, connection: SSL.Connection) -> None:
        self._connection = connection
        ssl = self._ssl = connection._ssl
        self._incoming = _lib.BIO_new(_lib.BIO_s_mem())
        self._outgoing = _lib.BIO_new(_lib.BIO_s_mem())
        _lib.SSL_set_bio(ssl, self._incoming, self._outgoing)
        # one SSL_write takes a whole piece (memory BIOs never refuse)
        _lib.SSL_clear_mode(ssl, _lib.SSL_MODE_ENABLE_PARTIAL_WRITE)

    def feed(self, buffers: BulkBuffers, size: int) -> bool:
        """Hand OpenSSL the first ``size`` bytes of ``buffers.raw``."""
        return bool(_lib.BIO_write(self._incoming, buffers._raw, size) == size)

    def decrypt(self, buffers: BulkBuffers) -> tuple[list[bytes], SSL.Error | None]:
        """The plaintext of every whole record fed so far, and the error
        that ended the reading (``None``: OpenSSL wants more input)."""
        ssl = self._ssl
        plain = buffers._plain
        room = buffers._plain_size
        pieces: list[bytes] = []
        filled = 0
        while True:
            if filled == room:
                pieces.append(_ffi.buffer(plain, filled)[:])
                filled = 0
            n = _lib.SSL_read(ssl, plain + filled, room - filled)
            if n > 0:
                filled += n
                continue
            error: SSL.Error | None = None
            if _lib.SSL_get_error(ssl, n) != _lib.SSL_ERROR_WANT_READ:
                try:
                    self._connection._raise_ssl_error(ssl, n)
                except SSL.Error as exc:
                    error = exc
            if filled:
                pieces.append(_ffi.buffer(plain, filled)[:])
            return pieces, error

    def ciphertext(self, buffers: BulkBuffers) -> memoryview | None:
        """The next piece of ciphertext OpenSSL wrote (``None``: none left);
        valid until the next call."""
        n = _lib.BIO_read(self._outgoing, buffers._cipher, buffers._cipher_size)
        if n <= 0:
            return None
        return memoryview(_ffi.buffer(buffers._cipher, n))

    def encrypt(self, piece: memoryview) -> int:
        """``SSL_write`` of all of ``piece``: its length, or 0 when OpenSSL
        wants something first; an ``SSL.Error`` when the connection failed."""
        with _ffi.from_buffer(piece) as data:
            written: int = _lib.SSL_write(self._ssl, data, len(piece))
        if written > 0:
            return written
        self._connection._raise_ssl_error(self._ssl, written)
        return 0
