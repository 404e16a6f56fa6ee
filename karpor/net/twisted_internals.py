"""Everything karpor takes from Twisted beyond its public API, and nowhere else.

Two things reach into Twisted:

* the socket TLS transport (:mod:`karpor.net.tlstransport`) is a
  :class:`twisted.internet.tcp.Connection` whose socket is a pyOpenSSL
  ``Connection``: it reads Twisted's write buffers, replaces the steps that
  close the socket (to send ``close_notify``), wraps the socket once TCP is
  connected, makes its own transports in a connector and adopts a listening
  descriptor as its own port.  :class:`ConnectionInternals`,
  :class:`ClientInternals`, :class:`ConnectorInternals` and
  :func:`adopt_port` give those private steps and attributes public names
  of karpor's;
* the worker's event loop (:class:`GatewayReactor`) replaces
  :class:`~twisted.internet.epollreactor.EPollReactor`'s ``doPoll``.

:data:`PRIVATE_NAMES` lists every private name used; :func:`check_transport`
and :func:`check_reactor` verify each exists with the signature used and
return why not (:mod:`karpor.net.implementation` then falls back to
Twisted's own TLS, or to the stock epoll reactor).  No other module of
karpor touches Twisted's private names (``tests/unit/test_tls_bindings.py``
holds the fence).
"""

from __future__ import annotations

import errno
import inspect
import socket
from collections.abc import Callable
from select import EPOLLIN
from typing import Any

from twisted.internet import abstract, posixbase, tcp
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.interfaces import IListeningPort, IProtocolFactory
from twisted.logger import Logger

log = Logger(namespace="karpor.reactor")

#: the private names used, by where they are defined, with the parameters
#: (after ``self``/``cls``) of those that are methods; ``None``: an attribute
PRIVATE_NAMES: dict[str, dict[str, tuple[str, ...] | None]] = {
    "twisted.internet.abstract.FileDescriptor": {
        "_tempDataBuffer": None,
        "_writeDisconnected": None,
    },
    "twisted.internet.tcp.Connection": {
        "_closeWriteConnection": (),
        "_closeSocket": ("orderly",),
    },
    "twisted.internet.tcp.Client": {"_connectDone": ()},
    "twisted.internet.tcp.Connector": {"_makeTransport": ()},
    "twisted.internet.tcp.Port": {
        "_fromListeningDescriptor": ("reactor", "fd", "addressFamily", "factory"),
    },
    "twisted.internet.posixbase._DisconnectSelectableMixin": {
        "_disconnectSelectable": ("selectable", "why", "isRead", "faildict"),
    },
    "twisted.internet.epollreactor.EPollReactor": {
        "_doReadOrWrite": ("selectable", "fd", "event"),
        "_poller": None,
        "_selectables": None,
    },
}

_TRANSPORT_CLASSES: dict[str, Any] = {
    "twisted.internet.abstract.FileDescriptor": abstract.FileDescriptor,
    "twisted.internet.tcp.Connection": tcp.Connection,
    "twisted.internet.tcp.Client": tcp.Client,
    "twisted.internet.tcp.Connector": tcp.Connector,
    "twisted.internet.tcp.Port": tcp.Port,
    "twisted.internet.posixbase._DisconnectSelectableMixin": posixbase.PosixReactorBase,
}


def _missing(where: str, cls: Any, names: dict[str, tuple[str, ...] | None]) -> str | None:
    for name, parameters in names.items():
        if parameters is None:
            continue
        method = inspect.getattr_static(cls, name, None)
        if method is None:
            return f"{where}.{name} is missing"
        function = getattr(method, "__func__", method)  # a classmethod's function
        try:
            got = tuple(inspect.signature(function).parameters)[1:]
        except (TypeError, ValueError):
            return f"{where}.{name} has no signature"
        if got != parameters:
            return f"{where}.{name} takes ({', '.join(got)}), not ({', '.join(parameters)})"
    return None


def check_transport() -> str | None:
    """Why the socket TLS transport cannot run on the installed Twisted
    (``None``: it can)."""
    for where, cls in _TRANSPORT_CLASSES.items():
        reason = _missing(where, cls, PRIVATE_NAMES[where])
        if reason is not None:
            return reason
    # the buffers' attributes, on a descriptor that never joins a reactor
    descriptor = abstract.FileDescriptor(reactor=_NoReactor())  # type: ignore[arg-type]
    for name in PRIVATE_NAMES["twisted.internet.abstract.FileDescriptor"]:
        if not hasattr(descriptor, name):
            return f"twisted.internet.abstract.FileDescriptor has no {name}"
    return None


def check_reactor() -> str | None:
    """Why :class:`GatewayReactor` cannot run on the installed Twisted
    (``None``: it can)."""
    where = "twisted.internet.epollreactor.EPollReactor"
    reason = _missing(where, EPollReactor, PRIVATE_NAMES[where])
    if reason is not None:
        return reason
    if getattr(EPollReactor, "doIteration", None) is not getattr(EPollReactor, "doPoll", None):
        return f"{where}.doIteration is not its doPoll"
    assigned = EPollReactor.__init__.__code__.co_names
    for name, parameters in PRIVATE_NAMES[where].items():
        if parameters is None and name not in assigned:
            return f"{where} no longer sets {name}"
    return None


class _NoReactor:
    """What ``FileDescriptor.__init__`` may be given without a reactor."""


# -- the socket transport's access to tcp.Connection -------------------------


class ConnectionInternals:
    """A :class:`twisted.internet.tcp.Connection`'s private state and steps
    under public names (a mixin placed before ``tcp.Server`` or
    ``tcp.Client``): override :meth:`close_write_side` and
    :meth:`close_socket` to change how the connection closes."""

    _tempDataBuffer: list[bytes]
    _writeDisconnected: bool
    dataBuffer: bytes
    offset: int
    reactor: Any

    def output_buffered(self) -> bool:
        """Whether Twisted holds written bytes the socket has not taken."""
        return bool(self._tempDataBuffer) or self.offset < len(self.dataBuffer)

    def write_side_closed(self) -> bool:
        """Whether ``loseWriteConnection`` has taken effect."""
        return bool(self._writeDisconnected)

    def lose_connection_now(self, why: BaseException) -> None:
        """End the connection as a failed ``doRead`` would (outside a
        reactor event: a read the connection made itself)."""
        self.reactor._disconnectSelectable(self, why, True)

    def _closeWriteConnection(self) -> None:
        self.close_write_side()

    def _closeSocket(self, orderly: bool) -> None:
        self.close_socket(orderly)

    def close_write_side(self) -> None:
        """Shut the socket's write side (Twisted's own step by default)."""
        super()._closeWriteConnection()  # type: ignore[misc]

    def close_socket(self, orderly: bool) -> None:
        """Close the socket (Twisted's own step by default)."""
        super()._closeSocket(orderly)  # type: ignore[misc]


class ClientInternals(ConnectionInternals):
    """:class:`ConnectionInternals` of a ``tcp.Client``: override
    :meth:`tcp_connected` to act once TCP is connected, calling
    :meth:`finish_connecting` (Twisted's own step)."""

    def _connectDone(self) -> None:
        self.tcp_connected()

    def tcp_connected(self) -> None:
        """TCP is connected (Twisted's own step by default)."""
        self.finish_connecting()

    def finish_connecting(self) -> None:
        """Twisted's own step once TCP is connected: the protocol is built
        and ``connectionMade`` called."""
        super()._connectDone()  # type: ignore[misc]


class ConnectorInternals(tcp.Connector):
    """A ``tcp.Connector`` whose transports :meth:`make_transport` makes."""

    def _makeTransport(self) -> Any:
        return self.make_transport()

    def make_transport(self) -> Any:
        """The connection to make (Twisted's ``tcp.Client`` by default)."""
        return super()._makeTransport()


def adopt_port(
    cls: type[tcp.Port],
    reactor: Any,
    fd: int,
    family: socket.AddressFamily,
    factory: IProtocolFactory,
) -> IListeningPort:
    """A port of class ``cls`` (a ``tcp.Port``) on a listening descriptor
    (what ``reactor.adoptStreamPort`` does with ``tcp.Port``), not yet
    started."""
    port: IListeningPort = cls._fromListeningDescriptor(reactor, fd, family, factory)
    return port


# -- the worker's event loop -----------------------------------------------------


class GatewayReactor(EPollReactor):
    """An :class:`EPollReactor` without the per-event legacy log context
    (:mod:`karpor.net.reactor` tells why), with :meth:`after_turn`."""

    def __init__(self) -> None:
        super().__init__()
        self._after_turn: list[Callable[[], object]] = []

    def after_turn(self, call: Callable[[], object]) -> None:
        """Call ``call()`` once the events of this turn are handled (asked
        from a timed call: after a poll that does not wait)."""
        self._after_turn.append(call)

    def _run_after_turn(self) -> None:
        calls, self._after_turn = self._after_turn, []
        for call in calls:
            try:
                call()
            except Exception:
                log.failure("unhandled error after a reactor turn in {call!r}", call=call)

    def doPoll(self, timeout: float | None) -> None:
        """Wait for events (at most ``timeout`` seconds) and handle them."""
        if self._after_turn:
            timeout = 0  # asked for outside a turn (a timed call): do not wait
        try:
            ready = self._poller.poll(-1 if timeout is None else timeout, len(self._selectables))
        except OSError as err:
            if err.errno == errno.EINTR:
                return
            raise
        selectables = self._selectables
        handle = self._doReadOrWrite
        for fd, event in ready:
            selectable = selectables.get(fd)
            if selectable is None:
                continue
            try:
                handle(selectable, fd, event)
            except Exception:
                log.failure(
                    "unhandled error handling an event of {selectable!r}", selectable=selectable
                )
        if self._after_turn:
            self._run_after_turn()

    doIteration = doPoll

    def _doReadOrWrite(self, selectable: Any, fd: int, event: int) -> None:
        """A plain readable event (most of them) goes straight to
        ``doRead``; anything else (writable, hang-up, error) takes Twisted's
        own path."""
        if event != EPOLLIN:
            super()._doReadOrWrite(selectable, fd, event)
            return
        try:
            why = selectable.doRead()
        except BaseException as exc:
            # as Twisted does: application code failing loses its connection
            why = exc
            log.failure("unhandled error reading {selectable!r}", selectable=selectable)
        if why:
            self._disconnectSelectable(selectable, why, True)
