"""The counts behind the gateway's limits, shared by every worker process.

One table, in a file the supervisor creates (its path in the environment
variable :data:`ENV`, a file in the workers' private metrics directory)
and every worker maps into memory (``mmap``); with ``workers: 0`` the same
layout lives in this process's memory.  Layout (native byte order)::

    header     8 int64: magic, users, clusters, cells
    pids       cells int64: the process owning each cell (0: free)
    user keys  users int64: a 64-bit hash of the user name (0: free)
    user tat   users double: the token bucket's theoretical arrival time
    user seen  users double: when the user was last admitted
    counts     users x 2 x cells int32: in-flight, watches
    cluster keys   clusters int64
    cluster counts clusters x cells int32

**Single writer per cell.**  Each process claims a *cell* when it opens the
table (under an ``flock`` of the file) and writes only its own column of
the counts: a request is admitted by summing a user's counts across the
cells (one slice of ``cells`` integers) and incrementing its own.  No lock
and no message is on the request path; two processes admitting the same
user's requests at the same instant may each see the other's count one
request late, so a limit is exceeded by at most one per worker.  The token
bucket's single ``tat`` value per user is written by whichever process
admits; two exactly simultaneous admissions may count as one (the same
bound).  Counts never drift: each process decrements exactly what it
incremented, in its own cell; the cell of a process that exited is zeroed
by the supervisor (:meth:`CountTable.release_pid`) and by the next process
claiming a cell.

**Bounded.**  The table holds :data:`USERS` users and :data:`CLUSTERS`
clusters, found by open addressing over :data:`PROBES` slots.  A user is
added under the file lock (once per user and process: processes cache the
slot); a slot whose user holds nothing and was last admitted more than
:data:`IDLE` seconds ago is reused.  Past the bound (every probed slot
busy: thousands of users active at once) a user is counted in the shared
*overflow* slot 0: those users share one user's limits until slots free up
(never unlimited); :attr:`CountTable.overflows` counts such lookups for
the log.  Slot 0 of the clusters plays the same part.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import mmap
import os
from collections.abc import Callable, Iterator
from typing import Any

#: the environment variable naming the shared table's file
ENV = "KARPOR_LIMITS_TABLE"
#: the file's name in the workers' metrics directory
FILENAME = "limits.table"
#: users tracked at once (slot 0: the overflow)
USERS = 8192
#: clusters tracked at once (slot 0: the overflow)
CLUSTERS = 4096
#: slots tried for a key before it overflows
PROBES = 32
#: seconds a user's slot must be unused before another user may take it
IDLE = 60.0
#: the counts kept per user, in this order
INFLIGHT, WATCHES = 0, 1

_MAGIC = 0x4B52504C494D3031  # "KRPLIM01"
_HEADER = 8


def cells_for(workers: int) -> int:
    """How many process cells a gateway of ``workers`` workers needs: the
    current workers, those draining after rolls, and replacements."""
    return max(8, 4 * workers + 4)


def key_of(name: str) -> int:
    """The table's key of ``name``: a non-zero signed 64-bit hash."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True) or 1


def table_size(users: int, clusters: int, cells: int) -> int:
    """The bytes of a table."""
    return 8 * (_HEADER + cells + 3 * users + clusters) + 4 * cells * (2 * users + clusters)


class TableFull(Exception):
    """No free cell for this process (more processes than :func:`cells_for` planned)."""


class CountTable:
    """The counts (see the module docstring) over ``buffer``; ``fd`` is
    the file to ``flock`` when several processes share it (``None``: this
    process alone)."""

    def __init__(self, buffer: Any, fd: int | None = None) -> None:
        self._buffer = buffer
        self._fd = fd
        whole = memoryview(buffer)
        header = whole[: 8 * _HEADER].cast("q")
        if header[0] != _MAGIC:
            raise ValueError("not a limits table")
        self.users, self.clusters, self.cells = header[1], header[2], header[3]
        users, clusters, cells = self.users, self.clusters, self.cells
        offset = 8 * _HEADER

        def take(size: int, fmt: str) -> Any:
            nonlocal offset
            view = whole[offset : offset + size].cast(fmt)  # type: ignore[call-overload]
            offset += size
            return view

        self.pids: memoryview[int] = take(8 * cells, "q")
        self.user_keys: memoryview[int] = take(8 * users, "q")
        self.user_tat: memoryview[float] = take(8 * users, "d")
        self.user_seen: memoryview[float] = take(8 * users, "d")
        self.user_counts: memoryview[int] = take(4 * 2 * users * cells, "i")
        self.cluster_keys: memoryview[int] = take(8 * clusters, "q")
        self.cluster_counts: memoryview[int] = take(4 * clusters * cells, "i")
        #: this process's cell (:meth:`claim`)
        self.cell = -1
        #: lookups that overflowed since the last look (for the log)
        self.overflows = 0

    # -- creation ----------------------------------------------------------------

    @classmethod
    def in_memory(cls, users: int = USERS, clusters: int = CLUSTERS) -> CountTable:
        """A table of this process alone (one cell, claimed)."""
        buffer = bytearray(table_size(users, clusters, 1))
        _write_header(buffer, users, clusters, 1)
        table = cls(buffer)
        table.claim(os.getpid())
        return table

    @classmethod
    def create(cls, path: str, workers: int) -> CountTable:
        """A new table file at ``path`` (mode 0600; an old one is replaced) for
        a gateway of ``workers`` workers: the supervisor's, which claims no cell."""
        cells = cells_for(workers)
        size = table_size(USERS, CLUSTERS, cells)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.ftruncate(fd, size)  # sparse: pages are made as they are written
            buffer = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        _write_header(buffer, USERS, CLUSTERS, cells)
        return cls(buffer, fd)

    @classmethod
    def open(cls, path: str) -> CountTable:
        """The table file at ``path`` (a worker's)."""
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            buffer = mmap.mmap(fd, os.fstat(fd).st_size)
        except BaseException:
            os.close(fd)
            raise
        return cls(buffer, fd)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self._fd is None:
            yield
            return
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # -- cells -------------------------------------------------------------------

    def claim(self, pid: int) -> int:
        """Claim a cell for process ``pid`` (zeroing the cells of processes
        that no longer exist); raises :class:`TableFull` when none is free."""
        with self._locked():
            pids = self.pids
            for cell in range(self.cells):
                owner = pids[cell]
                if owner and owner != pid and not _alive(owner):
                    self._zero(cell)
            for cell in range(self.cells):
                if pids[cell] == 0:
                    self._zero(cell)
                    pids[cell] = pid
                    self.cell = cell
                    return cell
        raise TableFull(f"no free cell among {self.cells} for process {pid}")

    def release_pid(self, pid: int) -> None:
        """Process ``pid`` exited: zero its counts and free its cell."""
        with self._locked():
            for cell in range(self.cells):
                if self.pids[cell] == pid:
                    self._zero(cell)

    def _zero(self, cell: int) -> None:
        cells = self.cells
        counts = self.user_counts
        for i in range(cell, len(counts), cells):
            if counts[i]:
                counts[i] = 0
        counts = self.cluster_counts
        for i in range(cell, len(counts), cells):
            if counts[i]:
                counts[i] = 0
        self.pids[cell] = 0

    # -- keys --------------------------------------------------------------------

    def user_slot(self, key: int, now: float) -> int:
        """The slot of the user of ``key`` (added if need be; 0: the overflow)."""
        slot = _find(self.user_keys, key)
        if slot:
            return slot
        with self._locked():
            slot = _find(self.user_keys, key) or self._add_user(key, now)
        if not slot:
            self.overflows += 1
        return slot

    def _add_user(self, key: int, now: float) -> int:
        cells, counts, seen = self.cells, self.user_counts, self.user_seen

        def idle(slot: int) -> bool:
            base = slot * 2 * cells
            return seen[slot] <= now - IDLE and not any(counts[base : base + 2 * cells])

        slot = _place(self.user_keys, key, idle)
        if slot:
            self.user_tat[slot] = 0.0
            seen[slot] = now
        return slot

    def cluster_slot(self, key: int) -> int:
        """The slot of the cluster of ``key`` (added if need be; 0: the overflow)."""
        slot = _find(self.cluster_keys, key)
        if slot:
            return slot
        cells, counts = self.cells, self.cluster_counts

        def idle(slot: int) -> bool:
            return not any(counts[slot * cells : (slot + 1) * cells])

        with self._locked():
            slot = _find(self.cluster_keys, key) or _place(self.cluster_keys, key, idle)
        if not slot:
            self.overflows += 1
        return slot

    def cluster_total(self, key: int) -> int:
        """The requests in flight on the cluster of ``key`` across the gateway
        (0 when it is not in the table)."""
        slot = _find(self.cluster_keys, key)
        if not slot:
            return 0
        base = slot * self.cells
        return sum(self.cluster_counts[base : base + self.cells])

    def close(self) -> None:
        """Unmap the table (a worker's, on exit)."""
        for name in (
            "pids",
            "user_keys",
            "user_tat",
            "user_seen",
            "user_counts",
            "cluster_keys",
            "cluster_counts",
        ):
            getattr(self, name).release()
        if isinstance(self._buffer, mmap.mmap):
            # views held by requests still in flight keep it mapped until they go
            with contextlib.suppress(BufferError):
                self._buffer.close()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _find(keys: memoryview, key: int) -> int:
    size = len(keys)
    start = key % (size - 1)
    for probe in range(PROBES):
        slot = 1 + (start + probe) % (size - 1)
        found = keys[slot]
        if found == key:
            return slot
        if found == 0:
            return 0
    return 0


def _place(keys: memoryview, key: int, idle: Callable[[int], bool]) -> int:
    """Put ``key`` in a free slot of its probe sequence, else in one whose
    key is ``idle``; 0 when there is neither (the overflow)."""
    size = len(keys)
    start = key % (size - 1)
    slots = [1 + (start + probe) % (size - 1) for probe in range(PROBES)]
    for slot in slots:
        if keys[slot] == 0:
            keys[slot] = key
            return slot
    for slot in slots:
        if idle(slot):
            keys[slot] = key
            return slot
    return 0


def _write_header(buffer: Any, users: int, clusters: int, cells: int) -> None:
    header = memoryview(buffer)[: 8 * _HEADER].cast("q")
    header[0], header[1], header[2], header[3] = _MAGIC, users, clusters, cells
    header.release()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
