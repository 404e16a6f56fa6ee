"""The audit log's rotation by size (several writers on one file), its
reopening after logrotate, standard output beside the file, and the
session line."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from karpor.auth.audit import AuditWriter, SessionRecord, rotate_files


def lines_of(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for candidate in sorted(path.parent.glob(path.name + "*")):
        if candidate.suffix != ".lock":
            out += [json.loads(line) for line in candidate.read_text().splitlines()]
    return out


def test_rotation_keeps_max_backups(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(str(path), max_bytes=1000, max_backups=2)
    try:
        for n in range(150):  # ~30 bytes a line: several rotations
            writer.write(json.dumps({"n": n, "pad": "x" * 10}) + "\n")
            assert writer.flush(10)
    finally:
        writer.close()
    names = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock")
    assert names == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    for name in names:
        assert (tmp_path / name).stat().st_size <= 1000
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o600
    kept = [line["n"] for line in lines_of(path)]
    assert sorted(kept) == list(range(150 - len(kept), 150))  # the newest, none twice


def test_several_writers_rotate_one_file_once_each_time(tmp_path: Path) -> None:
    """Writers of separate processes share the file: here, writers with
    their own descriptors and lock files (flock excludes them as it would
    processes) writing at once; no line is lost or doubled."""
    path = tmp_path / "audit.jsonl"
    writers = [AuditWriter(str(path), max_bytes=2000, max_backups=50) for _ in range(3)]

    def run(index: int, writer: AuditWriter) -> None:
        for n in range(150):
            writer.write(json.dumps({"w": index, "n": n}) + "\n")
            if n % 10 == 0:
                writer.flush(10)

    threads = [threading.Thread(target=run, args=(i, w)) for i, w in enumerate(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for writer in writers:
        writer.close()
    seen = sorted((line["w"], line["n"]) for line in lines_of(path))
    assert seen == sorted((w, n) for w in range(3) for n in range(150))
    sizes = [p.stat().st_size for p in tmp_path.iterdir() if p.suffix != ".lock"]
    assert len(sizes) >= 4 and max(sizes) <= 4000  # rotated, at most a batch over


def test_a_moved_file_is_reopened(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(str(path))
    try:
        writer.write('{"n":1}\n')
        writer.flush(10)
        os.rename(path, tmp_path / "audit.jsonl.old")  # logrotate, no signal
        writer.write('{"n":2}\n')
        writer.flush(10)
    finally:
        writer.close()
    assert path.read_text() == '{"n":2}\n'
    assert (tmp_path / "audit.jsonl.old").read_text() == '{"n":1}\n'


def test_file_and_stdout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(str(path), stdout=True)
    writer.write('{"n":1}\n')
    writer.close()
    assert path.read_text() == '{"n":1}\n'
    assert capfd.readouterr().out == '{"n":1}\n'


def test_rotate_files_without_backups(tmp_path: Path) -> None:
    path = tmp_path / "a"
    path.write_text("x")
    rotate_files(str(path), 0)
    assert not path.exists()


def test_the_session_line() -> None:
    line = SessionRecord(
        time=0,
        request_id="id-1",
        user="alice",
        groups=("dev",),
        cluster="sim-1",
        namespace="ns",
        pod="box",
        subresource="exec",
        command=("sh", "-c", "exit 3"),
        exit_code=3,
        bytes_from_client=10,
        bytes_to_client=20,
        not_recorded="the cluster is not recorded",
    ).to_json()
    obj = json.loads(line)
    assert obj["kind"] == "SessionEnd" and obj["requestID"] == "id-1"
    assert obj["exitCode"] == 3 and obj["command"] == ["sh", "-c", "exit 3"]
    assert obj["recording"] is None and obj["notRecorded"] == "the cluster is not recorded"
    assert (obj["bytesFromClient"], obj["bytesToClient"]) == (10, 20)
