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
    in-flight counts: views of their cells); :meth:`release` it when the
    request ends."""

    __slots__ = ("_cell", "_cluster", "_extra", "_user")

    def __init__(self, cell: int) -> None:
        self._cell = cell
        self._user: memoryview[int] | None = None
        self._cluster: memoryview[int] | None = None
        self._extra: list[memoryview[int]] | None = None

    def release(self) -> None:
        """The request ended: give back what it held (idempotent)."""
        cell = self._cell
        user, self._user = self._user, None
        if user is not None:
            user[cell] -= 1
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster[cell] -= 1
        extra, self._extra = self._extra, None
        if extra:
            for counts in extra:
                counts[cell] -= 1


class _UserSlot:
    """A user's slot in the table as this process caches it: the slot, its
    key, and views of its in-flight and watch counts (one int per cell)."""

    __slots__ = ("inflight", "key", "slot", "watches")

    def __init__(self, table: CountTable, slot: int, key: int) -> None:
        cells = table.cells
        base = 2 * slot * cells
        self.slot = slot
        self.key = key
        self.inflight = table.user_counts[base + INFLIGHT * cells : base + (INFLIGHT + 1) * cells]
        self.watches = table.user_counts[base + WATCHES * cells : base + (WATCHES + 1) * cells]


class _ClusterSlot:
    """A cluster's slot as this process caches it (a view of its counts)."""

    __slots__ = ("counts", "key", "slot")

    def __init__(self, table: CountTable, slot: int, key: int) -> None:
        self.slot = slot
        self.key = key
        self.counts = table.cluster_counts[slot * table.cells : (slot + 1) * table.cells]


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
        self._users: dict[str, _UserSlot] = {}
        self._clusters: dict[str, _ClusterSlot] = {}
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

    def _user_slot(self, user: str, now: float) -> _UserSlot:
        cached = self._users.get(user)
        table = self.table
        if cached is not None and table.user_keys[cached.slot] == cached.key:
            return cached
        key = key_of(user)
        slot = table.user_slot(key, now)
        entry = _UserSlot(table, slot, key)
        if slot:
            if len(self._users) >= SLOT_CACHE:
                self._users.clear()
            self._users[user] = entry
        return entry

    def _cluster_slot(self, cluster: str) -> _ClusterSlot:
        cached = self._clusters.get(cluster)
        table = self.table
        if cached is not None and table.cluster_keys[cached.slot] == cached.key:
            return cached
        key = key_of(cluster)
        slot = table.cluster_slot(key)
        entry = _ClusterSlot(table, slot, key)
        if slot:
            if len(self._clusters) >= SLOT_CACHE:
                self._clusters.clear()
            self._clusters[cluster] = entry
        return entry

    # -- admission ---------------------------------------------------------------

    def _refuse(self, reason: str, cluster: str, user: str, message: str, after: int) -> ApiError:
        if self.metrics is not None:
            self.metrics.rejected(reason, cluster, user_bucket(user))
        return too_many(message, after)

    def admit(self, identity: Identity, cluster: str | None, long_running: bool) -> Admission:
        """Admit a request of ``identity`` to ``cluster`` (``None``: a
        fan-out, whose clusters :meth:`admit_cluster` adds; a watch, log
        follow or upgrade when ``long_running``), or raise the ``429``
        :class:`~karpor.kube.status.ApiError` refusing it."""
        admission = Admission(self._cell)
        exempt = bool(self._exempt) and not self._exempt.isdisjoint(identity.groups)
        if self._limits_users and not exempt:
            admission._user = self._admit_user(identity.user, cluster, long_running)
        if cluster is not None:
            try:
                admission._cluster = self._hold_cluster(identity, cluster, exempt)
            except ApiError:
                admission.release()
                raise
        return admission

    def _admit_user(self, user: str, cluster: str | None, long_running: bool) -> memoryview[int]:
        """Count a request of ``user`` (raises the ``429``); the view of its count."""
        now = self._clock()
        entry = self._users.get(user)
        if entry is None or self.table.user_keys[entry.slot] != entry.key:
            entry = self._user_slot(user, now)
        if long_running:
            counts, limit = entry.watches, self._watches
        else:
            counts, limit = entry.inflight, self._inflight
        if limit is not None and sum(counts) >= limit:
            key = "watches" if long_running else "inflight"
            what = "long-running requests (watch, logs -f, exec)" if long_running else "requests"
            raise self._refuse(
                f"user-{key}",
                cluster if cluster is not None else FANOUT_LABEL,
                user,
                f"too many {what} in flight for user {user!r} across the gateway "
                f"(limits.user.{key}: {limit})",
                CONCURRENCY_RETRY_AFTER,
            )
        table = self.table
        slot = entry.slot
        if self._qps is not None:
            tat = table.user_tat[slot]
            new_tat = (tat if tat > now else now) + self._interval
            if new_tat - now > self._tolerance:
                raise self._refuse(
                    "user-qps",
                    cluster if cluster is not None else FANOUT_LABEL,
                    user,
                    f"too many requests per second for user {user!r} across the gateway "
                    f"(limits.user.qps: {self._qps:g})",
                    max(1, math.ceil(new_tat - now - self._tolerance)),
                )
            table.user_tat[slot] = new_tat
        table.user_seen[slot] = now
        counts[self._cell] += 1
        return counts

    def admit_cluster(self, admission: Admission, identity: Identity, cluster: str) -> None:
        """Count one more cluster in flight for ``admission`` (a fan-out's
        part), or raise the ``429`` refusing that part."""
        exempt = bool(self._exempt) and not self._exempt.isdisjoint(identity.groups)
        counts = self._hold_cluster(identity, cluster, exempt)
        if admission._extra is None:
            admission._extra = [counts]
        else:
            admission._extra.append(counts)

    def _hold_cluster(self, identity: Identity, cluster: str, exempt: bool) -> memoryview[int]:
        entry = self._clusters.get(cluster)
        if entry is None or self.table.cluster_keys[entry.slot] != entry.key:
            entry = self._cluster_slot(cluster)
        counts = entry.counts
        limit = self._cluster_inflight
        if limit is not None and not exempt and sum(counts) >= limit:
            raise self._refuse(
                "cluster-inflight",
                cluster,
                identity.user,
                f"too many requests in flight on cluster {cluster!r} "
                f"(limits.cluster.inflight: {limit})",
                CONCURRENCY_RETRY_AFTER,
            )
        counts[self._cell] += 1
        return counts

    def inflight(self, clusters: Iterable[str]) -> Mapping[str, int]:
        """The requests in flight on each of ``clusters`` across the gateway
        (for the ``karpor_cluster_inflight`` gauge)."""
        table = self.table
        return {name: table.cluster_total(key_of(name)) for name in clusters}

    def close(self) -> None:
        """Forget the cached views and unmap the table (on stop)."""
        self._users.clear()
        self._clusters.clear()
        self.table.close()

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
