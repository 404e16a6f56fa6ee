"""The contract between the front protocol and the gateway's own API.

The front protocol (``karpor.front.protocol``) parses a request for one of the
gateway's own paths (``/version``, ``/apis/cluster.karpor.io/...``...),
authenticates it, and hands an :class:`ApiRequest` with a :class:`Responder`
to the API handler.  A handler answers at once with :meth:`Responder.respond`
or streams (a watch) with ``start`` / ``write`` / ``finish``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from karpor.auth.identity import Identity

Header = tuple[bytes, bytes]


@dataclass(frozen=True)
class ApiRequest:
    """One request to the gateway's own API."""

    method: str
    #: the path, percent-decoding not applied, without the query string
    path: str
    #: the raw query string (no leading ``?``)
    query: str
    #: request headers, names lower-cased, last value wins
    headers: Mapping[str, str]
    identity: Identity | None
    #: the request body (own-API requests are small; bodies are read whole)
    body: bytes = b""


class Responder(Protocol):
    """How an API handler answers; implemented by the front protocol."""

    def respond(self, code: int, headers: Sequence[Header], body: bytes) -> None:
        """Send a complete response (``Content-Length`` is added)."""

    def start(self, code: int, headers: Sequence[Header]) -> None:
        """Start a streamed (chunked) response."""

    def write(self, data: bytes) -> None:
        """Send one piece of a streamed response, flushed at once."""

    def finish(self) -> None:
        """End a streamed response."""

    def on_close(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once if the client goes away before ``finish``."""


class ApiHandler(Protocol):
    """The gateway's own API, as the front protocol sees it."""

    def handle(self, request: ApiRequest, responder: Responder) -> None:
        """Answer ``request`` through ``responder``."""
