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

The class lives with Twisted's other private names in
:mod:`karpor.net.twisted_internals`; :func:`install` falls back to the stock
epoll reactor when told to (``after_turn`` then becomes ``callLater(0, f)``
in its users).
"""

from __future__ import annotations

from typing import Any

from karpor.net.twisted_internals import GatewayReactor

__all__ = ["GatewayReactor", "install"]


def install(gateway_reactor: bool = True) -> Any:
    """Install the worker's reactor as ``twisted.internet.reactor`` (before
    anything imports the reactor) and return it: a :class:`GatewayReactor`,
    or Twisted's stock epoll reactor when ``gateway_reactor`` is false
    (``tlsImplementation: twisted``, or the installed Twisted fails
    :func:`karpor.net.twisted_internals.check_reactor`:
    :attr:`karpor.net.implementation.Choice.gateway_reactor`)."""
    from twisted.internet.epollreactor import EPollReactor  # noqa: PLC0415
    from twisted.internet.main import installReactor  # noqa: PLC0415

    reactor = GatewayReactor() if gateway_reactor else EPollReactor()
    installReactor(reactor)
    return reactor
