"""The reviews a caller asks about itself on a cluster path, answered by the
gateway (karpor.front.reviews through the pipeline), driven like the other
front tests: a fake client transport, a fake upstream."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.error import ConnectionLost
from twisted.python.failure import Failure
from unit.test_front_gateway import ALICE, PREFIX, TOKEN, Harness

from karpor.config.model import Cluster, TokenCredential
from karpor.front.reviews import REVIEW_TIMEOUT
from karpor.http.headers import split_response
from karpor.kube.status import ApiError
from karpor.upstream.capture import CapturedExchange
from karpor.upstream.request import UpstreamRequest

IMPERSONATING = Cluster(
    name="imp",
    endpoint="http://10.0.0.8:6443",
    credential=TokenCredential(token=TOKEN),
    impersonate=True,
)
ALIAS = b"/apis/cluster.core.oam.dev/v1alpha1/clustergateways/"
WHOAMI = b"/apis/authentication.k8s.io/v1/selfsubjectreviews"
SSAR = b"/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SSRR = b"/apis/authorization.k8s.io/v1/selfsubjectrulesreviews"


def post(cluster: bytes, path: bytes, body: dict[str, Any] | bytes) -> bytes:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return (
        b"POST " + PREFIX + cluster + b"/proxy" + path + b" HTTP/1.1\r\nHost: gw\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data
    )


def answer(h: Harness) -> dict[str, Any]:
    [(code, _, body)] = h.responses()
    assert code == 201, body
    doc: dict[str, Any] = json.loads(body)
    return doc


def harness() -> Harness:
    return Harness(clusters=(Cluster("a", "http://10.0.0.9:6443"), IMPERSONATING))


def test_whoami_is_answered_by_the_gateway() -> None:
    h = harness()
    h.send(post(b"a", WHOAMI, {"kind": "SelfSubjectReview"}))
    info = answer(h)["status"]["userInfo"]
    assert info["username"] == ALICE.user and "system:authenticated" in info["groups"]
    assert info["extra"]["karpor.io/cluster-identity"] == ["credential"]
    assert h.endpoint.attempts == []  # the cluster was not asked
    # the same through the KubeVela alias
    alias = post(b"a", WHOAMI, {}).replace(PREFIX, ALIAS, 1)
    h.send(alias)
    assert h.responses()[1][0] == 201


def _ssar(verb: str) -> dict[str, Any]:
    attrs = {"verb": verb, "resource": "pods", "namespace": "x"}
    return {"kind": "SelfSubjectAccessReview", "spec": {"resourceAttributes": attrs}}


def test_access_review_without_impersonation_is_the_policys() -> None:
    h = harness()
    h.send(post(b"a", SSAR, _ssar("delete")))
    status = answer(h)["status"]
    assert status["allowed"] is True and "no access policy" in status["reason"]
    assert h.endpoint.attempts == []


def test_access_review_on_an_impersonating_cluster_asks_it_too() -> None:
    h = harness()
    h.send(post(b"imp", SSAR, _ssar("create")))
    up = h.accept()
    sent = up.transport.value()
    assert sent.startswith(b"POST " + SSAR + b" HTTP/1.1\r\n")
    assert b"Impersonate-User: alice\r\n" in sent
    assert json.loads(sent.split(b"\r\n\r\n", 1)[1])["spec"] == _ssar("create")["spec"]
    body = b'{"status": {"allowed": false, "reason": "RBAC says no"}}'
    up.respond(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    status = answer(h)["status"]
    assert status["allowed"] is False and status["reason"] == "the cluster: RBAC says no"


def test_rules_review_is_the_intersection() -> None:
    h = harness()
    h.send(post(b"imp", SSRR, {"spec": {"namespace": "x"}}))
    up = h.accept()
    theirs = {
        "status": {
            "resourceRules": [{"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}],
            "nonResourceRules": [],
            "incomplete": False,
        }
    }
    body = json.dumps(theirs).encode()
    up.respond(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    status = answer(h)["status"]
    assert status["resourceRules"] == theirs["status"]["resourceRules"]
    assert status["nonResourceRules"] == []


def test_cluster_failure_is_no_with_an_evaluation_error() -> None:
    h = harness()
    h.send(post(b"imp", SSAR, _ssar("get")))
    up = h.accept()
    up.respond(b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n")
    status = answer(h)["status"]
    assert status["allowed"] is False and "answered 500" in status["evaluationError"]


def test_a_cluster_dribbling_its_answer_is_cut_at_the_deadline() -> None:
    h = harness()
    h.send(post(b"imp", SSAR, _ssar("get")))
    up = h.accept()
    # the head in time, then a body that never ends
    up.respond(b"HTTP/1.1 201 Created\r\nContent-Length: 1000\r\n\r\n{")
    h.clock.advance(REVIEW_TIMEOUT - 1)
    assert h.responses() == []
    h.clock.advance(1)
    status = answer(h)["status"]
    assert status["allowed"] is False and "did not answer within" in status["evaluationError"]
    assert up.transport.disconnecting  # the cluster's connection is dropped


def test_an_answer_in_time_cancels_the_deadline() -> None:
    h = harness()
    h.send(post(b"imp", SSAR, _ssar("get")))
    up = h.accept()
    body = b'{"status": {"allowed": true}}'
    up.respond(b"HTTP/1.1 201 Created\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    assert answer(h)["status"]["allowed"] is True
    h.clock.advance(REVIEW_TIMEOUT * 2)
    assert len(h.responses()) == 1  # no second answer from the expired timer


def test_review_body_is_bounded_and_bad_bodies_are_statuses() -> None:
    h = harness()
    h.factory.max_api_body = 16
    h.send(post(b"a", SSAR, _ssar("get")))
    assert h.responses()[0][0] == 413
    h = harness()
    h.send(post(b"a", SSAR, b"not json"))
    assert h.responses()[0][0] == 400


def test_client_gone_cancels_the_question() -> None:
    h = harness()
    h.send(post(b"imp", SSAR, _ssar("get")))
    up = h.accept()
    assert not up.transport.disconnecting
    h.proto.connectionLost(Failure(ConnectionLost()))
    assert up.transport.disconnecting  # the question is dropped with its connection


class FakeCarrier:
    closed = False
    transport = None

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.finished = self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def finish_request(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


def test_captured_answer_is_bounded() -> None:
    reports: list[tuple[int | None, bytes, ApiError | None]] = []
    exchange = CapturedExchange(
        UpstreamRequest(b"POST", b"/x"), b"{}", lambda *r: reports.append(r), 5.0, max_body=8
    )
    carrier = FakeCarrier()
    exchange.attach(carrier)  # type: ignore[arg-type]
    assert carrier.written == [b"{}"] and carrier.finished
    exchange.upstream_head(201, b"Created", split_response([]))
    exchange.upstream_body(b"12345")
    exchange.upstream_body(b"6789")
    assert carrier.aborted
    [(code, _, error)] = reports
    assert code is None and error is not None and error.code == 502
    exchange.upstream_end()  # nothing more is reported
    assert len(reports) == 1
