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
up.  :meth:`AuditWriter.reopen` reopens the file;
:meth:`AuditWriter.flush` waits until what is queued is written;
:meth:`AuditWriter.close` writes what is queued and stops the thread.
With ``stdout`` every batch also goes to standard output.

Exec, attach and port-forward sessions get a second line when they end
(:class:`SessionRecord`, ``"kind": "SessionEnd"``): who, where
(cluster, namespace, pod, container), the command, ``tty``, the exit code
the error channel reported, the duration, the bytes each way, and the
recording's file name or why there is none.  Every line carries the
request's ``Audit-Id`` (``requestID``), the one its client received.

Rotation and several writers (every worker process appends to the same
file): before each batch the thread compares the path's file with its own
(one ``stat``): a file moved away (logrotate, or another worker's rotation)
is reopened, so no signal is needed; and when the batch would take the
file past ``max_bytes`` (``auditLog.maxSizeMB``), the writer takes an
exclusive ``flock`` on ``PATH.lock``, checks again that the path is still
its file (another worker may just have rotated it: then it only reopens),
renames ``PATH`` to ``PATH.1`` (``PATH.1`` to ``PATH.2``…, keeping
``max_backups``), and reopens.  Only one process rotates a given file; a
batch written by another process between the rename and its reopen lands,
whole, at the end of ``PATH.1``.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
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
#: rotated audit files kept by default (``auditLog.maxBackups``)
DEFAULT_MAX_BACKUPS = 5


def rotate_files(path: str, backups: int) -> None:
    """Shift ``PATH.N-1`` … ``PATH.1`` up by one and ``PATH`` to ``PATH.1``
    (``backups`` 0: ``PATH`` is removed); the oldest beyond ``backups`` goes."""
    if backups <= 0:
        with contextlib.suppress(OSError):
            os.unlink(path)
        return
    for n in range(backups - 1, 0, -1):
        with contextlib.suppress(FileNotFoundError):
            os.replace(f"{path}.{n}", f"{path}.{n + 1}")
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, f"{path}.1")


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


@dataclass(frozen=True)
class SessionRecord:
    """What the audit log keeps of one exec, attach or port-forward session,
    written when it ends (besides its request's :class:`AuditRecord`)."""

    #: when the session started (the ``101``; seconds since the epoch)
    time: float
    #: the request's ``Audit-Id`` (the one its client saw)
    request_id: str
    user: str
    groups: Sequence[str] = ()
    source: str = ""
    cluster: str = ""
    namespace: str = ""
    pod: str = ""
    #: ``exec``, ``attach`` or ``portforward``
    subresource: str = ""
    container: str = ""
    command: Sequence[str] = ()
    tty: bool = False
    stdin: bool = False
    ports: Sequence[str] = ()
    #: the negotiated stream protocol
    protocol: str = ""
    #: the command's exit code (``None``: unknown, or no command)
    exit_code: int | None = None
    #: the failure the error channel reported ("" for none)
    error: str = ""
    duration: float = 0.0
    bytes_from_client: int = 0
    bytes_to_client: int = 0
    #: the recording's file name in the recording directory ("": none)
    recording: str = ""
    #: why there is no recording (or why it stopped)
    not_recorded: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The record as the JSON object written."""
        obj: dict[str, Any] = {
            "kind": "SessionEnd",
            "time": _rfc3339(self.time),
            "requestID": self.request_id,
            "user": self.user,
            "groups": list(self.groups),
            "sourceIP": self.source,
            "cluster": self.cluster,
            "namespace": self.namespace,
            "pod": self.pod,
            "subresource": self.subresource,
            "container": self.container,
            "command": list(self.command),
            "tty": self.tty,
            "stdin": self.stdin,
            "protocol": self.protocol,
            "exitCode": self.exit_code,
            "durationSeconds": round(self.duration, 6),
            "bytesFromClient": self.bytes_from_client,
            "bytesToClient": self.bytes_to_client,
            "recording": self.recording or None,
        }
        if self.ports:
            obj["ports"] = list(self.ports)
        if self.error:
            obj["error"] = self.error
        if self.not_recorded:
            obj["notRecorded"] = self.not_recorded
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

    def __init__(
        self,
        destination: str,
        max_queued: int = MAX_QUEUED,
        *,
        max_bytes: int = 0,
        max_backups: int = DEFAULT_MAX_BACKUPS,
        stdout: bool = False,
    ) -> None:
        self.destination = destination
        self._max = max_queued
        #: rotate the file past this size (0: never)
        self.max_bytes = max_bytes if destination != "-" else 0
        #: rotated files kept (``PATH.1`` … ``PATH.N``)
        self.max_backups = max_backups
        #: also write every line to standard output
        self._stdout = sys.stdout.fileno() if stdout and destination != "-" else -1
        self._queue: deque[str] = deque()
        self._cond = threading.Condition()
        self._dropped = 0
        self._busy = False
        self._closing = False
        self._reopen = False
        self._fd = self._open()
        self._identity = self._file_identity(self._fd)
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

    def _file_identity(self, fd: int) -> tuple[int, int]:
        if self.destination == "-":
            return (0, 0)
        stat = os.fstat(fd)
        return (stat.st_dev, stat.st_ino)

    def _replace_fd(self) -> None:
        try:
            fd = self._open()
        except OSError:
            return  # keep writing to the old file
        os.close(self._fd)
        self._fd = fd
        self._identity = self._file_identity(fd)

    def _before_write(self, size: int) -> None:
        """Reopen a file that was moved away (logrotate); rotate one that
        would grow past :attr:`max_bytes` (see the module docstring)."""
        if self.destination == "-":
            return
        try:
            stat = os.stat(self.destination)
        except OSError:
            stat = None
        if stat is None or (stat.st_dev, stat.st_ino) != self._identity:
            self._replace_fd()
            return
        if not self.max_bytes or not stat.st_size or stat.st_size + size <= self.max_bytes:
            return
        try:
            lock = os.open(self.destination + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return  # cannot rotate: keep appending
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                current: os.stat_result | None = os.stat(self.destination)
            except OSError:
                current = None
            # another process may have rotated while this one waited for the lock
            if current is not None and (current.st_dev, current.st_ino) == self._identity:
                rotate_files(self.destination, self.max_backups)
            self._replace_fd()
        finally:
            os.close(lock)  # releases the lock

    def write(self, record: AuditRecord | SessionRecord | str) -> None:
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
                self._replace_fd()
            if dropped:
                lines.append(
                    json.dumps({"kind": "AuditDropped", "dropped": dropped}, separators=(",", ":"))
                    + "\n"
                )
            if lines:
                data = "".join(lines).encode("utf-8")
                self._before_write(len(data))
                self._write_all(self._fd, data)
                if self._stdout >= 0:
                    self._write_all(self._stdout, data)
            with self._cond:
                self._busy = False
                self._cond.notify_all()
            if closing:
                if self.destination != "-":
                    os.close(self._fd)
                return

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                written = os.write(fd, view)
            except InterruptedError:
                continue
            except OSError:
                return  # a full disk or closed stdout must not kill the thread
            view = view[written:]
