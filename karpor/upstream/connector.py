"""Opening connections to a cluster: one attempt's bounds and its failures.

Both pools of a cluster (the HTTP/1.1 :class:`~karpor.upstream.pool.ClusterPool`
and the HTTP/2 :class:`~karpor.upstream.h2.Multiplexer`) open their
connections through a :class:`Connector`, so a connection attempt is bounded
and worded the same whatever carries the request:

- the whole attempt (TCP connect, then the TLS handshake when the endpoint
  is ``https``) gets ``timeout`` seconds, then it is cancelled (still
  connecting) or aborted (in the handshake);
- a connection that cannot be opened (refused, no route, timed out) is a
  ``503`` naming the cluster (``is unreachable: …``); a TLS handshake that
  fails is a ``502`` naming the TLS failure (:func:`describe_failure`,
  never a secret);
- each failed attempt is reported to :class:`UpstreamErrors` (the metrics):
  a ``connect_error`` or a ``tls_error``.

The protocol being connected tells the connector when it is ready
(:meth:`Connector.opened`: connected, and the handshake done) or closed
(:meth:`Connector.lost`, which answers the error of an attempt that never
became ready).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar
from typing import Protocol as TypingProtocol

from OpenSSL import SSL
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure

from karpor.kube.status import ApiError


class UpstreamErrors(TypingProtocol):
    """Where failed connection attempts are reported (the metrics)."""

    def connect_error(self, cluster: str) -> None:
        """A connection to ``cluster`` could not be opened (refused, timed out)."""

    def tls_error(self, cluster: str) -> None:
        """A TLS handshake with ``cluster`` failed."""


def describe_failure(reason: Failure) -> str:
    """A short, credential-free description of why a connection failed."""
    value = reason.value
    if isinstance(value, SSL.Error):
        args = value.args[0] if value.args else None
        if isinstance(args, list) and args and isinstance(args[-1], tuple):
            return str(args[-1][-1]) or "TLS error"
        return "TLS error"
    name = type(value).__name__
    if name == "VerificationError":
        return f"certificate verify failed: {value}"
    text = str(value).strip()
    return text or name


_P = TypeVar("_P", bound=Protocol)


class _Quiet(Factory):
    """Builds the one protocol it was given, without Twisted's per-connection
    ``Starting factory`` log lines (``connectProtocol``'s factory is noisy)."""

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: object) -> Protocol:
        return self._protocol


def connect(endpoint: IStreamClientEndpoint, protocol: _P) -> Deferred[_P]:
    """Connect ``protocol`` through ``endpoint`` (as ``connectProtocol``, quietly)."""
    return endpoint.connect(_Quiet(protocol))  # type: ignore[return-value]


class _Attempt:
    """A connection being opened."""

    __slots__ = ("deferred", "timed_out", "timer")

    def __init__(self) -> None:
        #: the endpoint's connect, until the TCP connection is up
        self.deferred: Deferred[Protocol] | None = None
        self.timer: IDelayedCall | None = None
        self.timed_out = False


class Connector(Generic[_P]):
    """Opens the connections of one pool to cluster ``name`` (see the
    module docstring); ``failed(protocol, error)`` hears of an attempt that
    never connected (the protocol's own ``connectionLost`` is not called
    then)."""

    def __init__(
        self,
        name: str,
        endpoint: IStreamClientEndpoint,
        reactor: IReactorTime,
        timeout: float,
        failed: Callable[[_P, ApiError], None],
        errors: UpstreamErrors | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._endpoint = endpoint
        self._reactor = reactor
        self._failed = failed
        self._errors = errors
        self._attempts: dict[_P, _Attempt] = {}

    def __len__(self) -> int:
        """Attempts under way."""
        return len(self._attempts)

    def __contains__(self, protocol: object) -> bool:
        """Whether ``protocol`` is being connected."""
        return protocol in self._attempts

    def open(self, protocol: _P) -> None:
        """Connect ``protocol`` (it calls :meth:`opened` once ready)."""
        attempt = _Attempt()
        self._attempts[protocol] = attempt
        attempt.timer = self._reactor.callLater(self.timeout, self._timed_out, protocol, attempt)
        d = connect(self._endpoint, protocol)
        attempt.deferred = d  # type: ignore[assignment]
        d.addCallbacks(self._connected, self._connect_failed, errbackArgs=(protocol, attempt))

    def _connected(self, protocol: _P) -> None:
        attempt = self._attempts.get(protocol)
        if attempt is not None:
            attempt.deferred = None

    def _timed_out(self, protocol: _P, attempt: _Attempt) -> None:
        attempt.timer = None
        attempt.timed_out = True
        if attempt.deferred is not None:
            attempt.deferred.cancel()
        elif not getattr(protocol, "closed", False) and protocol.transport is not None:
            protocol.transport.abortConnection()  # type: ignore[attr-defined]

    def _settle(self, protocol: _P) -> _Attempt | None:
        attempt = self._attempts.pop(protocol, None)
        if attempt is not None and attempt.timer is not None:
            attempt.timer.cancel()
            attempt.timer = None
        return attempt

    def _report(self, tls: bool) -> None:
        errors = self._errors
        if errors is not None:
            if tls:
                errors.tls_error(self.name)
            else:
                errors.connect_error(self.name)

    def _unreachable(self, reason: str) -> ApiError:
        return ApiError(503, f"cluster {self.name!r} is unreachable: {reason}")

    def _connect_failed(self, failure: Failure, protocol: _P, attempt: _Attempt) -> None:
        self._settle(protocol)
        if attempt.timed_out or failure.check(CancelledError):
            reason = f"connection timed out after {self.timeout:g}s"
        else:
            reason = describe_failure(failure)
        self._report(tls=False)
        self._failed(protocol, self._unreachable(reason))

    def opened(self, protocol: _P) -> bool:
        """``protocol`` is ready (or decided it will not be: an ALPN
        refusal): the attempt is over.  Whether it was one."""
        return self._settle(protocol) is not None

    def lost(self, protocol: _P, reason: Failure) -> ApiError | None:
        """``protocol`` closed: when it was still being opened, the failure
        is reported and its ``Status`` returned (a ``503`` for an attempt
        that timed out, else a ``502`` naming the TLS failure)."""
        attempt = self._settle(protocol)
        if attempt is None:
            return None
        self._report(tls=not attempt.timed_out)
        if attempt.timed_out:
            return self._unreachable(f"connection timed out after {self.timeout:g}s")
        return ApiError(
            502, f"cluster {self.name!r}: TLS handshake failed: {describe_failure(reason)}"
        )
