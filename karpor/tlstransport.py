"""TLS on the socket: Twisted TCP transports that speak TLS themselves with
a pyOpenSSL ``Connection`` over memory BIOs (the gateway's front connections
and its connections to clusters, and the simulator's).

Twisted's own TLS (:class:`twisted.protocols.tls.TLSMemoryBIOProtocol`)
layers a protocol over a plain TCP transport: every write goes through a
``callLater(0)`` aggregation and a second transport, every read through a
second protocol.  On the gateway's request path that glue was a third of a
worker's CPU.  Here the transport itself moves the bytes between the socket
and OpenSSL's memory BIOs, in large pieces:

* a readable event is one ``recv`` of up to :data:`READ_SIZE` bytes (many
  TLS records) into the incoming BIO, then ``SSL_read`` until OpenSSL wants
  more, each record decrypted straight into one buffer at its offset; the
  records of the event reach the protocol as one piece (one copy).  OpenSSL
  reading a socket itself (``SSL_set_fd``) makes two ``read`` calls per
  record (header, body): 128 system calls per MiB instead of 4;
* a write encrypts up to :data:`WRITE_CHUNK` bytes of plaintext with one
  ``SSL_write`` (partial writes off: all its records at once) and sends the
  records with one ``send``.  OpenSSL writing to a socket makes one
  ``write`` per 16 KiB record, and pyOpenSSL's partial-write mode one
  ``SSL_write`` call per record.  Ciphertext the socket did not take waits
  in the transport (at most one chunk); the transport keeps the last
  plaintext byte of that chunk in its buffer until then, so that Twisted goes
  on writing, and counts it as written once the ciphertext is out;
* a write on an idle connection goes out at once instead of waiting for the
  reactor to report the socket writable.  While a protocol handles a read,
  what it writes to any of these connections is held and written once it
  returns, in one piece per connection (:class:`_Held`): a proxied
  response's head and body, say, go out as one record and one ``send``.

``SSL_read``/``SSL_write``/``BIO_read``/``BIO_write`` are called through
pyOpenSSL's own cffi binding (``_lib``, the connection's ``_ssl`` and BIOs):
pyOpenSSL's methods allocate a buffer and copy per call.

Everything else is Twisted's TCP transport (:mod:`twisted.internet.tcp`):
buffering, producers and consumers, ``loseConnection``, half-close,
``abortConnection``.  What TLS adds:

* the handshake runs on the first readable/writable events; data written
  before it completes is buffered; a handshake failure ends the connection
  with the ``SSL.Error``;
* a client verifies the server's name (or IP address) with
  ``service_identity`` once the handshake is done, before its protocol
  hears of it (a mismatch ends the connection with the ``VerificationError``
  and nothing is sent); SNI goes out for names;
* protocols providing :class:`~twisted.internet.interfaces.IHandshakeListener`
  hear ``handshakeCompleted``; ``getPeerCertificate`` and
  ``negotiatedProtocol`` (ALPN) answer as Twisted's TLS transports do;
* an orderly close (and ``loseWriteConnection``) sends ``close_notify``;
  a peer's ``close_notify``, or a TCP end without one, is the end of input.

:class:`TLSPort` listens (or adopts a listening descriptor from the
supervisor); :class:`TLSClientEndpoint` connects.  The SSL contexts come
from :mod:`karpor.tls`, built once per server or per cluster.
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

# pyOpenSSL's cffi binding and, below, its Connection's internals (``_ssl``,
# the memory BIOs ``_into_ssl``/``_from_ssl``, ``_raise_ssl_error``): the
# transport drives OpenSSL's memory BIOs itself.  They have been stable for
# years; tests/unit/test_tls_bindings.py names each one, so an upgrade that
# moves them fails there first (setup.cfg bounds the release series).
from OpenSSL._util import ffi as _ffi
from OpenSSL._util import lib as _lib
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

#: most bytes read from the socket per readable event (many TLS records)
READ_SIZE = 256 * 1024
#: most plaintext bytes encrypted (and sent with one ``send``) at a time
WRITE_CHUNK = 256 * 1024
#: room for the plaintext of what one :data:`READ_SIZE` read may complete
#: (a record begun by the previous read, the read's own records)
_PLAIN_ROOM = READ_SIZE + 2 * 16384
#: most reads discarding unread input before an orderly close
_DISCARD_READS = 16
#: most ciphertext bytes taken from the outgoing BIO at once (a chunk's records)
_OUT_ROOM = WRITE_CHUNK + 65536
#: a remainder this small is encrypted with the chunk before it (no send of its own)
_SMALL_TAIL = 16384
_AGAIN = (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR)


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
    _tempDataBuffer: list[bytes]
    _writeDisconnected: bool
    _tls: SSL.Connection
    _client_tls: ClientTLS | None = None
    _handshaken = False
    #: what was written while a read was being handled (see :class:`_Held`)
    _pending: list[bytes] | None = None
    #: ciphertext the socket has not taken yet
    _cipher: bytes = b""
    #: plaintext bytes left in Twisted's buffer whose ciphertext is in
    #: ``_cipher`` (so that Twisted keeps writing until it is sent)
    _held = 0

    def _wrap(self, context: SSL.Context, server: bool) -> None:
        conn = SSL.Connection(context, None)
        if server:
            conn.set_accept_state()
        else:
            conn.set_connect_state()
        conn.set_app_data(self)
        # memory BIOs always take a whole SSL_write: no per-record returns
        _lib.SSL_clear_mode(conn._ssl, _lib.SSL_MODE_ENABLE_PARTIAL_WRITE)
        self._tls = conn

    # -- ciphertext to the socket -------------------------------------------

    def _send_output(self) -> BaseException | None:
        """Send what OpenSSL wrote to the outgoing BIO (records, alerts)
        straight from a buffer, keeping what the socket does not take."""
        if self._cipher:
            try:
                sent = self.socket.send(self._cipher)
            except OSError as exc:
                if exc.errno not in _AGAIN:
                    return main.CONNECTION_LOST
                sent = 0
            self._cipher = self._cipher[sent:]
            if self._cipher:
                self.startWriting()  # type: ignore[attr-defined]
                return None
        bio = self._tls._from_ssl
        buf = _buffers().cipher
        while True:
            n = _lib.BIO_read(bio, buf, _OUT_ROOM)
            if n <= 0:
                return None
            try:
                sent = self.socket.send(_ffi.buffer(buf, n))
            except OSError as exc:
                if exc.errno not in _AGAIN:
                    return main.CONNECTION_LOST
                sent = 0
            if sent < n:
                rest = [_ffi.buffer(buf, n)[sent:]]
                while (n := _lib.BIO_read(bio, buf, _OUT_ROOM)) > 0:
                    rest.append(_ffi.buffer(buf, n)[:])
                self._cipher = b"".join(rest)
                self.startWriting()  # type: ignore[attr-defined]
                return None

    # -- the handshake ---------------------------------------------------

    def _handshake(self) -> BaseException | None:
        """One step of the handshake; an exception ends the connection."""
        try:
            self._tls.do_handshake()
        except SSL.WantReadError:
            return self._send_output()
        except SSL.Error as exc:
            self._send_output()  # the alert, best effort
            return exc
        client = self._client_tls
        if client is not None and client.verify:
            try:
                if client.is_ip:
                    verify_ip_address(self._tls, client.hostname)
                else:
                    verify_hostname(self._tls, client.hostname)
            except VerificationError as exc:
                return exc
        self._handshaken = True
        why = self._send_output()
        if why is not None:
            return why
        if (
            self._cipher
            or self._tempDataBuffer
            or self.offset < len(self.dataBuffer)
            or self.disconnecting
        ):
            self.startWriting()  # type: ignore[attr-defined]
        else:
            self.stopWriting()  # type: ignore[attr-defined]
        listener = IHandshakeListener(self.protocol, None)
        if listener is not None:
            listener.handshakeCompleted()
        return None

    # -- reading -----------------------------------------------------------

    def doRead(self) -> BaseException | None:
        buffers = _buffers()
        try:
            got = self.socket.recv_into(buffers.raw_view)
        except OSError as exc:
            return None if exc.errno in _AGAIN else main.CONNECTION_LOST
        if not got:
            return main.CONNECTION_DONE  # a TCP end, with or without close_notify
        if _lib.BIO_write(self._tls._into_ssl, buffers.raw, got) != got:
            return main.CONNECTION_LOST
        if not self._handshaken:
            failed = self._handshake()
            if failed is not None or not self._handshaken:
                return failed
        return self._decrypt()

    def _decrypt(self) -> BaseException | None:
        """``SSL_read`` until OpenSSL wants more; hand the protocol the plaintext."""
        tls = self._tls
        ssl = tls._ssl
        buf = _buffers().plain
        size = len(buf)
        got = 0
        pieces: list[bytes] = []
        why: BaseException | None = None
        while True:
            if got == size:
                pieces.append(_ffi.buffer(buf, got)[:])
                got = 0
            n = _lib.SSL_read(ssl, buf + got, size - got)
            if n > 0:
                got += n
                continue
            if _lib.SSL_get_error(ssl, n) == _lib.SSL_ERROR_WANT_READ:
                break  # the usual end of a turn: no exception for it
            try:
                tls._raise_ssl_error(ssl, n)
            except SSL.WantReadError:
                pass
            except SSL.WantWriteError:
                self.startWriting()  # type: ignore[attr-defined]
            except SSL.ZeroReturnError:
                why = main.CONNECTION_DONE
            except SSL.SysCallError as exc:
                why = main.CONNECTION_DONE if exc.args[0] == -1 else main.CONNECTION_LOST
            except SSL.Error as exc:
                why = exc
            break
        if got:
            pieces.append(_ffi.buffer(buf, got)[:])
        # a post-handshake message may have asked for an answer
        sent = self._send_output()
        if pieces:
            # the records of one event reach the protocol as one piece; what
            # it writes meanwhile (to any TLS connection) goes out afterwards
            # in one piece per connection
            data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
            if _holding.active:
                self.protocol.dataReceived(data)
            else:
                _holding.active = True
                try:
                    self.protocol.dataReceived(data)
                finally:
                    _holding.release()
        return why or sent

    # -- writing -----------------------------------------------------------

    def doWrite(self) -> BaseException | None:
        if self._cipher and not self._held:
            # records with no plaintext held for them (handshake, alerts)
            why = self._send_output()
            if why is not None or self._cipher:
                return why
        if not self._handshaken:
            if self.disconnecting:
                return main.CONNECTION_DONE
            why = self._handshake()
            if why is None and not self._handshaken and not self._cipher:
                self.stopWriting()  # type: ignore[attr-defined]
            return why
        return tcp.Connection.doWrite(self)  # type: ignore[arg-type,no-any-return]

    def writeSomeData(self, data: bytes) -> int | BaseException:
        if not self._handshaken:
            return 0
        if self._cipher:
            why = self._send_output()
            if why is not None:
                return why
            if self._cipher:
                return 0
        done, self._held = self._held, 0
        view = memoryview(data)
        ssl = self._tls._ssl
        while done < len(view) and not self._cipher:
            n = len(view) - done
            if n > WRITE_CHUNK + _SMALL_TAIL:
                n = WRITE_CHUNK
            with _ffi.from_buffer(view[done : done + n]) as piece:
                written = _lib.SSL_write(ssl, piece, n)
            if written <= 0:
                try:
                    self._tls._raise_ssl_error(ssl, written)
                except SSL.Error:
                    return main.CONNECTION_LOST
                return done
            done += written
            why = self._send_output()
            if why is not None:
                return why
        if self._cipher and done:
            # keep one byte in Twisted's buffer: it writes on until sent
            self._held = 1
            return done - 1
        return done

    def write(self, data: bytes) -> None:
        if _holding.active and data:
            if self._pending is None:
                self._pending = [data]
                _holding.connections.append(self)
            else:
                self._pending.append(data)
            return
        self._write_now(data)

    def _release(self) -> None:
        """Write what was held (see :class:`_Held`)."""
        held, self._pending = self._pending, None
        if held:
            self._write_now(held[0] if len(held) == 1 else b"".join(held))

    def _write_now(self, data: bytes) -> None:
        if (
            self._handshaken
            and not self._cipher
            and not self._tempDataBuffer
            and self.offset == len(self.dataBuffer)
            and self.connected
            and not self.disconnecting
            and not self._writeDisconnected
            and data
        ):
            sent = self.writeSomeData(data)
            if not isinstance(sent, int):
                sent = 0  # the buffered write meets the error in doWrite
                self._held = 0
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

    def _closeWriteConnection(self) -> None:
        if self._handshaken:
            with contextlib.suppress(SSL.Error):
                self._tls.shutdown()  # close_notify
            self._send_output()
        with contextlib.suppress(OSError):
            self.socket.shutdown(socket.SHUT_WR)
        half = IHalfCloseableProtocol(self.protocol, None)
        if half is not None:
            try:
                half.writeConnectionLost()
            except BaseException:
                self.connectionLost(Failure())  # type: ignore[attr-defined]

    def _closeSocket(self, orderly: bool) -> None:
        raw = self.socket
        try:
            if orderly:
                if self._handshaken and not self._writeDisconnected:
                    with contextlib.suppress(SSL.Error):
                        self._tls.shutdown()  # close_notify, best effort
                    self._send_output()
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
        return self._tls.get_peer_certificate() if self._handshaken else None

    @property
    def negotiatedProtocol(self) -> bytes | None:
        """The ALPN protocol chosen (``None`` before the handshake or without one)."""
        if not self._handshaken:
            return None
        chosen: bytes | None = self._tls.get_alpn_proto_negotiated() or None
        return chosen


class _Buffers:
    """The buffers every connection of the process works in: what a read
    turn received (``raw``), decrypted (``plain``) and what a write sends
    (``cipher``).  Each is copied out before anything else can run."""

    def __init__(self) -> None:
        self.raw = _ffi.new("char[]", READ_SIZE)
        self.raw_view = memoryview(_ffi.buffer(self.raw))
        self.plain = _ffi.new("char[]", _PLAIN_ROOM)
        self.cipher = _ffi.new("char[]", _OUT_ROOM)


_shared: list[_Buffers] = []


def _buffers() -> _Buffers:
    if not _shared:
        _shared.append(_Buffers())
    return _shared[0]


@implementer(ISSLTransport)
class TLSServer(_TLSConnection, tcp.Server):  # type: ignore[misc]
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
        self._wrap(server.context, server=True)
        tcp.Server.__init__(
            self,
            sock,
            protocol,
            client,
            server,
            sessionno,
            reactor,
        )


class TLSPort(tcp.Port):
    """A listening port whose connections speak TLS with ``context``."""

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
        port: TLSPort = cls._fromListeningDescriptor(reactor, fd, family, factory)
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
        listening = cls(port, factory, backlog=backlog, interface=interface, reactor=reactor)
        listening.context = context
        listening.startListening()
        return listening


@implementer(ISSLTransport)
class TLSClient(_TLSConnection, tcp.Client):  # type: ignore[misc]
    """An outgoing connection that speaks TLS once TCP is connected."""

    def __init__(self, host: str, port: int, connector: _TLSConnector, reactor: Any) -> None:
        self._client_tls = connector.tls
        tcp.Client.__init__(self, host, port, None, connector, reactor)

    def _connectDone(self) -> None:
        tls = self._client_tls
        assert tls is not None
        self._wrap(tls.context, server=False)
        if not tls.is_ip:
            self._tls.set_tlsext_host_name(tls.hostname.encode("idna"))
        tcp.Client._connectDone(self)
        if self.connected:
            self.startWriting()  # the ClientHello
            factory = self.connector.factory
            if isinstance(factory, _Connecting):
                factory.connected(self.protocol)


class _TLSConnector(tcp.Connector):
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

    def _makeTransport(self) -> TLSClient:
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
            receiver = _Addresses(lambda hosts: try_from(hosts, None))
            self._reactor.nameResolver.resolveHostName(receiver, self._host, self._port)
        return deferred

    def _connect_to(self, host: str, protocolFactory: IProtocolFactory) -> Deferred[IProtocol]:
        connector: list[_TLSConnector] = []
        d: Deferred[IProtocol] = Deferred(lambda _: connector[0].stopConnecting())
        factory = _Connecting(protocolFactory, d)
        c = _TLSConnector(host, self._port, factory, self._timeout, self._reactor, self._tls)
        connector.append(c)
        c.connect()
        return d


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IResolutionReceiver)
class _Addresses:
    """Collects a name's addresses, then hands them on in the resolver's order."""

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
