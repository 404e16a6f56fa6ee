"""The revocation list: parsing, atomic updates, hot reload."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest

from karpor.auth.revocation import (
    ReloadingFile,
    RevocationError,
    RevocationList,
    add_revocations,
    load_revocations,
    parse_revocations,
    parse_serial,
)

T0 = datetime.datetime(2025, 5, 1, 12, 0, tzinfo=datetime.UTC)
BACKDATE = datetime.timedelta(minutes=5)


def test_parse_serial_spellings():
    for text in ("1F0A", "serial=1F0A", "0x1f0a", "1f:0a", " 01f0a "):
        assert parse_serial(text) == 0x1F0A
    for bad in ("", "xyz", "0x", "12-34"):
        with pytest.raises(RevocationError):
            parse_serial(bad)


def test_serials_and_users():
    revoked = RevocationList().with_revoked([0xABC], ["alice"], now=T0)
    assert revoked.is_revoked(0xABC, "bob")
    assert not revoked.is_revoked(0xABD, "bob")
    # alice's certificates issued until the revocation are revoked (notBefore is backdated)
    assert revoked.is_revoked(1, "alice", T0 - BACKDATE)
    assert revoked.is_revoked(1, "alice", T0 - datetime.timedelta(days=3))
    assert not revoked.is_revoked(1, "alice", T0 + datetime.timedelta(seconds=1) - BACKDATE)
    assert revoked.is_revoked(1, "alice")


def test_add_writes_atomically_and_merges(tmp_path):
    path = str(tmp_path / "revoked.json")
    assert load_revocations(path) == RevocationList()
    add_revocations(path, serials=[0x10], now=T0)
    later = T0 + datetime.timedelta(hours=1)
    result = add_revocations(path, serials=[0x20], users=["alice"], now=later)
    assert result == load_revocations(path)
    assert json.loads(Path(path).read_text()) == {
        "serials": ["10", "20"],
        "users": {"alice": "2025-05-01T13:00:00Z"},
    }
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(tmp_path)) == ["revoked.json", "revoked.json.lock"]


def test_parse_errors():
    assert parse_revocations("", "r") == RevocationList()
    with pytest.raises(RevocationError, match="r: line 1: invalid JSON"):
        parse_revocations("{", "r")
    with pytest.raises(RevocationError, match=r"r: serials\[0\]: not a hexadecimal"):
        parse_revocations('{"serials": ["zz"]}', "r")
    with pytest.raises(RevocationError, match=r"r: users\.bob: must be an RFC 3339 time"):
        parse_revocations('{"users": {"bob": 3}}', "r")
    with pytest.raises(RevocationError, match="unknown keys: extra"):
        parse_revocations('{"extra": 1}', "r")


def test_reloading_file_keeps_the_last_good_value(tmp_path):
    path = tmp_path / "revoked.json"
    watched = ReloadingFile(str(path), load_revocations, RevocationList(), interval=0.5)
    assert watched.current(0.0) == RevocationList()
    path.write_text('{"serials": ["ff"]}')
    assert watched.current(0.1).serials == frozenset()  # not yet due
    assert watched.current(0.5).serials == frozenset({0xFF})
    path.write_text("{broken")
    assert watched.poll(1.0) is not None
    assert watched.current(1.5).serials == frozenset({0xFF})
    assert watched.poll(2.0) is None  # reported once
    path.write_text('{"serials": ["1"]}')
    assert watched.current(2.5).serials == frozenset({1})
    assert watched.error is None
