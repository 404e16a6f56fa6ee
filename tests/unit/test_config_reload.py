"""The change watcher sees edits, removals, ConfigMap ..data swaps and named files."""

import os
import shutil

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.python.runtime import platform

from karpor.config.reload import ChangeWatcher, fingerprint


def _configmap_volume(root, version: str, files: dict[str, str]) -> None:
    """Lay out ``root`` as kubelet does for a ConfigMap volume, atomically swapped."""
    data_dir = root / f"..{version}"
    data_dir.mkdir()
    for name, text in files.items():
        (data_dir / name).write_text(text)
    tmp = root / "..data_tmp"
    tmp.symlink_to(data_dir.name)
    os.replace(tmp, root / "..data")
    for name in files:
        link = root / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def test_fingerprint_tracks_cluster_files_only(tmp_path):
    (tmp_path / "a.yaml").write_text("x")
    before = fingerprint(str(tmp_path))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.yaml").write_text("ignored")
    assert fingerprint(str(tmp_path)) == before
    (tmp_path / "b.yml").write_text("y")
    assert fingerprint(str(tmp_path)) != before


def test_configmap_data_swap_changes_the_fingerprint(tmp_path):
    _configmap_volume(tmp_path, "2024_01", {"c.yaml": "one"})
    before = fingerprint(str(tmp_path))
    _configmap_volume(tmp_path, "2024_02", {"c.yaml": "two"})
    assert fingerprint(str(tmp_path)) != before


def test_watcher_polls_and_debounces(tmp_path):
    clock = Clock()
    calls = []
    token = tmp_path / "elsewhere" / "token"
    token.parent.mkdir()
    token.write_text("t1")
    (tmp_path / "a.yaml").write_text("x")
    watcher = ChangeWatcher(
        clock, str(tmp_path), lambda: calls.append(1), use_inotify=False, fallback_poll_interval=0.5
    )
    watcher.watch_files([str(token)])
    watcher.start()
    clock.advance(0.5)
    assert calls == []
    (tmp_path / "a.yaml").write_text("changed, longer")
    clock.advance(0.5)
    assert calls == [1]
    clock.advance(0.5)
    assert calls == [1]
    token.write_text("t2 rotated")
    clock.advance(0.5)
    assert calls == [1, 1]
    (tmp_path / "a.yaml").unlink()
    clock.advance(0.5)
    assert len(calls) == 3
    watcher.stop()
    (tmp_path / "b.yaml").write_text("after stop")
    clock.advance(5)
    assert len(calls) == 3


def test_a_retry_reloads_at_every_poll_until_the_reload_reads(tmp_path):
    """A reload that could not read everything asks for another at the next poll."""
    clock = Clock()
    calls = []
    failing = [True, True, False]

    def reload() -> None:
        calls.append(clock.seconds())
        if failing[len(calls) - 1]:
            watcher.retry()

    watcher = ChangeWatcher(
        clock, str(tmp_path), reload, use_inotify=False, fallback_poll_interval=0.5
    )
    watcher.start()
    clock.advance(0.5)
    assert calls == []
    (tmp_path / "a.yaml").write_text("x")
    clock.pump([0.5] * 6)
    # the change, then two retries (the last one reads): nothing more
    assert calls == [0.5 * 2, 0.5 * 3, 0.5 * 4]
    watcher.stop()


def test_a_missing_directory_fingerprints_as_empty(tmp_path):
    assert fingerprint(str(tmp_path / "nope")) == ()


def _pump(reactor: MemoryReactorClock, debounce: float) -> None:
    """Read what inotify has to tell, then let the debounced check run."""
    for reader in list(reactor.getReaders()):
        reader.doRead()
    reactor.advance(debounce)


@pytest.mark.skipif(not platform.isLinux(), reason="inotify is Linux's")
def test_inotify_watches_the_directory_again_after_a_move_or_a_delete(tmp_path):
    """Moved away, its watch follows the old inode; deleted, Twisted's INotify
    closes itself: either way, the directory is watched again once it is back."""
    reactor = MemoryReactorClock()
    calls = []
    clusters = tmp_path / "clusters"
    clusters.mkdir()
    debounce, poll = 0.05, 100.0
    watcher = ChangeWatcher(
        reactor, str(clusters), lambda: calls.append(1), debounce=debounce, poll_interval=poll
    )
    watcher.start()
    try:
        assert watcher.inotify_active
        (clusters / "a.yaml").write_text("x")
        _pump(reactor, debounce)
        assert len(calls) == 1
        # moved away: seen at once (the listing fails); back: seen by the poll
        os.rename(clusters, tmp_path / "away")
        _pump(reactor, debounce)
        assert len(calls) == 2
        (tmp_path / "away" / "b.yaml").write_text("y")  # not ours any more
        _pump(reactor, debounce)
        assert len(calls) == 2
        os.rename(tmp_path / "away", clusters)
        reactor.advance(poll)
        assert len(calls) == 3
        # watched again: a change shows without waiting for the poll
        (clusters / "c.yaml").write_text("z")
        _pump(reactor, debounce)
        assert len(calls) == 4
        # deleted (Twisted's INotify closes), created again
        shutil.rmtree(clusters)
        _pump(reactor, debounce)
        assert len(calls) == 5
        clusters.mkdir()
        reactor.advance(poll)
        assert watcher.inotify_active
        (clusters / "d.yaml").write_text("w")
        _pump(reactor, debounce)
        assert len(calls) == 6
    finally:
        watcher.stop()
