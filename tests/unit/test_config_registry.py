"""The registry: snapshots, merge (last good definition stays), swap, subscribers."""

from __future__ import annotations

import dataclasses
import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.config.clusters import Problem
from karpor.config.directory import LoadResult
from karpor.config.model import Cluster, TokenCredential
from karpor.config.registry import Registry, Snapshot, changes, merge, same_definition

T0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


def cluster(
    name: str, source: str = "a.yaml", document: int = 1, endpoint: str = "https://h"
) -> Cluster:
    return Cluster(
        name, endpoint, TokenCredential(token="t"), source=source, document=document, created="c0"
    )


def test_snapshot_is_read_only() -> None:
    snap = merge(None, LoadResult((cluster("a"),)), now=T0)
    assert snap.clusters.get("a") == cluster("a")
    assert snap.clusters.get("nope") is None
    assert (snap.generation, snap.loaded_at) == (1, T0)
    with pytest.raises(TypeError):
        snap.clusters["b"] = cluster("b")  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.generation = 5  # type: ignore[misc]


def test_a_broken_document_keeps_its_last_good_definitions() -> None:
    previous = merge(
        None,
        LoadResult(
            (
                cluster("a"),
                cluster("b", document=2),
                cluster("c", "c.yaml"),
                cluster("gone", "g.yaml"),
            )
        ),
    )
    # b.yaml document 2 broke (its name is still readable); g.yaml was removed
    result = LoadResult(
        (cluster("a"), cluster("c", "c.yaml")),
        (Problem("a.yaml", 2, "spec.access.endpoint", "bad", ("b",)),),
    )
    snap = merge(previous, result)
    assert list(snap.clusters) == ["a", "c", "b"]
    assert snap.clusters["b"] is previous.clusters["b"]
    assert snap.stale == frozenset({"b"})
    assert snap.errors == result.problems
    assert snap.generation == 2


def test_unknown_names_keep_by_file_and_document() -> None:
    previous = merge(
        None,
        LoadResult(
            (
                cluster("a"),
                cluster("b", document=2),
                cluster("k1", "k.yaml"),
                cluster("k2", "k.yaml"),
            )
        ),
    )
    result = LoadResult(
        (),
        (
            Problem("a.yaml", 2, "yaml", "syntax error", None),  # b's document: kept
            Problem("k.yaml", 0, "", "cannot read", None),  # the whole file: all kept
        ),
    )
    snap = merge(previous, result)
    assert sorted(snap.clusters) == ["b", "k1", "k2"]
    assert snap.stale == frozenset({"b", "k1", "k2"})


def test_what_is_not_kept() -> None:
    previous = merge(None, LoadResult((cluster("a"), cluster("b", "b.yaml"))))
    result = LoadResult(
        (cluster("b", "other.yaml", endpoint="https://new"),),
        (
            Problem("a.yaml", 1, "metadata.name", "duplicate", ()),  # withholds nothing
            Problem("x.yaml", 1, "spec", "bad", ("a",)),  # "a" came from another file
            Problem("b.yaml", 1, "spec", "bad", ("b",)),  # "b" has a new good definition
        ),
    )
    snap = merge(previous, result)
    assert list(snap.clusters) == ["b"]
    assert snap.clusters["b"].endpoint == "https://new"
    assert snap.stale == frozenset()


def test_unchanged_clusters_keep_their_object_and_age() -> None:
    previous = merge(None, LoadResult((cluster("a"), cluster("b"))))
    moved = dataclasses.replace(cluster("a", "z.yaml", 3), created="c1")
    touched = dataclasses.replace(cluster("b"), created="c1")
    snap = merge(previous, LoadResult((moved, touched)))
    assert snap.clusters["b"] is previous.clusters["b"]
    assert snap.clusters["a"].source == "z.yaml"
    assert snap.clusters["a"].created == "c0"
    assert changes(previous, snap).changed == frozenset()


def test_changes() -> None:
    old = Snapshot.from_clusters([cluster("a"), cluster("b"), cluster("c")])
    new = Snapshot.from_clusters([cluster("a"), cluster("b", endpoint="https://x"), cluster("d")])
    assert changes(old, new) == changes(old, new).__class__(
        added=frozenset({"d"}), removed=frozenset({"c"}), changed=frozenset({"b"})
    )
    assert same_definition(cluster("a"), cluster("a", "elsewhere.yaml", 9))
    assert not same_definition(cluster("a"), cluster("a", endpoint="https://y"))


def test_registry_swap_and_subscribers() -> None:
    registry = Registry()
    assert registry.current.generation == 0
    assert registry.get("a") is None
    seen: list[tuple[int, int]] = []

    def broken(old: Snapshot, new: Snapshot) -> None:
        raise RuntimeError("subscriber bug")

    unsubscribe = registry.subscribe(lambda old, new: seen.append((old.generation, new.generation)))
    registry.subscribe(broken)
    first = registry.load(LoadResult((cluster("a"),)))
    assert registry.current is first
    assert registry.get("a") == cluster("a")
    registry.load(LoadResult(()))
    assert registry.get("a") is None
    unsubscribe()
    unsubscribe()  # twice is harmless
    old = registry.swap(Snapshot.from_clusters([cluster("z")], generation=9))
    assert old.generation == 2
    assert seen == [(0, 1), (1, 2)]
    assert registry.current.generation == 9


_names = st.sampled_from(["a", "b", "c", "d", "e"])


@given(
    before=st.dictionaries(_names, st.integers(1, 3)),
    after=st.dictionaries(_names, st.integers(1, 3)),
    broken=st.sets(_names),
)
def test_merge_properties(before: dict[str, int], after: dict[str, int], broken: set[str]) -> None:
    """New definitions always win; a broken name keeps its last good one; nothing else survives."""
    previous = merge(None, LoadResult(tuple(cluster(n, document=d) for n, d in before.items())))
    loaded = {n: d for n, d in after.items() if n not in broken}
    result = LoadResult(
        tuple(cluster(n, endpoint="https://new", document=d) for n, d in loaded.items()),
        tuple(Problem("a.yaml", 1, "spec", "bad", (n,)) for n in sorted(broken)),
    )
    snap = merge(previous, result)
    assert set(snap.clusters) == set(loaded) | (broken & set(before))
    for name, c in snap.clusters.items():
        assert c.endpoint == ("https://new" if name in loaded else "https://h")
    assert snap.stale == frozenset((broken & set(before)) - set(loaded))
