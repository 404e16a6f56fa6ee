"""A fan-out watch on its seams: forwarders to fake pools, a recording client side."""

from __future__ import annotations

import json
from typing import Any, cast

from support.channel import RecordingChannel
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from zope.interface import implementer

from karpor.front.fanout import Asked
from karpor.front.fanwatch import FanWatch
from karpor.http.headers import ResponseHeaders
from karpor.kube.fanout import CLUSTER_ANNOTATION, decode_versions
from karpor.kube.fanwatch import MAX_WATCH_CLUSTERS, MAX_WATCH_SECONDS, REWATCH_LIMIT
from karpor.kube.status import ApiError
from karpor.upstream.forward import Forwarder
from karpor.upstream.pool import ClusterPool
from karpor.upstream.request import UpstreamRequest

HEAD = ResponseHeaders([(b"Content-Type", b"application/json")], None, True, False)
TARGET = b"/api/v1/pods?watch=true&resourceVersion=karpor.x"


@implementer(IPushProducer)
class _Producer:
    def __init__(self) -> None:
        self.paused = False

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False

    def stopProducing(self) -> None: ...


class _Carrier:
    """Enough of an upstream connection for a forwarder without a body."""

    def __init__(self) -> None:
        self.producer = _Producer()
        self.aborted = False

    def finish_request(self) -> None: ...

    def valve(self, exchange: Any) -> IPushProducer:
        return self.producer

    def abort(self) -> None:
        self.aborted = True


class _Pool:
    def __init__(self) -> None:
        self.submitted: list[Forwarder] = []

    def submit(self, forwarder: Forwarder) -> None:
        self.submitted.append(forwarder)


def _event(name: str, rv: str, event_type: str = "ADDED") -> bytes:
    obj = {"kind": "Pod", "metadata": {"name": name, "resourceVersion": rv}}
    return json.dumps({"type": event_type, "object": obj}).encode() + b"\n"


class _Observer:
    def __init__(self) -> None:
        self.told: list[tuple[str, int, str, str, int]] = []

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
        self.told.append((name, status, failure, reason, received))


class Setup:
    def __init__(self, *names: str, timeout: float = MAX_WATCH_SECONDS, failed: int = 0) -> None:
        self.observer = _Observer()
        self.clock = Clock()
        self.front = RecordingChannel()
        self.pools = {name: _Pool() for name in names}
        asked = [
            Asked(name, cast(ClusterPool, pool), UpstreamRequest(b"GET", TARGET), None)
            for name, pool in self.pools.items()
        ]
        self.watch = FanWatch(
            self.front,  # type: ignore[arg-type]
            asked,
            [("gone-cluster", "unhealthy")] * failed,
            versions={"a": "1", "b": "2", "stranger": "9"},
            table=False,
            timeout=timeout,
            clock=self.clock,
            observer=self.observer,
        )
        self.watch.start()
        self.carriers: dict[str, _Carrier] = {}

    def last(self, name: str) -> Forwarder:
        return self.pools[name].submitted[-1]

    def answer(self, name: str, code: int = 200) -> _Carrier:
        forwarder = self.last(name)
        carrier = self.carriers[name] = _Carrier()
        forwarder.attach(carrier)  # type: ignore[arg-type]
        forwarder.upstream_head(code, b"OK", HEAD)
        return carrier

    def received(self) -> tuple[bytes, list[Any]]:
        raw = self.front.client.value()
        head, _, body = raw.partition(b"\r\n\r\n")
        data = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size, 16)
            data += rest[:n]
            body = rest[n + 2 :]
        return head, [json.loads(line) for line in data.splitlines()]


def test_events_of_every_cluster_stream_annotated_with_the_composite_version() -> None:
    s = Setup("a", "b", failed=1)
    s.answer("a")
    s.last("a").upstream_body(_event("p1", "5"))  # before the head: held
    assert s.front.client.value() == b""
    s.answer("b")
    s.last("b").upstream_body(_event("p2", "7"))
    head, events = s.received()
    assert head.startswith(b"HTTP/1.1 200") and b"cluster gone-cluster: unhealthy" in head
    assert [e["object"]["metadata"]["annotations"][CLUSTER_ANNOTATION] for e in events] == [
        "a",
        "b",
    ]
    last = decode_versions(events[-1]["object"]["metadata"]["resourceVersion"])
    assert last == {"a": "5", "b": "7"}  # a cluster not selected is not carried on


def test_a_slow_client_pauses_every_cluster() -> None:
    s = Setup("a", "b")
    ca, cb = s.answer("a"), s.answer("b")
    producer = s.front.client.producer
    assert producer is not None and not ca.producer.paused
    producer.pauseProducing()
    assert ca.producer.paused and cb.producer.paused
    producer.resumeProducing()
    assert not ca.producer.paused and not cb.producer.paused


def test_a_watch_that_ends_is_asked_again_from_its_last_version() -> None:
    s = Setup("a", "b")
    s.answer("a")
    s.answer("b")
    s.last("a").upstream_body(_event("p1", "5"))
    s.last("a").upstream_end()
    s.clock.advance(0)
    assert len(s.pools["a"].submitted) == 2
    assert s.last("a").request.target == (
        b"/api/v1/pods?watch=true&resourceVersion=5&timeoutSeconds=1800"
    )
    s.answer("a")
    s.last("a").upstream_body(_event("p3", "6"))
    _, events = s.received()
    assert [e["object"]["metadata"]["name"] for e in events] == ["p1", "p3"]
    assert s.front.finished == []  # the stream goes on


def test_fruitless_rewatches_back_off_then_end_the_stream() -> None:
    s = Setup("a", "b")
    s.answer("a")
    s.answer("b")
    s.last("a").upstream_end()
    for _ in range(REWATCH_LIMIT):
        s.clock.advance(10)
        s.last("a").upstream_failed(ApiError(503, "unreachable"))
    assert len(s.pools["a"].submitted) == REWATCH_LIMIT + 1
    assert s.front.finished == [False]  # ended cleanly: the client watches again
    assert s.carriers["b"].aborted  # the others' watches are dropped


def test_a_410_ends_the_merged_stream_so_the_client_lists_again() -> None:
    s = Setup("a", "b")
    s.answer("a")
    s.answer("b")
    s.last("a").upstream_end()  # at once, without an event: asked again after a back-off
    s.clock.advance(0)
    assert len(s.pools["a"].submitted) == 1
    s.clock.advance(1)
    s.answer("a", 410)
    _, events = s.received()
    assert events[-1]["type"] == "ERROR" and events[-1]["object"]["code"] == 410
    assert s.front.finished == [False]
    # an ERROR event with a 410 does the same
    t = Setup("a")
    t.answer("a")
    status = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    t.last("a").upstream_body(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
    _, events = t.received()
    assert events[-1]["object"]["code"] == 410 and t.front.finished == [False]


def test_the_merged_stream_ends_with_the_clients_timeout() -> None:
    s = Setup("a", "b", timeout=30)
    s.answer("a")
    s.answer("b")
    s.clock.advance(10)
    s.last("a").upstream_end()
    s.clock.advance(0)
    assert s.last("a").request.target.endswith(b"timeoutSeconds=20")
    s.answer("a")
    s.clock.advance(19)
    assert s.front.finished == []
    s.clock.advance(1)
    assert s.front.finished == [False]  # ended cleanly, every cluster's watch dropped
    assert s.carriers["a"].aborted and s.carriers["b"].aborted
    assert s.clock.getDelayedCalls() == []


def test_a_watch_without_a_timeout_lasts_at_most_the_cap() -> None:
    s = Setup("a")
    s.answer("a")
    s.clock.advance(MAX_WATCH_SECONDS - 1)
    assert s.front.finished == []
    s.clock.advance(1)
    assert s.front.finished == [False]


def test_a_draining_worker_ends_the_stream_cleanly() -> None:
    s = Setup("a", "b")
    s.answer("a")
    s.answer("b")
    s.watch.end_stream()
    assert s.front.finished == [True] and s.carriers["a"].aborted
    assert s.clock.getDelayedCalls() == []


def test_too_many_clusters_is_a_400_and_nothing_is_sent() -> None:
    names = [f"c{i}" for i in range(MAX_WATCH_CLUSTERS + 1)]
    s = Setup(*names)
    (error,) = s.front.errors
    assert error.code == 400 and "at most" in error.message
    assert all(not pool.submitted for pool in s.pools.values())


def test_every_cluster_failing_is_one_status_naming_each() -> None:
    s = Setup("a", failed=1)
    s.last("a").upstream_failed(ApiError(503, "refused"))
    (error,) = s.front.errors
    assert error.code == 503 and "a: refused" in error.message
    assert "gone-cluster: unhealthy" in error.message


def test_a_watch_broken_off_before_the_stream_began_is_asked_again() -> None:
    s = Setup("a", "b")
    s.answer("a")
    s.last("a").upstream_failed(ApiError(502, "reset"))  # after its head: broke off
    s.answer("b")
    s.clock.advance(1)
    assert len(s.pools["a"].submitted) == 2 and s.front.finished == []


def test_every_cluster_gets_its_audit_line_once_when_the_stream_ends() -> None:
    s = Setup("a", "b", timeout=30, failed=1)
    s.answer("a")
    s.answer("b", code=403)
    s.last("a").upstream_body(_event("p1", "5"))
    assert s.observer.told == []  # nothing while it streams
    s.clock.advance(30)
    told = {name: rest for name, *rest in s.observer.told}
    assert told["gone-cluster"] == [0, "unhealthy", "unavailable", 0]
    assert told["a"][:3] == [200, "", ""] and told["a"][3] == len(_event("p1", "5"))
    assert told["b"][0] == 403 and told["b"][2] == "forbidden"
    s.watch.client_lost()
    assert len(s.observer.told) == 3  # once
