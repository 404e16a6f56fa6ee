"""The directory through which the gateway's processes share metric values.

``prometheus_client``'s multiprocess mode: each process writes its values to
memory-mapped files in one directory (``PROMETHEUS_MULTIPROC_DIR``), and a
scrape merges every file (counters and histograms summed, gauges as each
declares).  The supervisor owns the directory: it empties it when it starts
(:func:`prepare_for`: ``STATE_DIR/metrics``, or a fresh temporary directory
when the state directory is read-only, removed on stop), names it
in its own environment (:func:`use`) before it records anything, so the
workers it spawns inherit it before they import ``prometheus_client``, and
removes the live gauges of every worker that exits (:func:`mark_dead`).
Counters of exited workers stay, so totals never go down when a worker is
replaced.

A process without the variable (``workers: 0``, tests) keeps its values in
memory and exposes its own registry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

#: the environment variable ``prometheus_client`` reads
ENV = "PROMETHEUS_MULTIPROC_DIR"
#: the directory's name under the state directory
DIRECTORY = "metrics"


def prepare(path: Path) -> Path:
    """Create ``path`` (mode 0700) or empty it of the files a previous run
    left; returns it."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.suffix == ".db" and entry.is_file():
            entry.unlink()
    return path


def prepare_for(state_dir: Path, read_only: bool) -> Path:
    """The directory of a supervisor using ``state_dir``: ``STATE_DIR/metrics``
    emptied, or a fresh temporary one when the state directory is
    ``read_only`` (remove it with :func:`remove_temporary`)."""
    if read_only:
        return Path(tempfile.mkdtemp(prefix="karpor-metrics-"))
    return prepare(state_dir / DIRECTORY)


def remove_temporary(path: Path, read_only: bool) -> None:
    """Remove the directory :func:`prepare_for` made for a read-only state directory."""
    if read_only:
        shutil.rmtree(path, ignore_errors=True)


def use(path: Path | str) -> None:
    """Record metrics of this process (and of the processes it starts from
    now on) in ``path``.  Call it before the first metric is made: the value
    class is chosen again here, in case ``prometheus_client`` was imported
    before the directory was known (it decides at import otherwise)."""
    os.environ[ENV] = str(path)
    from prometheus_client import values  # noqa: PLC0415

    values.ValueClass = values.MultiProcessValue(process_identifier=_pid.value)


class _ProcessId:
    """This process's id, known without a system call: ``prometheus_client``
    asks for it on every value update (to notice a fork), and ``getpid``
    is a system call each time; forks update it."""

    def __init__(self) -> None:
        self._pid = os.getpid()
        os.register_at_fork(after_in_child=self._forked)

    def _forked(self) -> None:
        self._pid = os.getpid()

    def value(self) -> int:
        """The id of the calling process."""
        return self._pid


_pid = _ProcessId()


def directory() -> str | None:
    """The multiprocess directory of this process (``None``: not in multiprocess mode)."""
    path = os.environ.get(ENV)
    return path if path and os.path.isdir(path) else None


def mark_dead(pid: int, path: str) -> None:
    """Process ``pid`` exited: drop its live gauges (in-flight streams, pool sizes)."""
    from prometheus_client import multiprocess  # noqa: PLC0415

    multiprocess.mark_process_dead(pid, path)
