"""Container logs of simulated pods (``pods/log``).

Each running container "writes" one line every ``interval`` seconds from the
moment it started (``status.containerStatuses[].state.running.startedAt``);
line ``i`` is written at ``startedAt + i * interval`` and reads
``<namespace>/<pod>/<container> line <i>``.  Logs are a pure function of the
clock: nothing is kept in memory, and a test knows what to expect.

:class:`LogOptions` parses the query parameters as the kubelet reads them
(``container``, ``follow``, ``previous``, ``tailLines``, ``sinceSeconds``,
``sinceTime``, ``timestamps``, ``limitBytes``); :func:`resolve` checks the
pod and container and answers kube's 400s; :func:`render_lines` is the
non-follow body; :class:`LogFollower` streams new lines on a reactor clock
until the pod goes away, the byte limit is reached or the client leaves.
"""

from __future__ import annotations

import calendar
import datetime
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from karpor.kube.status import ApiError

#: seconds between two log lines of a container, unless configured otherwise
DEFAULT_INTERVAL = 1.0

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$"
)


def parse_time(text: str) -> float:
    """An RFC 3339 timestamp as POSIX seconds; ``ValueError`` if malformed."""
    match = _RFC3339.match(text)
    if not match:
        raise ValueError(f"invalid RFC 3339 time {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    fraction = float(match.group(7)) if match.group(7) else 0.0
    zone = match.group(8)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds + fraction


def format_rfc3339(t: float) -> str:
    """``t`` as an RFC 3339 timestamp with whole seconds (kube's ``metav1.Time``)."""
    return datetime.datetime.fromtimestamp(int(t), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_rfc3339_nano(t: float) -> str:
    """``t`` as Go's ``time.RFC3339Nano`` writes it (trailing zeros dropped)."""
    whole = math.floor(t)
    nanos = round((t - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, 0
    base = datetime.datetime.fromtimestamp(whole, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f".{nanos:09d}".rstrip("0") if nanos else ""
    return f"{base}{fraction}Z"


@dataclass(frozen=True)
class ContainerLog:
    """The log of one container: a line every ``interval`` seconds from ``started``."""

    namespace: str
    pod: str
    container: str
    started: float
    interval: float = DEFAULT_INTERVAL

    def line(self, index: int) -> str:
        """The text of line ``index`` (without newline)."""
        return f"{self.namespace}/{self.pod}/{self.container} line {index}"

    def time_of(self, index: int) -> float:
        """When line ``index`` is written."""
        return self.started + index * self.interval

    def count_at(self, now: float) -> int:
        """How many lines are written by ``now``."""
        if now < self.started:
            return 0
        return math.floor((now - self.started) / self.interval + 1e-9) + 1

    def first_since(self, since: float) -> int:
        """The first line written at or after ``since``."""
        if since <= self.started:
            return 0
        return math.ceil((since - self.started) / self.interval - 1e-9)

    def render(self, index: int, timestamps: bool) -> bytes:
        """Line ``index`` as the kubelet sends it, with its newline."""
        text = self.line(index)
        if timestamps:
            text = f"{format_rfc3339_nano(self.time_of(index))} {text}"
        return (text + "\n").encode()


@dataclass(frozen=True)
class LogOptions:
    """The query parameters of a ``pods/log`` request."""

    container: str = ""
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since_seconds: int | None = None
    since_time: float | None = None
    limit_bytes: int | None = None

    @classmethod
    def from_query(cls, params: Mapping[str, Sequence[str]]) -> LogOptions:
        """Parse and validate the parameters; 400 ``BadRequest`` / 422 as kube does."""

        def first(name: str) -> str | None:
            values = params.get(name)
            return values[0] if values else None

        def boolean(name: str) -> bool:
            value = first(name)
            return value is not None and value.lower() not in ("0", "false")

        def integer(name: str) -> int | None:
            value = first(name)
            if value is None or value == "":
                return None
            try:
                return int(value)
            except ValueError:
                raise ApiError(
                    400, f'strconv.ParseInt: parsing "{value}": invalid syntax'
                ) from None

        since_time = None
        raw_time = first("sinceTime")
        if raw_time:
            try:
                since_time = parse_time(raw_time)
            except ValueError:
                raise ApiError(
                    400, f'parsing time "{raw_time}" as "2006-01-02T15:04:05Z07:00": cannot parse'
                ) from None
        options = cls(
            container=first("container") or "",
            follow=boolean("follow"),
            previous=boolean("previous"),
            timestamps=boolean("timestamps"),
            tail_lines=integer("tailLines"),
            since_seconds=integer("sinceSeconds"),
            since_time=since_time,
            limit_bytes=integer("limitBytes"),
        )
        options.validate()
        return options

    def validate(self) -> None:
        """kube's ``ValidatePodLogOptions``: 422 ``Invalid`` on bad values."""
        causes: list[tuple[str, str, str]] = []
        if self.tail_lines is not None and self.tail_lines < 0:
            causes.append(("tailLines", str(self.tail_lines), "must be greater than or equal to 0"))
        if self.limit_bytes is not None and self.limit_bytes < 1:
            causes.append(("limitBytes", str(self.limit_bytes), "must be greater than 0"))
        if self.since_seconds is not None and self.since_seconds < 1:
            causes.append(("sinceSeconds", str(self.since_seconds), "must be greater than 0"))
        if self.since_seconds is not None and self.since_time is not None:
            causes.append(("", "", "at most one of `sinceTime` or `sinceSeconds` may be specified"))
        if causes:
            message = ", ".join(
                f"{f}: Invalid value: {v}: {m}" if f else f'<nil>: Invalid value: "": {m}'
                for f, v, m in causes
            )
            raise ApiError(
                422,
                f'PodLogOptions "" is invalid: [{message}]',
                "Invalid",
                {"kind": "PodLogOptions", "causes": [
                    {"reason": "FieldValueInvalid", "message": m, "field": f} for f, _, m in causes
                ]},
            )  # fmt: skip

    def since(self, now: float) -> float | None:
        """The earliest time of a line to send, if limited."""
        if self.since_seconds is not None:
            return now - self.since_seconds
        return self.since_time


def container_names(pod: Mapping[str, Any]) -> list[str]:
    """The names of the pod's (regular) containers, in spec order."""
    return [c.get("name", "") for c in pod.get("spec", {}).get("containers", []) or []]


def resolve(pod: Mapping[str, Any], options: LogOptions, interval: float) -> ContainerLog:
    """The log to read for ``options``, or the 400 a kube-apiserver/kubelet answers."""
    meta = pod.get("metadata", {})
    name, namespace = meta.get("name", ""), meta.get("namespace", "")
    names = container_names(pod)
    container = options.container
    if not container:
        default = (meta.get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
        if default in names:
            container = default
        elif len(names) == 1:
            container = names[0]
        else:
            raise ApiError(
                400,
                f"a container name must be specified for pod {name}, "
                f"choose one of: [{' '.join(names)}]",
            )
    if container not in names:
        raise ApiError(400, f"container {container} is not valid for pod {name}")
    if options.previous:
        raise ApiError(
            400, f'previous terminated container "{container}" in pod "{name}" not found'
        )
    status = pod.get("status", {}) or {}
    for cs in status.get("containerStatuses", []) or []:
        if cs.get("name") != container:
            continue
        running = (cs.get("state") or {}).get("running")
        if running and running.get("startedAt"):
            started = parse_time(running["startedAt"])
            return ContainerLog(namespace, name, container, started, interval)
    raise ApiError(
        400,
        f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating',
    )


def first_index(log: ContainerLog, options: LogOptions, now: float) -> int:
    """The first line to send, after ``sinceSeconds``/``sinceTime`` and ``tailLines``."""
    count = log.count_at(now)
    start = 0
    since = options.since(now)
    if since is not None:
        start = log.first_since(since)
    if options.tail_lines is not None:
        start = max(start, count - options.tail_lines)
    return min(start, count)


def render_lines(log: ContainerLog, options: LogOptions, now: float) -> bytes:
    """The body of a non-follow log request at ``now`` (``limitBytes`` applied)."""
    out = bytearray()
    for index in range(first_index(log, options, now), log.count_at(now)):
        out += log.render(index, options.timestamps)
        if options.limit_bytes is not None and len(out) >= options.limit_bytes:
            return bytes(out[: options.limit_bytes])
    return bytes(out)


class LogFollower:
    """Streams a container's log, old lines first then each new line as it is written.

    ``write`` receives the bytes, ``finish`` ends the stream; ``alive`` tells
    whether the container still runs (checked before each new line).  Call
    :meth:`stop` when the client goes away.
    """

    def __init__(
        self,
        log: ContainerLog,
        options: LogOptions,
        reactor: IReactorTime,
        write: Callable[[bytes], None],
        finish: Callable[[], None],
        alive: Callable[[], bool],
    ) -> None:
        self._log = log
        self._options = options
        self._reactor = reactor
        self._write = write
        self._finish = finish
        self._alive = alive
        self._sent = 0
        self._next = 0
        self._call: IDelayedCall | None = None
        self._done = False

    def start(self) -> None:
        """Send the lines written so far and schedule the next one."""
        now = self._reactor.seconds()
        self._next = first_index(self._log, self._options, now)
        self._emit_until(now)

    def stop(self) -> None:
        """Stop streaming (the client left); ``finish`` is not called."""
        self._done = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _emit_until(self, now: float) -> None:
        end = self._log.count_at(now)
        while self._next < end and not self._done:
            data = self._log.render(self._next, self._options.timestamps)
            self._next += 1
            limit = self._options.limit_bytes
            if limit is not None and self._sent + len(data) >= limit:
                self._write(data[: limit - self._sent])
                self._end()
                return
            self._sent += len(data)
            self._write(data)
        if not self._done:
            delay = max(0.0, self._log.time_of(self._next) - now)
            self._call = self._reactor.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        if self._done:
            return
        if not self._alive():
            self._end()
            return
        self._emit_until(max(self._reactor.seconds(), self._log.time_of(self._next)))

    def _end(self) -> None:
        self.stop()
        self._finish()
