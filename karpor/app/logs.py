"""Log output of gateway processes (``twisted.logger``).

``text``: the classic Twisted line (time, ``[system#level]``, message);
``json``: one JSON object per line (``time``, ``level``, ``system``,
``namespace``, ``message``; ``auditID`` when the event is about one request,
and ``failure`` text when there is one).  Log messages never carry a
credential: callers log names, never secrets.

Worker processes start logging themselves (:func:`start_logging`), without
Twisted's own informational chatter (:func:`twisted_chatter`: listening
ports, control-connection and main-loop notices; its warnings and errors
stay): a worker's start and stop are each logged once by the worker and
once by the supervisor, with the pid.  The
twistd process (the supervisor, or the gateway with ``workers: 0``) logs
through twistd, which builds its log observer *after* ``makeService``: it
asks the application for an ``ILogObserver`` component first (unless
``--logger`` is given), so the top service of ``twistd karpor``
(:class:`LoggedService`) sets that component when it is added to the
application and ``--log-format json`` holds there too (to standard output,
or to twistd's ``--logfile``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import IO, Any

from twisted.application.service import MultiService
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogBeginner,
)
from twisted.python.components import Componentized
from twisted.python.logfile import LogFile
from zope.interface import provider

#: the event key of the ``Audit-Id`` of the request a line is about
AUDIT_ID_KEY = "auditID"


def json_line(event: dict[str, Any]) -> str:
    """One event as a JSON line."""
    record = {
        "time": event.get("log_time"),
        "level": getattr(event.get("log_level"), "name", None),
        "system": event.get("log_system"),
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    audit_id = event.get(AUDIT_ID_KEY)
    if audit_id:
        record[AUDIT_ID_KEY] = str(audit_id)
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


@provider(ILogFilterPredicate)
def twisted_chatter(event: dict[str, Any]) -> Any:
    """Drop Twisted's informational events (``twisted.*`` and legacy
    ``log.msg`` namespaces below warning level); keep everything else."""
    level = event.get("log_level")
    namespace = str(event.get("log_namespace", ""))
    if (level is None or level < LogLevel.warn) and (
        namespace.startswith("twisted.") or namespace == "log_legacy"
    ):
        return PredicateResult.no
    return PredicateResult.maybe


def start_logging(log_format: str, system: str | None = None) -> None:
    """Begin logging to stdout (for processes not started by twistd),
    without Twisted's chatter."""
    quiet = FilteringLogObserver(observer(log_format, system), [twisted_chatter])
    globalLogBeginner.beginLoggingTo([quiet], redirectStandardIO=False)


class LoggedService(MultiService):
    """The top service of ``twistd karpor``: with ``log_format`` ``json``,
    makes twistd log JSON lines (see the module docstring) to ``logfile``
    (twistd's ``--logfile``; ``None`` or ``-``: standard output) with
    ``system`` as the lines' system.  With ``text``, twistd logs as usual."""

    def __init__(self, log_format: str, system: str, logfile: str | None = None) -> None:
        super().__init__()
        self.log_format = log_format
        self.system = system
        self.logfile = logfile

    def setServiceParent(self, parent: Any) -> None:
        """Join ``parent`` (twistd's application), giving it the log observer."""
        if self.log_format == "json" and isinstance(parent, Componentized):
            stream: IO[str] = sys.stdout
            if self.logfile and self.logfile != "-":
                stream = LogFile.fromFullPath(self.logfile)
            parent.setComponent(ILogObserver, observer("json", self.system, stream))
        super().setServiceParent(parent)
