"""Local processes behind ``exec`` and ``attach``.

A remote-command session sits between a protocol layer (SPDY streams or
WebSocket channels, see :mod:`karpor.sim.streaming`) that implements
:class:`ChannelSink`, and a local process:

* :class:`ExecSession` spawns the requested command in the pod's scratch
  directory (``reactor.spawnProcess``; ``usePTY`` for ``tty``), wires stdin,
  stdout and stderr to the channels with backpressure both ways, applies
  resize messages to the pty (``TIOCSWINSZ``) and reports the exit status
  as the kubelet does.
* :class:`MainProcess` is a pod's "main process" for ``attach``: a shell that
  echoes the lines it reads, started at the first attach and shared by every
  :class:`AttachSession`. When an attached client closes stdin, a marker line
  is sent through the shell and the session ends once it comes back, so all
  the client's input has been echoed (:class:`MarkerFilter` strips markers).

Every child runs in its own session/process group (``setsid``) so that
:class:`ProcessRegistry` can kill whole process trees when the simulated
cluster stops or a client goes away. Without a pty, a child's output pipes
are enlarged to :data:`PIPE_SIZE` and read :data:`PIPE_READ` bytes at a
time, so that a fast writer's output reaches the channels in large pieces.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import os
import re
import shutil
import signal
import struct
import termios
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, cast

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.interfaces import IProcessTransport, IPushProducer, IReactorProcess
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.process import ProcessReader
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from karpor.sim.channels import (
    STDERR,
    STDOUT,
    StreamOptions,
    TerminalSize,
    exit_status,
    internal_error_status,
)

__all__ = [
    "ATTACH_SHELL",
    "AttachSession",
    "ChannelSink",
    "ExecSession",
    "MainProcess",
    "MarkerFilter",
    "ProcessRegistry",
    "RemoteCommand",
    "Valve",
    "exit_code_of",
]

#: The main process of every simulated pod: echo each line read on stdin.
ATTACH_SHELL: tuple[str, ...] = (
    "sh",
    "-c",
    'while IFS= read -r line; do printf "%s\\n" "$line"; done',
)


class ChannelSink(Protocol):
    """What a session needs from the protocol layer carrying its channels."""

    def write(self, channel: int, data: bytes) -> None:
        """Send ``data`` on an output channel (stdout or stderr)."""

    def close_channel(self, channel: int) -> None:
        """Signal the end of an output channel."""

    def finish(self, status: dict[str, Any]) -> None:
        """Report ``status`` on the error channel and end the session."""

    def pause_input(self, reason: str) -> None:
        """Stop reading from the client until :meth:`resume_input` (same reason)."""

    def resume_input(self, reason: str) -> None:
        """Undo :meth:`pause_input` for ``reason``."""


class RemoteCommand(Protocol):
    """What the protocol layer drives: one exec or attach session."""

    def start(self) -> None:
        """All channels are set up: start."""

    def stdin_data(self, data: bytes) -> None:
        """Bytes the client sent on stdin."""

    def stdin_eof(self) -> None:
        """The client closed stdin."""

    def resize(self, size: TerminalSize) -> None:
        """The client's terminal changed size."""

    def pause_output(self) -> None:
        """The client connection is full: stop producing output."""

    def resume_output(self) -> None:
        """The client connection drained: produce output again."""

    def disconnected(self) -> None:
        """The client went away."""


@implementer(IPushProducer)
class Valve:
    """An ``IPushProducer`` that forwards pause/resume to two callbacks."""

    def __init__(self, pause: Callable[[], None], resume: Callable[[], None]) -> None:
        self._pause = pause
        self._resume = resume

    def pauseProducing(self) -> None:
        """Called by the consumer when its buffer is full."""
        self._pause()

    def resumeProducing(self) -> None:
        """Called by the consumer when its buffer drained."""
        self._resume()

    def stopProducing(self) -> None:
        """Called by the consumer when it goes away: nothing to do."""


def exit_code_of(reason: Failure) -> int:
    """The exit code of an ended process; ``128 + signal`` if it was killed."""
    value = reason.value
    if isinstance(value, ProcessDone):
        return 0
    if isinstance(value, ProcessTerminated):
        if value.exitCode is not None:
            return int(value.exitCode)
        if value.signal is not None:
            return 128 + int(value.signal)
    return 1


class ProcessRegistry:
    """Every child process of a simulated cluster, so that all can be killed."""

    def __init__(self) -> None:
        self._children: set[IProcessTransport] = set()

    def add(self, process: IProcessTransport) -> None:
        """Track ``process`` until :meth:`discard`."""
        self._children.add(process)

    def discard(self, process: IProcessTransport) -> None:
        """Forget an ended process."""
        self._children.discard(process)

    @staticmethod
    def kill(process: IProcessTransport) -> None:
        """SIGKILL the process group of ``process`` (and the process itself)."""
        pid = process.pid
        if pid is None:
            return
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            process.signalProcess("KILL")

    def kill_all(self) -> None:
        """Kill every tracked process."""
        for process in list(self._children):
            self.kill(process)

    def __len__(self) -> int:
        return len(self._children)


def _resolve(command: str, cwd: Path, path: str) -> str | None:
    if "/" in command:
        target = cwd / command
        return str(target) if os.access(target, os.X_OK) and target.is_file() else None
    return shutil.which(command, path=path)


def spawn(
    reactor: IReactorProcess,
    protocol: ProcessProtocol,
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    tty: bool,
) -> IProcessTransport:
    """Spawn ``argv`` in its own session, with a pty if ``tty``."""
    args = list(argv)
    if not tty:
        setsid = shutil.which("setsid")
        if setsid is not None:
            args = [setsid, *args]
    process = reactor.spawnProcess(
        protocol,
        args[0],
        args,
        env=dict(env),
        path=str(cwd),
        usePTY=tty,
    )
    if not tty:
        for reader in getattr(process, "pipes", {}).values():
            if isinstance(reader, ProcessReader):
                _enlarge_pipe(reader.fd)
                reader.doRead = functools.partial(_read_large, reader)  # type: ignore[method-assign]
    return process


#: capacity asked for a command's output pipes (``F_SETPIPE_SZ``: with the
#: default 64 KiB no read of a fast writer's output is larger; Linux lets a
#: user go up to ``/proc/sys/fs/pipe-max-size``, 1 MiB by default, while the
#: user's pipes stay under ``pipe-user-pages-soft``, and refuses beyond)
PIPE_SIZE = 1024 * 1024

#: most bytes per read of a command's output pipe (Twisted's process readers
#: take 8 KiB; each read costs a reactor turn, a frame and a TLS write call,
#: so the larger the reads, the less each byte costs)
PIPE_READ = 1024 * 1024


def _enlarge_pipe(fd: int) -> None:
    """Ask for a :data:`PIPE_SIZE` pipe; keep what there is if refused."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", None)
    if setpipe is not None:
        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, setpipe, PIPE_SIZE)


def _read_large(reader: ProcessReader) -> object:
    """``ProcessReader.doRead`` with reads of up to :data:`PIPE_READ` bytes."""
    try:
        output = os.read(reader.fd, PIPE_READ)
    except OSError as exc:
        return None if exc.errno in (errno.EAGAIN, errno.EINTR) else CONNECTION_LOST
    if not output:
        return CONNECTION_DONE
    reader.dataReceived(output)
    return None


def set_window_size(fd: int, size: TerminalSize) -> None:
    """Set a pty's window size (``TIOCSWINSZ``)."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", size.height, size.width, 0, 0))


class ExecSession(ProcessProtocol):
    """One ``exec``: a local process wired to the channels of ``sink``."""

    def __init__(
        self,
        reactor: IReactorProcess,
        options: StreamOptions,
        sink: ChannelSink,
        *,
        cwd: Path,
        env: Mapping[str, str],
        registry: ProcessRegistry,
    ) -> None:
        self._reactor = reactor
        self._options = options
        self._sink = sink
        self._cwd = cwd
        self._env = dict(env)
        self._registry = registry
        self._process: IProcessTransport | None = None
        self._ended = False
        self._pending_size: TerminalSize | None = None

    def start(self) -> None:
        """Spawn the command (or report that it cannot be found)."""
        command = self._options.command
        executable = _resolve(command[0], self._cwd, self._env.get("PATH", os.defpath))
        if executable is None:
            self._ended = True
            message = (
                "error executing command in container: failed to exec in container: "
                "OCI runtime exec failed: exec failed: unable to start container process: "
                f'exec: "{command[0]}": executable file not found in $PATH: unknown'
            )
            self._sink.close_channel(STDOUT)
            self._sink.close_channel(STDERR)
            self._sink.finish(internal_error_status(message))
            return
        env = dict(self._env)
        if self._options.tty:
            env.setdefault("TERM", "xterm")
        argv = [executable, *command[1:]]
        self._process = spawn(
            self._reactor, self, argv, cwd=self._cwd, env=env, tty=self._options.tty
        )
        self._registry.add(self._process)
        if self._pending_size is not None:
            self.resize(self._pending_size)
        if self._options.stdin:
            cast(Any, self._process).registerProducer(
                Valve(
                    lambda: self._sink.pause_input("stdin"),
                    lambda: self._sink.resume_input("stdin"),
                ),
                True,
            )
        elif not self._options.tty:
            self._process.closeStdin()

    # -- from the client ---------------------------------------------------

    def stdin_data(self, data: bytes) -> None:
        """Write client stdin to the process."""
        if self._process is not None and not self._ended:
            self._process.write(data)

    def stdin_eof(self) -> None:
        """Close the process's stdin (a pty gets an end-of-file character)."""
        if self._process is None or self._ended:
            return
        if self._options.stdin:
            # A writer with a paused producer resumes it instead of closing
            # once its buffer drains: unregister first, then close.
            cast(Any, self._process).unregisterProducer()
            self._sink.resume_input("stdin")
        if self._options.tty:
            self._process.write(b"\x04")
        else:
            self._process.closeStdin()

    def resize(self, size: TerminalSize) -> None:
        """Apply a terminal size to the pty."""
        if not self._options.tty:
            return
        process = self._process
        if process is None:
            self._pending_size = size
            return
        fd = getattr(process, "fd", None)
        if isinstance(fd, int) and not self._ended:
            set_window_size(fd, size)

    def pause_output(self) -> None:
        """Stop reading the process's output."""
        if self._process is not None and not self._ended:
            cast(Any, self._process).pauseProducing()

    def resume_output(self) -> None:
        """Read the process's output again."""
        if self._process is not None and not self._ended:
            cast(Any, self._process).resumeProducing()

    def disconnected(self) -> None:
        """The client is gone: kill the command."""
        if self._process is not None and not self._ended:
            self._registry.kill(self._process)

    # -- from the process --------------------------------------------------

    def outReceived(self, data: bytes) -> None:
        """Process stdout (or pty output) to the stdout channel."""
        if self._options.stdout:
            self._sink.write(STDOUT, data)

    def errReceived(self, data: bytes) -> None:
        """Process stderr to the stderr channel."""
        if self._options.stderr:
            self._sink.write(STDERR, data)

    def processEnded(self, reason: Failure) -> None:
        """Close the output channels and report the exit status."""
        self._ended = True
        if self._process is not None:
            self._registry.discard(self._process)
        self._sink.close_channel(STDOUT)
        self._sink.close_channel(STDERR)
        self._sink.finish(exit_status(self._options.command, exit_code_of(reason)))


_MARKER = re.compile(rb"@@karpor-attach-sync-(\d+)@@\n")
_MARKER_PREFIX = b"@@karpor-attach-sync-"
_PARTIAL_REST = re.compile(rb"\d*@{0,2}")


def _could_start_marker(tail: bytes) -> bool:
    """Whether ``tail`` (the end of a buffer) may be the start of a marker."""
    if len(tail) <= len(_MARKER_PREFIX):
        return _MARKER_PREFIX.startswith(tail)
    return tail.startswith(_MARKER_PREFIX) and bool(
        _PARTIAL_REST.fullmatch(tail[len(_MARKER_PREFIX) :])
    )


class MarkerFilter:
    """Removes attach marker lines from a byte stream split anywhere.

    :meth:`feed` returns output chunks (``bytes``) and the numbers of the
    markers found (``int``), in stream order. Bytes that might start a marker
    are held back until they are known not to.
    """

    _MAX_MARKER = len(_MARKER_PREFIX) + 24

    def __init__(self) -> None:
        self._buf = b""

    @staticmethod
    def marker(number: int) -> bytes:
        """The line that carries marker ``number``."""
        return b"@@karpor-attach-sync-%d@@\n" % number

    def feed(self, data: bytes) -> list[bytes | int]:
        """Filter ``data``; see the class docstring."""
        buf = self._buf + data
        out: list[bytes | int] = []
        while (match := _MARKER.search(buf)) is not None:
            if match.start():
                out.append(buf[: match.start()])
            out.append(int(match.group(1)))
            buf = buf[match.end() :]
        keep = 0
        for i in range(max(0, len(buf) - self._MAX_MARKER), len(buf)):
            if _could_start_marker(buf[i:]):
                keep = len(buf) - i
                break
        if keep < len(buf):
            out.append(buf[: len(buf) - keep])
        self._buf = buf[len(buf) - keep :]
        return out

    def flush(self) -> bytes:
        """Whatever is held back (at the end of the stream)."""
        buf, self._buf = self._buf, b""
        return buf


class MainProcess(ProcessProtocol):
    """A pod's main process, shared by every attached client."""

    def __init__(
        self,
        reactor: IReactorProcess,
        *,
        cwd: Path,
        env: Mapping[str, str],
        registry: ProcessRegistry,
        on_exit: Callable[[MainProcess], None],
    ) -> None:
        self._reactor = reactor
        self._cwd = cwd
        self._env = dict(env)
        self._registry = registry
        self._on_exit = on_exit
        self._process: IProcessTransport | None = None
        self._sessions: list[AttachSession] = []
        self._filter = MarkerFilter()
        self._waiting: dict[int, AttachSession] = {}
        self._next_marker = 0
        self._pausers: set[int] = set()
        self.ended = False

    def start(self) -> None:
        """Spawn the shell."""
        self._process = spawn(
            self._reactor, self, ATTACH_SHELL, cwd=self._cwd, env=self._env, tty=False
        )
        self._registry.add(self._process)

    def attach(self, session: AttachSession) -> None:
        """Start delivering output to ``session``."""
        self._sessions.append(session)

    def detach(self, session: AttachSession) -> None:
        """Stop delivering output to ``session``."""
        if session in self._sessions:
            self._sessions.remove(session)
        self._waiting = {k: v for k, v in self._waiting.items() if v is not session}
        self.resume_for(session)

    def write(self, data: bytes) -> None:
        """Write to the shell's stdin."""
        if self._process is not None and not self.ended:
            self._process.write(data)

    def sync(self, session: AttachSession, newline: bool) -> None:
        """Send a marker; ``session.synced()`` runs when it has been echoed."""
        self._next_marker += 1
        self._waiting[self._next_marker] = session
        self.write((b"\n" if newline else b"") + MarkerFilter.marker(self._next_marker))

    def pause_for(self, session: AttachSession) -> None:
        """``session`` cannot take output: pause the shell's output."""
        self._pausers.add(id(session))
        if self._process is not None and not self.ended:
            cast(Any, self._process).pauseProducing()

    def resume_for(self, session: AttachSession) -> None:
        """``session`` can take output again."""
        self._pausers.discard(id(session))
        if not self._pausers and self._process is not None and not self.ended:
            cast(Any, self._process).resumeProducing()

    def kill(self) -> None:
        """Kill the shell."""
        if self._process is not None and not self.ended:
            self._registry.kill(self._process)

    def outReceived(self, data: bytes) -> None:
        """Fan output out to the attached sessions; complete syncs."""
        for item in self._filter.feed(data):
            if isinstance(item, int):
                session = self._waiting.pop(item, None)
                if session is not None:
                    session.synced()
            else:
                for session in list(self._sessions):
                    session.output(STDOUT, item)

    def errReceived(self, data: bytes) -> None:
        """Fan stderr out to the attached sessions."""
        for session in list(self._sessions):
            session.output(STDERR, data)

    def processEnded(self, reason: Failure) -> None:
        """End every attached session."""
        self.ended = True
        if self._process is not None:
            self._registry.discard(self._process)
        rest = self._filter.flush()
        for session in list(self._sessions):
            if rest:
                session.output(STDOUT, rest)
            session.main_ended(exit_code_of(reason))
        self._sessions.clear()
        self._on_exit(self)


class AttachSession:
    """One ``attach`` client on a pod's :class:`MainProcess`."""

    def __init__(self, main: MainProcess, options: StreamOptions, sink: ChannelSink) -> None:
        self._main = main
        self._options = options
        self._sink = sink
        self._done = False
        self._last_byte = b"\n"

    def start(self) -> None:
        """Attach to the main process."""
        self._main.attach(self)

    def stdin_data(self, data: bytes) -> None:
        """Client stdin to the main process."""
        if self._options.stdin and not self._done and data:
            self._last_byte = data[-1:]
            self._main.write(data)

    def stdin_eof(self) -> None:
        """End the session once everything sent has been echoed."""
        if not self._done:
            self._main.sync(self, newline=self._last_byte != b"\n")

    def synced(self) -> None:
        """The marker came back: all input has been processed."""
        self._end({"metadata": {}, "status": "Success"})

    def resize(self, size: TerminalSize) -> None:
        """The main process has no terminal: ignored."""

    def pause_output(self) -> None:
        """Pause the shared main process for this client."""
        self._main.pause_for(self)

    def resume_output(self) -> None:
        """Resume the shared main process for this client."""
        self._main.resume_for(self)

    def disconnected(self) -> None:
        """Detach without touching the main process."""
        self._done = True
        self._main.detach(self)

    def output(self, channel: int, data: bytes) -> None:
        """Main-process output for this client."""
        if self._done:
            return
        if channel == STDOUT and self._options.stdout:
            self._sink.write(STDOUT, data)
        elif channel == STDERR and self._options.stderr:
            self._sink.write(STDERR, data)

    def main_ended(self, exit_code: int) -> None:
        """The main process exited."""
        del exit_code
        self._end({"metadata": {}, "status": "Success"})

    def _end(self, status: dict[str, Any]) -> None:
        if self._done:
            return
        self._done = True
        self._main.detach(self)
        self._sink.close_channel(STDOUT)
        self._sink.close_channel(STDERR)
        self._sink.finish(status)
