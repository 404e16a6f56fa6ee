"""Processes of a bench run: start, wait until ready, measure memory, always stop.

Every process runs in a session of its own (``start_new_session``) so that
stopping it stops its whole tree (workers, nginx's workers, kubectl).  A
:class:`Processes` set is a context manager: leaving it (normally, on an
exception or on Ctrl-C) stops everything it started, SIGTERM first, SIGKILL
after a grace period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

LOOPBACK = "127.0.0.1"


class BenchError(Exception):
    """A peer or tool that could not be set up; the message says why."""


def free_port() -> int:
    """A TCP port free on the loopback address right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Proc:
    """One started process (and its session), its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        """The process id (also its process group and session id)."""
        return self.popen.pid

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of its log, for error messages."""
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(grace)
        # whatever is left of the group (children that ignored SIGTERM)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


@dataclass
class Processes:
    """The processes started by a bench run; all stopped on exit."""

    workdir: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        """Start ``argv`` in a session of its own, output to ``WORKDIR/NAME.log``."""
        log = self.workdir / f"{name}.log"
        with log.open("ab") as out:
            try:
                popen = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    env=env,
                    cwd=self.workdir,
                )
            except OSError as exc:
                raise BenchError(f"{name}: cannot start {argv[0]}: {exc}") from None
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        """Stop one process and forget it."""
        proc.stop()
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every process still known, the latest first."""
        while self.procs:
            self.procs.pop().stop()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, proc: Proc | None = None
) -> float:
    """Poll ``check`` every 50 ms until true; the seconds it took.

    Raises :class:`BenchError` at ``timeout`` or when ``proc`` exits first.
    """
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        if proc is not None and not proc.alive():
            raise BenchError(
                f"{proc.name} exited (status {proc.popen.returncode}) before {what}:\n"
                f"{proc.log_tail()}"
            )
        if time.monotonic() - start > timeout:
            tail = f":\n{proc.log_tail()}" if proc is not None else ""
            raise BenchError(f"{what}: not within {timeout:.0f} s{tail}")
        time.sleep(0.05)


def log_contains(proc: Proc, text: str) -> Callable[[], bool]:
    """A check for :func:`wait_for`: ``text`` appeared in the process's log."""
    return lambda: text in proc.log.read_text(errors="replace")


def https_status(
    port: int,
    path: str,
    context: ssl.SSLContext | None,
    headers: dict[str, str] | None = None,
    timeout: float = 5.0,
) -> tuple[int, bytes]:
    """One GET to ``LOOPBACK:port`` (TLS when ``context``); status and body."""
    import http.client  # noqa: PLC0415 - used by few callers

    conn: http.client.HTTPConnection
    if context is None:
        conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    else:
        conn = http.client.HTTPSConnection(LOOPBACK, port, timeout=timeout, context=context)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def client_context(
    ca_file: Path, cert_file: Path | None = None, key_file: Path | None = None
) -> ssl.SSLContext:
    """A TLS client context trusting ``ca_file``, with a client certificate if given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    context.set_alpn_protocols(["http/1.1"])
    if cert_file is not None:
        context.load_cert_chain(str(cert_file), str(key_file) if key_file else None)
    return context


def export_revision(revision: str, directory: Path) -> dict[str, str]:
    """Export the repository at ``revision`` into ``directory`` (``git archive``)
    and return an environment that runs its karpor (and its twistd plugin)
    instead of the working tree's."""
    root = Path(__file__).resolve().parent.parent
    directory.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", revision, "karpor", "twisted"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"git archive {revision}: {archive.stderr.decode(errors='replace')}")
    subprocess.run(["tar", "-x", "-C", str(directory)], input=archive.stdout, check=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(directory)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    return env


# ---- memory of a process tree -------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may hold spaces
        fields = stat[stat.rfind(")") + 2 :].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def tree_pids(root: int) -> list[int]:
    """``root`` and all its descendants."""
    children = _children_map()
    out: list[int] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    """The summed VmRSS of a process tree, KiB."""
    return sum(_status_kib(pid, "VmRSS") for pid in tree_pids(root))


def tree_hwm_kib(root: int) -> int:
    """The summed VmHWM (peak RSS of each process) of a process tree, KiB."""
    return sum(_status_kib(pid, "VmHWM") for pid in tree_pids(root))


def _cpu_ticks(pid: int) -> int:
    """utime + stime of one process (and of its children already waited for), in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    fields = stat[stat.rfind(")") + 2 :].split()
    # fields[11..14]: utime, stime, cutime, cstime (proc(5), counted from the state field)
    return sum(int(f) for f in fields[11:15])


def tree_cpu_seconds(root: int) -> float:
    """The CPU time a process tree has used so far (user + system, every process), seconds."""
    return sum(_cpu_ticks(pid) for pid in tree_pids(root)) / os.sysconf("SC_CLK_TCK")


def tree_size(root: int) -> int:
    """How many processes the tree holds."""
    return len(tree_pids(root))


class RssSampler:
    """Samples a process tree's summed VmRSS every ``interval`` s in a thread; keeps the peak."""

    def __init__(self, root: int, interval: float = 0.02) -> None:
        self.root = root
        self.interval = interval
        self.peak_kib = tree_rss_kib(root)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak_kib = max(self.peak_kib, tree_rss_kib(self.root))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, tree_rss_kib(self.root))


def established_to(port: int) -> int:
    """Established TCP connections (IPv4 and IPv6) whose remote port is ``port``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 3 and parts[3] == "01" and int(parts[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count
