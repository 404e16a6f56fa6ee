"""Scenarios for :mod:`karpor.net.tlstransport` on real loopback sockets.

``python -m support.tlsscenarios [fast|twisted]`` (with ``tests`` on the
path) runs every scenario in one reactor run, with that ``tlsImplementation``
(:mod:`karpor.net.implementation`; ``fast`` by default), and prints one JSON
object: scenario name → what was observed.  The reactor cannot be restarted inside a pytest
process, hence the subprocess (``tests/integration/test_tls_transport.py``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _installed
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol, IHandshakeListener, IPushProducer
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.auth.ca import CertificateAuthority
from karpor.net import implementation
from karpor.net.tls import H2, HTTP11, client_options, server_options
from karpor.net.tlstransport import TLSClientEndpoint, TLSPort

reactor: Any = _installed
BIG = 8 * 1024 * 1024


@implementer(IHalfCloseableProtocol)
class Server(Protocol):
    """Echoes with a prefix; records what it saw; ``half`` answers a
    half-close with a last line."""

    seen: list[dict[str, Any]] = []

    def connectionMade(self) -> None:
        self.record: dict[str, Any] = {"bytes": 0, "digest": hashlib.sha256(), "half": False}
        Server.seen.append(self.record)

    def dataReceived(self, data: bytes) -> None:
        if not self.record.get("alpn"):
            self.record["alpn"] = self.transport.negotiatedProtocol  # type: ignore[union-attr]
            cert = self.transport.getPeerCertificate()  # type: ignore[union-attr]
            self.record["peer"] = cert.get_subject().CN if cert is not None else None
        self.record["bytes"] += len(data)
        self.record["digest"].update(data)
        if data.startswith(b"BULK") and not self.record.get("bulk"):
            # a splice's switch, in the middle of a read stream
            self.record["bulk"] = True
            bulk = getattr(self.transport, "bulk", None)  # as the splice asks
            self.record["bulk_mode"] = bulk is not None
            if bulk is not None:
                bulk()
        if data == b"pieces":
            # several writes and the close while handling one read: all of
            # it arrives, in order, before the end
            for piece in (b"one,", b"two,", b"three"):
                self.transport.write(piece)  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]
        elif self.record["bytes"] < 1024:
            self.transport.write(b"echo:" + data)  # type: ignore[union-attr]
        elif self.record["bytes"] == BIG:
            self.transport.write(b"got it all")  # type: ignore[union-attr]
            self.transport.loseConnection()  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.record["half"] = True
        self.transport.write(b"bye after half-close")  # type: ignore[union-attr]
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


@implementer(IHandshakeListener, IPushProducer)
class Client(Protocol):
    """Sends ``payload`` once the handshake is done (or at once: ``early``),
    as a push producer when it is large; collects the answer."""

    def __init__(
        self, payload: bytes, early: bool = False, half_close: bool = False, bulk: bool = False
    ) -> None:
        self.payload = payload
        self.early = early
        self.half_close = half_close
        self.bulk = bulk
        self.received = b""
        self.done: defer.Deferred[dict[str, Any]] = defer.Deferred()
        self.result: dict[str, Any] = {"handshake": False}
        self._paused = 0

    def connectionMade(self) -> None:
        if self.early:
            self._send()

    def handshakeCompleted(self) -> None:
        self.result["handshake"] = True
        self.result["alpn"] = self.transport.negotiatedProtocol  # type: ignore[union-attr]
        bulk = getattr(self.transport, "bulk", None) if self.bulk else None
        if bulk is not None:
            bulk()
        if not self.early:
            self._send()

    def _send(self) -> None:
        if len(self.payload) > 65536:
            self.transport.registerProducer(self, True)  # type: ignore[union-attr]
            for start in range(0, len(self.payload), 65536):
                self.transport.write(self.payload[start : start + 65536])  # type: ignore[union-attr]
            self.transport.unregisterProducer()  # type: ignore[union-attr]
        else:
            self.transport.write(self.payload)  # type: ignore[union-attr]
        if self.half_close:
            self.transport.loseWriteConnection()  # type: ignore[union-attr]

    def pauseProducing(self) -> None:
        self._paused += 1
        self.result["paused"] = self._paused

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        if self.half_close:
            return  # the server closes
        if self.received.startswith(b"echo:") and len(self.received) >= 5 + len(self.payload):
            self.transport.loseConnection()  # type: ignore[union-attr]

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.result["received"] = self.received.decode("latin-1")[:200]
        self.result["reason"] = f"{type(reason.value).__name__}: {reason.value}"
        self.done.callback(self.result)


def _b(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


async def scenarios() -> dict[str, Any]:
    ca = CertificateAuthority.create("scenario-ca")
    other = CertificateAuthority.create("other-ca")
    serving = ca.issue_server("server", ["localhost", "127.0.0.1"])
    client_cert = ca.issue_client("alice", ["devs"])
    context = server_options(serving.cert_pem, serving.key_pem, alpn=H2).getContext()
    port = TLSPort.listen(reactor, 0, Factory.forProtocol(Server), context, "127.0.0.1")
    number: int = port.getHost().port  # type: ignore[attr-defined]
    out: dict[str, Any] = {}

    async def run(
        name: str, tls_of: Callable[[], Any], payload: bytes, host: str = "127.0.0.1", **kw: Any
    ) -> dict[str, Any]:
        before = len(Server.seen)
        client = Client(payload, **kw)
        endpoint = TLSClientEndpoint(reactor, host, number, tls_of(), timeout=5)
        try:
            await connectProtocol(endpoint, client)
        except Exception as exc:  # recorded: the scenario is about the failure
            failed: dict[str, Any] = {"connect_error": f"{type(exc).__name__}: {exc}"}
            out[name] = failed
            return failed
        result = await client.done
        server = Server.seen[before] if len(Server.seen) > before else {}
        result["server_bytes"] = server.get("bytes")
        result["server_digest"] = server["digest"].hexdigest() if server else None
        result["server_peer"] = server.get("peer")
        result["server_alpn"] = _b(server.get("alpn"))
        result["server_half"] = server.get("half")
        result["server_bulk"] = server.get("bulk_mode", False)
        result["alpn"] = _b(result.get("alpn"))
        out[name] = result
        return result

    ca_pem = ca.cert_pem
    await run(
        "echo_h2_with_client_cert",
        lambda: client_options(
            "127.0.0.1", ca_pem, client_cert.cert_pem, client_cert.key_pem, alpn=H2
        ),
        b"hello",
    )
    await run("echo_http11", lambda: client_options("localhost", ca_pem, alpn=HTTP11), b"hi")
    # a name: resolved (IPv4 and IPv6), each address tried until one connects
    await run("by_name", lambda: client_options("localhost", ca_pem), b"named", host="localhost")
    await run(
        "unresolvable_name",
        lambda: client_options("localhost", ca_pem),
        b"x",
        host="no-such-host.invalid",
    )
    await run(
        "write_before_handshake",
        lambda: client_options("localhost", ca_pem),
        b"early bird",
        early=True,
    )
    big = bytes(range(256)) * (BIG // 256)
    result = await run("large_upload", lambda: client_options("localhost", ca_pem), big)
    result["expected_digest"] = hashlib.sha256(big).hexdigest()
    result["expected_bytes"] = len(big)
    # both sides in bulk mode: the client from the handshake on, the server
    # from the middle of its first reads
    marked = b"BULK" + big[4:]
    result = await run(
        "bulk_upload", lambda: client_options("localhost", ca_pem), marked, bulk=True
    )
    result["expected_digest"] = hashlib.sha256(marked).hexdigest()
    result["expected_bytes"] = len(marked)
    await run("wrong_name", lambda: client_options("not-the-server.example", ca_pem), b"secret")
    await run("untrusted_ca", lambda: client_options("localhost", other.cert_pem), b"secret")
    await run(
        "insecure_skips_verification",
        lambda: client_options("not-the-server.example", None, insecure=True),
        b"x",
    )
    await run("pieces_then_close", lambda: client_options("localhost", ca_pem), b"pieces")
    await run(
        "half_close", lambda: client_options("localhost", ca_pem), b"last words", half_close=True
    )
    await defer.maybeDeferred(port.stopListening)
    return out


def main() -> None:
    implementation.select(sys.argv[1] if len(sys.argv) > 1 else implementation.FAST)
    results: dict[str, Any] = {}

    def go() -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.ensureDeferred(scenarios())
        d.addCallback(results.update)
        d.addErrback(lambda f: results.update(error=f.getTraceback()))
        d.addBoth(lambda _: reactor.stop())
        return d

    reactor.callWhenRunning(go)
    reactor.callLater(60, reactor.stop)
    reactor.run()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
