"""The cluster registry: immutable snapshots, swapped atomically.

A :class:`Snapshot` is what the gateway knows of its clusters at one
moment; it never changes.  The :class:`Registry` holds the current one:
a request reads ``registry.current`` once and keeps that snapshot to its
end, while a reload builds a new snapshot (:func:`merge`) and
:meth:`Registry.swap` puts it in place in one reference assignment.

On reload the last good definition stays (:func:`merge`): a cluster whose
new definition is broken keeps serving with its previous definition,
until the file is fixed or removed.
"""

from __future__ import annotations

import dataclasses
import datetime
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from twisted.logger import Logger

from karpor.config.clusters import Problem
from karpor.config.directory import DuplicateName, LoadResult
from karpor.config.model import Cluster

_log = Logger()

#: a change subscriber: called with the old and the new snapshot
Subscriber = Callable[["Snapshot", "Snapshot"], None]


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass(frozen=True)
class Snapshot:
    """The clusters at one moment: read-only, shareable across requests.

    ``clusters.get(name)`` is one dict look-up.
    """

    #: the clusters by name, in load order (sorted files, then documents)
    clusters: Mapping[str, Cluster] = field(default_factory=lambda: MappingProxyType({}))
    #: the problems of the load this snapshot came from
    errors: tuple[Problem, ...] = ()
    #: 0 for the empty registry, then one more per swap
    generation: int = 0
    #: when the load happened (UTC)
    loaded_at: datetime.datetime = field(default_factory=_now)
    #: clusters kept from the previous snapshot because their definition broke
    stale: frozenset[str] = frozenset()

    @classmethod
    def from_clusters(
        cls,
        clusters: Iterable[Cluster],
        errors: Iterable[Problem] = (),
        generation: int = 0,
    ) -> Snapshot:
        """A snapshot of ``clusters`` (the first of a name wins)."""
        by_name: dict[str, Cluster] = {}
        for cluster in clusters:
            by_name.setdefault(cluster.name, cluster)
        return cls(MappingProxyType(by_name), tuple(errors), generation)


@dataclass(frozen=True)
class Changes:
    """What differs between two snapshots, by cluster name."""

    added: frozenset[str]
    removed: frozenset[str]
    #: the definition changed (where the cluster is and how it is reached,
    #: its labels…); a move to another file alone is no change
    changed: frozenset[str]


def same_definition(a: Cluster, b: Cluster) -> bool:
    """Whether two definitions agree on everything but where they came from."""
    if a is b:
        return True
    return _definition(a) == _definition(b)


def _definition(c: Cluster) -> Cluster:
    return dataclasses.replace(c, source="", document=0, created="")


def changes(old: Snapshot, new: Snapshot) -> Changes:
    """The clusters added, removed and changed from ``old`` to ``new``."""
    before, after = old.clusters, new.clusters
    return Changes(
        added=frozenset(n for n in after if n not in before),
        removed=frozenset(n for n in before if n not in after),
        changed=frozenset(
            n for n, c in after.items() if n in before and not same_definition(before[n], c)
        ),
    )


def merge(
    previous: Snapshot | None,
    result: LoadResult,
    *,
    generation: int | None = None,
    now: datetime.datetime | None = None,
) -> Snapshot:
    """The snapshot after a load: ``result``, keeping the last good definitions.

    Every cluster of ``result`` is taken.  For each problem of ``result``, the
    previous definitions of the clusters the broken definition held are kept
    (and listed in :attr:`Snapshot.stale`) unless ``result`` defines the name:

    * a problem with ``names`` (the broken definition's names are known):
      the previous clusters of those names that came from the same file;
    * a problem with ``names=None`` (a YAML syntax error, a missing name):
      the previous clusters that came from the same file and document;
    * a problem of a whole file (document 0: unreadable, not UTF-8): every
      previous cluster from that file.

    A cluster that comes back unchanged (:func:`same_definition`) keeps its
    previous object (so ``is`` tells "unchanged", and its age stays).
    Clusters from removed files go; new names append after the loaded ones.

    A duplicate name whose losing definition served the name in ``previous``
    (a file added that sorts first took it over) is reported as such: the
    problem names the definition that lost it and the one that serves it now.
    """
    old = previous.clusters if previous is not None else {}
    clusters: dict[str, Cluster] = {}
    for cluster in result.clusters:
        clusters[cluster.name] = _carry_over(old.get(cluster.name), cluster)
    stale: set[str] = set()
    if old:
        for problem in result.problems:
            for kept in _withheld(old, problem):
                if kept.name not in clusters:
                    clusters[kept.name] = kept
                    stale.add(kept.name)
    if generation is None:
        generation = previous.generation + 1 if previous is not None else 1
    return Snapshot(
        clusters=MappingProxyType(clusters),
        errors=tuple(_taken_over(old, problem) for problem in result.problems),
        generation=generation,
        loaded_at=now or _now(),
        stale=frozenset(stale),
    )


def _carry_over(before: Cluster | None, cluster: Cluster) -> Cluster:
    """``cluster``, or its previous object when nothing changed (age kept)."""
    if before is None or not same_definition(before, cluster):
        return cluster
    if before.source == cluster.source and before.document == cluster.document:
        return before
    return dataclasses.replace(cluster, created=before.created)


def _taken_over(old: Mapping[str, Cluster], problem: Problem) -> Problem:
    """``problem``, worded as a take-over when it is a duplicate whose losing
    definition is the one that served the name until now."""
    if not isinstance(problem, DuplicateName):
        return problem
    before = old.get(problem.cluster)
    if before is None or (before.source, before.document) != (problem.source, problem.document):
        return problem
    return problem.worded(took_over=True)


def _withheld(old: Mapping[str, Cluster], problem: Problem) -> list[Cluster]:
    """The previous clusters a broken definition held."""
    if problem.document == 0:
        return [c for c in old.values() if c.source == problem.source]
    if problem.names is None:
        return [
            c for c in old.values() if c.source == problem.source and c.document == problem.document
        ]
    found = (old.get(name) for name in problem.names)
    return [c for c in found if c is not None and c.source == problem.source]


class Registry:
    """The current snapshot, replaced atomically, with change subscribers.

    Readers take :attr:`current` (a plain attribute read: no lock, no
    copy).  Writers call :meth:`swap` or :meth:`load`; subscribers are
    called with ``(old, new)`` after each swap, in the order they
    subscribed, under the writers' lock (so they see swaps in order; they
    must be quick and must not swap themselves).
    """

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.current: Snapshot = snapshot if snapshot is not None else Snapshot()
        self._lock = threading.RLock()
        self._subscribers: list[Subscriber] = []

    def get(self, name: str) -> Cluster | None:
        """The cluster ``name`` of the current snapshot, if any."""
        return self.current.clusters.get(name)

    def subscribe(self, subscriber: Subscriber) -> Callable[[], None]:
        """Call ``subscriber(old, new)`` after each swap; returns the unsubscribe."""
        with self._lock:
            self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            with self._lock:
                if subscriber in self._subscribers:
                    self._subscribers.remove(subscriber)

        return unsubscribe

    def swap(self, snapshot: Snapshot) -> Snapshot:
        """Make ``snapshot`` current; returns the one it replaced."""
        with self._lock:
            old = self.current
            self.current = snapshot
            for subscriber in list(self._subscribers):
                try:
                    subscriber(old, snapshot)
                except Exception:
                    _log.failure(
                        "cluster registry subscriber {subscriber!r} failed",
                        subscriber=subscriber,
                    )
            return old

    def load(self, result: LoadResult, now: datetime.datetime | None = None) -> Snapshot:
        """Merge ``result`` into the current snapshot (:func:`merge`) and swap it in."""
        with self._lock:
            snapshot = merge(self.current, result, now=now)
            self.swap(snapshot)
            return snapshot
