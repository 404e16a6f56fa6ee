"""Watch streams: store events as kube-apiserver sends them on the wire.

A watch response is ``200`` with ``Transfer-Encoding: chunked``; each event is
one JSON object on its own line, ``{"type":"ADDED","object":{...}}``, types
``ADDED``, ``MODIFIED``, ``DELETED``, ``BOOKMARK`` and ``ERROR``.  A start
resourceVersion older than the store's history gets an ``ERROR`` event
holding a 410 ``Expired`` ``Status`` and the stream ends (kube's watch cache
does the same).  ``timeoutSeconds`` ends the stream cleanly; with
``allowWatchBookmarks=true`` a ``BOOKMARK`` carrying the current
resourceVersion is sent periodically, and with ``sendInitialEvents=true`` one
marked ``k8s.io/initial-events-end`` follows the initial ``ADDED`` events.

:func:`encode_event`, :func:`bookmark` and :class:`WatchParams` are pure;
:class:`WatchStream` ties a store watcher to a byte sink on a reactor clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from karpor.kube.requestinfo import query_bool
from karpor.kube.status import ApiError
from karpor.sim.resources import ResourceType
from karpor.sim.store import Store, Watcher, WatchEvent

#: kube's default watch length when ``timeoutSeconds`` is absent (minRequestTimeout)
DEFAULT_TIMEOUT = 1800.0
#: seconds between two bookmarks (kube sends them about once a minute)
DEFAULT_BOOKMARK_INTERVAL = 60.0
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

Transform = Callable[[str, dict[str, Any]], dict[str, Any]]


def encode_event(event_type: str, obj: Mapping[str, Any]) -> bytes:
    """One watch event as a line of compact JSON, as Go's encoder writes it."""
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"


#: the :meth:`WatchEvent.shared` key of an event's JSON line
_JSON_LINE = "json-line"


def _json_line(event: WatchEvent) -> bytes:
    """An event's object, untransformed, as a JSON line."""
    return encode_event(event.type, event.view)


def bookmark(
    rt: ResourceType, resource_version: str, *, initial_end: bool = False
) -> dict[str, Any]:
    """A ``BOOKMARK`` object: the kind with only ``metadata.resourceVersion``."""
    metadata: dict[str, Any] = {"resourceVersion": resource_version, "creationTimestamp": None}
    if initial_end:
        metadata["annotations"] = {INITIAL_EVENTS_END: "true"}
    return {"kind": rt.kind, "apiVersion": rt.group_version, "metadata": metadata}


@dataclass(frozen=True)
class WatchParams:
    """The query parameters of a watch request."""

    label_selector: str = ""
    field_selector: str = ""
    resource_version: str = ""
    timeout: float = DEFAULT_TIMEOUT
    bookmarks: bool = False
    send_initial_events: bool = False

    @classmethod
    def from_query(cls, params: Mapping[str, Sequence[str]], name: str = "") -> WatchParams:
        """Read the parameters; a ``name`` from the path narrows the field selector."""

        def first(key: str) -> str:
            values = params.get(key)
            return values[0] if values else ""

        field_selector = first("fieldSelector")
        if name:
            by_name = f"metadata.name={name}"
            field_selector = f"{field_selector},{by_name}" if field_selector else by_name
        timeout = DEFAULT_TIMEOUT
        raw_timeout = first("timeoutSeconds")
        if raw_timeout:
            try:
                timeout = float(int(raw_timeout))
            except ValueError:
                raise ApiError(
                    400, f'strconv.ParseInt: parsing "{raw_timeout}": invalid syntax'
                ) from None
        send_initial = query_bool(params.get("sendInitialEvents"))
        bookmarks = query_bool(params.get("allowWatchBookmarks"))
        if send_initial:
            if first("resourceVersionMatch") != "NotOlderThan":
                raise ApiError(
                    422,
                    'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: '
                    "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                    "Invalid",
                )
            if not bookmarks:
                raise ApiError(
                    422,
                    'ListOptions.meta.k8s.io "" is invalid: allowWatchBookmarks: Forbidden: '
                    "sendInitialEvents requires setting allowWatchBookmarks to true",
                    "Invalid",
                )
        return cls(
            label_selector=first("labelSelector"),
            field_selector=field_selector,
            resource_version=first("resourceVersion"),
            timeout=max(timeout, 0.0),
            bookmarks=bookmarks,
            send_initial_events=send_initial,
        )


class WatchStream:
    """One watch: store events → encoded lines written to ``write`` until it ends.

    ``transform`` turns an event's object into what the client asked for (a
    ``Table``, ``PartialObjectMetadata``, or the object unchanged).  An event's
    line is encoded once per change for every stream without a transform
    (:meth:`WatchEvent.shared`), and once for every stream whose transform has
    the same ``transform_key`` (streams whose transforms give the same result
    for the same event may share one); a transform without a key runs per
    stream on the stream's own copy of the object.  Call
    :meth:`start` once; it returns the lines to send first (delivered while
    the watch was being set up) or raises the :class:`ApiError` to answer
    instead of a stream.  After the first write the stream owns itself:
    it ends on timeout (calling ``finish``) or on :meth:`stop`.
    """

    def __init__(
        self,
        store: Store,
        rt: ResourceType,
        namespace: str | None,
        params: WatchParams,
        reactor: IReactorTime,
        write: Callable[[bytes], None],
        finish: Callable[[], None],
        transform: Transform | None = None,
        bookmark_interval: float = DEFAULT_BOOKMARK_INTERVAL,
        transform_key: Hashable | None = None,
    ) -> None:
        self._store = store
        self._rt = rt
        self._namespace = namespace
        self._params = params
        self._reactor = reactor
        self._write = write
        self._finish = finish
        self._transform = transform
        self._transform_key = transform_key
        self._bookmark_interval = bookmark_interval
        self._pending: list[bytes] | None = []
        self._watcher: Watcher | None = None
        self._timers: list[IDelayedCall] = []
        self._done = False

    def start(self) -> list[bytes]:
        """Open the store watch; the lines to send first.

        A 410 from the store becomes an ``ERROR`` event followed by the end
        of the stream (``finish`` is called once those lines are written by
        the caller: see :attr:`ended`); other errors are raised.
        """
        try:
            self._watcher = self._store.watch(
                self._rt,
                self._namespace or None,
                label_selector=self._params.label_selector,
                field_selector=self._params.field_selector,
                resource_version=self._params.resource_version,
                callback=self._on_event,
            )
        except ApiError as err:
            if err.code != 410:
                raise
            self._done = True
            return [encode_event("ERROR", err.status())]
        first = self._pending or []
        self._pending = None
        if self._params.send_initial_events:
            rv = str(self._store.resource_version)
            first.append(encode_event("BOOKMARK", bookmark(self._rt, rv, initial_end=True)))
        self._timers.append(self._reactor.callLater(self._params.timeout, self._timeout))
        if self._params.bookmarks and self._bookmark_interval > 0:
            self._schedule_bookmark()
        return first

    @property
    def ended(self) -> bool:
        """Whether the stream is over (after a 410, a timeout or :meth:`stop`)."""
        return self._done

    def stop(self) -> None:
        """Cancel the store watch and the timers (the client left, or the end)."""
        self._done = True
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []

    def _on_event(self, event: WatchEvent) -> None:
        if self._done:
            return
        if self._transform is None:
            line = event.shared(_JSON_LINE, _json_line)
        elif self._transform_key is None:
            line = encode_event(event.type, self._transform(event.type, event.object))
        else:
            transform = self._transform
            line = event.shared(
                (_JSON_LINE, self._transform_key),
                lambda e: encode_event(e.type, transform(e.type, e.object)),
            )
        if self._pending is not None:
            self._pending.append(line)
        else:
            self._write(line)

    def _schedule_bookmark(self) -> None:
        self._timers = [t for t in self._timers if t.active()]
        self._timers.append(self._reactor.callLater(self._bookmark_interval, self._bookmark))

    def _bookmark(self) -> None:
        if self._done:
            return
        rv = str(self._store.resource_version)
        self._write(encode_event("BOOKMARK", bookmark(self._rt, rv)))
        self._schedule_bookmark()

    def _timeout(self) -> None:
        if self._done:
            return
        self.stop()
        self._finish()
