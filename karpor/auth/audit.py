"""The audit log: one JSON line per request, written when the request ends.

:class:`AuditRecord` holds what is recorded; :meth:`AuditRecord.to_json`
makes the line (sans-IO).  Nothing secret goes in: identities are names
(for a caller an OpenID provider's token proved, ``authentication``
names the provider and the token's subject, never the token),
the path keeps its query string but the values of credential-bearing
parameters (:data:`SECRET_PARAMETERS`, e.g. ``?access_token=``) are
replaced by ``REDACTED`` (:func:`redact_target`), and no header is
recorded.  A path longer than :data:`MAX_PATH` characters keeps its first
:data:`MAX_PATH` and a marker saying how many more there were
(:func:`bounded_target`): a caller's URL never fills the log.

:class:`AuditWriter` writes lines to a file (appending; ``O_APPEND``, so
several worker processes may share one file: each batch is one ``write``
of whole lines) or to standard output (``"-"``) without blocking the
reactor: :meth:`AuditWriter.write` only appends to an in-memory queue; a
daemon thread takes everything queued, writes it in one system call, and
waits for more.  Lines therefore reach the file as soon as the thread runs
(per line when the gateway is idle, in batches under load), with no flush
timer.  The queue is bounded (:data:`MAX_QUEUED` lines): when the disk
cannot keep up, further lines are dropped and counted, and the count is
written as a ``{"kind": "AuditDropped", ...}`` line once the writer catches
up.  :meth:`AuditWriter.reopen` reopens the file (after log rotation);
:meth:`AuditWriter.flush` waits until what is queued is written;
:meth:`AuditWriter.close` writes what is queued and stops the thread.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from karpor.auth.identity import IssuedBy

#: query parameters whose values are credentials (compared lower-cased,
#: after percent-decoding the name)
SECRET_PARAMETERS = frozenset(
    {
        "access_token",
        "id_token",
        "refresh_token",
        "token",
        "bearer",
        "client_secret",
        "password",
        "authorization",
    }
)
#: lines queued at most before new ones are dropped (and counted)
MAX_QUEUED = 100_000
#: most characters of a request target the log keeps
MAX_PATH = 4096

_REDACTED = "REDACTED"


def redact_target(target: str) -> str:
    """The request target (path and query) with credential values replaced."""
    path, sep, query = target.partition("?")
    if not sep or not query:
        return target
    parts = query.split("&")
    changed = False
    for i, part in enumerate(parts):
        name, eq, _ = part.partition("=")
        if unquote(name.replace("+", " ")).strip().lower() in SECRET_PARAMETERS:
            parts[i] = f"{name}={_REDACTED}" if eq else part
            changed = changed or bool(eq)
    return f"{path}?{'&'.join(parts)}" if changed else target


def bounded_target(target: str) -> str:
    """``target`` cut to :data:`MAX_PATH` characters plus
    ``...[truncated N characters]`` when longer."""
    if len(target) <= MAX_PATH:
        return target
    return f"{target[:MAX_PATH]}...[truncated {len(target) - MAX_PATH} characters]"


def _rfc3339(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond:06d}Z"


@dataclass(frozen=True)
class AuditRecord:
    """What the audit log keeps of one request."""

    #: when the request started (seconds since the epoch)
    time: float
    request_id: str
    user: str
    groups: Sequence[str] = ()
    source: str = ""
    #: "" for the gateway's own API
    cluster: str = ""
    verb: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    #: the request target as received (cut and redacted when written)
    path: str = ""
    method: str = ""
    status: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    duration: float = 0.0
    #: the identity sent upstream in ``Impersonate-*`` headers (``None``: none)
    impersonated_user: str | None = None
    impersonated_groups: Sequence[str] = ()
    #: the identity-exchange rule that decided, if any
    exchange_rule: str = ""
    #: for a denial, why (policy wording; never a secret)
    reason: str = ""
    #: the OpenID provider whose token proved the caller, and the token's
    #: subject (``None``: another way; never the token)
    issued_by: IssuedBy | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object written."""
        obj: dict[str, Any] = {
            "time": _rfc3339(self.time),
            "requestID": self.request_id,
            "user": self.user,
            "groups": list(self.groups),
            "sourceIP": self.source,
            "cluster": self.cluster,
            "method": self.method,
            "verb": self.verb,
            "namespace": self.namespace,
            "resource": self.resource,
            "subresource": self.subresource,
            "path": redact_target(bounded_target(self.path)),
            "code": self.status,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
            "durationSeconds": round(self.duration, 6),
        }
        if self.impersonated_user is not None:
            obj["impersonatedUser"] = {
                "username": self.impersonated_user,
                "groups": list(self.impersonated_groups),
            }
        if self.exchange_rule:
            obj["exchangeRule"] = self.exchange_rule
        if self.reason:
            obj["reason"] = self.reason
        if self.issued_by is not None:
            obj["authentication"] = {
                "issuer": self.issued_by.issuer,
                "subject": self.issued_by.subject,
            }
        obj.update(self.extra)
        return obj

    def to_json(self) -> str:
        """One line of JSON, newline-terminated."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":")) + "\n"


class AuditWriter:
    """Writes audit lines from a thread, never blocking the caller.

    ``destination`` is a file path (created mode 0600 if missing, appended
    to) or ``"-"`` for standard output.  Opening happens here, at
    construction (start-up), so a bad path fails early.
    """

    def __init__(self, destination: str, max_queued: int = MAX_QUEUED) -> None:
        self.destination = destination
        self._max = max_queued
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._dropped = 0
        self._busy = False
        self._closing = False
        self._reopen = False
        self._fd = self._open()
        self._thread = threading.Thread(target=self._run, name="karpor-audit", daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return f"<AuditWriter {self.destination!r}>"

    def _open(self) -> int:
        if self.destination == "-":
            return sys.stdout.fileno()
        return os.open(
            self.destination, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )

    def write(self, record: AuditRecord | str) -> None:
        """Queue one record (or a ready line) for writing; returns at once."""
        line = record if isinstance(record, str) else record.to_json()
        with self._cond:
            if self._closing:
                return
            if len(self._queue) >= self._max:
                self._dropped += 1
                return
            self._queue.append(line)
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every line queued so far is written (``False`` on
        timeout).  Not for the reactor thread: for shutdown and tests."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queue and not self._busy and not self._reopen, timeout
            )

    def reopen(self) -> None:
        """Reopen the file before the next write (after the log was rotated)."""
        with self._cond:
            self._reopen = True
            self._cond.notify_all()

    def close(self, timeout: float | None = 10.0) -> None:
        """Write what is queued, then stop (blocks up to ``timeout`` seconds)."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing and not self._reopen:
                    self._cond.wait()
                lines = list(self._queue)
                self._queue.clear()
                self._busy = True
                dropped, self._dropped = self._dropped, 0
                reopen, self._reopen = self._reopen, False
                closing = self._closing
            if reopen and self.destination != "-":
                try:
                    fd = self._open()
                except OSError:
                    pass  # keep writing to the old file
                else:
                    os.close(self._fd)
                    self._fd = fd
            if dropped:
                lines.append(
                    json.dumps({"kind": "AuditDropped", "dropped": dropped}, separators=(",", ":"))
                    + "\n"
                )
            if lines:
                self._write_all("".join(lines).encode("utf-8"))
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            if closing:
                if self.destination != "-":
                    os.close(self._fd)
                return

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._fd, view)
            except InterruptedError:
                continue
            except OSError:
                return  # a full disk or closed stdout must not kill the thread
            view = view[written:]
