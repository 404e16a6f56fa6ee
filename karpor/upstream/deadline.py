"""The upstream response-header timeout: how long a cluster may take to
start answering a request.

A cluster that accepts a request and never answers would hold it (and its
client, and an upstream connection) for ever.  kube-apiserver bounds every
request that is not long-running by its ``--request-timeout`` (60 s); the
gateway bounds the wait for the cluster's response head the same way
(setting ``upstream.responseHeaderTimeout``,
:data:`DEFAULT_RESPONSE_HEADER_TIMEOUT`), from the moment the whole request
is written until the final head (or a ``101``) arrives, and never for
long-running requests (watch, ``logs``, exec/attach/port-forward, proxy:
:func:`karpor.kube.requestinfo.long_running_target`) — a watch's stream may
stay quiet for minutes once its head arrived, and only the head is timed
anyway.  On expiry the caller gets :func:`timeout_error` (``504``, reason
``Timeout``, naming the cluster) and the carrier is dropped: a pooled
HTTP/1.1 connection is closed (it still owes a response, so it can never
carry another request), an HTTP/2 stream is reset.

:class:`HeadDeadline` keeps that cheap on the request path: one per
upstream connection, reused by every request it carries.  Arming it sets a
number (and makes a ``callLater`` only when none is pending); the head's
arrival clears the number; the pending call, when it fires, re-arms itself
for the current deadline or drops out once nothing waits.  So a busy
connection creates at most one delayed call per timeout period, not one
per request.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from karpor.kube.status import ApiError

#: seconds a cluster may take to send its response head (kube-apiserver's
#: default ``--request-timeout``)
DEFAULT_RESPONSE_HEADER_TIMEOUT = 60.0


def timeout_error(cluster: str, timeout: float) -> ApiError:
    """The ``504`` a caller gets when ``cluster`` sent no response head
    within ``timeout`` seconds (kube's ``Timeout`` Status)."""
    return ApiError(
        504,
        f'Timeout: cluster "{cluster}" sent no response within {timeout:g}s',
        "Timeout",
        details={"name": cluster, "group": "cluster.karpor.io", "kind": "clusters"},
    )


class HeadDeadline:
    """A reusable response-head timer of one upstream carrier (see the
    module docstring): :meth:`start` when the request is written,
    :meth:`stop` when the head arrives, :meth:`cancel` when the carrier
    closes; ``expired(timeout)`` is called when a started wait runs out."""

    __slots__ = ("_call", "_clock", "_deadline", "_expired", "_timeout")

    def __init__(self, clock: IReactorTime, expired: Callable[[float], None]) -> None:
        self._clock = clock
        self._expired = expired
        self._call: IDelayedCall | None = None
        #: reactor time the current wait ends (``None``: nothing waits)
        self._deadline: float | None = None
        self._timeout = 0.0

    @property
    def waiting(self) -> bool:
        """Whether a started wait has not ended."""
        return self._deadline is not None

    def start(self, timeout: float) -> None:
        """Wait ``timeout`` seconds for the head, from now."""
        deadline = self._clock.seconds() + timeout
        self._deadline = deadline
        self._timeout = timeout
        call = self._call
        if call is None:
            self._call = self._clock.callLater(timeout, self._fire)
        elif call.getTime() > deadline:
            call.reset(timeout)  # a shorter wait than the pending call's

    def stop(self) -> None:
        """The head arrived (or the request is over): nothing waits."""
        self._deadline = None

    def cancel(self) -> None:
        """The carrier is closed: drop the pending call too."""
        self._deadline = None
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    def _fire(self) -> None:
        self._call = None
        deadline = self._deadline
        if deadline is None:
            return
        now = self._clock.seconds()
        if now < deadline:
            self._call = self._clock.callLater(deadline - now, self._fire)
            return
        self._deadline = None
        self._expired(self._timeout)
