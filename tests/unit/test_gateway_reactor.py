"""The worker's event loop (karpor.net.reactor): events reach their
selectables without Twisted's per-event log context, and one selectable's
failure neither stops the loop nor keeps the others from their events."""

from __future__ import annotations

import os
from typing import Any, cast

from twisted.logger import ILogObserver, globalLogPublisher
from twisted.python.failure import Failure

from karpor.net.reactor import GatewayReactor


class _Pipe:
    """A readable pipe end, recording what the reactor asks of it."""

    def __init__(self, fail: bool = False) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.fail = fail
        self.reads = 0
        self.lost: list[Failure] = []

    def fileno(self) -> int:
        return self.read_fd

    def doRead(self) -> None:
        self.reads += 1
        os.read(self.read_fd, 100)
        if self.fail:
            raise RuntimeError("broken selectable")

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)

    def logPrefix(self) -> str:
        return "pipe"

    def close(self) -> None:
        os.close(self.read_fd)
        os.close(self.write_fd)


def test_ready_selectables_are_read_and_a_failure_stays_local() -> None:
    reactor: Any = GatewayReactor()
    broken, healthy = _Pipe(fail=True), _Pipe()
    try:
        for pipe in (broken, healthy):
            reactor.addReader(pipe)
            os.write(pipe.write_fd, b"x")
        reactor.doPoll(1.0)
        assert broken.reads == 1 and healthy.reads == 1
        # the failure became the broken selectable's loss, not the loop's
        assert len(broken.lost) == 1 and broken.lost[0].check(RuntimeError)
        assert healthy.lost == []
        assert broken not in reactor.getReaders()
        os.write(healthy.write_fd, b"y")
        reactor.doPoll(1.0)
        assert healthy.reads == 2
    finally:
        reactor.removeAll()
        broken.close()
        healthy.close()


def test_an_error_escaping_the_handler_is_logged_and_the_loop_goes_on() -> None:
    reactor: Any = GatewayReactor()
    first, second = _Pipe(), _Pipe()
    handled: list[int] = []
    logged: list[dict[str, Any]] = []
    observer = cast(ILogObserver, logged.append)

    def handle(selectable: Any, fd: int, event: int) -> None:
        handled.append(fd)
        if selectable is first:
            raise RuntimeError("escaped")
        selectable.doRead()

    reactor._doReadOrWrite = handle
    globalLogPublisher.addObserver(observer)
    try:
        for pipe in (first, second):
            reactor.addReader(pipe)
            os.write(pipe.write_fd, b"x")
        reactor.doPoll(1.0)
        assert sorted(handled) == sorted([first.read_fd, second.read_fd])
        assert second.reads == 1
        assert any(e.get("log_failure") and e["log_failure"].check(RuntimeError) for e in logged)
    finally:
        globalLogPublisher.removeObserver(observer)
        reactor.removeAll()
        first.close()
        second.close()


def test_calls_after_a_turn_run_once_its_events_are_handled() -> None:
    reactor: Any = GatewayReactor()
    pipe = _Pipe()
    order: list[str] = []
    original = pipe.doRead

    def read() -> None:
        original()
        order.append("read")
        reactor.after_turn(lambda: order.append("after"))
        reactor.after_turn(lambda: 1 / 0)  # a failure stays its own
        reactor.after_turn(lambda: order.append("after, too"))

    pipe.doRead = read  # type: ignore[method-assign]
    try:
        reactor.addReader(pipe)
        os.write(pipe.write_fd, b"x")
        reactor.doPoll(1.0)
        assert order == ["read", "after", "after, too"]
        # asked outside a turn (as from a timed call): the next poll does not wait
        reactor.removeReader(pipe)
        reactor.after_turn(lambda: order.append("from a timer"))
        reactor.doPoll(30.0)
        assert order[-1] == "from a timer"
        reactor.doPoll(0)
        assert order.count("from a timer") == 1
    finally:
        reactor.removeAll()
        pipe.close()
