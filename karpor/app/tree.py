"""Service trees: the building blocks every karpor process is composed of.

A process is a tree of :class:`twisted.application.service.IService`\\ s.
:class:`ServiceTree` is a :class:`~twisted.application.service.MultiService`
that starts its children in the order they were added and stops them in
the reverse order (waiting for every child's Deferred, as ``MultiService``
does); when a child fails to start, the children already started are
stopped, in reverse, before the error goes on (a port that cannot be bound
leaves no timer, thread or file behind).

:class:`Part` is a child built from a pair of steps: a start function that
makes its piece of the process (from what its elder siblings made) and
returns how to take it down again.  :class:`PeriodicCall` calls a function
every few seconds while it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: how a started part is taken down (its result may be a Deferred)
Teardown = Callable[[], object]


class ServiceTree(MultiService):
    """Children start in the order added and stop in reverse; a child that
    fails to start stops the ones started before it (in reverse) and its
    error is raised again."""

    def startService(self) -> None:
        """Start every child in order (see the class docstring)."""
        Service.startService(self)
        started: list[IService] = []
        try:
            for child in self:
                child.startService()
                started.append(child)
        except BaseException:
            Service.stopService(self)
            for child in reversed(started):
                defer.maybeDeferred(child.stopService).addErrback(_stop_failed, child)
            raise

    def stopService(self) -> defer.Deferred[Any]:
        """Stop every running child, the last added first; fire once all have stopped."""
        Service.stopService(self)
        running = [child for child in reversed(list(self)) if child.running]
        return defer.DeferredList([defer.maybeDeferred(child.stopService) for child in running])


def _stop_failed(failure: Failure, child: IService) -> None:
    log.failure("stopping {child} after a failed start", failure, child=child)


class Part(Service):
    """A named child of a :class:`ServiceTree` made of two steps: ``start()``
    when its turn comes, returning its teardown (or ``None``), which runs when
    the part stops."""

    def __init__(self, name: str, start: Callable[[], Teardown | None]) -> None:
        self.name = name
        self._start = start
        self._teardown: Teardown | None = None

    def __repr__(self) -> str:
        return f"<Part {self.name}>"

    def startService(self) -> None:
        """Make the piece; remember how to take it down."""
        self._teardown = self._start()
        super().startService()

    def stopService(self) -> Any:
        """Take the piece down (once); its result (a Deferred or not) is the stop's."""
        super().stopService()
        teardown, self._teardown = self._teardown, None
        return teardown() if teardown is not None else None


class PeriodicCall(Service):
    """Calls ``call()`` every ``interval`` seconds while running (the first
    call one interval after the start)."""

    def __init__(self, clock: Any, interval: float, call: Callable[[], object]) -> None:
        self._timer = LoopingCall(call)
        self._timer.clock = clock
        self.interval = interval

    def startService(self) -> None:
        """Start the timer."""
        super().startService()
        self._timer.start(self.interval, now=False)

    def stopService(self) -> Any:
        """Stop the timer."""
        super().stopService()
        if self._timer.running:
            self._timer.stop()
        return None
