"""Revoked client certificates: ``revoked.json`` in the state directory.

``karpor revoke --state-dir DIR SERIAL|--user U`` adds entries with
:func:`add_revocations`; every worker reads the file through a
:class:`ReloadingFile` (re-checked at most every half second, so a
revocation holds within 1 s) and asks :meth:`RevocationList.is_revoked`
once per connection, after the certificate verified.

The file::

    {"serials": ["1f0a..."], "users": {"alice": "2025-05-01T12:00:00Z"}}

- ``serials``: certificate serial numbers, lower-case hexadecimal without
  leading zeros (:func:`parse_serial` reads what ``openssl x509 -serial``
  prints, with or without ``serial=``, ``0x`` or colons);
- ``users``: a user name and when it was revoked: every certificate of that
  user (its ``CN``) issued until then is revoked; certificates issued later
  (``karpor kubeconfig`` again) are not.  The gateway CA backdates
  ``notBefore`` by :data:`karpor.auth.ca._BACKDATE`, which
  :meth:`RevocationList.is_revoked` undoes to recover the issue time.

Writes are atomic (a temporary file renamed over the old one) and
serialised between concurrent ``karpor revoke`` runs by ``flock`` on
``revoked.json.lock``.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from karpor.auth.ca import _BACKDATE

#: the revocation list's file name in the state directory
REVOKED_FILE = "revoked.json"
#: how often (seconds) a :class:`ReloadingFile` checks its file
RELOAD_INTERVAL = 0.5

_HEX = frozenset("0123456789abcdef")


class RevocationError(ValueError):
    """A revocation list or argument that cannot be used (the message is safe to show)."""


def parse_serial(text: str) -> int:
    """A certificate serial number from its hexadecimal spelling
    (``1F0A``, ``serial=1F0A``, ``0x1f0a``, ``1f:0a``)."""
    raw = text.strip().lower()
    raw = raw.removeprefix("serial=").removeprefix("0x").replace(":", "")
    if not raw or not set(raw) <= _HEX:
        raise RevocationError(f"not a hexadecimal serial number: {text[:80]!r}")
    return int(raw, 16)


def format_serial(serial: int) -> str:
    """A serial number as the revocation list spells it."""
    return f"{serial:x}"


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def _rfc3339(moment: datetime.datetime) -> str:
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RevocationList:
    """An immutable snapshot of the revocation list."""

    serials: frozenset[int] = frozenset()
    #: user name -> when its certificates were revoked (UTC)
    users: Mapping[str, datetime.datetime] = field(default_factory=dict)

    def is_revoked(
        self, serial: int, user: str, not_before: datetime.datetime | None = None
    ) -> bool:
        """Whether the certificate with ``serial``, issued to ``user`` with
        ``not_before``, is revoked.  Without ``not_before`` a revoked user's
        certificates are all revoked."""
        if serial in self.serials:
            return True
        revoked_at = self.users.get(user)
        if revoked_at is None:
            return False
        if not_before is None:
            return True
        return _utc(not_before) + _BACKDATE <= revoked_at

    def with_revoked(
        self,
        serials: Iterable[int] = (),
        users: Iterable[str] = (),
        now: datetime.datetime | None = None,
    ) -> RevocationList:
        """This list plus ``serials`` and ``users`` (revoked at ``now``)."""
        moment = _utc(now or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
        merged = dict(self.users)
        for user in users:
            merged[user] = max(moment, merged.get(user, moment))
        return RevocationList(self.serials | frozenset(serials), merged)

    def to_json(self) -> str:
        """The file's content."""
        obj = {
            "serials": sorted(format_serial(s) for s in self.serials),
            "users": {u: _rfc3339(t) for u, t in sorted(self.users.items())},
        }
        return json.dumps(obj, indent=2) + "\n"


def parse_revocations(text: str, source: str) -> RevocationList:
    """Parse the JSON ``text`` of the file named ``source`` (an empty text is an empty list)."""
    if not text.strip():
        return RevocationList()
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RevocationError(f"{source}: line {exc.lineno}: invalid JSON: {exc.msg}") from None
    if not isinstance(obj, dict):
        raise RevocationError(f"{source}: must be a JSON object")
    unknown = set(obj) - {"serials", "users"}
    if unknown:
        raise RevocationError(f"{source}: unknown keys: {', '.join(sorted(unknown))}")
    raw_serials = obj.get("serials") or []
    raw_users = obj.get("users") or {}
    if not isinstance(raw_serials, list):
        raise RevocationError(f"{source}: serials: must be a list")
    if not isinstance(raw_users, dict):
        raise RevocationError(f"{source}: users: must be an object")
    serials: set[int] = set()
    for i, item in enumerate(raw_serials):
        if not isinstance(item, str):
            raise RevocationError(f"{source}: serials[{i}]: must be a string")
        try:
            serials.add(parse_serial(item))
        except RevocationError as exc:
            raise RevocationError(f"{source}: serials[{i}]: {exc}") from None
    users: dict[str, datetime.datetime] = {}
    for user, stamp in raw_users.items():
        try:
            users[user] = _utc(datetime.datetime.fromisoformat(stamp))
        except (TypeError, ValueError):
            raise RevocationError(f"{source}: users.{user}: must be an RFC 3339 time") from None
    return RevocationList(frozenset(serials), users)


def load_revocations(path: str) -> RevocationList:
    """The revocation list at ``path`` (a missing file is an empty list; blocking)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return RevocationList()
    except (OSError, UnicodeDecodeError) as exc:
        raise RevocationError(f"{path}: cannot read: {exc}") from None
    return parse_revocations(text, path)


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def write_atomically(path: str, text: str) -> None:
    """Replace ``path`` with ``text`` so a reader sees the old or the new file, never a mix."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def add_revocations(
    path: str,
    serials: Iterable[int] = (),
    users: Iterable[str] = (),
    now: datetime.datetime | None = None,
) -> RevocationList:
    """Add ``serials`` and ``users`` to the list at ``path`` (blocking, for
    ``karpor revoke``); returns the new list."""
    with _locked(path):
        updated = load_revocations(path).with_revoked(serials, users, now)
        write_atomically(path, updated.to_json())
    return updated


_T = TypeVar("_T")


class ReloadingFile(Generic[_T]):
    """The last good parse of a file that may change (hot reload).

    :meth:`current` re-checks the file's ``stat`` at most once per
    ``interval`` seconds of the ``now`` it is given, and re-reads it when the
    inode, size or modification time changed.  A file that fails to load
    keeps the last good value; the error is in :attr:`error` (and returned
    once from :meth:`poll`, for logging).  Serves the revocation list, and
    fits the token and policy files as well (give ``load_token_file`` or
    ``load_policy`` as ``load``).
    """

    def __init__(
        self,
        path: str,
        load: Callable[[str], _T],
        initial: _T,
        interval: float = RELOAD_INTERVAL,
    ) -> None:
        self.path = path
        self._load = load
        self._value = initial
        self._interval = interval
        self._next_check = float("-inf")
        self._stamp: tuple[int, int, int] | None = None
        self.error: str | None = None
        self._fresh_error = False

    @property
    def value(self) -> _T:
        """The last good value, without checking the file (the request path
        reads this; a timer calls :meth:`poll`)."""
        return self._value

    def current(self, now: float) -> _T:
        """The value, reloaded first if due and the file changed."""
        if now >= self._next_check:
            self._next_check = now + self._interval
            self._check()
        return self._value

    def poll(self, now: float) -> str | None:
        """As :meth:`current`, returning a new load error once (``None`` otherwise)."""
        self.current(now)
        if self._fresh_error:
            self._fresh_error = False
            return self.error
        return None

    def _check(self) -> None:
        try:
            st = os.stat(self.path)
            stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            stamp = (0, 0, -1)
        except OSError as exc:
            self._fail(f"{self.path}: cannot read: {exc.strerror or exc}")
            return
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._value = self._load(self.path)
        except ValueError as exc:
            self._fail(str(exc))
            return
        self.error = None

    def _fail(self, message: str) -> None:
        if message != self.error:
            self._fresh_error = True
        self.error = message
