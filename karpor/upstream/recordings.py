"""Session recording files: the ``sessionRecording`` directory of one
worker process.

:class:`Recordings` decides whether a cluster's sessions are recorded
(:class:`~karpor.config.recording.SessionRecordingSettings`) and opens one
:class:`RecordingFile` per exec or attach session, named
``TIME_CLUSTER_NAMESPACE_POD_AUDITID.cast`` (UTC time to the microsecond;
characters other than letters, digits, ``.`` and ``-`` become ``_``; each
part at most 63 characters), created exclusively (``O_EXCL``,
``O_NOFOLLOW``) with mode 0600.  The file receives the session's asciicast
lines (:class:`~karpor.upstream.asciicast.AsciicastEncoder`) as it runs:
one timer per worker (every :data:`FLUSH_INTERVAL` second, running only
while a recording is open) writes what each open recording holds, and a
recording holding more than :data:`FLUSH_BYTES` writes at once, so a crash
of the gateway loses at most the last second and memory stays bounded
whatever the session's rate.

Failing closed: a session on a recorded cluster is refused
(:class:`RecordingRefused`, answered ``503`` by the pipeline) when its file
cannot be created or the directory's filesystem has less than
:data:`MIN_FREE_BYTES` (or no inode) free; a write that fails during a
session (a full disk) cuts the session (the client sees the failure).
Each failure is logged (with the directory and the OS error: the
operator's words, never sent to a client), counted
(:meth:`RecordingEvents.recording_failed`) and kept for the health report
(:attr:`Recordings.problem`), which clears at the next recording opened.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import os
import re
import time
from collections.abc import Callable
from typing import Protocol as TypingProtocol

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from karpor.config.model import Cluster
from karpor.config.recording import SessionRecordingSettings
from karpor.kube.execsession import SessionRequest
from karpor.upstream.asciicast import AsciicastEncoder

log = Logger()

#: seconds between writes of what the open recordings hold
FLUSH_INTERVAL = 1.0
#: characters a recording may hold before it is written at once
FLUSH_BYTES = 64 * 1024
#: free bytes the recording directory's filesystem must have for a session to start
MIN_FREE_BYTES = 8 * 1024 * 1024
#: most characters of a file name part (cluster, namespace, pod, audit id)
MAX_NAME_PART = 63
#: most characters of a recording's title
MAX_TITLE = 1024

#: what a refused or cut client is told (never a path)
NOT_WRITABLE = "the session recording directory is not writable"
FULL = "the session recording directory is full"

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


class RecordingRefused(Exception):
    """A session that must be recorded cannot be: ``reason`` (public words)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RecordingEvents(TypingProtocol):
    """Where recording failures are reported (the metrics)."""

    def recording_failed(self, cluster: str) -> None:
        """A session on ``cluster`` was refused or cut for want of a recording."""

    def recording_writable(self, writable: bool) -> None:
        """Whether the last attempt to write a recording succeeded."""


def _part(text: str) -> str:
    return _UNSAFE.sub("_", text)[:MAX_NAME_PART] or "_"


def recording_name(started: float, cluster: str, request: SessionRequest, audit_id: str) -> str:
    """The file name of a session's recording (see the module docstring)."""
    moment = datetime.datetime.fromtimestamp(started, datetime.UTC)
    stamp = moment.strftime("%Y%m%dT%H%M%S.") + f"{moment.microsecond:06d}Z"
    parts = (cluster, request.namespace, request.pod, audit_id)
    return stamp + "_" + "_".join(_part(p) for p in parts) + ".cast"


def recording_title(user: str, cluster: str, request: SessionRequest) -> str:
    """The asciicast title: who, where, what."""
    where = f"{request.namespace}/{request.pod}"
    if request.container:
        where += f" -c {request.container}"
    what = f" -- {' '.join(request.command)}" if request.command else f" ({request.subresource})"
    return f"{user}@{cluster}: {where}{what}"[:MAX_TITLE]


class RecordingFile:
    """One session's recording (see the module docstring)."""

    def __init__(
        self, owner: Recordings, cluster: str, name: str, fd: int, encoder: AsciicastEncoder
    ) -> None:
        self._owner = owner
        self.cluster = cluster
        #: the file's name in the recording directory
        self.name = name
        self._fd = fd
        self.encoder = encoder
        #: a write failed (the session is cut; nothing more is written)
        self.failed = False
        #: called with the public reason when a write fails (cuts the session)
        self.on_failure: Callable[[str], None] | None = None

    def channel_data(self, from_client: bool, channel: int, data: bytes) -> None:
        """A session payload piece (see :class:`~karpor.http.sessionframes.ChannelSink`)."""
        encoder = self.encoder
        encoder.channel_data(from_client, channel, data)
        if encoder.pending > FLUSH_BYTES:
            self.flush()

    def flush(self) -> bool:
        """Write what is held; ``False`` once a write failed."""
        if self.failed or self._fd < 0:
            return not self.failed
        fd = self._fd
        try:
            self.encoder.write_to(lambda pieces: os.writev(fd, pieces))
        except OSError as exc:
            self.failed = True
            reason = FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else NOT_WRITABLE
            self._owner.write_failed(self, reason, exc)
            if self.on_failure is not None:
                self.on_failure(f"{reason}: the session was cut")
            return False
        return True

    def close(self) -> None:
        """The session ended: write the rest and close the file."""
        if self._fd < 0:
            return
        self.encoder.finish()
        self.flush()
        os.close(self._fd)
        self._fd = -1
        self._owner.closed(self)

    def discard(self) -> None:
        """No session happened (the cluster refused the upgrade): remove the file."""
        if self._fd < 0:
            return
        os.close(self._fd)
        self._fd = -1
        self._owner.closed(self, remove=True)


class Recordings:
    """The recording directory of this worker (see the module docstring).

    ``settings`` ``None``: nothing is recorded.
    """

    def __init__(
        self,
        settings: SessionRecordingSettings | None,
        clock: IReactorTime,
        events: RecordingEvents | None = None,
        *,
        min_free: int = MIN_FREE_BYTES,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._events = events
        self._min_free = min_free
        self._wall = wall
        self._monotonic = monotonic
        self._open: set[RecordingFile] = set()
        self._timer: LoopingCall | None = None
        #: the last failure's public reason ("" since a recording opened fine)
        self.problem = ""
        #: sessions refused or cut for want of a recording
        self.failures = 0
        if settings is not None:
            try:
                os.makedirs(settings.dir, 0o700, exist_ok=True)
            except OSError as exc:
                self._failed("", NOT_WRITABLE, exc)

    def records(self, cluster: Cluster) -> bool:
        """Whether sessions on ``cluster`` must be recorded."""
        settings = self.settings
        return settings is not None and settings.records(cluster)

    def health(self) -> str:
        """The health report's words: "" when there is nothing to say."""
        if self.settings is None:
            return ""
        if self.problem:
            return f"warning: {self.problem} ({self.failures} sessions refused or cut)"
        return f"recording to {self.settings.dir}, {len(self._open)} open"

    def open(
        self, cluster: str, request: SessionRequest, audit_id: str, user: str
    ) -> RecordingFile:
        """Create the recording of a session starting now; raises
        :class:`RecordingRefused` when it cannot be written."""
        settings = self.settings
        assert settings is not None
        started = self._wall()
        name = recording_name(started, cluster, request, audit_id)
        path = os.path.join(settings.dir, name)
        try:
            stats = os.statvfs(settings.dir)
            if stats.f_bavail * stats.f_frsize < self._min_free or (
                stats.f_files and not stats.f_favail
            ):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC
            fd = os.open(path, flags | os.O_NOFOLLOW, 0o600)
        except OSError as exc:
            reason = FULL if exc.errno in (errno.ENOSPC, errno.EDQUOT) else NOT_WRITABLE
            self._failed(cluster, reason, exc)
            raise RecordingRefused(reason) from None
        env = {"TERM": "xterm-256color"} if request.tty else {"TERM": "dumb"}
        encoder = AsciicastEncoder(
            self._monotonic, int(started), env, recording_title(user, cluster, request)
        )
        recording = RecordingFile(self, cluster, name, fd, encoder)
        self._open.add(recording)
        if self.problem:
            log.info("session recording: writing to {dir} again", dir=settings.dir)
        self.problem = ""
        if self._events is not None:
            self._events.recording_writable(True)
        if self._timer is None:
            timer = self._timer = LoopingCall(self.flush)
            timer.clock = self._clock
            timer.start(FLUSH_INTERVAL, now=False)
        return recording

    def flush(self) -> None:
        """Write what every open recording holds (the timer's call)."""
        for recording in list(self._open):
            if recording.encoder.pending:
                recording.flush()

    def closed(self, recording: RecordingFile, *, remove: bool = False) -> None:
        """``recording`` closed (removed when no session happened)."""
        self._open.discard(recording)
        if remove and self.settings is not None:
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.settings.dir, recording.name))
        if not self._open and self._timer is not None:
            timer, self._timer = self._timer, None
            timer.stop()

    def write_failed(self, recording: RecordingFile, reason: str, exc: OSError) -> None:
        """A write of ``recording`` failed."""
        self._failed(recording.cluster, reason, exc)

    def _failed(self, cluster: str, reason: str, exc: OSError) -> None:
        self.problem = reason
        if cluster:
            self.failures += 1
        settings = self.settings
        log.error(
            "session recording: {reason} ({dir}: {error}); sessions on recorded clusters "
            "are refused until it is writable",
            reason=reason,
            dir=settings.dir if settings is not None else "",
            error=exc.strerror or str(exc),
        )
        if self._events is not None:
            if cluster:
                self._events.recording_failed(cluster)
            self._events.recording_writable(False)

    def stop(self) -> None:
        """Close every open recording (the worker stops)."""
        for recording in list(self._open):
            recording.close()


__all__ = [
    "FLUSH_BYTES",
    "FLUSH_INTERVAL",
    "FULL",
    "MIN_FREE_BYTES",
    "NOT_WRITABLE",
    "RecordingEvents",
    "RecordingFile",
    "RecordingRefused",
    "Recordings",
    "recording_name",
    "recording_title",
]
