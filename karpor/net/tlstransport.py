"""TLS on the socket: Twisted TCP transports whose socket is a pyOpenSSL
``Connection`` (the gateway's front connections and its connections to
clusters).

Twisted's own TLS (:class:`twisted.protocols.tls.TLSMemoryBIOProtocol`)
layers a protocol over a plain TCP transport and moves every byte through
memory BIOs: each read is a ``recv`` into Python, a ``bio_write``, a loop
of ``SSL_read`` ending in ``WantReadError``; each write is an ``SSL_write``,
a loop of ``bio_read`` and a TCP write deferred to the next reactor turn
(small writes are aggregated by a ``callLater(0)``).  On the gateway's
request path that glue was a third of a worker's CPU.  Here the
``Connection`` owns the descriptor (``SSL_set_fd``): a read is one
``SSL_read`` per record on the socket (the records of one readable event
handed to the protocol as one piece; a record shorter than the largest
ends the event's reads without a last ``SSL_read`` failing with
``WantReadError``), a write one ``SSL_write`` (a loop of them for a large
buffer), and a write on an idle connection goes out at once instead of
waiting for the reactor to report the socket writable.  While a
protocol handles a read, what it writes to any of these connections is
held and written once it returns, one record per connection
(:class:`_Held`): a proxied response's head and body, say, go out as one
record and one ``send``.  The success path of ``SSL_read``/``SSL_write``
skips pyOpenSSL's per-call Python (:mod:`karpor.net.openssl_internals`).
A spliced connection (exec, attach, port-forward) switches to *bulk mode*
(:meth:`_TLSConnection.bulk`): OpenSSL then works on memory BIOs and the
transport reads up to 256 KiB (many records) per event with one ``recv``
and sends what one ``SSL_write`` of up to 256 KiB made with one ``send``:
a few system calls per MiB instead of about two hundred, at the price of
more Python per small message (which is why requests stay on the socket).

Everything else is Twisted's TCP transport (:mod:`twisted.internet.tcp`):
buffering, producers and consumers, ``loseConnection``, half-close,
``abortConnection``.  What TLS adds:

* the handshake runs on the first readable/writable events; data written
  before it completes is buffered; a handshake failure ends the connection
  with the ``SSL.Error``; a server whose client spoke plain HTTP instead
  answers first, in plain text, as Go does (:data:`PLAIN_HTTP_REFUSAL`);
* a client verifies the server's name (or IP address) with
  ``service_identity`` once the handshake is done, before its protocol
  hears of it (a mismatch ends the connection with the ``VerificationError``
  and nothing is sent); SNI goes out for names;
* protocols providing :class:`~twisted.internet.interfaces.IHandshakeListener`
  hear ``handshakeCompleted``; ``getPeerCertificate`` and
  ``negotiatedProtocol`` (ALPN) answer as Twisted's TLS transports do;
  :func:`server_name` gives the client's SNI under either implementation
  (host routing, :mod:`karpor.http.route`);
* an orderly close (and ``loseWriteConnection``) sends ``close_notify``;
  a peer's ``close_notify``, or a TCP end without one, is the end of input.

:class:`TLSPort` listens (or adopts a listening descriptor from the
supervisor); :class:`TLSClientEndpoint` connects.  The SSL contexts come
from :mod:`karpor.net.tls`, built once per server or per cluster.

What this takes from Twisted and pyOpenSSL beyond their public API goes
through :mod:`karpor.net.twisted_internals` and
:mod:`karpor.net.openssl_internals`, which check it once per process: where
Twisted's part is missing (or ``tlsImplementation: twisted``), ports and
endpoints serve with Twisted's own TLS instead (:mod:`karpor.net.twistedtls`,
chosen by :mod:`karpor.net.implementation`); where pyOpenSSL's is, records
go through pyOpenSSL's public ``recv``/``send`` and there is no bulk mode.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from service_identity.pyopenssl import verify_hostname, verify_ip_address
from twisted.internet import main, tcp
from twisted.internet.defer import Deferred
from twisted.internet.error import DNSLookupError
from twisted.internet.interfaces import (
    IHalfCloseableProtocol,
    IHandshakeListener,
    IListeningPort,
    IProtocol,
    IProtocolFactory,
    IResolutionReceiver,
    ISSLTransport,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import ClientFactory
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.net import implementation, openssl_internals, twistedtls
from karpor.net.twisted_internals import (
    ClientInternals,
    ConnectionInternals,
    ConnectorInternals,
    adopt_port,
)

#: most ``SSL_read``s (records) per readable event: a connection reads until
#: ``WantReadError``, in turns of at most this many records, and hands the
#: protocol what one turn read as one piece
_READS_PER_EVENT = 16
#: most bytes handed to one ``SSL_write``
_WRITE_SLICE = 0x40000
#: most reads discarding unread input before an orderly close
_DISCARD_READS = 16
#: what a server tells a client that sent plain HTTP where TLS was due (Go's words)
PLAIN_HTTP_REFUSAL = (
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


# -- record reads and writes ------------------------------------------------
#
# ``SSL.Connection.recv``/``send`` cost a few microseconds of Python per
# call; where pyOpenSSL's binding passes its check, the direct calls of
# :mod:`karpor.net.openssl_internals` replace them (bound by
# :func:`_bind_records` once the process has chosen, on the first port or
# endpoint).


def _public_recv(connection: SSL.Connection, size: int) -> bytes:
    return connection.recv(size)


def _public_send(connection: SSL.Connection, data: bytes | memoryview) -> int:
    return connection.send(data)


def _bind_records() -> None:
    """Use pyOpenSSL's binding if this process's choice allows it."""
    direct = implementation.current().openssl_binding
    _TLSConnection.direct_records = direct
    _TLSConnection.read_record = staticmethod(openssl_internals.recv if direct else _public_recv)
    _TLSConnection.write_record = staticmethod(openssl_internals.send if direct else _public_send)


#: the most plaintext one TLS record carries: a shorter read is the end of
#: what the peer has written so far
_FULL_RECORD = 16384
#: bulk mode (:meth:`_TLSConnection.bulk`): most bytes read from the socket
#: per readable event, and most plaintext encrypted and sent at a time
BULK_READ = 256 * 1024
BULK_WRITE = 256 * 1024
#: room for the plaintext one bulk read may complete (a record begun by the
#: read before, the read's own records) and for one bulk write's records
_BULK_PLAIN = BULK_READ + 2 * _FULL_RECORD
_BULK_CIPHER = BULK_WRITE + 65536
#: a remainder this small is encrypted with the piece before it
_BULK_TAIL = 16384
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


class _Bulk:
    """A connection's memory BIOs once it is in bulk mode, and the
    ciphertext the socket has not taken yet."""

    __slots__ = ("bios", "cipher", "held")

    def __init__(self, bios: openssl_internals.BulkBIOs) -> None:
        self.bios = bios
        #: ciphertext waiting for the socket
        self.cipher = b""
        #: plaintext bytes left in Twisted's buffer whose ciphertext is in
        #: ``cipher`` (so that Twisted keeps writing until it is sent)
        self.held = 0


def _buffers() -> openssl_internals.BulkBuffers:
    """The buffers every bulk connection of the process works in."""
    return openssl_internals.bulk_buffers(BULK_READ, _BULK_PLAIN, _BULK_CIPHER)


class _Held:
    """Writes held while a TLS connection's protocol handles a read.

    Handling one read typically writes a few pieces (a response head, then
    its body; a request head to the cluster): each would be an
    ``SSL_write``, a TLS record and a ``send`` of its own.  While a read is
    being handled, TLS writes are held per connection and, once the
    protocol returns, each connection writes what it got in one piece, in
    order.  Writes made outside a read (timers, Deferreds) go at once.
    ``loseConnection`` and ``loseWriteConnection`` write what is held first.
    """

    def __init__(self) -> None:
        self.active = False
        self.connections: list[_TLSConnection] = []

    def release(self) -> None:
        """Write what every connection holds; stop holding."""
        self.active = False
        connections = self.connections
        while connections:
            self.connections = []
            for connection in connections:
                connection._release()
            connections = self.connections


_holding = _Held()


@dataclass(frozen=True)
class ClientTLS:
    """How to speak TLS to one server: the context (built once) and the name
    its certificate must show (``verify``: the name is checked)."""

    context: SSL.Context
    hostname: str
    verify: bool = True

    @property
    def is_ip(self) -> bool:
        """Whether :attr:`hostname` is an IP address (no SNI; IP SAN check)."""
        return _is_ip(self.hostname)


class _TLSConnection:
    """What TLS changes in :class:`twisted.internet.tcp.Connection` (a mixin
    placed before it)."""

    socket: Any
    protocol: IProtocol
    reactor: Any
    connected: int
    disconnecting: int
    disconnected: int
    dataBuffer: bytes
    offset: int
    _raw: socket.socket
    _client_tls: ClientTLS | None = None
    _handshaken = False
    _reading = False
    #: whether the last read turn ended at its limit rather than at ``WantReadError``
    _unfinished = False
    #: what was written while a read was being handled (see :class:`_Held`)
    _held: list[bytes] | None = None
    #: the memory BIOs of bulk mode (``None``: OpenSSL works on the socket)
    _bulk: _Bulk | None = None
    #: whether pyOpenSSL's binding is used: direct record calls, bulk mode
    #: (every connection alike: :func:`_bind_records`)
    direct_records = False
    #: ``connection.recv(size)``: the plaintext of (at most) one record
    read_record: Callable[[SSL.Connection, int], bytes] = staticmethod(_public_recv)
    #: ``connection.send(data)``: how many bytes of ``data`` were written
    write_record: Callable[[SSL.Connection, bytes | memoryview], int] = staticmethod(_public_send)

    def _wrap(self, raw: socket.socket, context: SSL.Context, server: bool) -> SSL.Connection:
        self._raw = raw
        conn = SSL.Connection(context, raw)
        if server:
            conn.set_accept_state()
        else:
            conn.set_connect_state()
        conn.set_app_data(self)
        return conn

    # -- the handshake ---------------------------------------------------

    def _handshake(self) -> BaseException | None:
        """One step of the handshake; an exception ends the connection."""
        try:
            self.socket.do_handshake()
        except SSL.WantReadError:
            self.stopWriting()  # type: ignore[attr-defined]
            return None
        except SSL.WantWriteError:
            self.startWriting()  # type: ignore[attr-defined]
            return None
        except SSL.Error as exc:
            if self._client_tls is None and _plain_http(exc):
                with contextlib.suppress(OSError):
                    self._raw.send(PLAIN_HTTP_REFUSAL)  # the close then reads the rest
            return exc
        client = self._client_tls
        if client is not None and client.verify:
            try:
                if client.is_ip:
                    verify_ip_address(self.socket, client.hostname)
                else:
                    verify_hostname(self.socket, client.hostname)
            except VerificationError as exc:
                return exc
        self._handshaken = True
        if self.output_buffered() or self.disconnecting:  # type: ignore[attr-defined]
            self.startWriting()  # type: ignore[attr-defined]
        else:
            self.stopWriting()  # type: ignore[attr-defined]
        listener = IHandshakeListener(self.protocol, None)
        if listener is not None:
            listener.handshakeCompleted()
        return None

    # -- reading -----------------------------------------------------------

    def startReading(self) -> None:
        self._reading = True
        tcp.Connection.startReading(self)  # type: ignore[arg-type]
        if self._unfinished:
            # the last turn stopped at its limit, not at WantReadError: what
            # OpenSSL may hold would not make the socket readable again
            self.reactor.callLater(0, self._read_buffered)

    def stopReading(self) -> None:
        self._reading = False
        tcp.Connection.stopReading(self)  # type: ignore[arg-type]

    def _read_buffered(self) -> None:
        if self._reading and self.connected and not self.disconnected:
            why = self.doRead()
            if why is not None:
                self.lose_connection_now(why)  # type: ignore[attr-defined]

    def doRead(self) -> BaseException | None:
        if self._bulk is not None:
            return self._bulk_read(self._bulk)
        if not self._handshaken:
            failed = self._handshake()
            if failed is not None or not self._handshaken:
                return failed
        conn = self.socket
        read_record = self.read_record
        size: int = self.bufferSize  # type: ignore[attr-defined]
        chunks: list[bytes] = []
        why: BaseException | None = None
        self._unfinished = False
        for _ in range(_READS_PER_EVENT):
            try:
                data = read_record(conn, size)
                chunks.append(data)
                if len(data) < _FULL_RECORD:
                    # a short record: most likely all the peer wrote; if
                    # more follows, the socket is still readable (OpenSSL
                    # holds nothing beyond the record it just returned)
                    break
            except SSL.Error as exc:
                why = self._read_failed(exc)
                break
        else:
            # a long burst: let other connections run, then read on (what
            # OpenSSL holds would not make the socket readable again)
            self._unfinished = True
            self.reactor.callLater(0, self._read_buffered)
        if chunks:
            self._deliver(chunks)
        return why

    def _read_failed(self, error: SSL.Error) -> BaseException | None:
        """What an ``SSL_read`` error means for the connection: nothing more
        to read now (``None``; wanting to write first starts writing), its
        end, or its loss."""
        if isinstance(error, SSL.WantReadError):
            return None
        if isinstance(error, SSL.WantWriteError):
            self.startWriting()  # type: ignore[attr-defined]
            return None
        if isinstance(error, SSL.ZeroReturnError):
            return main.CONNECTION_DONE
        if isinstance(error, SSL.SysCallError):
            # (-1, 'Unexpected EOF'): the TCP end without close_notify
            return main.CONNECTION_DONE if error.args[0] == -1 else main.CONNECTION_LOST
        return error

    def _deliver(self, chunks: list[bytes]) -> None:
        """The records of one event reach the protocol as one piece; what it
        writes meanwhile (to any TLS connection) goes out afterwards in one
        piece per connection."""
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if _holding.active:
            self.protocol.dataReceived(data)
        else:
            _holding.active = True
            try:
                self.protocol.dataReceived(data)
            finally:
                _holding.release()

    # -- bulk mode -------------------------------------------------------------

    def bulk(self) -> None:
        """Move bytes in large pieces from now on (a spliced connection:
        exec, attach, port-forward, ``cp``).

        OpenSSL reading the socket itself makes two ``read`` calls per
        16 KiB record and one ``write`` per record.  In bulk mode it works
        on memory BIOs instead: a readable event is one ``recv`` of up to
        :data:`BULK_READ` bytes (many records) decrypted in one turn, and a
        write one ``SSL_write`` of up to :data:`BULK_WRITE` bytes whose
        records go out with one ``send``.  Per request that costs more
        Python than it saves system calls, so connections start on the
        socket and switch here.  The switch waits for nothing: it is made
        only when OpenSSL holds no unsent record (nothing is buffered)."""
        if (
            not self.direct_records
            or self._bulk is not None
            or not self._handshaken
            or not self.connected
            or self.output_buffered()  # type: ignore[attr-defined]
        ):
            return
        self._bulk = _Bulk(openssl_internals.BulkBIOs(self.socket))

    def _bulk_read(self, bulk: _Bulk) -> BaseException | None:
        buffers = _buffers()
        try:
            got = self._raw.recv_into(buffers.raw)
        except OSError as exc:
            return None if exc.errno in _AGAIN else main.CONNECTION_LOST
        if not got:
            return main.CONNECTION_DONE  # a TCP end, with or without close_notify
        if not bulk.bios.feed(buffers, got):
            return main.CONNECTION_LOST
        # every whole record fed; the usual end of a turn: OpenSSL wants more
        pieces, error = bulk.bios.decrypt(buffers)
        why = self._read_failed(error) if error is not None else None
        sent = self._bulk_send(bulk)  # a post-handshake message may want an answer
        if pieces:
            self._deliver(pieces)
        return why or sent

    def _bulk_send(self, bulk: _Bulk) -> BaseException | None:
        """Send the records OpenSSL wrote to the outgoing BIO, keeping what
        the socket does not take."""
        if bulk.cipher:
            sent = self._send_raw(bulk.cipher)
            if sent is None:
                return main.CONNECTION_LOST
            bulk.cipher = bulk.cipher[sent:]
            if bulk.cipher:
                self.startWriting()  # type: ignore[attr-defined]
                return None
        buffers = _buffers()
        while True:
            chunk = bulk.bios.ciphertext(buffers)
            if chunk is None:
                return None
            sent = self._send_raw(chunk)
            if sent is None:
                return main.CONNECTION_LOST
            if sent < len(chunk):
                rest = [bytes(chunk[sent:])]
                while (chunk := bulk.bios.ciphertext(buffers)) is not None:
                    rest.append(bytes(chunk))
                bulk.cipher = b"".join(rest)
                self.startWriting()  # type: ignore[attr-defined]
                return None

    def _send_raw(self, data: Any) -> int | None:
        """``send`` on the socket: the bytes it took (0 when it would block),
        ``None`` when the connection is lost."""
        try:
            sent: int = self._raw.send(data)
        except OSError as exc:
            return 0 if exc.errno in _AGAIN else None
        return sent

    def _bulk_write(self, bulk: _Bulk, data: bytes) -> int | BaseException:
        if bulk.cipher:
            why = self._bulk_send(bulk)
            if why is not None:
                return why
            if bulk.cipher:
                return 0
        done, bulk.held = bulk.held, 0
        view = memoryview(data)
        while done < len(view) and not bulk.cipher:
            n = len(view) - done
            if n > BULK_WRITE + _BULK_TAIL:
                n = BULK_WRITE
            try:
                written = bulk.bios.encrypt(view[done : done + n])
            except SSL.Error:
                return main.CONNECTION_LOST
            if not written:
                return done
            done += written
            why = self._bulk_send(bulk)
            if why is not None:
                return why
        if bulk.cipher and done:
            # one byte stays in Twisted's buffer: it writes on until sent
            bulk.held = 1
            return done - 1
        return done

    # -- writing -----------------------------------------------------------

    def doWrite(self) -> BaseException | None:
        bulk = self._bulk
        if bulk is not None and bulk.cipher and not bulk.held:
            # records with no plaintext kept for them (alerts, close_notify)
            why = self._bulk_send(bulk)
            if why is not None or bulk.cipher:
                return why
        if not self._handshaken:
            if self.disconnecting:
                return main.CONNECTION_DONE
            why = self._handshake()
            if why is not None or not self._handshaken:
                return why
        return tcp.Connection.doWrite(self)  # type: ignore[arg-type,no-any-return]

    def writeSomeData(self, data: bytes) -> int | BaseException:
        if not self._handshaken or not data:
            return 0
        if self._bulk is not None:
            return self._bulk_write(self._bulk, data)
        conn = self.socket
        if len(data) <= _WRITE_SLICE:
            try:
                return self.write_record(conn, data)
            except (SSL.WantWriteError, SSL.WantReadError):
                return 0
            except SSL.Error:
                return main.CONNECTION_LOST
        view = memoryview(data)
        sent = 0
        while sent < len(view):
            try:
                sent += self.write_record(conn, view[sent : sent + _WRITE_SLICE])
            except (SSL.WantWriteError, SSL.WantReadError):
                break
            except SSL.Error:
                return main.CONNECTION_LOST
        return sent

    def write(self, data: bytes) -> None:
        if _holding.active and data:
            if self._held is None:
                self._held = [data]
                _holding.connections.append(self)
            else:
                self._held.append(data)
            return
        self._write_now(data)

    def _release(self) -> None:
        """Write what was held (see :class:`_Held`)."""
        held, self._held = self._held, None
        if held:
            self._write_now(held[0] if len(held) == 1 else b"".join(held))

    def _write_now(self, data: bytes) -> None:
        if (
            self._handshaken
            and not (self._bulk is not None and self._bulk.cipher)
            and not self.output_buffered()  # type: ignore[attr-defined]
            and self.connected
            and not self.disconnecting
            and not self.write_side_closed()  # type: ignore[attr-defined]
            and data
        ):
            sent = self.writeSomeData(data)
            if not isinstance(sent, int):
                sent = 0  # the buffered write meets the error in doWrite
                if self._bulk is not None:
                    self._bulk.held = 0
            if sent == len(data):
                return
            data = data[sent:]
        tcp.Connection.write(self, data)  # type: ignore[arg-type]

    def writeSequence(self, iovec: Iterable[bytes]) -> None:
        self.write(b"".join(iovec))

    def loseConnection(self) -> None:
        self._release()
        tcp.Connection.loseConnection(self)  # type: ignore[arg-type]

    def loseWriteConnection(self) -> None:
        self._release()
        tcp.Connection.loseWriteConnection(self)  # type: ignore[arg-type]

    # -- closing -------------------------------------------------------------

    def close_write_side(self) -> None:
        """``close_notify``, then the socket's write side."""
        if self._handshaken:
            with contextlib.suppress(SSL.Error):
                self.socket.shutdown()  # close_notify
            if self._bulk is not None:
                self._bulk_send(self._bulk)  # best effort
        with contextlib.suppress(OSError):
            self._raw.shutdown(socket.SHUT_WR)
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            try:
                half.writeConnectionLost()
            except BaseException:
                self.connectionLost(Failure())  # type: ignore[attr-defined]

    def close_socket(self, orderly: bool) -> None:
        """``close_notify`` (orderly) or a reset, then close the socket."""
        raw = self._raw
        try:
            if orderly:
                if self._handshaken and not self.write_side_closed():  # type: ignore[attr-defined]
                    with contextlib.suppress(SSL.Error):
                        self.socket.shutdown()  # close_notify, best effort
                    if self._bulk is not None:
                        self._bulk_send(self._bulk)
                # input nobody will read (a TLS 1.3 session ticket, say) would
                # turn close() into a reset that can destroy what the peer has
                # not read yet: discard it first
                for _ in range(_DISCARD_READS):
                    if not raw.recv(65536):
                        break
            else:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        raw.close()

    # -- what the protocol may ask --------------------------------------------

    def getPeerCertificate(self) -> Any:
        """The peer's certificate (``OpenSSL.crypto.X509``) or ``None``."""
        return self.socket.get_peer_certificate() if self._handshaken else None

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """The ALPN protocol chosen (``None`` before the handshake or without one)."""
        if not self._handshaken:
            return None
        chosen: bytes | None = self.socket.get_alpn_proto_negotiated() or None
        return chosen

    def server_name(self) -> bytes | None:
        """The TLS server name (SNI) the client sent (``None``: none)."""
        name: bytes | None = self.socket.get_servername()
        return name


@implementer(ISSLTransport)
class TLSServer(_TLSConnection, ConnectionInternals, tcp.Server):  # type: ignore[misc]
    """An accepted connection of a :class:`TLSPort`."""

    def __init__(
        self,
        sock: socket.socket,
        protocol: IProtocol,
        client: Any,
        server: TLSPort,
        sessionno: int,
        reactor: Any,
    ) -> None:
        conn = self._wrap(sock, server.context, server=True)
        tcp.Server.__init__(
            self,
            conn,  # type: ignore[arg-type]
            protocol,
            client,
            server,
            sessionno,
            reactor,
        )


class TLSPort(tcp.Port):
    """A listening port whose connections speak TLS with ``context``.

    :meth:`adopt` and :meth:`listen` serve with the process's TLS
    implementation (:mod:`karpor.net.implementation`): a :class:`TLSPort`,
    or a port of Twisted's own TLS (:mod:`karpor.net.twistedtls`).
    """

    transport = TLSServer  # type: ignore[assignment]

    #: set by :meth:`adopt` / :meth:`listen` before the first connection
    context: SSL.Context

    @classmethod
    def adopt(
        cls,
        reactor: Any,
        fd: int,
        family: socket.AddressFamily,
        factory: IProtocolFactory,
        context: SSL.Context,
    ) -> IListeningPort:
        """Listen on an inherited listening descriptor (a worker's)."""
        if not _fast():
            return twistedtls.adopt(reactor, fd, family, factory, context)
        port: TLSPort = adopt_port(cls, reactor, fd, family, factory)  # type: ignore[assignment]
        port.context = context
        port.startListening()
        return port

    @classmethod
    def listen(
        cls,
        reactor: Any,
        port: int,
        factory: IProtocolFactory,
        context: SSL.Context,
        interface: str = "",
        backlog: int = 50,
    ) -> IListeningPort:
        """Listen on ``interface:port`` (``CannotListenError`` as ``listenTCP``)."""
        if not _fast():
            return twistedtls.listen(reactor, port, factory, context, interface, backlog)
        listening = cls(port, factory, backlog=backlog, interface=interface, reactor=reactor)
        listening.context = context
        listening.startListening()
        return listening


@implementer(ISSLTransport)
class TLSClient(_TLSConnection, ClientInternals, tcp.Client):  # type: ignore[misc]
    """An outgoing connection that speaks TLS once TCP is connected."""

    def __init__(self, host: str, port: int, connector: _TLSConnector, reactor: Any) -> None:
        self._client_tls = connector.tls
        tcp.Client.__init__(self, host, port, None, connector, reactor)

    def tcp_connected(self) -> None:
        """Wrap the socket in TLS; the protocol is built; the ClientHello goes."""
        tls = self._client_tls
        assert tls is not None
        conn = self._wrap(self.socket, tls.context, server=False)
        if not tls.is_ip:
            conn.set_tlsext_host_name(tls.hostname.encode("idna"))
        self.socket = conn
        self.finish_connecting()
        if self.connected:
            self.startWriting()  # the ClientHello
            factory = self.connector.factory
            if isinstance(factory, _Connecting):
                factory.connected(self.protocol)


class _TLSConnector(ConnectorInternals):
    def __init__(
        self,
        host: str,
        port: int,
        factory: ClientFactory,
        timeout: float,
        reactor: Any,
        tls: ClientTLS,
    ) -> None:
        super().__init__(host, port, factory, timeout, None, reactor)
        self.tls = tls

    def make_transport(self) -> TLSClient:
        return TLSClient(self.host, self.port, self, self.reactor)


class _Connecting(ClientFactory):
    """Hands the one connection's protocol to a Deferred (or its failure)."""

    noisy = False  # no "Starting factory" line per upstream connection

    def __init__(self, factory: IProtocolFactory, deferred: Deferred[IProtocol]) -> None:
        self._factory = factory
        self._deferred = deferred

    def buildProtocol(self, addr: Any) -> IProtocol | None:  # type: ignore[override]
        return self._factory.buildProtocol(addr)

    def connected(self, protocol: IProtocol) -> None:
        """TCP is up and ``protocol`` has its transport."""
        if not self._deferred.called:
            self._deferred.callback(protocol)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self._deferred.called:
            self._deferred.errback(reason)


@implementer(IStreamClientEndpoint)
class TLSClientEndpoint:
    """Connects to ``host:port`` and speaks TLS as ``tls`` says.

    An IP address (either family) is connected to directly; a name is
    resolved with the reactor's name resolver (``getaddrinfo``: IPv4 and
    IPv6) and its addresses are tried in turn until one connects.
    """

    def __init__(
        self, reactor: Any, host: str, port: int, tls: ClientTLS, timeout: float = 30
    ) -> None:
        self._reactor = reactor
        self._host = host
        self._port = port
        self._tls = tls
        self._timeout = timeout

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        """Start connecting; fires with the protocol once TCP is connected
        (the handshake follows: ``IHandshakeListener`` tells when it is done)."""
        attempt: list[Deferred[IProtocol]] = []
        cancelled: list[bool] = []

        def cancel(d: Deferred[IProtocol]) -> None:
            cancelled.append(True)
            if attempt:
                attempt[-1].cancel()

        deferred: Deferred[IProtocol] = Deferred(cancel)

        def try_from(hosts: list[str], last: Failure | None) -> None:
            if cancelled or deferred.called:
                return
            if not hosts:
                deferred.errback(last or Failure(DNSLookupError(self._host)))
                return
            d = self._connect_to(hosts[0], protocolFactory)
            attempt.append(d)
            d.addCallbacks(
                lambda protocol: None if deferred.called else deferred.callback(protocol),
                lambda failure: try_from(hosts[1:], failure),
            )

        if _is_ip(self._host):
            try_from([self._host], None)
        else:
            receiver = AddressCollector(lambda hosts: try_from(hosts, None))
            self._reactor.nameResolver.resolveHostName(receiver, self._host, self._port)
        return deferred

    def _connect_to(self, host: str, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        if not _fast():
            tls = self._tls
            name = None if tls.is_ip else tls.hostname.encode("idna")
            return twistedtls.connect(
                self._reactor, host, self._port, protocolFactory, tls.context, name, self._timeout
            )
        connector: list[_TLSConnector] = []
        d: Deferred[IProtocol] = Deferred(lambda _: connector[0].stopConnecting())
        factory = _Connecting(protocolFactory, d)
        c = _TLSConnector(host, self._port, factory, self._timeout, self._reactor, self._tls)
        connector.append(c)
        c.connect()
        return d


def server_name(transport: object) -> bytes | None:
    """The TLS server name (SNI) a client sent on ``transport``, served by
    either TLS implementation (a wrapper forwarding attributes, such as the
    front's counting transport, is fine); ``None`` without SNI or TLS."""
    own = getattr(transport, "server_name", None)
    if own is not None:
        name: bytes | None = own()
        return name
    return twistedtls.server_name(transport)


def _fast() -> bool:
    """Whether this process serves with the socket transport (binding the
    record calls it chose on the way)."""
    if implementation.current().transport != implementation.FAST:
        return False
    _bind_records()
    return True


def _plain_http(error: SSL.Error) -> bool:
    """Whether a server's handshake failed on a plain HTTP request (OpenSSL
    recognises one in place of a ClientHello: ``http request``)."""
    reasons = error.args[0] if error.args and isinstance(error.args[0], list) else []
    return any(isinstance(r, tuple) and r[-1:] == ("http request",) for r in reasons)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IResolutionReceiver)
class AddressCollector:
    """Collects a name's addresses (an ``IResolutionReceiver``), then hands
    them on in the resolver's order, each once."""

    def __init__(self, done: Callable[[list[str]], None]) -> None:
        self._done = done
        self._hosts: list[str] = []

    def resolutionBegan(self, resolutionInProgress: object) -> None:
        pass

    def addressResolved(self, address: Any) -> None:
        host = str(getattr(address, "host", ""))
        if host and host not in self._hosts:
            self._hosts.append(host)

    def resolutionComplete(self) -> None:
        self._done(self._hosts)
