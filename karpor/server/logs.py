"""Log output of gateway processes (``twisted.logger``).

``text``: the classic Twisted line (time, ``[system#level]``, message);
``json``: one JSON object per line (``time``, ``level``, ``system``,
``namespace``, ``message``, and ``failure`` text when there is one).  Log
messages never carry a credential: callers log names, never secrets.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogBeginner,
)


def json_line(event: dict[str, Any]) -> str:
    """One event as a JSON line."""
    record = {
        "time": event.get("log_time"),
        "level": getattr(event.get("log_level"), "name", None),
        "system": event.get("log_system"),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["failure"] = failure.getTraceback()
    return json.dumps(record, default=str) + "\n"


def formatter(log_format: str, system: str | None = None) -> Callable[[dict[str, Any]], str | None]:
    """The line formatter for ``log_format``; ``system`` names this process."""

    def text(event: dict[str, Any]) -> str | None:
        if system is not None:
            event = dict(event, log_system=f"{system}:{event.get('log_namespace', '-')}")
        return formatEventAsClassicLogText(event)

    def as_json(event: dict[str, Any]) -> str | None:
        if system is not None:
            event = dict(event, log_system=system)
        return json_line(event)

    return as_json if log_format == "json" else text


def observer(
    log_format: str, system: str | None = None, stream: IO[str] | None = None
) -> FileLogObserver:
    """A file observer writing ``log_format`` lines to ``stream`` (stdout)."""
    return FileLogObserver(stream or sys.stdout, formatter(log_format, system))


def start_logging(log_format: str, system: str | None = None) -> None:
    """Begin logging to stdout (for processes not started by twistd)."""
    globalLogBeginner.beginLoggingTo([observer(log_format, system)], redirectStandardIO=False)
