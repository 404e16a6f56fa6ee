"""One watch across many clusters (a fan-out WATCH), streamed as one.

:class:`FanWatch` watches every selected cluster at once: one
:class:`~karpor.upstream.forward.Forwarder` per cluster, each with a
:class:`_Part` as its channel, submitted to that cluster's pool (its
credential, impersonation, HTTP/2 or pooled HTTP/1.1 connection, as any
request).  The client's response:

- waits for every cluster's response head (or failure; the head is due
  within the clusters' response-header timeout, as a list's), so its own
  head carries a ``Warning`` per cluster that failed; the others serve
  (every one failed: one ``Status`` says why for each);
- then streams each cluster's events as they arrive, merged
  (:class:`~karpor.kube.fanwatch.MergedWatch`: annotated, each object's
  resourceVersion the composite one as of that event, bookmarks merged,
  Table rows with their cluster's cell); nothing is held but the event
  being read; a slow client pauses every cluster's stream (one producer
  on the client's transport);
- a cluster whose watch ends (its own timeout, a dropped connection) is
  watched again from its last resourceVersion
  (:func:`~karpor.kube.fanwatch.rewatch_delay`); when it cannot be (too
  many fruitless tries) the merged stream ends, and the client's next
  watch (from the last composite resourceVersion) names the cluster in a
  warning;
- a cluster that answers ``410`` (or an ``ERROR`` event) ends the merged
  stream with an ``ERROR`` event (``410``: list again);
- ``timeoutSeconds`` goes to every cluster; the merged stream ends when it
  runs out, and at the latest after
  :data:`~karpor.kube.fanwatch.MAX_WATCH_SECONDS` (one timer per watch):
  the client then watches again, authenticated and authorized anew (the
  clusters asked again within a merged stream are asked as the client's
  request was authorized when it came);
- more than :data:`~karpor.kube.fanwatch.MAX_WATCH_CLUSTERS` clusters is a
  ``400`` (nothing is sent).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime

from karpor.front.fanout import (
    MAX_REASON,
    AllParts,
    Asked,
    FanoutObserver,
    Idle,
    PartReading,
    failure_reason,
)
from karpor.http.headers import Header, ResponseHeaders
from karpor.kube.fanwatch import (
    MAX_WATCH_CLUSTERS,
    EventStream,
    MergedWatch,
    WatchError,
    gone,
    rewatch_delay,
    status_message,
    watch_target,
)
from karpor.kube.status import ApiError
from karpor.kube.warning import warning_header
from karpor.upstream.forward import Forwarder

if TYPE_CHECKING:
    from karpor.front.front import Front

#: a watch that lasted this long (seconds) served, though it brought no event
SERVED = 5.0

_JSON: tuple[Header, ...] = ((b"Content-Type", b"application/json"),)


class _Part(PartReading):
    """One cluster's watch in a fan-out watch: the channel of its forwarders
    (one per time the cluster is asked)."""

    def __init__(self, watch: FanWatch, asked: Asked) -> None:
        self.watch = watch
        self.asked = asked
        self.name = asked.name
        self.forwarder: Forwarder | None = None
        #: the status of the first answer (``None`` until its head came)
        self.code: int | None = None
        #: why the first ask failed ("" while it has not)
        self.failure = ""
        #: no longer watched (stopped, or past the client's timeout)
        self.done = False
        #: bytes the cluster sent (every ask), for the audit line
        self.received = 0
        self._producer: IPushProducer | None = None
        self._paused = False
        self._events: EventStream | None = None
        self._held: list[bytes] = []
        self._kept: list[bytes] = []
        self._kept_size = 0
        self._fruitless = 0
        self._served = False
        self._since = 0.0
        self._timer: IDelayedCall | None = None

    @property
    def settled(self) -> bool:
        """Whether the first answer's head (or failure) is known."""
        return self.code is not None or bool(self.failure)

    def ask(self, target: bytes | None = None) -> None:
        """Watch the cluster (again, from ``target``)."""
        self._timer = None
        asked = self.asked
        request = asked.request if target is None else asked.request._replace(target=target)
        self._events = None
        self._served = False
        self._since = self.watch.clock.seconds()
        forwarder = self.forwarder = Forwarder(self, request, head_timeout=asked.head_timeout)
        asked.pool.submit(forwarder)

    def stop(self) -> None:
        """Stop watching the cluster (drops its connection)."""
        self.done = True
        timer, self._timer = self._timer, None
        if timer is not None and timer.active():
            timer.cancel()
        forwarder, self.forwarder = self.forwarder, None
        self._producer = None
        if forwarder is not None:
            forwarder.client_lost()

    # -- the forwarder's Channel -------------------------------------------------

    def reading(self) -> IPushProducer:
        return Idle()

    def pause_for_upstream(self) -> None: ...
    def resume_for_upstream(self) -> None: ...
    def relay_interim(self, code: int, reason: bytes, headers: list[Header]) -> None: ...

    def send_error(self, error: ApiError) -> None:
        self.forwarder = None
        if not self.settled:
            self.failure = error.message
            self.watch.part_settled()
            return
        self._ended(fruitless=True)

    def relay_head(self, code: int, reason: bytes, response: ResponseHeaders) -> bool:
        if code == 200:
            self._events = EventStream()
        if not self.settled:
            self.code = code
            self.watch.part_settled()
        elif code == 410 and not self.done:
            self.watch.finish(gone(self.name))
        return True

    def stream_from(self, producer: IPushProducer) -> None:
        self._producer = producer
        self._paused = False
        if self._events is not None and (not self.watch.started or self.watch.client_paused):
            self.pause()

    def relay_body(self, data: bytes) -> None:
        if self.done:
            return
        self.received += len(data)
        if self._events is None:  # an error's answer: its reason kept (bounded)
            room = MAX_REASON - self._kept_size
            if room > 0 and not self.watch.started:
                self._kept.append(data[:room])
                self._kept_size += min(len(data), room)
            return
        if not self.watch.started:
            self._held.append(data)  # what came before the pause took hold
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        events = self._events
        assert events is not None
        try:
            self._write(events.feed(data))
        except WatchError:
            self._broken()

    def _write(self, events: list[object]) -> None:
        watch = self.watch
        merged = watch.merged
        for event in events:
            if self.done:
                return
            line = merged.event(self.name, event)
            self._served = True
            if merged.finished:
                watch.finish(line)
                return
            watch.write(line)

    def relay_chunked(self) -> bool:
        return False

    def relay_end(self, close: bool = False) -> None:
        self.forwarder = None
        self._producer = None
        if self.done:
            return
        if not self.watch.started:
            if self._events is not None:
                self._held.append(b"")  # ended: rewatched once the stream starts
            return
        ok = self._events is not None
        if ok:
            try:
                self._write(self._events.end())  # type: ignore[union-attr]
            except WatchError:
                ok = False
        self._ended(fruitless=not ok)

    def abort(self) -> None:
        self.forwarder = None
        self._producer = None
        if self.done:
            return
        if not self.watch.started:  # broke off: asked again once the stream starts
            self._events = None
            self._held = [b""]
            return
        self._ended(fruitless=True)

    # -- the watch's side ------------------------------------------------------------

    def start_streaming(self) -> None:
        """The client's head is out: pass on what was held, let events flow."""
        held, self._held = self._held, []
        for data in held:
            if self.done:
                return
            if not data:  # the watch ended before the stream started
                self.relay_end()
                return
            self._feed(data)
        if not self.watch.client_paused:
            self.resume()

    def reason(self) -> str:
        """Why the first ask failed, for a warning."""
        if self.failure:
            return self.failure
        message = status_message(b"".join(self._kept))
        return f"answered {self.code}" + (f": {message}" if message else "")

    def _broken(self) -> None:
        forwarder, self.forwarder = self.forwarder, None
        self._producer = None
        if forwarder is not None:
            forwarder.client_lost()  # drop the cluster's connection
        self._ended(fruitless=True)

    def _ended(self, fruitless: bool) -> None:
        """The cluster's watch ended: ask again, or give up."""
        if self.done:
            return
        watch = self.watch
        now = watch.clock.seconds()
        served = not fruitless and (self._served or now - self._since >= SERVED)
        self._fruitless = 0 if served else self._fruitless + 1
        left = watch.deadline - now
        if left < 1:
            self.done = True
            watch.part_done()
            return
        timeout = math.ceil(left)  # no longer than the merged stream lasts
        delay = rewatch_delay(self._fruitless)
        if delay is None:
            watch.finish(b"")  # the client watches again, and learns why
            return
        target = watch_target(
            self.asked.request.target, watch.merged.versions.get(self.name), timeout
        )
        self._timer = watch.clock.callLater(delay, self.ask, target)


class FanWatch:
    """One fan-out watch (see the module docstring).

    ``versions``: the clusters' resourceVersions of the composite one the
    client gave (``{}``: none); ``table``: the clusters answer Tables;
    ``timeout``: how long the merged stream lasts (seconds:
    :func:`~karpor.kube.fanwatch.watch_timeout`); ``clock``: the reactor
    the re-watches and the end are timed on.
    """

    def __init__(
        self,
        front: Front,
        asked: Sequence[Asked],
        failed: Sequence[tuple[str, str]],
        *,
        versions: Mapping[str, str],
        table: bool,
        timeout: float,
        clock: IReactorTime,
        observer: FanoutObserver | None = None,
    ) -> None:
        self.front = front
        self.clock = clock
        #: told of every cluster once the merged stream ends (audit, metrics)
        self.observer = observer
        selected = {a.name for a in asked} | {name for name, _ in failed}
        # a cluster not selected now is not the client's to carry on
        kept = {name: rv for name, rv in versions.items() if name in selected}
        self.merged = MergedWatch(kept, [a.name for a in asked], table)
        self.parts = [_Part(self, a) for a in asked]
        self.failed = list(failed)
        self._timeout = timeout
        #: when the merged stream ends
        self.deadline = clock.seconds() + timeout
        self._end_timer: IDelayedCall | None = None
        self.started = False
        self.client_paused = False
        self._finished = False

    # -- the front's side ------------------------------------------------------------

    def start(self) -> None:
        """Watch every cluster at once."""
        if len(self.parts) > MAX_WATCH_CLUSTERS:
            self._finished = True
            self.front.send_error(
                ApiError(
                    400,
                    f"a merged watch asks at most {MAX_WATCH_CLUSTERS} clusters, this one "
                    f"{len(self.parts)}: narrow the cluster selector",
                    "BadRequest",
                )
            )
            return
        if not self.parts:
            self._settled()
            return
        self._end_timer = self.clock.callLater(self._timeout, self.finish, b"")
        for part in self.parts:
            part.ask()

    def client_lost(self) -> None:
        """The client went away: drop every cluster's watch."""
        self._finished = True
        timer, self._end_timer = self._end_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        for part in self.parts:
            part.stop()
        self._observe()

    def _observe(self) -> None:
        """Tell the observer of every cluster (once, as the stream ends)."""
        observer, self.observer = self.observer, None
        if observer is None:
            return
        seconds = max(0.0, self._timeout - (self.deadline - self.clock.seconds()))
        for name, why in self.failed:
            observer.cluster_done(name, None, 0, why, failure_reason(why, False, None), 0, 0.0)
        for part in self.parts:
            why = part.reason() if part.code != 200 else ""
            reason = failure_reason(why, True, part.code)
            observer.cluster_done(
                part.name, part.asked, part.code or 0, why, reason, part.received, seconds
            )

    def end_stream(self) -> None:
        """The worker drains: end the stream now (cleanly where the framing allows)."""
        if self._finished:
            return
        self.client_lost()
        if self.started:
            if self.front.relay_chunked():
                self.front.relay_end(close=True)
            else:
                self.front.abort()

    # -- the parts' side -------------------------------------------------------------

    def part_settled(self) -> None:
        if not self.started and not self._finished and all(p.settled for p in self.parts):
            self._settled()

    def part_done(self) -> None:
        if self.started and all(p.done for p in self.parts):
            self.finish(b"")

    def write(self, data: bytes) -> None:
        """A line of the merged stream."""
        if not self._finished:
            self.front.relay_body(data)

    def finish(self, last: bytes) -> None:
        """End the merged stream after ``last`` (an ``ERROR`` event, or nothing)."""
        if self._finished:
            return
        self.client_lost()
        if last:
            self.front.relay_body(last)
        self.front.relay_end()

    def _settled(self) -> None:
        """Every cluster's first head (or failure) is known: answer the head."""
        ok = [p for p in self.parts if p.code == 200]
        expired = [p for p in self.parts if p.code == 410]
        failures = [*self.failed, *((p.name, p.reason()) for p in self.parts if p.code != 200)]
        if not ok and not expired:
            self._finished = True
            self.client_lost()
            reasons = "; ".join(f"{n}: {why}" for n, why in failures) or "no cluster answered"
            self.front.send_error(
                ApiError(503, f"no cluster could answer ({reasons})", "ServiceUnavailable")
            )
            return
        self.started = True
        headers: list[Header] = [*_JSON]
        for name, why in failures:
            if not any(p.name == name for p in expired):
                headers.append(warning_header(f"cluster {name}: {why}"))
        self.front.relay_head(200, b"OK", ResponseHeaders(headers, None, False, False))
        if expired:
            self.finish(gone(expired[0].name))
            return
        for part in self.parts:
            if part.code != 200:
                part.stop()
                self.merged.drop(part.name)
        self.front.stream_from(AllParts(self))
        for part in ok:
            part.start_streaming()
