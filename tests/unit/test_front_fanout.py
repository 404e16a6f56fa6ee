"""A fan-out driven through its parts' channels (no network): the bound on a
GET's object, parts of one namespace, and what its observer hears."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

import pytest

from karpor.auth.access import Authorized
from karpor.auth.audit import AuditRecord
from karpor.auth.identity import Identity
from karpor.auth.policy import Attributes
from karpor.front import fanout as fanout_module
from karpor.front.fanout import Asked, Fanout
from karpor.front.front import Front
from karpor.front.record import FanoutRecord, RequestRecord
from karpor.http.headers import ResponseHeaders
from karpor.kube.fanout import decode_continue, decode_versions
from karpor.kube.status import ApiError
from karpor.upstream.pool import ClusterPool
from karpor.upstream.request import NO_BODY, UpstreamRequest

HEAD = ResponseHeaders([(b"Content-Type", b"application/json")], None, True, False)


class FakeFront:
    """What a fan-out writes to its client."""

    def __init__(self) -> None:
        self.code = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.ended = False
        self.error: ApiError | None = None

    def relay_head(self, code: int, reason: bytes, response: ResponseHeaders) -> bool:
        self.code, self.headers = code, list(response.forward)
        return True

    def relay_body(self, data: bytes) -> None:
        self.body += data

    def relay_end(self, close: bool = False) -> None:
        self.ended = True

    def stream_from(self, producer: Any) -> None: ...

    def send_error(self, error: ApiError) -> None:
        self.error = error

    def warnings(self) -> list[str]:
        return [v.decode() for n, v in self.headers if n.lower() == b"warning"]


class FakePool:
    def __init__(self) -> None:
        self.submitted: list[Any] = []

    def submit(self, forwarder: Any) -> None:
        self.submitted.append(forwarder)


class Heard:
    """A fan-out observer keeping what it heard."""

    def __init__(self) -> None:
        self.clusters: list[tuple[str, int, str, str]] = []

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
        self.clusters.append((name, status, reason, failure))


def asked(name: str, target: bytes = b"/api/v1/pods", key: str = "", refusal: str = "") -> Asked:
    request = UpstreamRequest(b"GET", target, [], NO_BODY, [], None, b"")
    pool = cast(ClusterPool, FakePool())
    attrs = Attributes(verb="list", resource="pods")
    return Asked(name, pool, request, None, key, Authorized(attrs, None), refusal)


def run(
    parts: list[Asked], failed: Sequence[tuple[str, str]] = (), listing: bool = True
) -> tuple[Fanout, FakeFront, Heard]:
    front, heard = FakeFront(), Heard()
    fanout = Fanout(
        cast(Front, front), parts, list(failed), listing=listing, table=False, observer=heard
    )
    fanout.start()
    return fanout, front, heard


def answer(fanout: Fanout, index: int, code: int, body: bytes) -> None:
    part = fanout.parts[index]
    part.relay_head(code, b"", HEAD)
    part.stream_from(cast(Any, FakeProducer()))
    part.relay_body(body)
    part.relay_end()


class FakeProducer:
    def pauseProducing(self) -> None: ...
    def resumeProducing(self) -> None: ...
    def stopProducing(self) -> None: ...


def test_a_get_keeps_at_most_max_object_bytes_of_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fanout_module, "MAX_OBJECT", 64)
    fanout, front, heard = run(
        [
            asked("big", b"/api/v1/namespaces/a/pods/p"),
            asked("small", b"/api/v1/namespaces/a/pods/p"),
        ],
        listing=False,
    )
    big = fanout.parts[0]
    big.relay_head(200, b"OK", HEAD)
    big.stream_from(cast(Any, FakeProducer()))
    big.relay_body(b"{" + b" " * 60)
    big.relay_body(b" " * 10)  # over the bound: the part is dropped, never cut short
    assert big.failure.startswith("its object is larger than 64 bytes")
    assert len(big.kept()) == 61
    answer(fanout, 1, 200, json.dumps({"kind": "Pod", "metadata": {"name": "p"}}).encode())
    # the other cluster's object is the answer; the big one a warning
    assert front.code == 200 and json.loads(front.body)["metadata"]["name"] == "p"
    assert any("big" in w and "larger than 64" in w for w in front.warnings())
    assert ("big", 200, "broken", big.failure) in heard.clusters


def test_parts_of_one_namespace_merge_and_page_by_their_key() -> None:
    parts = [
        asked("one"),
        asked("two", b"/api/v1/namespaces/a/pods", "two/a", "forbidden: no"),
        asked("two", b"/api/v1/namespaces/b/pods", "two/b", "forbidden: no"),
    ]
    fanout, front, heard = run(parts)
    for index, (rv, token) in enumerate((("1", ""), ("2", "t-a"), ("3", ""))):
        items = [{"metadata": {"name": f"pod-{index}"}}]
        doc = {"kind": "PodList", "metadata": {"resourceVersion": rv, "continue": token}}
        answer(fanout, index, 200, json.dumps({**doc, "items": items}).encode())
    merged = json.loads(front.body)
    names = {
        (i["metadata"]["annotations"]["karpor.io/cluster"], i["metadata"]["name"])
        for i in merged["items"]
    }
    assert names == {("one", "pod-0"), ("two", "pod-1"), ("two", "pod-2")}
    assert decode_continue(merged["metadata"]["continue"]) == {"two/a": "t-a"}
    assert decode_versions(merged["metadata"]["resourceVersion"]) == {"one": "1", "two": "2"}
    assert [c[:3] for c in heard.clusters] == [("one", 200, ""), ("two", 200, ""), ("two", 200, "")]


def test_a_cluster_scoped_resource_asked_per_namespace_warns_with_the_refusal() -> None:
    parts = [asked("one"), asked("two", b"/api/v1/namespaces/a/nodes", "two/a", "forbidden: no")]
    fanout, front, heard = run(parts, failed=[("three", "forbidden: never")])
    answer(fanout, 0, 200, b'{"kind":"NodeList","metadata":{},"items":[]}')
    answer(fanout, 1, 404, b'{"kind":"Status","message":"not found"}')
    assert front.code == 200 and front.ended
    assert any("two/a: forbidden: no" in w for w in front.warnings()), front.warnings()
    reasons = {name: (status, reason) for name, status, reason, _ in heard.clusters}
    assert reasons == {"one": (200, ""), "two": (404, "forbidden"), "three": (0, "forbidden")}


def test_the_fanout_record_writes_one_audit_line_per_cluster() -> None:
    written: list[AuditRecord] = []
    failures: list[tuple[str, str]] = []

    class Writer:
        def write(self, record: AuditRecord) -> None:
            written.append(record)

    class Metrics:
        def fanout_cluster_failed(self, cluster: str, reason: str) -> None:
            failures.append((cluster, reason))

    record = RequestRecord(1000.0, 0, 0, b"0f0f0f0f-0000-0000-0000-000000000000")
    record.identity = Identity("alice", ("devs",))
    observer = FanoutRecord(record, cast(Any, Writer()), cast(Any, Metrics()), b"10.0.0.1")
    part = asked("two", b"/api/v1/namespaces/a/pods?limit=5", "two/a")
    observer.cluster_done("two", part, 200, "", "", 123, 0.5)
    observer.cluster_done("closed", None, 0, "connection refused", "unavailable", 0, 0.0)
    lines = [r.to_dict() for r in written]
    assert [(x["cluster"], x["code"], x.get("reason", "")) for x in lines] == [
        ("two", 200, ""),
        ("closed", 0, "connection refused"),
    ]
    assert lines[0]["path"] == "/api/v1/namespaces/a/pods?limit=5" and lines[0]["fanout"] is True
    assert lines[0]["user"] == "alice" and lines[0]["requestID"] == lines[1]["requestID"]
    assert lines[0]["bytesOut"] == 123 and lines[0]["verb"] == "list"
    assert failures == [("closed", "unavailable")]


def test_lists_read_while_other_clusters_answer_merge_in_any_order() -> None:
    fanout, front, heard = run([asked("one"), asked("two"), asked("bad")])
    pods = {"kind": "PodList", "metadata": {"resourceVersion": "1"}}
    # the last cluster answers first (merged and held until every head is known)
    answer(fanout, 1, 200, json.dumps({**pods, "items": [{"metadata": {"name": "b"}}]}).encode())
    answer(fanout, 2, 200, b'{"kind":"PodList","items":[{"metadata":{}},{"metadata":')
    assert front.code == 0 and fanout.parts[2].failure.startswith("its list cannot be read")
    answer(fanout, 0, 200, json.dumps({**pods, "items": [{"metadata": {"name": "a"}}]}).encode())
    merged = json.loads(front.body)
    got = sorted((i["metadata"]["name"], i["metadata"]["annotations"]) for i in merged["items"])
    assert got == [("a", {"karpor.io/cluster": "one"}), ("b", {"karpor.io/cluster": "two"})]
    # the list that broke before the merged head went out: a warning, none of its items
    assert any("bad: its list cannot be read" in w for w in front.warnings()), front.warnings()
    assert ("bad", 200, "broken") in [c[:3] for c in heard.clusters]
