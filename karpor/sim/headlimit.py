"""The simulator's HTTP/1.1 request head limit, as Go's ``net/http`` applies it.

kube-apiserver serves with Go's default ``MaxHeaderBytes`` (1 MiB), and Go
reads a request head (request line, header lines and their line ends) up to
that plus 4096 bytes of slack (``initialReadLimitSize``).  A longer head is
refused with a bare ``431 Request Header Fields Too Large`` (plain text, not a
``Status``: Go answers before any handler runs, whatever part of the head
was too long) and the connection is closed.  Go has no separate limit on the
number of headers or on one line; nor does the simulator.

:class:`HeadBudget` is the sans-IO accounting of one connection's head
bytes; :class:`LimitedHTTPChannel` is Twisted's HTTP/1.1 channel with that
budget instead of Twisted's 16 KiB (``totalHeadersSize``, ``MAX_LENGTH``)
and 500-header limits.  Like Go (``closeWriteAndWait``), it closes the
connection a moment after the answer, dropping what the client still sends,
so the client reads the ``431`` rather than a reset.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall
from twisted.web.http import HTTPChannel

#: Go's ``http.DefaultMaxHeaderBytes``, kube-apiserver's limit
MAX_HEADER_BYTES = 1 << 20
#: the bytes of a head Go reads before refusing it (``initialReadLimitSize``)
HEAD_READ_LIMIT = MAX_HEADER_BYTES + 4096
#: what Go writes for a head over the limit
TOO_LARGE_RESPONSE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"431 Request Header Fields Too Large"
)
#: seconds between the 431 and the close (Go's ``rstAvoidanceDelay``)
CLOSE_DELAY = 0.5
_LINE_END = 2


class HeadBudget:
    """The bytes of the request head being read, against ``limit``.

    Feed every head line (without its line end) to :meth:`line`; the empty
    line that ends a head starts the count again for the next request.
    """

    def __init__(self, limit: int = HEAD_READ_LIMIT) -> None:
        self.limit = limit
        self.used = 0

    def line(self, line: bytes) -> bool:
        """Count ``line`` and its line end; ``False`` once the head is over the limit."""
        self.used += len(line) + _LINE_END
        if self.used > self.limit:
            return False
        if not line:
            self.used = 0
        return True


class LimitedHTTPChannel(HTTPChannel):
    """Twisted's HTTP/1.1 channel with Go's head limit (see the module)."""

    #: Twisted's own limits, set past the budget so that the budget decides
    totalHeadersSize = HEAD_READ_LIMIT
    MAX_LENGTH = HEAD_READ_LIMIT
    maxHeaders = HEAD_READ_LIMIT

    def __init__(self) -> None:
        super().__init__()
        self.head_budget = HeadBudget()
        self._refused = False
        self._close_call: IDelayedCall | None = None

    def dataReceived(self, data: bytes) -> None:
        """Drop what arrives once the head was refused."""
        if not self._refused:
            super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        """Count the head line; refuse the head once it is over the limit."""
        if self._refused:
            return
        if not self.head_budget.line(line):
            self.refuse_head()
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        """One line alone is over the limit."""
        self.refuse_head()

    def refuse_head(self) -> None:
        """Answer ``431`` as Go does and close the connection shortly after."""
        if self._refused or self.transport is None:
            return
        self._refused = True
        self.setTimeout(None)
        self.transport.write(TOO_LARGE_RESPONSE)
        self._close_call = self.callLater(CLOSE_DELAY, self._close)

    def _close(self) -> None:
        self._close_call = None
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: object = None) -> None:
        """Cancel the pending close."""
        if self._close_call is not None and self._close_call.active():
            self._close_call.cancel()
        self._close_call = None
        super().connectionLost(reason)
