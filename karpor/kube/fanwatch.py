"""Many clusters' watch streams merged into one (sans-IO).

A fan-out WATCH watches every selected cluster at once and writes one
stream of events, each as it arrives (:class:`MergedWatch`):

- each cluster's response is read one event at a time
  (:class:`EventStream`: one JSON object a line, as kube-apiserver writes
  them; an event longer than :data:`MAX_EVENT` is refused);
- every event's object carries the annotation
  :data:`~karpor.kube.fanout.CLUSTER_ANNOTATION`, and its
  ``metadata.resourceVersion`` is the **composite** resourceVersion as of
  that event (:func:`~karpor.kube.fanout.encode_versions`: each cluster's
  own, the event's cluster's being the event's): a client resumes from its
  last event's resourceVersion (the Python client's ``watch.Watch``,
  client-go's reflectors), and a watch started with a composite value
  resumes every cluster from its own;
- a cluster's ``BOOKMARK`` becomes a merged one carrying the composite
  resourceVersion; one marked ``k8s.io/initial-events-end`` keeps the mark
  only once every cluster sent its own;
- a Table event (``as=Table``: ``kubectl get -w``) gets the leading
  ``Cluster`` cell; its columns are the first cluster's (sent once, with
  the ``Cluster`` column first, as the merged list's), another cluster's
  cells put in that order by column name;
- an ``ERROR`` event ends the merged stream with that error, naming its
  cluster (a ``410`` one tells the client to list again: :func:`gone`).

A cluster's watch that ends is asked again from its last resourceVersion
(:func:`watch_target`) after :func:`rewatch_delay`: at once after a watch
that served, then with a growing back-off, given up after
:data:`REWATCH_LIMIT` fruitless tries in a row.  A merged watch asks at
most :data:`MAX_WATCH_CLUSTERS` clusters and lasts at most
:data:`MAX_WATCH_SECONDS` (:func:`watch_timeout`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from karpor.kube.fanout import CLUSTER_COLUMN, annotate, encode_versions
from karpor.kube.liststream import MAX_PENDING

#: the longest event (in bytes) read from a cluster's watch (a list element's bound)
MAX_EVENT = MAX_PENDING
#: fruitless re-watches of one cluster in a row before the merged stream ends
REWATCH_LIMIT = 5
#: the first back-off (seconds) after a fruitless watch, doubled each time up to :data:`REWATCH_MAX`
REWATCH_BASE = 0.5
REWATCH_MAX = 8.0
#: the most clusters one merged watch asks (every event carries each one's
#: resourceVersion: the composite must stay readable, ``MAX_COMPOSITE``)
MAX_WATCH_CLUSTERS = 256
#: the longest a merged watch lasts (seconds; kube-apiserver's
#: ``--min-request-timeout``): then the client watches again, authorized anew
MAX_WATCH_SECONDS = 1800.0
#: the annotation of the bookmark that ends a watch's initial events
INITIAL_EVENTS_END = "k8s.io/initial-events-end"

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_DECODER = json.JSONDecoder()


class WatchError(ValueError):
    """A cluster's watch response is not a stream of watch events (or too large an event)."""


def _decode_line(line: bytes) -> list[Any]:
    try:
        return [json.loads(line)]
    except ValueError:
        pass
    # several objects on one line (a JSON stream without newlines)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise WatchError("an event is not UTF-8") from None
    out: list[Any] = []
    pos = 0
    while pos < len(text):
        if text[pos].isspace():
            pos += 1
            continue
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except ValueError:
            raise WatchError("an event is not JSON") from None
        out.append(value)
    return out


class EventStream:
    """One cluster's watch response, read one event (a JSON line) at a time."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> list[Any]:
        """Read ``data``; return the events it completed, decoded, in order."""
        out: list[Any] = []
        start = 0
        while True:
            newline = data.find(b"\n", start)
            if newline < 0:
                break
            line = data[start:newline]
            start = newline + 1
            if self._pending:
                line = b"".join(self._pending) + line
                self._pending = []
                self._size = 0
            if len(line) > MAX_EVENT:
                raise WatchError(f"an event is larger than {MAX_EVENT} bytes")
            if line.strip():
                out += _decode_line(line)
        if start < len(data):
            self._size += len(data) - start
            if self._size > MAX_EVENT:
                raise WatchError(f"an event is larger than {MAX_EVENT} bytes")
            self._pending.append(data[start:])
        return out

    def end(self) -> list[Any]:
        """The response ended: the last event, when it had no newline."""
        rest = b"".join(self._pending)
        self._pending = []
        self._size = 0
        return _decode_line(rest) if rest.strip() else []


def _line(event_type: str, obj: Any) -> bytes:
    return (_DUMPS({"type": event_type, "object": obj}) + "\n").encode("utf-8")


def error_event(code: int, reason: str, message: str) -> bytes:
    """An ``ERROR`` event line holding a ``Status``."""
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    return _line("ERROR", status)


def gone(cluster: str) -> bytes:
    """The ``ERROR`` event (``410 Expired``) that ends a merged watch whose
    cluster can no longer resume from its resourceVersion: list again."""
    return error_event(
        410,
        "Expired",
        f"cluster {cluster}: the resourceVersion is too old to watch from: list again",
    )


class MergedWatch:
    """The merged stream of one fan-out WATCH (see the module docstring).

    ``versions``: each cluster's resourceVersion the watch starts from (of
    the composite one the client gave; clusters without one are left out
    until they send an event); ``clusters``: the clusters watched; ``table``:
    the events' objects are Tables.
    """

    def __init__(self, versions: Mapping[str, str], clusters: Iterable[str], table: bool) -> None:
        #: each cluster's resourceVersion as of the last event written
        self.versions = dict(versions)
        self.table = table
        #: set once an ``ERROR`` event was written: the stream ends
        self.finished = False
        self._clusters = set(clusters)
        self._initial_ended: set[str] = set()
        self._columns: list[str] | None = None
        self._orders: dict[str, list[int | None] | None] = {}

    def drop(self, cluster: str) -> None:
        """``cluster`` is not watched after all (it failed at the start)."""
        self._clusters.discard(cluster)

    def composite(self) -> str:
        """The composite resourceVersion as of now."""
        return encode_versions(self.versions)

    def event(self, cluster: str, event: Any) -> bytes:
        """The line of the merged stream for ``cluster``'s ``event`` (decoded);
        raises :class:`WatchError` when it is not a watch event."""
        if not isinstance(event, dict):
            raise WatchError("an event is not a JSON object")
        event_type = event.get("type")
        obj = event.get("object")
        if not isinstance(event_type, str) or not isinstance(obj, dict):
            raise WatchError("an event lacks its type or object")
        if event_type == "ERROR":
            return self._error(cluster, obj)
        metadata = obj.get("metadata")
        if not isinstance(metadata, dict):
            metadata = obj["metadata"] = {}
        rv = metadata.get("resourceVersion")
        if isinstance(rv, str) and rv:
            self.versions[cluster] = rv
        if event_type == "BOOKMARK":
            self._bookmark(cluster, metadata)
        elif self.table and obj.get("kind") == "Table":
            self._table(cluster, obj)
        else:
            annotate(obj, cluster)
        metadata["resourceVersion"] = self.composite()
        return _line(event_type, obj)

    def _error(self, cluster: str, status: dict[str, Any]) -> bytes:
        self.finished = True
        code = status.get("code")
        if code == 410:
            return gone(cluster)
        message = status.get("message")
        reason = status.get("reason")
        return error_event(
            code if isinstance(code, int) else 500,
            reason if isinstance(reason, str) else "InternalError",
            f"cluster {cluster}: " + (message if isinstance(message, str) else "watch error"),
        )

    def _bookmark(self, cluster: str, metadata: dict[str, Any]) -> None:
        annotations = metadata.get("annotations")
        if not isinstance(annotations, dict) or INITIAL_EVENTS_END not in annotations:
            return
        self._initial_ended.add(cluster)
        if not self._clusters <= self._initial_ended:  # the others' initial events go on
            rest = {k: v for k, v in annotations.items() if k != INITIAL_EVENTS_END}
            if rest:
                metadata["annotations"] = rest
            else:
                del metadata["annotations"]

    def _table(self, cluster: str, table: dict[str, Any]) -> None:
        definitions = table.get("columnDefinitions")
        if isinstance(definitions, list) and definitions:
            names = [d.get("name") if isinstance(d, dict) else None for d in definitions]
            if self._columns is None:
                self._columns = [n if isinstance(n, str) else "" for n in names]
                self._orders[cluster] = None
                table["columnDefinitions"] = [CLUSTER_COLUMN, *definitions]
            else:
                if names == self._columns:
                    self._orders[cluster] = None
                else:
                    self._orders[cluster] = [
                        names.index(n) if n in names else None for n in self._columns
                    ]
                # the columns were sent: kubectl keeps the last ones it was given
                table["columnDefinitions"] = []
        order = self._orders.get(cluster)
        rows = table.get("rows")
        for row in rows if isinstance(rows, list) else ():
            if not isinstance(row, dict):
                continue
            cells = row.get("cells")
            if isinstance(cells, list):
                if order is not None:
                    cells = [cells[i] if i is not None and i < len(cells) else "" for i in order]
                row["cells"] = [cluster, *cells]
            inner = row.get("object")
            if isinstance(inner, dict):
                annotate(inner, cluster)


def rewatch_delay(fruitless: int) -> float | None:
    """Seconds to wait before watching a cluster again after ``fruitless``
    tries in a row that failed or ended at once without an event (``0``:
    its last watch served); ``None``: give up."""
    if fruitless <= 0:
        return 0.0
    if fruitless > REWATCH_LIMIT:
        return None
    return min(REWATCH_BASE * float(2 ** (fruitless - 1)), REWATCH_MAX)


def watch_target(target: bytes, resource_version: str | None, timeout: int | None) -> bytes:
    """The request target of a cluster's watch asked again: ``target`` (its
    first watch's) from ``resource_version`` (``None``: as first asked;
    a resumed watch asks no initial events again) for at most ``timeout``
    seconds (``None``: as first asked)."""
    if resource_version is None and timeout is None:
        return target
    path, _, query = target.partition(b"?")
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    out: list[tuple[str, str]] = []
    for key, value in pairs:
        if resource_version is not None and key in (
            "resourceVersion",
            "resourceVersionMatch",
            "sendInitialEvents",
        ):
            continue
        if timeout is not None and key == "timeoutSeconds":
            continue
        out.append((key, value))
    if resource_version is not None:
        out.append(("resourceVersion", resource_version))
    if timeout is not None:
        out.append(("timeoutSeconds", str(timeout)))
    return path + b"?" + urlencode(out, safe=",=!()", quote_via=quote).encode("latin-1")


def watch_timeout(options: Mapping[str, Sequence[str]]) -> float:
    """How long a merged watch lasts: the client's ``timeoutSeconds``, at
    most (and without one) :data:`MAX_WATCH_SECONDS`."""
    values = options.get("timeoutSeconds")
    try:
        seconds = int(values[0]) if values else 0
    except ValueError:
        seconds = 0
    return float(seconds) if 0 < seconds < MAX_WATCH_SECONDS else MAX_WATCH_SECONDS


def status_message(body: bytes) -> str:
    """A cluster's error answer in a few words (its Status message when it sent one)."""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return message[:200] if isinstance(message, str) else ""
