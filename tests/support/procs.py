"""Real processes for integration tests: start, wait for a line or a port, always stop.

:class:`Process` runs a command with its output captured line by line in a
background thread; :meth:`Process.wait_for_line` blocks until a line matches
(or the process dies, or a generous deadline passes: a safety net, never an
assertion about speed).  :meth:`Process.stop` sends SIGTERM, then SIGKILL,
and is idempotent; use the process as a context manager or register
``stop`` as a fixture finalizer.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

#: how long to wait for a process to say it is ready before giving up
STARTUP_DEADLINE = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, deadline: float = STARTUP_DEADLINE) -> None:
    """Block until ``host:port`` accepts a TCP connection."""
    end = time.monotonic() + deadline
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > end:
                raise TimeoutError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.05)  # the poll of this wait


class ProcessError(RuntimeError):
    """The process exited or never printed what was awaited."""


class Process:
    """A child process with captured, line-buffered output."""

    def __init__(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = list(argv)
        merged = dict(os.environ)
        merged["PYTHONUNBUFFERED"] = "1"
        if env:
            merged.update(env)
        self.popen = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=merged,
            cwd=cwd,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        """Everything printed so far."""
        with self._cond:
            return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, deadline: float = STARTUP_DEADLINE) -> re.Match[str]:
        """The first output line matching the regular expression ``pattern``."""
        regex = re.compile(pattern)
        end = time.monotonic() + deadline
        seen = 0
        with self._cond:
            while True:
                for line in self.lines[seen:]:
                    match = regex.search(line)
                    if match:
                        return match
                seen = len(self.lines)
                if self.popen.poll() is not None and not self._reader.is_alive():
                    raise ProcessError(
                        f"{self.argv[0]} exited ({self.popen.returncode}) before printing "
                        f"{pattern!r}:\n{self.output}"
                    )
                remaining = end - time.monotonic()
                if remaining <= 0:
                    raise ProcessError(f"{self.argv[0]} never printed {pattern!r}:\n{self.output}")
                self._cond.wait(min(remaining, 0.5))

    def stop(self, grace: float = 10.0) -> int:
        """Terminate the process (SIGTERM, then SIGKILL after ``grace``); its exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self._reader.join(5)
        return self.popen.returncode

    def __enter__(self) -> Process:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
