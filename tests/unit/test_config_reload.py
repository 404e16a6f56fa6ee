"""The change watcher sees edits, removals, ConfigMap ..data swaps and named files."""

import os

from twisted.internet.task import Clock

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
