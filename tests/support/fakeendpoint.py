"""An endpoint that records connection attempts for the test to complete or fail."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from zope.interface import implementer


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Records connection attempts; the test completes or fails them."""

    def __init__(self) -> None:
        self.attempts: list[tuple[Deferred[Any], Any]] = []

    def connect(self, factory: Any) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.attempts.append((d, factory))
        return d
