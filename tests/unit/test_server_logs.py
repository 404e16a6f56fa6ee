"""Log lines: the JSON line format, Twisted's chatter left out of workers,
and twistd's own observer set to JSON through the application."""

from __future__ import annotations

import io
import json
from pathlib import Path

from twisted.application.service import Application, IServiceCollection
from twisted.logger import ILogObserver, Logger, LogLevel, LogPublisher, PredicateResult
from twisted.python.failure import Failure

from karpor.app.logs import LoggedService, formatter, json_line, observer, twisted_chatter


def event(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "log_time": 1700000000.25,
        "log_level": LogLevel.info,
        "log_namespace": "karpor.worker",
        "log_format": "worker {pid} serving",
        "pid": 42,
    }
    base.update(fields)
    return base


def test_a_json_line_is_one_object_with_the_message_formatted() -> None:
    line = json_line(event(log_system="worker-1"))
    assert line.endswith("\n") and line.count("\n") == 1
    assert json.loads(line) == {
        "time": 1700000000.25,
        "level": "info",
        "system": "worker-1",
        "namespace": "karpor.worker",
        "message": "worker 42 serving",
    }


def test_a_line_about_a_request_names_its_audit_id_and_failure() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        failure = Failure()
    line = json_line(
        event(
            log_level=LogLevel.critical,
            log_format="request dispatch failed (Audit-Id {auditID})",
            auditID="0f5b8c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f",
            log_failure=failure,
        )
    )
    record = json.loads(line)
    assert record["auditID"] == "0f5b8c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f"
    assert (
        record["message"]
        == "request dispatch failed (Audit-Id 0f5b8c1e-2a3b-4c5d-8e9f-0a1b2c3d4e5f)"
    )
    assert record["level"] == "critical"
    assert "ValueError: boom" in record["failure"]


def test_values_json_cannot_hold_are_written_as_text() -> None:
    record = json.loads(json_line(event(log_format="{what}", what=object())))
    assert record["message"].startswith("<object object")


def test_formatters_name_the_process() -> None:
    text = formatter("text", "worker-0")(event())
    assert text is not None and text.endswith(" [worker-0:karpor.worker] worker 42 serving\n")
    line = formatter("json", "supervisor")(event())
    assert line is not None and json.loads(line)["system"] == "supervisor"


def test_workers_leave_out_twisteds_chatter_but_not_its_errors() -> None:
    assert twisted_chatter(event(log_namespace="twisted.protocols.amp")) == PredicateResult.no
    assert twisted_chatter(event(log_namespace="log_legacy")) == PredicateResult.no
    assert (
        twisted_chatter(event(log_namespace="twisted.internet.defer", log_level=LogLevel.critical))
        == PredicateResult.maybe
    )
    assert twisted_chatter(event(log_namespace="karpor.worker")) == PredicateResult.maybe


def test_an_observer_writes_lines_to_its_stream() -> None:
    stream = io.StringIO()
    publisher = LogPublisher(observer("json", "worker-3", stream))
    Logger(namespace="karpor.test", observer=publisher).warn("cluster {name} gone", name="a")
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["message"] == "cluster a gone" and record["level"] == "warn"
    assert record["system"] == "worker-3" and record["namespace"] == "karpor.test"


def test_the_twistd_application_gets_a_json_observer_only_for_json(tmp_path: Path) -> None:
    text_app = Application("karpor")
    LoggedService("text", "supervisor").setServiceParent(text_app)
    assert text_app.getComponent(ILogObserver, None) is None
    json_app = Application("karpor")
    service = LoggedService("json", "supervisor", str(tmp_path / "twistd.log"))
    service.setServiceParent(json_app)
    assert list(IServiceCollection(json_app)) == [service]
    found = json_app.getComponent(ILogObserver, None)
    assert found is not None
    found(event(log_format="supervisor {pid} listening"))
    found._outFile.flush()
    (record,) = [json.loads(x) for x in (tmp_path / "twistd.log").read_text().splitlines()]
    assert record["message"] == "supervisor 42 listening" and record["system"] == "supervisor"
