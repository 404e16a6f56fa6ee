"""Steady request load from threads, counting failures (for restart tests)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Generic, TypeVar

T = TypeVar("T")


class Load(Generic[T]):
    """Runs ``call(fresh)`` in a loop from ``threads`` threads until the block ends.

    Half the threads ask for a fresh connection each time (``fresh=True``),
    the others reuse theirs; ``call`` returns what identifies the server
    that answered (e.g. a worker pid), counted in :attr:`answers`.
    """

    def __init__(self, call: Callable[[bool, dict[str, object]], T], threads: int = 4) -> None:
        self._call = call
        self.ok = 0
        self.failures: list[str] = []
        self.answers: Counter[T] = Counter()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(i % 2 == 0,), daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> Load[T]:
        for t in self._threads:
            t.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self, fresh: bool) -> None:
        state: dict[str, object] = {}
        while not self._stop.is_set():
            try:
                answer = self._call(fresh, state)
            except Exception as exc:  # every failure is counted
                with self._lock:
                    self.failures.append(repr(exc))
                time.sleep(0.01)  # not a wait: a failing client backs off before it retries
                continue
            with self._lock:
                self.ok += 1
                self.answers[answer] += 1
