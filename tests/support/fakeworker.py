"""A minimal worker for supervisor tests: answers every HTTP request with its pid.

Run by the supervisor as ``python -m support.fakeworker GENERATION HOST SLOT``;
it uses the real worker runtime (:mod:`karpor.app.worker`), so the tests
exercise socket adoption, readiness and draining as the gateway does.  The
worker of the slot named by ``FAKE_CRASH_SLOT`` exits at once, before it
serves (a crash-looping slot).
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.interfaces import IListeningPort
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.python.failure import Failure

from karpor.app.supervisor import CONTROL_FD, LISTEN_FD
from karpor.app.worker import WorkerRuntime

reactor: Any = _reactor


class _PidHTTP(Protocol):
    """Answers each request (ends at a blank line) with the pid; keep-alive."""

    def __init__(self, app: FakeApp) -> None:
        self.app = app
        self.buf = b""
        self.busy = False

    def connectionMade(self) -> None:
        self.app.conns.add(self)

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            body = f"{os.getpid()}\n".encode()
            close = self.app.draining
            head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n" % len(body)
            head += b"Connection: close\r\n\r\n" if close else b"\r\n"
            assert self.transport is not None
            self.transport.write(head + body)
            if close:
                self.transport.loseConnection()
                return

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.app.conns.discard(self)
        if self.app.draining and not self.app.conns and not self.app.done.called:
            self.app.done.callback(None)


class FakeApp:
    """The worker app: a pid server that drains by closing idle connections."""

    def __init__(self) -> None:
        self.conns: set[_PidHTTP] = set()
        self.draining = False
        self.done: defer.Deferred[None] = defer.Deferred()
        self.state: dict[str, Any] = {}

    def listen(self, fd: int, family: socket.AddressFamily) -> IListeningPort:
        port: IListeningPort = reactor.adoptStreamPort(
            fd, family, Factory.forProtocol(lambda: _PidHTTP(self))
        )
        return port

    def drain(self, deadline: float, sessions: float | None = None) -> defer.Deferred[None]:
        if self.draining:
            return self.done
        self.draining = True
        if not self.conns:
            return defer.succeed(None)
        # idle keep-alive connections: give in-flight requests a moment, then close
        reactor.callLater(0.2, self._close_idle)
        return self.done

    def _close_idle(self) -> None:
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.loseConnection()

    def supervisor_state(self, state: dict[str, Any]) -> None:
        self.state = state

    def status_report(self) -> str:
        return '{"clusters":[],"generation":0,"problems":[]}'


def main() -> None:

    generation, host = int(sys.argv[1]), sys.argv[2]
    if len(sys.argv) > 3 and os.environ.get("FAKE_CRASH_SLOT") == sys.argv[3]:
        sys.exit(3)
    runtime = WorkerRuntime(reactor, FakeApp(), generation, host)
    reactor.callWhenRunning(runtime.start, CONTROL_FD, LISTEN_FD)
    reactor.run(installSignalHandlers=False)


if __name__ == "__main__":
    main()
