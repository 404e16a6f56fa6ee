"""What the gateway keeps of one exec, attach or port-forward session as
it passes through a :class:`~karpor.upstream.splice.Splice`: its bytes
each way, its exit code, and its recording.

A :class:`SessionTap` is made by the pipeline for every session request
(with the session's :class:`~karpor.upstream.recordings.RecordingFile`
when its cluster is recorded, else why there is none) and told the
``101``'s headers (:meth:`SessionTap.switched`); the splice then shows it
every byte both ways.  For exec and attach the frames are demultiplexed
(:mod:`karpor.http.sessionframes`): the cluster's error channel (kept, at
most :data:`MAX_ERROR` bytes) gives the exit code, the terminal channels
go to the recording.  Port-forward and ``kubectl cp`` (binary streams) are
only counted.  :meth:`SessionTap.finish` ends it (the recording closed, or
removed when no session happened) and gives the :class:`SessionSummary`
the session audit line is made of.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from karpor.http.sessionframes import ERROR, SessionFrames, session_frames
from karpor.kube.execsession import NO_OUTCOME, SessionOutcome, SessionRequest, exit_code
from karpor.upstream.recordings import RecordingFile

#: most bytes of the error channel kept (a Status is far smaller)
MAX_ERROR = 64 * 1024

_STATUS_PROTOCOLS = frozenset(
    {"v4.channel.k8s.io", "v5.channel.k8s.io", "v4.base64.channel.k8s.io"}
)


@dataclass(frozen=True)
class SessionSummary:
    """A finished session, for its audit line."""

    request: SessionRequest
    #: the negotiated protocol (``v5.channel.k8s.io``, ``SPDY/3.1+v4.channel.k8s.io``…)
    protocol: str
    started: float
    duration: float
    bytes_from_client: int
    bytes_to_client: int
    outcome: SessionOutcome
    #: the recording's file name ("": none, see ``not_recorded``)
    recording: str
    #: why there is no recording ("" when there is one)
    not_recorded: str


def _header(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> str:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1").strip()
    return ""


class SessionTap:
    """One session's bytes, exit code and recording (see the module docstring)."""

    def __init__(
        self,
        request: SessionRequest,
        recording: RecordingFile | None,
        not_recorded: str,
        *,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.request = request
        self.recording = recording
        self.not_recorded = not_recorded
        self._wall = wall
        self.started = wall()
        self.bytes_from_client = 0
        self.bytes_to_client = 0
        self.protocol = ""
        self._status = False
        self._frames: SessionFrames | None = None
        self._error = bytearray()
        #: the ``101`` came: a session ran
        self.switched_at: float | None = None
        self._summary: SessionSummary | None = None

    def switched(self, headers: Sequence[tuple[bytes, bytes]], cut: Callable[[str], None]) -> bool:
        """The cluster answered ``101`` with ``headers``; ``cut`` ends the
        session as a failure (a recording that can no longer be written).
        ``False``: the session must be recorded but its protocol's channels
        are not known here (the caller cuts it)."""
        self.switched_at = self._wall()
        upgrade = _header(headers, b"upgrade")
        if upgrade.lower().startswith("spdy/"):
            version = _header(headers, b"x-stream-protocol-version")
            self.protocol = f"{upgrade}+{version}" if version else upgrade
            self._status = version in _STATUS_PROTOCOLS
        else:
            self.protocol = _header(headers, b"sec-websocket-protocol") or upgrade
            self._status = self.protocol in _STATUS_PROTOCOLS
        if self.request.terminal:
            self._frames = session_frames(headers, self)
        recording = self.recording
        if recording is not None:
            recording.on_failure = cut
            return self._frames is not None
        return True

    def from_client(self, data: bytes) -> None:
        """Bytes the client sent."""
        self.bytes_from_client += len(data)
        frames = self._frames
        if frames is not None:
            frames.from_client(data)

    def from_server(self, data: bytes) -> None:
        """Bytes the cluster sent."""
        self.bytes_to_client += len(data)
        frames = self._frames
        if frames is not None:
            frames.from_server(data)

    def channel_data(self, from_client: bool, channel: int, data: bytes) -> None:
        """A demultiplexed payload piece: the error channel is kept, the
        terminal's recorded."""
        if channel == ERROR:
            if not from_client and len(self._error) < MAX_ERROR:
                self._error += data[: MAX_ERROR - len(self._error)]
            return
        recording = self.recording
        if recording is not None and not recording.failed:
            recording.channel_data(from_client, channel, data)

    def finish(self) -> SessionSummary | None:
        """End the tap (idempotent): the summary, ``None`` when no session ran."""
        if self._summary is not None:
            return self._summary
        recording = self.recording
        if self.switched_at is None:
            if recording is not None:
                recording.discard()
            return None
        if recording is not None:
            recording.close()
        frames = self._frames
        lost = frames is not None and frames.lost
        outcome = NO_OUTCOME if lost else exit_code(bytes(self._error), self._status)
        if frames is None:
            outcome = NO_OUTCOME
        self._summary = SessionSummary(
            request=self.request,
            protocol=self.protocol,
            started=self.switched_at,
            duration=max(0.0, self._wall() - self.switched_at),
            bytes_from_client=self.bytes_from_client,
            bytes_to_client=self.bytes_to_client,
            outcome=outcome,
            recording=recording.name if recording is not None else "",
            not_recorded=(
                self.not_recorded
                if recording is None
                else "the recording could not be written to the end: the session was cut"
                if recording.failed
                else ""
            ),
        )
        return self._summary


__all__ = ["MAX_ERROR", "SessionSummary", "SessionTap"]
