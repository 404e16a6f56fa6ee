"""Bounds on client connections (sans-IO): the ``clientConnections``
settings, the phases of a connection and their timeouts, the answer to an
oversized or malformed request head, and the per-worker connection cap.

A front connection (:class:`karpor.front.protocol.GatewayProtocol`) is always
in one :data:`PHASES` phase, noted with the time it entered it:

* ``HANDSHAKE`` from accept until the TLS handshake is done
  (``handshakeTimeout``, 10 s; then closed without a word: no TLS to speak);
* ``HEAD`` while a request head is being read: from the handshake for the
  first request, else from the first byte of the head, until the head is
  complete (``headerReadTimeout``, 30 s; then a ``408`` ``Status`` if part
  of a head arrived, else closed silently, as Go closes);
* ``BUSY`` from a complete head until its response is done: a request in
  flight, a watch, ``logs -f``, an upgraded session (no timeout);
* ``IDLE`` between requests on a keep-alive connection (``idleTimeout``,
  120 s, as Go's ``IdleTimeout``; then closed silently);
* ``CLOSING`` once closed for a timeout, until the bytes still buffered
  for it are gone (aborted after another ``handshakeTimeout``: a client
  that does not read cannot hold the connection either).

A connection closed after refusing a request head (431, 414, 400, 501,
505: the client may still be sending it) lingers as Go's
``closeWriteAndWait`` does: its sending side is shut down once the answer
is out (``close_notify`` over TLS), and what the client still sends is
read and dropped (:class:`Linger`: at most another ``maxHeaderBytes``,
or :data:`LINGER_BYTES` when that is more) for up to
:data:`LINGER_SECONDS` before the close, so that the close does
not meet unread bytes and reset the connection under an answer the client
has not read yet.

No timer runs per connection: each worker sweeps its connections every
:func:`sweep_interval` seconds (:func:`phase_limits` gives the elapsed time
past which each phase has expired, one sweep's coarseness included, so a
connection is never closed before its timeout, and at most two sweeps
after).  On the request path a phase change is two attribute writes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from karpor.kube.status import ApiError

#: ``maxHeaderBytes``: the request line and headers together (Go's and
#: kube-apiserver's default)
DEFAULT_MAX_HEADER_BYTES = 1 << 20
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_HEADER_READ_TIMEOUT = 30.0
DEFAULT_IDLE_TIMEOUT = 120.0
#: ``maxConnections`` per worker: above the 10,000 watches one worker holds
#: in the bench, below what a worker's memory could hold (a TLS connection
#: alone costs about 36 KiB)
DEFAULT_MAX_CONNECTIONS = 20_000
#: ``maxConcurrentStreams``: HTTP/2 streams per client connection
#: (``SETTINGS_MAX_CONCURRENT_STREAMS``; kube-apiserver's default)
DEFAULT_MAX_CONCURRENT_STREAMS = 1000
#: the smallest ``maxHeaderBytes`` accepted (a kubectl request head with a
#: bearer token is about 1.5 KiB)
MIN_HEADER_BYTES = 4096

# the phases of a connection (indexes into :func:`phase_limits`)
HANDSHAKE = 0
HEAD = 1
BUSY = 2
IDLE = 3
#: closed after a timeout, waiting for its buffered bytes to go: aborted
#: when still open after another ``handshakeTimeout``
CLOSING = 4
PHASES = (HANDSHAKE, HEAD, BUSY, IDLE, CLOSING)

#: how long a connection closing after a refused request head still reads
#: (and drops) what its client sends (Go's ``rstAvoidanceDelay``)
LINGER_SECONDS = 0.5
#: the least it drops meanwhile before it closes at once (Go's
#: ``maxPostHandlerReadBytes``, what its server reads of a body left unread)
LINGER_BYTES = 256 << 10

#: a request line whose URL is this close to ``maxHeaderBytes`` when the
#: head outgrows it was too long by its URL alone (the method, blanks and
#: version take the rest)
_REQUEST_LINE_SLACK = 64


@dataclass(frozen=True)
class ClientConnectionSettings:
    """The ``clientConnections`` settings (see the module docstring);
    :class:`ValueError` for a value out of range."""

    #: most bytes of a request line and headers (431, or 414 for the URL alone)
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    #: seconds from accept to a finished TLS handshake
    handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT
    #: seconds to read a request head
    header_read_timeout: float = DEFAULT_HEADER_READ_TIMEOUT
    #: seconds a keep-alive connection may wait for its next request
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    #: most open client connections per worker (more are closed at accept)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    #: most HTTP/2 streams open at once on one client connection
    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    #: serve HTTP/2 to clients whose ALPN offers ``h2`` (else HTTP/1.1 only)
    http2: bool = True

    def __post_init__(self) -> None:
        if self.max_header_bytes < MIN_HEADER_BYTES:
            raise ValueError(f"maxHeaderBytes must be at least {MIN_HEADER_BYTES}")
        if self.max_connections < 1:
            raise ValueError("maxConnections must be at least 1")
        if self.max_concurrent_streams < 1:
            raise ValueError("maxConcurrentStreams must be at least 1")
        for name, value in (
            ("handshakeTimeout", self.handshake_timeout),
            ("headerReadTimeout", self.header_read_timeout),
            ("idleTimeout", self.idle_timeout),
        ):
            if not value > 0:
                raise ValueError(f"{name} must be a positive number of seconds")


def sweep_interval(settings: ClientConnectionSettings) -> float:
    """Seconds between two sweeps of a worker's connections: a quarter of
    the shortest timeout, at most a second, at least 10 ms."""
    shortest = min(settings.handshake_timeout, settings.header_read_timeout, settings.idle_timeout)
    return min(1.0, max(0.01, shortest / 4))


def phase_limits(settings: ClientConnectionSettings, interval: float) -> tuple[float, ...]:
    """By phase, the time elapsed since the sweep clock noted the phase's
    start past which the connection has timed out (``inf``: never).

    A phase's start is noted with the clock of the last sweep, up to one
    ``interval`` early: the limit adds it, so no connection is closed early.
    """
    limits = [math.inf] * len(PHASES)
    limits[HANDSHAKE] = settings.handshake_timeout + interval
    limits[HEAD] = settings.header_read_timeout + interval
    limits[IDLE] = settings.idle_timeout + interval
    limits[CLOSING] = settings.handshake_timeout + interval
    return tuple(limits)


def head_too_large(url_bytes: int, max_header_bytes: int) -> ApiError:
    """The answer to a request head over ``max_header_bytes``: ``414`` when
    its URL (``url_bytes`` of it read so far) took (nearly) all of it, else
    ``431``."""
    if url_bytes >= max_header_bytes - _REQUEST_LINE_SLACK:
        return ApiError(
            414,
            f"the request URI is too long (the request head is limited to "
            f"{max_header_bytes} bytes)",
            "RequestEntityTooLarge",
        )
    return ApiError(
        431,
        f"the request header fields are too large (limited to {max_header_bytes} bytes)",
        "RequestEntityTooLarge",
    )


def head_timed_out(timeout: float) -> ApiError:
    """The ``408`` for a request head not complete within ``timeout`` seconds."""
    return ApiError(408, f"the request head was not received within {timeout:g}s", "Timeout")


#: llhttp's errors that mean "a transfer coding the gateway does not speak"
_UNSUPPORTED_CODING = ("Request has invalid `Transfer-Encoding`",)


def unsupported_transfer_encoding(value: bytes) -> ApiError | None:
    """The ``501`` for a request ``Transfer-Encoding`` other than exactly
    ``chunked`` (as Go answers), else ``None``."""
    if value.strip().lower() == b"chunked":
        return None
    shown = value.decode("latin-1")[:64]
    return ApiError(501, f"unsupported transfer encoding: {shown!r}", "BadRequest")


def http_version_refused(version: str) -> ApiError | None:
    """``None`` for HTTP/1.0 and 1.1; the refusal of any other version a
    request line names (``0.9``: a request line without a version, 400;
    ``2.0`` and others: 505)."""
    if version in ("1.1", "1.0"):
        return None
    if version == "0.9":
        return ApiError(400, "malformed HTTP request: the request line has no HTTP version")
    return ApiError(
        505,
        f"HTTP/{version} is not supported over an HTTP/1.1 connection (HTTP/2 needs ALPN h2)",
        "BadRequest",
    )


def parser_error(message: str) -> ApiError:
    """The answer to a request llhttp refused with ``message``: ``501`` for
    a transfer coding it does not know, else ``400``."""
    if message in _UNSUPPORTED_CODING:
        return ApiError(501, "unsupported transfer encoding", "BadRequest")
    return ApiError(
        400, f"malformed HTTP request: {message}" if message else "malformed HTTP request"
    )


class Linger:
    """What a connection closing after a refused request head may still
    read and drop (see the module docstring): ``max_bytes`` (the
    connection's ``maxHeaderBytes``, at least :data:`LINGER_BYTES`), then
    it closes at once; the time limit, :data:`LINGER_SECONDS`, is its
    caller's timer."""

    __slots__ = ("left",)

    def __init__(self, max_header_bytes: int) -> None:
        #: bytes it may still drop
        self.left = max(max_header_bytes, LINGER_BYTES)

    def discard(self, size: int) -> bool:
        """``size`` more bytes were read and dropped; whether to read on."""
        self.left -= size
        return self.left > 0


class ConnectionCap:
    """The per-worker cap on client connections, and what to log about it:
    one line when the cap is reached, one when connections are taken again
    (once the count fell a tenth below the cap), with how many were refused
    meanwhile — not a line per refused connection."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: connections refused in the current burst
        self.refused = 0
        self._full = False
        self._low_water = limit - max(1, limit // 10)

    def admit(self, open_connections: int) -> tuple[bool, str | None]:
        """Whether one more connection may be served while
        ``open_connections`` are open, and a line to log (or ``None``)."""
        if open_connections >= self.limit:
            self.refused += 1
            if not self._full:
                self._full = True
                return False, (
                    f"client connection limit reached: {open_connections} connections open "
                    f"(clientConnections.maxConnections {self.limit}); new connections are "
                    "closed at accept until some close"
                )
            return False, None
        if self._full and open_connections <= self._low_water:
            self._full = False
            refused, self.refused = self.refused, 0
            return True, (
                f"client connections below the limit again ({open_connections} open): "
                f"{refused} refused while at the limit of {self.limit}"
            )
        return True, None
