"""The reviews a caller asks about itself on a cluster, answered by the gateway.

The pipeline hands a ``POST`` of a ``SelfSubjectReview``,
``SelfSubjectAccessReview`` or ``SelfSubjectRulesReview`` on a cluster
path (:func:`karpor.kube.reviews.review_kind`), its body read as an
own-API body is (bounded), to a :class:`ClusterReviews`, for a caller
:meth:`karpor.auth.access.Access.reviewer` lets reach the cluster:

- ``SelfSubjectReview`` (``kubectl auth whoami``): the identity the gateway
  authenticated (or the one ``kubectl --as`` asked for), with ``extra``
  saying what the cluster sees (:func:`karpor.auth.reviews.whoami_extra`);
- ``SelfSubjectAccessReview`` (``kubectl auth can-i``): the policy's answer
  (:func:`karpor.auth.reviews.access_decision`); when it allows and the
  gateway impersonates someone on the cluster, the review is also sent to
  the cluster as that identity (a :class:`~karpor.upstream.capture.CapturedExchange`)
  and the answer is ``allowed`` only if the cluster allows too;
- ``SelfSubjectRulesReview`` (``can-i --list``): the policy's rules
  (:func:`karpor.auth.reviews.policy_rules`), intersected with the
  cluster's when the gateway impersonates someone there.

When the cluster cannot answer (unhealthy, unreachable, an error status)
the access review is not allowed and the rules review is incomplete, each
with an ``evaluationError`` saying why.  The cluster's whole answer, head
and body, must arrive within :data:`REVIEW_TIMEOUT` (a cluster dribbling
its body holds nothing longer); past it the review fails the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.interfaces import IDelayedCall

from karpor.auth.access import Reviewer
from karpor.auth.impersonation import impersonation_headers
from karpor.auth.reviews import access_decision, policy_rules, whoami_extra
from karpor.config.model import Cluster
from karpor.gatewayapi.request import ApiRequest, Responder
from karpor.kube.reviews import (
    ACCESS,
    WHOAMI,
    AccessQuery,
    ReviewKind,
    RulesStatus,
    access_review,
    combine_rules,
    parse_access_review,
    parse_access_status,
    parse_rules_review,
    parse_rules_status,
    review_request,
    rules_review,
    self_subject_review,
)
from karpor.kube.status import ApiError
from karpor.upstream.capture import CapturedExchange
from karpor.upstream.request import LENGTH, UpstreamRequest

if TYPE_CHECKING:
    from karpor.front.protocol import GatewayFactory

_JSON = b"application/json"
#: the answer to a review from the cluster's ``(code, body)`` (``code`` ``None``: a failure)
Answer = Callable[[int | None, bytes], dict[str, Any]]
#: seconds for the cluster's whole answer to a review sent on a caller's behalf
REVIEW_TIMEOUT = 30.0


def _answer(responder: Responder, doc: dict[str, Any]) -> None:
    responder.respond(201, [(b"content-type", _JSON)], json.dumps(doc).encode() + b"\n")


class ClusterReviews:
    """Answers one review on ``cluster`` (an :class:`~karpor.gatewayapi.request.ApiHandler`)."""

    def __init__(
        self,
        factory: GatewayFactory,
        cluster: Cluster,
        kind: ReviewKind,
        reviewer: Reviewer,
        target: bytes,
        client_address: bytes | None,
        audit_id: bytes,
    ) -> None:
        self._factory = factory
        self._cluster = cluster
        self._kind = kind
        self._reviewer = reviewer
        self._target = target
        self._client_address = client_address
        self._audit_id = audit_id

    def handle(self, request: ApiRequest, responder: Responder) -> None:
        """Answer ``request`` (its body read) through ``responder``."""
        try:
            self._handle(request, responder)
        except ApiError as error:
            responder.respond(error.code, [(b"content-type", _JSON)], error.body() + b"\n")

    def _handle(self, request: ApiRequest, responder: Responder) -> None:
        kind, reviewer, cluster = self._kind, self._reviewer, self._cluster
        identity = reviewer.identity
        if kind.kind == WHOAMI:
            extra = whoami_extra(identity, cluster.name, reviewer.upstream, reviewer.exchange)
            groups = identity.with_authenticated().groups
            doc = self_subject_review(kind, identity.user, groups, identity.uid, extra)
            _answer(responder, doc)
            return
        policy = self._factory.access.policy
        if kind.kind == ACCESS:
            query = parse_access_review(request.body, kind)
            allowed, reason = access_decision(policy, identity, cluster, query)
            if not allowed or reviewer.upstream is None:
                _answer(responder, access_review(kind, query, allowed, reason, denied=not allowed))
                return
            self._ask(
                review_request(kind, query.spec or {}),
                responder,
                lambda code, body: self._access(query, code, body),
            )
            return
        namespace = parse_rules_review(request.body, kind)
        ours = policy_rules(policy, identity, cluster, namespace)
        if reviewer.upstream is None:
            _answer(responder, rules_review(kind, namespace, ours))
            return
        self._ask(
            review_request(kind, {"namespace": namespace}),
            responder,
            lambda code, body: rules_review(kind, namespace, self._rules(ours, code, body)),
        )

    def _access(self, query: AccessQuery, code: int | None, body: bytes) -> dict[str, Any]:
        if code != 201:
            doc = access_review(self._kind, query, False, denied=False)
            doc["status"]["evaluationError"] = self._failure(code, body)
            return doc
        allowed, reason = parse_access_status(body)
        return access_review(
            self._kind, query, allowed, reason if allowed else f"the cluster: {reason or 'no'}"
        )

    def _rules(self, ours: RulesStatus, code: int | None, body: bytes) -> RulesStatus:
        if code != 201:
            theirs = RulesStatus(incomplete=True, evaluation_error=self._failure(code, body))
        else:
            theirs = parse_rules_status(body)
        return combine_rules(ours, theirs)

    def _failure(self, code: int | None, body: bytes) -> str:
        if code is None:
            return f"cluster {self._cluster.name!r}: {body.decode('utf-8', 'replace')}"
        return f"cluster {self._cluster.name!r} answered {code}"

    def _ask(self, body: bytes, responder: Responder, answer: Answer) -> None:
        """Send the review to the cluster as the impersonated identity, then
        answer with ``answer(code, body)`` (``code`` ``None``: a failure,
        ``body`` its message)."""
        factory, cluster = self._factory, self._cluster
        deadline: list[IDelayedCall] = []

        def done(code: int | None, data: bytes, error: ApiError | None) -> None:
            for timer in deadline:
                if timer.active():
                    timer.cancel()
            if error is not None:
                data = error.message.encode()
            _answer(responder, answer(code, data))

        gate = factory.health_gate
        refused = gate(cluster) if gate is not None else None
        pool = factory.pools.get(cluster)
        refused = refused or pool.error
        if refused is not None:
            done(None, b"", refused)
            return
        headers = (
            (b"Content-Type", _JSON),
            (b"Accept", _JSON),
            (b"Content-Length", str(len(body)).encode()),
        )
        exchange = CapturedExchange(
            UpstreamRequest(
                b"POST",
                self._target,
                headers,
                LENGTH,
                impersonation_headers(self._reviewer.upstream),
                self._client_address,
                self._audit_id,
            ),
            body,
            done,
            pool.head_timeout(b"POST", self._target),
        )
        responder.on_close(exchange.cancel)

        def expire() -> None:
            exchange.cancel()
            done(
                None, b"", ApiError(504, f"the cluster did not answer within {REVIEW_TIMEOUT:g} s")
            )

        deadline.append(pool.reactor.callLater(REVIEW_TIMEOUT, expire))
        pool.submit(exchange)
