"""Per-user and per-cluster limits on the requests a gateway forwards
(the ``limits`` settings), counted across the whole gateway.

Behind a gateway every user reaches a cluster as the gateway's own
credential, so the cluster's API Priority and Fairness cannot tell users
apart: the gateway does.  Counted are the requests forwarded to clusters
(one cluster, or a fan-out: once for the user, once per cluster asked);
the gateway's own API and the reviews it answers itself are not.

``limits.user.inflight``
    requests of one user in flight at once, long-running ones excepted;
``limits.user.watches``
    long-running requests of one user at once: watches, ``logs -f``,
    exec, attach, port-forward and other upgrades
    (:func:`karpor.metrics.labels.stream_kind`);
``limits.user.qps`` / ``burst``
    a token bucket per user: ``qps`` requests per second on average,
    ``burst`` at once (default twice ``qps``, rounded up);
``limits.cluster.inflight``
    requests in flight on one cluster, every user together (long-running
    ones included: they hold a cluster's resources too);
``limits.exempt.groups``
    callers in any of these groups are never refused (their requests
    still count toward their clusters' in-flight figure).

A limit left out is no limit; without a ``limits`` section nothing is
refused.  Over a limit the request is answered ``429 TooManyRequests``
with ``Retry-After`` (seconds; ``details.retryAfterSeconds`` in the
``Status``), as kube-apiserver does: client-go (kubectl) waits and retries.

The counts live in a :class:`~karpor.front.limitstable.CountTable` shared
by the workers (see that module: one cell per process, no lock and no
message per request; the error is at most one request per worker).  Per
request: a dict lookup of the user's slot, a sum over the cells, a few
integer and float operations; on release a decrement.

Rejections are counted in ``karpor_rejected_requests`` by ``reason``
(:data:`REASONS`), ``cluster`` and ``user_bucket`` (:func:`user_bucket`:
one of :data:`USER_BUCKETS`, never the user).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from twisted.logger import Logger

from karpor.auth.identity import Identity
from karpor.front.limitstable import ENV, INFLIGHT, WATCHES, CountTable, TableFull, key_of
from karpor.kube.status import ApiError

log = Logger(namespace="karpor.limits")

#: the ``reason`` label values of ``karpor_rejected_requests``
REASONS = ("user-inflight", "user-watches", "user-qps", "cluster-inflight")
#: the ``user_bucket`` label's number of values
USER_BUCKETS = 16
#: ``Retry-After`` seconds of a request refused for a concurrency limit
#: (kube-apiserver's value for its in-flight limits)
CONCURRENCY_RETRY_AFTER = 1
#: the ``cluster`` label of a fan-out request refused for its user's limits
FANOUT_LABEL = "*"
#: a process caches this many user slots (then starts again)
SLOT_CACHE = 16384


@dataclass(frozen=True)
class UserLimits:
    """``limits.user``: per authenticated user, across the whole gateway
    (``None``: no limit)."""

    inflight: int | None = None
    watches: int | None = None
    qps: float | None = None
    burst: int | None = None

    def __post_init__(self) -> None:
        if self.burst is not None and self.qps is None:
            raise ValueError("burst needs qps")
        if self.qps is not None and self.burst is None:
            object.__setattr__(self, "burst", max(1, math.ceil(2 * self.qps)))


@dataclass(frozen=True)
class ClusterLimits:
    """``limits.cluster``: per cluster, every user together."""

    inflight: int | None = None


@dataclass(frozen=True)
class Exemptions:
    """``limits.exempt``: callers never refused."""

    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class LimitSettings:
    """The ``limits`` section (absent: no limits)."""

    user: UserLimits = field(default_factory=UserLimits)
    cluster: ClusterLimits = field(default_factory=ClusterLimits)
    exempt: Exemptions = field(default_factory=Exemptions)


def user_bucket(user: str) -> str:
    """The ``user_bucket`` label of ``user``: a stable hash bucket
    (``0`` … ``15``), so a user's rejections can be followed without the
    user becoming a label."""
    return str(key_of(user) % USER_BUCKETS)


class RejectionMetrics(Protocol):
    """Where rejections are counted (:class:`karpor.metrics.gateway.GatewayMetrics`)."""

    def rejected(self, reason: str, cluster: str, bucket: str) -> None:
        """A request was refused for ``reason``."""


class Admission:
    """What an admitted request holds (its user's count, its clusters'
    in-flight counts); :meth:`release` it when the request ends."""

    __slots__ = ("_cluster", "_extra", "_table", "_user")

    def __init__(self, table: CountTable, user: int) -> None:
        self._table = table
        self._user = user
        self._cluster = -1
        self._extra: list[int] | None = None

    def release(self) -> None:
        """The request ended: give back what it held (idempotent)."""
        table = self._table
        if self._user >= 0:
            table.user_counts[self._user] -= 1
            self._user = -1
        if self._cluster >= 0:
            table.cluster_counts[self._cluster] -= 1
            self._cluster = -1
        extra, self._extra = self._extra, None
        if extra:
            counts = table.cluster_counts
            for position in extra:
                counts[position] -= 1


def too_many(message: str, retry_after: int) -> ApiError:
    """The ``429 TooManyRequests`` refusing a request (``Retry-After`` seconds)."""
    return ApiError(
        429,
        f"{message}; retry after {retry_after}s",
        "TooManyRequests",
        details={"retryAfterSeconds": retry_after},
        headers=((b"Retry-After", str(retry_after).encode()),),
    )


class Limiter:
    """Admits or refuses the requests of one process against ``settings``
    (sans-IO but for the clock: ``clock`` is ``time.monotonic``, the same
    in every process of the machine) over the shared ``table``."""

    def __init__(
        self,
        table: CountTable,
        settings: LimitSettings | None,
        metrics: RejectionMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = table
        self.metrics = metrics
        self._clock = clock
        self._users: dict[str, tuple[int, int]] = {}
        self._clusters: dict[str, tuple[int, int]] = {}
        self._cells = table.cells
        self._cell = table.cell
        self.configure(settings)

    def configure(self, settings: LimitSettings | None) -> None:
        """Limit by ``settings`` from now on (``None``: refuse nothing)."""
        self.settings = settings
        user = settings.user if settings is not None else UserLimits()
        self._inflight = user.inflight
        self._watches = user.watches
        self._qps = user.qps
        self._interval = 1.0 / user.qps if user.qps else 0.0
        self._tolerance = self._interval * (user.burst or 0)
        self._cluster_inflight = settings.cluster.inflight if settings is not None else None
        self._exempt = frozenset(settings.exempt.groups) if settings is not None else frozenset()
        self._limits_users = settings is not None and (
            user.inflight is not None or user.watches is not None or user.qps is not None
        )

    # -- slots -------------------------------------------------------------------

    def _user_slot(self, user: str, now: float) -> int:
        cached = self._users.get(user)
        table = self.table
        if cached is not None and table.user_keys[cached[0]] == cached[1]:
            return cached[0]
        key = key_of(user)
        slot = table.user_slot(key, now)
        if slot:
            if len(self._users) >= SLOT_CACHE:
                self._users.clear()
            self._users[user] = (slot, key)
        return slot

    def _cluster_slot(self, cluster: str) -> int:
        cached = self._clusters.get(cluster)
        table = self.table
        if cached is not None and table.cluster_keys[cached[0]] == cached[1]:
            return cached[0]
        key = key_of(cluster)
        slot = table.cluster_slot(key)
        if slot:
            if len(self._clusters) >= SLOT_CACHE:
                self._clusters.clear()
            self._clusters[cluster] = (slot, key)
        return slot

    # -- admission ---------------------------------------------------------------

    def _refuse(self, reason: str, cluster: str, user: str, message: str, after: int) -> ApiError:
        if self.metrics is not None:
            self.metrics.rejected(reason, cluster, user_bucket(user))
        return too_many(message, after)

    def admit(self, identity: Identity, cluster: str | None, long_running: bool) -> Admission:
        """Admit a request of ``identity`` to ``cluster`` (a watch, log
        follow or upgrade when ``long_running``), or raise the ``429``
        :class:`~karpor.kube.status.ApiError` refusing it."""
        table = self.table
        cells = self._cells
        cell = self._cell
        position = -1
        exempt = self._exempt and not self._exempt.isdisjoint(identity.groups)
        if self._limits_users and not exempt:
            now = self._clock()
            user = identity.user
            slot = self._user_slot(user, now)
            counts = table.user_counts
            base = (2 * slot + (WATCHES if long_running else INFLIGHT)) * cells
            limit = self._watches if long_running else self._inflight
            label = cluster if cluster is not None else FANOUT_LABEL
            if limit is not None and sum(counts[base : base + cells]) >= limit:
                what = (
                    "long-running requests (watch, logs -f, exec)"
                    if long_running
                    else "requests in flight"
                )
                key = "watches" if long_running else "inflight"
                raise self._refuse(
                    "user-watches" if long_running else "user-inflight",
                    label,
                    user,
                    f"too many {what} for user {user!r} across the gateway "
                    f"(limits.user.{key}: {limit})",
                    CONCURRENCY_RETRY_AFTER,
                )
            if self._qps is not None:
                tat = table.user_tat[slot]
                interval = self._interval
                new_tat = (tat if tat > now else now) + interval
                if new_tat - now > self._tolerance:
                    wait = new_tat - now - self._tolerance
                    raise self._refuse(
                        "user-qps",
                        label,
                        user,
                        f"too many requests per second for user {user!r} across the gateway "
                        f"(limits.user.qps: {self._qps:g})",
                        max(1, math.ceil(wait)),
                    )
                table.user_tat[slot] = new_tat
            table.user_seen[slot] = now
            position = base + cell
            counts[position] += 1
        admission = Admission(table, position)
        if cluster is not None:
            try:
                admission._cluster = self._hold_cluster(identity, cluster, bool(exempt))
            except ApiError:
                admission.release()
                raise
        return admission

    def admit_cluster(self, admission: Admission, identity: Identity, cluster: str) -> None:
        """Count one more cluster in flight for ``admission`` (a fan-out's
        part), or raise the ``429`` refusing that part."""
        exempt = self._exempt and not self._exempt.isdisjoint(identity.groups)
        position = self._hold_cluster(identity, cluster, bool(exempt))
        if admission._extra is None:
            admission._extra = [position]
        else:
            admission._extra.append(position)

    def _hold_cluster(self, identity: Identity, cluster: str, exempt: bool) -> int:
        slot = self._cluster_slot(cluster)
        cells = self._cells
        base = slot * cells
        counts = self.table.cluster_counts
        limit = self._cluster_inflight
        if limit is not None and not exempt and sum(counts[base : base + cells]) >= limit:
            raise self._refuse(
                "cluster-inflight",
                cluster,
                identity.user,
                f"too many requests in flight on cluster {cluster!r} "
                f"(limits.cluster.inflight: {limit})",
                CONCURRENCY_RETRY_AFTER,
            )
        position = base + self._cell
        counts[position] += 1
        return position

    def inflight(self, clusters: Iterable[str]) -> Mapping[str, int]:
        """The requests in flight on each of ``clusters`` across the gateway
        (for the ``karpor_cluster_inflight`` gauge)."""
        table = self.table
        return {name: table.cluster_total(key_of(name)) for name in clusters}

    def note_overflows(self) -> None:
        """Log (once per call) the lookups that found the table full since the last call."""
        count, self.table.overflows = self.table.overflows, 0
        if count:
            log.warn(
                "limits: {n} lookup(s) found the table of users or clusters full; those "
                "share the overflow slot's limits",
                n=count,
            )


def open_limiter(settings: LimitSettings | None, metrics: RejectionMetrics | None) -> Limiter:
    """This process's limiter: over the table the supervisor shares (its
    file named by :data:`~karpor.front.limitstable.ENV`, a cell claimed for
    this process), else over a table of this process alone (``workers:
    0``; or, logged as an error, when the shared table has no free cell:
    then this worker counts alone)."""
    path = os.environ.get(ENV)
    table: CountTable | None = None
    if path:
        try:
            table = CountTable.open(path)
            table.claim(os.getpid())
        except (OSError, ValueError, TableFull) as exc:
            if table is not None:
                table.close()
                table = None
            log.error(
                "limits: cannot share the gateway's counts ({why}): this worker counts its "
                "own requests only",
                why=str(exc),
            )
    if table is None:
        table = CountTable.in_memory()
    return Limiter(table, settings, metrics)
