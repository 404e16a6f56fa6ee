"""Audit records and the threaded writer."""

from __future__ import annotations

import dataclasses
import json
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.audit import AuditRecord, AuditWriter, redact_target
from karpor.auth.identity import IssuedBy

TOKEN = "eyJhbGciOi.secret-token"


def test_redact_target():
    assert redact_target(f"/api/v1/pods?watch=1&access_token={TOKEN}&limit=5") == (
        "/api/v1/pods?watch=1&access_token=REDACTED&limit=5"
    )
    assert redact_target(f"/x?Access%5FToken={TOKEN}") == "/x?Access%5FToken=REDACTED"
    assert redact_target("/x?token") == "/x?token"
    assert redact_target("/x?labelSelector=a%3Db") == "/x?labelSelector=a%3Db"
    assert redact_target("/x") == "/x"


@given(st.sampled_from(["access_token", "token", "id_token", "ACCESS_TOKEN"]), st.text(min_size=8))
def test_secret_parameters_never_survive(name, secret):
    encoded = quote(secret, safe="")
    target = f"/api?a=1&{name}={encoded}&b=2"
    assert f"{name}=REDACTED" in redact_target(target)
    assert encoded not in redact_target(target).replace("REDACTED", "")


RECORD = AuditRecord(
    time=1_700_000_000.25,
    request_id="r-1",
    user="alice",
    groups=("dev", "system:authenticated"),
    source="127.0.0.1",
    cluster="sim-1",
    verb="list",
    namespace="team-a",
    resource="pods",
    path=f"/api/v1/namespaces/team-a/pods?access_token={TOKEN}",
    method="GET",
    status=200,
    bytes_in=0,
    bytes_out=1234,
    duration=0.0125,
    impersonated_user="alice",
    impersonated_groups=("dev",),
)


def test_record_line():
    line = RECORD.to_json()
    assert line.endswith("\n") and line.count("\n") == 1
    assert TOKEN not in line
    obj = json.loads(line)
    assert obj["time"] == "2023-11-14T22:13:20.250000Z"
    assert obj["path"] == "/api/v1/namespaces/team-a/pods?access_token=REDACTED"
    assert obj["impersonatedUser"] == {"username": "alice", "groups": ["dev"]}
    assert (obj["user"], obj["cluster"], obj["verb"], obj["code"], obj["bytesOut"]) == (
        "alice",
        "sim-1",
        "list",
        200,
        1234,
    )
    assert "authentication" not in obj


def test_record_names_the_openid_provider_and_subject():
    record = dataclasses.replace(RECORD, issued_by=IssuedBy("https://idp.example.com", "u-123"))
    obj = json.loads(record.to_json())
    assert obj["authentication"] == {"issuer": "https://idp.example.com", "subject": "u-123"}


def test_writer_appends_lines_and_flushes_on_close(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_text('{"earlier":true}\n')
    writer = AuditWriter(str(path))
    for i in range(50):
        writer.write(AuditRecord(time=0, request_id=str(i), user="u"))
    writer.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 51
    assert [json.loads(x)["requestID"] for x in lines[1:]] == [str(i) for i in range(50)]
    writer.write(RECORD)  # after close: ignored
    assert len(path.read_text().splitlines()) == 51


def test_writer_counts_dropped_lines(tmp_path):
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(str(path), max_queued=0)
    writer.write(RECORD)
    writer.write(RECORD)
    writer.close()
    assert json.loads(path.read_text()) == {"kind": "AuditDropped", "dropped": 2}


def test_writer_reopens_after_rotation(tmp_path):
    path = tmp_path / "audit.jsonl"
    writer = AuditWriter(str(path))
    writer.write("first\n")
    assert writer.flush(timeout=30)
    rotated = tmp_path / "audit.jsonl.1"
    path.rename(rotated)
    writer.reopen()
    writer.write("second\n")
    writer.close()
    assert rotated.read_text() == "first\n"
    assert path.read_text() == "second\n"
