"""The gateway worker's event loop: Twisted's epoll reactor, one layer lighter.

:class:`twisted.internet.epollreactor.EPollReactor` hands every ready
descriptor to ``_doReadOrWrite`` through ``log.callWithLogger``, which
pushes a legacy log context (the selectable's ``logPrefix``) around the
call: three Python frames and a context dictionary per event, a few per
proxied request, only so that ``twisted.python.log.msg`` calls made inside
carry a ``system`` prefix.  Karpor logs with :class:`twisted.logger.Logger`
(which does not read that context), so :class:`GatewayReactor` calls
``_doReadOrWrite`` directly; ``_doReadOrWrite`` already turns an exception
of ``doRead``/``doWrite`` into the connection's loss, and anything escaping
it is logged here as ``callWithLogger`` would have, and the loop goes on.
A plain readable event goes straight to the selectable's ``doRead``
(Twisted first asks the descriptor for its number, to notice one closed
meanwhile: a read of a closed descriptor fails all the same).
"""

from __future__ import annotations

import errno
from select import EPOLLIN
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

log = Logger(namespace="karpor.reactor")


class GatewayReactor(EPollReactor):
    """An :class:`EPollReactor` without the per-event legacy log context."""

    def doPoll(self, timeout: float | None) -> None:
        """Wait for events (at most ``timeout`` seconds) and handle them."""
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


def install() -> Any:
    """Install a :class:`GatewayReactor` as ``twisted.internet.reactor``
    (before anything imports the reactor) and return it."""
    from twisted.internet.main import installReactor  # noqa: PLC0415

    reactor = GatewayReactor()
    installReactor(reactor)
    return reactor
