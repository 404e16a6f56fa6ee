"""Watching the clusters directory (and the files its clusters name) for changes.

:class:`ChangeWatcher` calls ``on_change`` shortly after anything it watches
changes.  It decides by *fingerprint*: the ``stat`` (device, inode, size,
mtime, following symbolic links) of every cluster file of the directory and
of every extra file it is told about (token, certificate and CA files named
by clusters).  inotify (``twisted.internet.inotify``) wakes it as soon as an
entry of a watched directory changes; a poll every ``poll_interval`` seconds
is the fallback where inotify is unavailable (and a safety net where it is).

Kubernetes ConfigMap and Secret volumes update by writing a new timestamped
directory and renaming a ``..data`` symbolic link over the old one; the
files are links through ``..data``.  The rename is an event in the watched
directory, and following the links gives the new files' inodes, so the
fingerprint changes and the update is seen.

A watched directory may be moved away, deleted or replaced: its inotify
watch then follows the old inode, or ends (Twisted's ``INotify`` closes
itself when a watched directory is deleted).  Every check (each event and
each poll) therefore makes sure each watched path is watched at its current
inode, starting a new ``INotify`` when the old one closed; until the path is
back, the poll covers it.  A reload that could not read everything asks
for another at the next poll (:meth:`ChangeWatcher.retry`), changed or not.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python import filepath

from karpor.config.directory import is_cluster_file

log = Logger(namespace="karpor.reload")

Fingerprint = tuple[tuple[str, int, int, int, int], ...]

_MISSING = (0, 0, -1, 0)


def _stat(path: str) -> tuple[int, int, int, int]:
    try:
        st = os.stat(path)
    except OSError:
        return _MISSING
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def fingerprint(directory: str, extra: Iterable[str] = ()) -> Fingerprint:
    """The state of the cluster files of ``directory`` and of ``extra`` files."""
    try:
        names = sorted(n for n in os.listdir(directory) if is_cluster_file(n))
    except OSError:
        names = []
    paths = [os.path.join(directory, n) for n in names]
    paths += sorted(set(extra))
    return tuple((p, *_stat(p)) for p in paths)


class ChangeWatcher:
    """Calls ``on_change`` (debounced) when the watched files change."""

    def __init__(
        self,
        reactor: Any,
        directory: str,
        on_change: Callable[[], object],
        *,
        debounce: float = 0.05,
        poll_interval: float = 2.0,
        fallback_poll_interval: float = 0.5,
        use_inotify: bool = True,
    ) -> None:
        self._reactor = reactor
        self.directory = directory
        self._on_change = on_change
        self._debounce = debounce
        self._poll_interval = poll_interval
        self._fallback_poll_interval = fallback_poll_interval
        self._use_inotify = use_inotify
        self._extra: frozenset[str] = frozenset()
        #: watched directories and the (device, inode) each watch is on
        self._watched: dict[str, tuple[int, int]] = {}
        #: paths whose watch failed (warned once)
        self._unwatchable: set[str] = set()
        self._notifier: Any = None
        #: inotify worked once here (so a closed one is started again)
        self._inotify_worked = False
        self._inotify_failed = False
        self._pending: IDelayedCall | None = None
        self._poll: IDelayedCall | None = None
        self._last: Fingerprint = ()
        self._retry = False
        self.running = False

    def start(self) -> None:
        """Take the current state as the baseline and start watching."""
        self.running = True
        self._last = fingerprint(self.directory, self._extra)
        if self._use_inotify:
            self._start_inotify()
        self._schedule_poll()

    def stop(self) -> None:
        """Stop watching."""
        self.running = False
        for call in (self._pending, self._poll):
            if call is not None and call.active():
                call.cancel()
        self._pending = self._poll = None
        self._drop_notifier()

    def watch_files(self, paths: Iterable[str]) -> None:
        """Also watch these files (and the directories holding them)."""
        extra = frozenset(os.path.abspath(p) for p in paths)
        if extra == self._extra:
            return
        self._extra = extra
        self._last = fingerprint(self.directory, extra)
        if self._notifier is not None:
            for path in extra:
                self._watch_dir(os.path.dirname(path))

    def retry(self) -> None:
        """Call ``on_change`` at the next poll even if nothing changed (the
        last reload could not read everything)."""
        self._retry = True

    @property
    def inotify_active(self) -> bool:
        """Whether inotify is in use (else only polling)."""
        return self._notifier is not None

    # -- internals -----------------------------------------------------------

    def _new_notifier(self) -> Any:
        """A reading ``INotify`` (raises where inotify is unavailable)."""
        from twisted.internet import inotify  # noqa: PLC0415 - Linux only

        notifier = inotify.INotify(self._reactor)
        notifier.startReading()
        return notifier

    def _start_inotify(self) -> None:
        try:
            notifier = self._new_notifier()
        except Exception as exc:  # any failure means: poll instead
            if not self._inotify_failed:
                log.warn(
                    "inotify unavailable ({why}); polling {dir} every {s}s",
                    why=str(exc),
                    dir=self.directory,
                    s=self._fallback_poll_interval,
                )
            self._inotify_failed = True
            return
        self._inotify_failed = False
        self._inotify_worked = True
        self._notifier = notifier
        self._watch_all()

    def _drop_notifier(self) -> None:
        notifier, self._notifier = self._notifier, None
        self._watched.clear()
        if notifier is not None and not notifier.disconnecting:
            notifier.loseConnection()

    def _rewatch(self) -> None:
        """Watch every path at its current inode (see the module docstring)."""
        if not self._use_inotify or not self.running:
            return
        notifier = self._notifier
        if notifier is not None and (notifier.disconnecting or not notifier.connected):
            # Twisted's INotify closes itself when a watched directory is deleted
            self._drop_notifier()
        if self._notifier is not None:
            self._watch_all()
        elif self._inotify_worked:
            self._start_inotify()

    def _watch_all(self) -> None:
        for path in (self.directory, *(os.path.dirname(p) for p in self._extra)):
            self._watch_dir(path)

    def _watch_dir(self, path: str) -> None:
        if self._notifier is None:
            return
        try:
            st = os.stat(path)
            here: tuple[int, int] | None = (st.st_dev, st.st_ino)
        except OSError:
            here = None
        watched = self._watched.get(path)
        if watched is not None and watched == here:
            return
        if watched is not None:
            # moved away, deleted or replaced: the watch is on the old inode
            del self._watched[path]
            # (KeyError: Twisted dropped it already, the directory was deleted)
            with contextlib.suppress(KeyError):
                self._notifier.ignore(filepath.FilePath(path))
        if here is None:
            return  # not there (yet): the poll sees it come
        from twisted.internet import inotify  # noqa: PLC0415 - Linux only

        mask = (
            inotify.IN_CREATE
            | inotify.IN_DELETE
            | inotify.IN_MODIFY
            | inotify.IN_CLOSE_WRITE
            | inotify.IN_MOVED_FROM
            | inotify.IN_MOVED_TO
            | inotify.IN_ATTRIB
            | inotify.IN_DELETE_SELF
            | inotify.IN_MOVE_SELF
        )
        try:
            self._notifier.watch(filepath.FilePath(path), mask=mask, callbacks=[self._event])
        except Exception as exc:  # the poll still covers it
            if path not in self._unwatchable:
                log.warn("cannot watch {dir}: {why}", dir=path, why=str(exc))
                self._unwatchable.add(path)
            return
        self._unwatchable.discard(path)
        self._watched[path] = here

    def _event(self, watch: object, path: object, mask: int) -> None:
        if self._pending is None or not self._pending.active():
            self._pending = self._reactor.callLater(self._debounce, self.check)

    def _schedule_poll(self) -> None:
        if not self.running:
            return
        interval = self._poll_interval if self.inotify_active else self._fallback_poll_interval
        self._poll = self._reactor.callLater(interval, self._polled)

    def _polled(self) -> None:
        self.check()
        self._schedule_poll()

    def check(self) -> bool:
        """Compare with the last state; call ``on_change`` if it differs (or
        a :meth:`retry` is due)."""
        if not self.running:
            return False
        self._rewatch()
        current = fingerprint(self.directory, self._extra)
        if current == self._last and not self._retry:
            return False
        self._last = current
        self._retry = False
        try:
            self._on_change()
        except Exception:
            log.failure("reloading after a change in {dir}", dir=self.directory)
        return True
