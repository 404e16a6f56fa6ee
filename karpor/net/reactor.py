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

:meth:`GatewayReactor.after_turn` runs a callable once the events of the
current turn are handled, before the reactor waits again: what
``callLater(0, f)`` does, without a timed call to make, order in the heap
and run (the metrics of the requests that ended in a turn are recorded
together this way, :class:`karpor.metrics.gateway.GatewayMetrics`).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from select import EPOLLIN
from typing import Any

from twisted.internet.epollreactor import EPollReactor
from twisted.logger import Logger

log = Logger(namespace="karpor.reactor")


class GatewayReactor(EPollReactor):
    """An :class:`EPollReactor` without the per-event legacy log context."""

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


def install() -> Any:
    """Install a :class:`GatewayReactor` as ``twisted.internet.reactor``
    (before anything imports the reactor) and return it."""
    from twisted.internet.main import installReactor  # noqa: PLC0415

    reactor = GatewayReactor()
    installReactor(reactor)
    return reactor
