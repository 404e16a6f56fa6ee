"""One read across many clusters (a fan-out LIST or GET), answered as one.

:class:`Fanout` asks every selected cluster at once: one
:class:`~karpor.upstream.forward.Forwarder` per cluster, each with a
:class:`_Part` as its channel, submitted to that cluster's pool (so each
part has the cluster's credential, retries, the response-header timeout and
impersonation as any request has).  The client's response:

- waits for every part's response head (or failure), so that its own head
  can carry a ``Warning`` per cluster that failed (unreachable, refused,
  answered an error); meanwhile the parts' bodies are paused (what came
  before the pause took hold is read and merged already, held for the
  client: the merge overlaps the wait for the slowest cluster, and a list
  that cannot be read is a warning like any failure);
- a **LIST** then streams: each cluster's list is read as it arrives
  (:class:`~karpor.kube.liststream.ListStream`) and its items (or Table
  rows) written at once, annotated with their cluster
  (:class:`~karpor.kube.fanout.MergedList`); the list's fields come last,
  with a composite ``resourceVersion`` and ``continue`` token; a slow client
  pauses every part (one producer on the client's transport);
- a **GET** of one object keeps each cluster's answer (up to
  :data:`MAX_OBJECT` bytes): the object when exactly one cluster has it, a
  ``409`` Status naming the clusters when several do, a ``404`` when none;
- a non-resource **GET** (discovery: ``/api``, ``/apis``, a group
  version's resources; ``/version``) answers the union of the clusters'
  documents (:func:`~karpor.kube.fanout.union_discovery`);
- when every cluster failed, one ``Status`` says why for each.

A cluster where the caller may list only in some namespaces is asked once
per such namespace (the pipeline's parts: :attr:`Asked.key` ``NAME/NS``),
its lists merged as any cluster's.  When the fan-out ends, its
:class:`FanoutObserver` (the audit log, the metrics) hears of every
cluster asked or refused (:meth:`FanoutObserver.cluster_done`).

Memory is bounded by a read per part plus the largest list element (LIST)
or :data:`MAX_OBJECT` per cluster (GET).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from zope.interface import implementer

from karpor.auth.access import Authorized
from karpor.http.headers import Header, ResponseHeaders
from karpor.kube.fanout import MergedList, annotate, union_discovery
from karpor.kube.liststream import ListError, ListStream
from karpor.kube.status import ApiError
from karpor.kube.warning import warning_header
from karpor.upstream.forward import Forwarder
from karpor.upstream.pool import ClusterPool
from karpor.upstream.request import UpstreamRequest

if TYPE_CHECKING:
    from karpor.front.front import Front

log = Logger()

#: the largest object a fan-out GET keeps per cluster
MAX_OBJECT = 4 << 20
#: the most of a failing cluster's answer read for its reason
MAX_REASON = 4096

_JSON: tuple[Header, ...] = ((b"Content-Type", b"application/json"),)


#: the ``cluster`` of a fan-out in the audit log and the metrics (a selector
#: is the client's text: never a metric label)
FANOUT_CLUSTER = "*"
#: what each cluster is asked for: JSON (the merge reads it), a Table when the client asked one
JSON_ACCEPT = b"application/json"
TABLE_ACCEPT = b"application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


@dataclass
class Asked:
    """One cluster of a fan-out and how to ask it."""

    name: str
    pool: ClusterPool
    request: UpstreamRequest
    head_timeout: float | None
    #: the part's name in a composite continue token, in warnings and the
    #: audit log (``""``: the cluster's name; ``NAME/NS``: one namespace of it)
    key: str = ""
    #: what the policy decided for this part (the audit log's identity)
    authorized: Authorized | None = None
    #: for a part of one namespace, why the cluster was not asked whole (the
    #: warning when the resource turns out to be cluster-scoped: a 404)
    refusal: str = ""


#: the reasons a cluster failed in a fan-out (the metric's ``reason``)
FAILURE_REASONS = ("forbidden", "unavailable", "error", "broken")


class FanoutObserver(Protocol):
    """Told of every cluster a fan-out asked or refused, once it ends."""

    def cluster_done(
        self,
        name: str,
        asked: Asked | None,
        status: int,
        failure: str,
        reason: str,
        received: int,
        seconds: float,
    ) -> None:
        """``name`` (``asked``: how, ``None`` when refused before asking)
        answered ``status`` (``0``: no answer) and ``received`` bytes in
        ``seconds``; ``failure``: why it failed ("" when it did not),
        ``reason`` one of :data:`FAILURE_REASONS` (or "")."""


def failure_reason(why: str, asked: bool, code: int | None) -> str:
    """The :data:`FAILURE_REASONS` entry of a cluster's part that failed
    for ``why`` ("" when it did not fail): refused before it was asked
    (``asked`` false), never answered (``code`` ``None``), answered an
    error, or answered 200 and then broke."""
    if not why:
        return ""
    if not asked:
        return "forbidden" if why.startswith("forbidden") else "unavailable"
    if code is None:
        return "unavailable"
    if code != 200:
        return "forbidden" if code in (401, 403, 404) else "error"
    return "broken"


@implementer(IPushProducer)
class Idle:
    """The request body producer a part never uses (a read sends no body)."""

    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


class PausablePart(Protocol):
    """A cluster's part of a many-cluster read, as :class:`AllParts` sees it."""

    def pause(self) -> None: ...
    def resume(self) -> None: ...


class ManyParts(Protocol):
    """A read across many clusters (:class:`Fanout`, the merged watch), as
    :class:`AllParts` sees it."""

    client_paused: bool

    @property
    def parts(self) -> Sequence[PausablePart]: ...
    def client_lost(self) -> None: ...


@implementer(IPushProducer)
class AllParts:
    """Registered on the client's transport: pauses and resumes every part
    of ``owner``; a client gone drops them all."""

    def __init__(self, owner: ManyParts) -> None:
        self._owner = owner

    def pauseProducing(self) -> None:
        self._owner.client_paused = True
        for part in self._owner.parts:
            part.pause()

    def resumeProducing(self) -> None:
        self._owner.client_paused = False
        for part in self._owner.parts:
            part.resume()

    def stopProducing(self) -> None:
        self._owner.client_lost()


class PartReading:
    """The cluster's answer a part reads (its forwarder's producer), paused
    and resumed once each however often the client pauses: the base of a
    fan-out's and a merged watch's parts."""

    _producer: IPushProducer | None = None
    _paused = False

    def pause(self) -> None:
        """Pause the cluster's answer (the client is slow)."""
        if self._producer is not None and not self._paused:
            self._paused = True
            self._producer.pauseProducing()

    def resume(self) -> None:
        """Let the cluster's answer flow again."""
        if self._producer is not None and self._paused:
            self._paused = False
            self._producer.resumeProducing()


class _Part(PartReading):
    """One cluster's share of a fan-out: the channel of its forwarder."""

    def __init__(self, fanout: Fanout, name: str, asked: Asked | None = None) -> None:
        self.fanout = fanout
        self.name = name
        self.asked = asked
        #: the part's key (:attr:`Asked.key`)
        self.key = (asked.key if asked is not None else "") or name
        #: bytes received of the cluster's answer, and when the part ended
        self.received = 0
        self.ended_at = 0.0
        self.forwarder: Forwarder | None = None
        #: set once the head arrived (the status) or the part failed
        self.code: int | None = None
        #: why the part failed ("" while it has not)
        self.failure = ""
        self.ended = False
        self._producer: IPushProducer | None = None
        self._paused = False
        self._stream: ListStream | None = None
        #: the merged elements (MergedList.encode) waiting for the client's head
        self._held: list[bytes] = []
        self._kept: list[bytes] = []
        self._kept_size = 0

    @property
    def settled(self) -> bool:
        """Whether the part's head (or failure) is known."""
        return self.code is not None or bool(self.failure)

    # -- the forwarder's Channel -------------------------------------------------

    def reading(self) -> IPushProducer:
        return Idle()

    def pause_for_upstream(self) -> None: ...
    def resume_for_upstream(self) -> None: ...

    def send_error(self, error: ApiError) -> None:
        self._fail(error.message)

    def relay_interim(self, code: int, reason: bytes, headers: list[Header]) -> None: ...

    def relay_head(self, code: int, reason: bytes, response: ResponseHeaders) -> bool:
        self.code = code
        if code == 200 and self.fanout.listing:
            table = self.fanout.table
            self._stream = ListStream("rows" if table else "items", keep_text=not table)
        self.fanout.part_settled()
        return True

    def stream_from(self, producer: IPushProducer) -> None:
        self._producer = producer
        # a list waits for the client's head (and a slow client); a GET's
        # object and an error's body are read at once (bounded)
        if self._stream is not None and (not self.fanout.started or self.fanout.client_paused):
            self.pause()

    def relay_body(self, data: bytes) -> None:
        if self.ended:
            return
        self.received += len(data)
        stream = self._stream
        if stream is None:  # an error's body, or a GET's object: kept, bounded
            limit = MAX_OBJECT if self.code == 200 else MAX_REASON
            room = limit - self._kept_size
            if len(data) > room:
                if self.code == 200:  # never an object cut short
                    self._abort(f"its object is larger than {MAX_OBJECT} bytes")
                    return
                data = data[: max(room, 0)]  # an error's reason: its first bytes
            if data:
                self._kept.append(data)
                self._kept_size += len(data)
            return
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        stream = self._stream
        assert stream is not None
        try:
            elements = stream.feed(data)
        except ListError as exc:
            self._abort(f"its list cannot be read: {exc}")
            return
        merged = self.fanout.merged
        merged.fields(self.name, stream.fields)
        if elements:
            data = merged.encode(self.name, elements, stream.texts or None)
            if self.fanout.started:
                self.fanout.write(merged.lead(data))
            else:  # what came before the pause took hold: merged while others answer
                self._held.append(data)

    def relay_chunked(self) -> bool:
        return False

    def relay_end(self, close: bool = False) -> None:
        if self.ended:
            return
        self.ended = True
        self.ended_at = time.monotonic()
        self.forwarder = None
        stream = self._stream
        if stream is not None:
            try:
                stream.end()
            except ListError as exc:
                self.failure = f"its list cannot be read: {exc}"
        self.fanout.part_ended(self)

    def abort(self) -> None:
        self._fail("its answer broke off")

    # -- the fan-out's side ------------------------------------------------------------

    def start_streaming(self) -> None:
        """The client's head is out: pass on what was merged meanwhile, let
        the body flow."""
        held, self._held = self._held, []
        merged = self.fanout.merged
        for data in held:
            self.fanout.write(merged.lead(data))
        if not self.fanout.client_paused:
            self.resume()

    def kept(self) -> bytes:
        """What was kept of the answer (a GET's object, an error's body)."""
        return b"".join(self._kept)

    def versions(self) -> tuple[str | None, str | None]:
        """The cluster's list ``resourceVersion`` and ``continue`` token."""
        stream = self._stream
        metadata = stream.fields.get("metadata") if stream is not None else None
        if not isinstance(metadata, dict):
            return None, None
        rv, token = metadata.get("resourceVersion"), metadata.get("continue")
        return (
            rv if isinstance(rv, str) else None,
            token if isinstance(token, str) and token else None,
        )

    def _fail(self, why: str) -> None:
        if self.ended:
            return
        self.failure = why
        self.ended = True
        self.ended_at = time.monotonic()
        self.forwarder = None
        if self.code is None:
            self.fanout.part_settled()
        self.fanout.part_ended(self)

    def _abort(self, why: str) -> None:
        forwarder, self.forwarder = self.forwarder, None
        self._fail(why)
        if forwarder is not None:
            forwarder.client_lost()  # drop the cluster's connection


def _settled_part(part: _Part) -> bool:
    return part.settled


def _ended_part(part: _Part) -> bool:
    return part.ended


def _status_reason(body: bytes) -> str:
    """A cluster's error answer in a few words (its Status message when it sent one)."""
    try:
        status = json.loads(body)
    except ValueError:
        return ""
    message = status.get("message") if isinstance(status, dict) else None
    return message[:200] if isinstance(message, str) else ""


class Fanout:
    """One fan-out request (see the module docstring); ``listing``: a LIST
    (else a GET of one object), ``table``: the client asked for a Table."""

    def __init__(
        self,
        front: Front,
        asked: Sequence[Asked],
        failed: Sequence[tuple[str, str]],
        *,
        listing: bool,
        table: bool,
        discovery: bool = False,
        observer: FanoutObserver | None = None,
    ) -> None:
        self.front = front
        self.observer = observer
        self._ticks = time.monotonic()
        self.listing = listing
        #: a request for a non-resource path (discovery, ``/version``): the union
        self.discovery = discovery
        self.table = table
        self.merged = MergedList(table)
        self.started = False
        self.client_paused = False
        self._finished = False
        self._asked = list(asked)
        #: the first part not known to be settled, not known to have ended
        self._unsettled = self._unended = 0
        self.parts = [_Part(self, a.name, a) for a in asked]
        for name, why in failed:  # not asked: refused or unhealthy here
            part = _Part(self, name)
            part.failure = why
            part.ended = True
            self.parts.append(part)

    # -- the front's side (it calls these like a forwarder's) --------------------------

    def start(self) -> None:
        """Ask every cluster at once."""
        if not self._asked:
            self._settled()
            return
        for part, asked in zip(self.parts, self._asked, strict=False):
            forwarder = Forwarder(part, asked.request, head_timeout=asked.head_timeout)
            part.forwarder = forwarder
            asked.pool.submit(forwarder)

    def client_lost(self) -> None:
        """The client went away: drop every part."""
        self._finished = True
        for part in self.parts:
            forwarder, part.forwarder = part.forwarder, None
            if not part.ended and not part.failure and part.asked is not None:
                part.failure = "the client went away"
            part.ended = True
            if forwarder is not None:
                forwarder.client_lost()
        self._observe()

    def end_stream(self) -> None:
        """The worker drains: end the response now (its list is cut short)."""
        if self._finished:
            return
        self.client_lost()
        if self.started:
            self.front.abort()

    # -- the parts' side -------------------------------------------------------------

    def _all(self, done: Callable[[_Part], bool], cursor: str) -> bool:
        """Whether ``done`` holds for every part (it never turns false again
        once true: the parts before the ``cursor`` attribute's index are not
        asked again, so a fan-out over N clusters asks N times, not N²)."""
        parts = self.parts
        index: int = getattr(self, cursor)
        while index < len(parts) and done(parts[index]):
            index += 1
        setattr(self, cursor, index)
        return index == len(parts)

    def part_settled(self) -> None:
        if not self.started and self._all(_settled_part, "_unsettled"):
            self._settled()

    def part_ended(self, part: _Part) -> None:
        if not self.started:
            self.part_settled()
            return
        if self._all(_ended_part, "_unended"):
            self._finish()

    def write(self, data: bytes) -> None:
        """Bytes of the merged response."""
        if data and not self._finished:
            self.front.relay_body(data)

    def _failures(self) -> list[tuple[str, str]]:
        out = []
        for part in self.parts:
            why = self._failure(part)
            if why:
                out.append((part.key, why))
        return out

    def _failure(self, part: _Part) -> str:
        """Why ``part`` failed ("" when it did not)."""
        if part.failure:
            return part.failure
        if part.code is None or part.code == 200 or (not self.listing and part.code == 404):
            return ""
        if part.code == 404 and part.asked is not None and part.asked.refusal:
            return part.asked.refusal  # cluster-scoped: not to be listed per namespace
        reason = _status_reason(part.kept()) if part.ended else ""
        return f"answered {part.code}" + (f": {reason}" if reason else "")

    def _observe(self) -> None:
        """Tell the observer of every part (once, as the fan-out ends)."""
        observer, self.observer = self.observer, None
        if observer is None:
            return
        now = time.monotonic()
        for part in self.parts:
            why = self._failure(part)
            reason = failure_reason(why, part.asked is not None, part.code)
            seconds = (part.ended_at or now) - self._ticks if part.asked is not None else 0.0
            observer.cluster_done(
                part.name, part.asked, part.code or 0, why, reason, part.received, seconds
            )

    def _settled(self) -> None:
        """Every part's head (or failure) is known: answer the head."""
        if self._finished:
            return
        if not self.listing:
            if all(p.ended for p in self.parts):
                self._answer_get()
            return
        ok = [p for p in self.parts if p.code == 200 and not p.failure]
        failures = self._failures()
        if not ok and self.parts:
            self._finished = True
            self._observe()
            self.client_lost()
            self.front.send_error(_all_failed(failures))
            return
        self.started = True
        headers: list[Header] = [*_JSON]
        for name, why in failures:
            headers.append(warning_header(f"cluster {name}: {why}"))
        self.front.relay_head(200, b"OK", ResponseHeaders(headers, None, False, False))
        self.front.stream_from(AllParts(self))
        self.write(self.merged.start())
        for part in ok:
            part.start_streaming()
        if all(p.ended for p in self.parts):
            self._finish()

    def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        versions: dict[str, str] = {}
        continues: dict[str, str] = {}
        for part in self.parts:
            if part.code == 200 and not part.failure:
                rv, token = part.versions()
                if rv is not None:
                    versions.setdefault(part.name, rv)
                if token is not None:
                    continues[part.key] = token
        self.front.relay_body(self.merged.finish(versions, continues))
        self.front.relay_end()
        self._observe()

    def _answer_object(self, obj: object, headers: list[Header]) -> None:
        body = json.dumps(obj, separators=(",", ":")).encode()
        length = (b"Content-Length", b"%d" % len(body))  # a relayed head keeps its own
        self.front.relay_head(
            200, b"OK", ResponseHeaders([*headers, length], len(body), False, False)
        )
        self.front.relay_body(body)
        self.front.relay_end()

    def _answer_get(self) -> None:
        self._finished = True
        self._observe()
        found = [p for p in self.parts if p.code == 200 and not p.failure]
        failures = self._failures()
        headers: list[Header] = [*_JSON]
        for name, why in failures:
            headers.append(warning_header(f"cluster {name}: {why}"))
        if self.discovery and found:
            try:
                obj = union_discovery([json.loads(p.kept()) for p in found])
            except ValueError:
                self.front.send_error(ApiError(502, "a cluster's discovery answer is not JSON"))
                return
            self._answer_object(obj, headers)
            return
        if len(found) == 1:
            try:
                obj = annotate(json.loads(found[0].kept()), found[0].name)
            except ValueError:
                self.front.send_error(ApiError(502, f"cluster {found[0].name}: not JSON"))
                return
            self._answer_object(obj, headers)
            return
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            error = ApiError(
                409,
                f"the object exists in several clusters ({names}): ask one cluster's context",
                "Conflict",
            )
        elif failures and all(p.failure or p.code not in (200, 404) for p in self.parts):
            error = _all_failed(failures)
        else:
            error = ApiError(404, "the object is in none of the clusters asked", "NotFound")
        error.headers = (*error.headers, *headers[1:])  # the warnings
        self.front.send_error(error)


def _all_failed(failures: Sequence[tuple[str, str]]) -> ApiError:
    reasons = "; ".join(f"{name}: {why}" for name, why in failures) or "no cluster answered"
    return ApiError(503, f"no cluster could answer ({reasons})", "ServiceUnavailable")
