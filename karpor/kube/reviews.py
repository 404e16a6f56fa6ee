"""The review objects a caller asks about itself (sans-IO): ``SelfSubjectReview``
(``kubectl auth whoami``), ``SelfSubjectAccessReview`` (``kubectl auth
can-i VERB RESOURCE``) and ``SelfSubjectRulesReview`` (``can-i --list``).

- :func:`review_kind` tells, from a request path, which review a ``POST``
  creates (``None``: none), with the API version it was created in:
  ``authentication.k8s.io`` ``v1``, ``v1beta1`` and ``v1alpha1`` for
  ``selfsubjectreviews`` (kubectl 1.27 asks ``v1beta1`` then ``v1alpha1``,
  1.28 and later ``v1`` first), ``authorization.k8s.io/v1`` for the others;
- :func:`parse_access_review` and :func:`parse_rules_review` read a
  request body (a 400 ``Status`` for one that is not a review, a 422 for
  a review without exactly one kind of attributes or without a namespace);
- :func:`self_subject_review`, :func:`access_review` and
  :func:`rules_review` build the answers, shaped as kube-apiserver's;
- :func:`parse_access_status` and :func:`parse_rules_status` read a
  cluster's answer; :func:`combine_rules` intersects two rules answers
  (the rules themselves: :mod:`karpor.kube.rbacrules`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from karpor.kube import protowire
from karpor.kube.rbacrules import (
    NonResourceRule,
    ResourceRule,
    intersect_non_resource_rules,
    intersect_resource_rules,
)
from karpor.kube.status import ApiError

AUTHENTICATION_GROUP = "authentication.k8s.io"
AUTHORIZATION_GROUP = "authorization.k8s.io"
#: ``SelfSubjectReview``
WHOAMI = "SelfSubjectReview"
#: ``SelfSubjectAccessReview``
ACCESS = "SelfSubjectAccessReview"
#: ``SelfSubjectRulesReview``
RULES = "SelfSubjectRulesReview"

#: (group, version, plural) -> kind of every review answered for the caller
REVIEW_PATHS: Mapping[tuple[str, str, str], str] = {
    (AUTHENTICATION_GROUP, "v1", "selfsubjectreviews"): WHOAMI,
    (AUTHENTICATION_GROUP, "v1beta1", "selfsubjectreviews"): WHOAMI,
    (AUTHENTICATION_GROUP, "v1alpha1", "selfsubjectreviews"): WHOAMI,
    (AUTHORIZATION_GROUP, "v1", "selfsubjectaccessreviews"): ACCESS,
    (AUTHORIZATION_GROUP, "v1", "selfsubjectrulesreviews"): RULES,
}
#: what any path's first bytes must be to be a review's (a cheap first test)
REVIEW_PREFIXES = (b"/apis/authentication.k8s.io/", b"/apis/authorization.k8s.io/")


@dataclass(frozen=True)
class ReviewKind:
    """Which review a request creates: its ``kind`` and ``apiVersion``."""

    kind: str
    group: str
    version: str

    @property
    def api_version(self) -> str:
        """``group/version``."""
        return f"{self.group}/{self.version}"

    @property
    def plural(self) -> str:
        """The resource name (``selfsubjectaccessreviews``)."""
        return self.kind.lower() + "s"


def review_kind(path: str) -> ReviewKind | None:
    """The review a ``POST`` to ``path`` (query string allowed) creates, or ``None``."""
    parts = path.partition("?")[0].strip("/").split("/")
    if len(parts) != 4 or parts[0] != "apis":
        return None
    kind = REVIEW_PATHS.get((parts[1], parts[2], parts[3]))
    return ReviewKind(kind, parts[1], parts[2]) if kind is not None else None


# -- SelfSubjectReview ------------------------------------------------------------


def self_subject_review(
    kind: ReviewKind,
    user: str,
    groups: Sequence[str] = (),
    uid: str = "",
    extra: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The ``SelfSubjectReview`` kube-apiserver answers for this user."""
    info: dict[str, Any] = {"username": user}
    if uid:
        info["uid"] = uid
    if groups:
        info["groups"] = list(groups)
    if extra:
        info["extra"] = {k: list(v) for k, v in sorted(extra.items())}
    return {
        "kind": WHOAMI,
        "apiVersion": kind.api_version,
        "metadata": {"creationTimestamp": None},
        "status": {"userInfo": info},
    }


# -- SelfSubjectAccessReview ---------------------------------------------------------


@dataclass(frozen=True)
class AccessQuery:
    """What a ``SelfSubjectAccessReview`` asks (its ``spec``)."""

    verb: str
    #: ``False``: a non-resource path (``path``) is asked about
    is_resource: bool = True
    namespace: str = ""
    group: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    path: str = ""
    #: the ``spec`` as the caller sent it (echoed in the answer)
    spec: Mapping[str, Any] | None = None


#: how a Kubernetes protobuf body begins
PROTOBUF_MAGIC = b"k8s\x00"
#: the protobuf fields of the reviews' specs (``k8s.io/api/authorization/v1``):
#: message -> field number -> (JSON name, sub-message or ``None`` for a string)
_PROTOBUF_SPECS: Mapping[str, Mapping[int, tuple[str, str | None]]] = {
    "spec": {
        1: ("resourceAttributes", "resource"),
        2: ("nonResourceAttributes", "path"),
    },
    "rulesSpec": {1: ("namespace", None)},
    "resource": {
        1: ("namespace", None),
        2: ("verb", None),
        3: ("group", None),
        4: ("version", None),
        5: ("resource", None),
        6: ("subresource", None),
        7: ("name", None),
    },
    "path": {1: ("path", None), 2: ("verb", None)},
}


def _protobuf_fields(data: bytes) -> Iterable[tuple[int, bytes | None]]:
    """``(number, bytes)`` of each field (``None`` for a non-length-delimited one)."""
    for number, wire, value in protowire.fields(data):
        yield number, value if wire == protowire.DELIMITED and isinstance(value, bytes) else None


def _protobuf_message(data: bytes, message: str) -> dict[str, Any]:
    fields = _PROTOBUF_SPECS[message]
    obj: dict[str, Any] = {}
    for number, value in _protobuf_fields(data):
        known = fields.get(number)
        if known is None or value is None:
            continue
        name, sub = known
        obj[name] = value.decode("utf-8") if sub is None else _protobuf_message(value, sub)
    return obj


def _protobuf_review(body: bytes, kind: ReviewKind) -> dict[str, Any]:
    """A protobuf review (``runtime.Unknown`` in the ``k8s\\0`` envelope) as JSON."""
    raw = b""
    for number, value in _protobuf_fields(body[len(PROTOBUF_MAGIC) :]):
        if number == 2 and value is not None:
            raw = value
    spec = "rulesSpec" if kind.kind == RULES else "spec"
    obj: dict[str, Any] = {}
    for number, value in _protobuf_fields(raw):
        if number == 2 and value is not None:
            obj["spec"] = _protobuf_message(value, spec)
    return obj


def _object(body: bytes, kind: ReviewKind) -> dict[str, Any]:
    """The review of a request body: JSON or Kubernetes protobuf (kubectl
    1.33 sends ``SelfSubjectAccessReview`` as protobuf)."""
    obj: Any
    try:
        if body.startswith(PROTOBUF_MAGIC):
            obj = _protobuf_review(body, kind)
        else:
            obj = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        raise ApiError(
            400,
            f"the body of a {kind.kind} must be a JSON object or a Kubernetes protobuf message",
            "BadRequest",
        ) from None
    return obj


def _invalid(kind: ReviewKind, field: str, message: str) -> ApiError:
    return ApiError(
        422,
        f'{kind.kind}.{kind.group} "" is invalid: {field}: {message}',
        "Invalid",
        {"group": kind.group, "kind": kind.kind},
    )


def _text(obj: Mapping[str, Any], key: str) -> str:
    value = obj.get(key)
    return value if isinstance(value, str) else ""


def parse_access_review(body: bytes, kind: ReviewKind) -> AccessQuery:
    """The question of a ``SelfSubjectAccessReview`` body (400 / 422 ``ApiError``)."""
    obj = _object(body, kind)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = {}
    resource = spec.get("resourceAttributes")
    path = spec.get("nonResourceAttributes")
    if isinstance(resource, dict) == isinstance(path, dict):
        raise _invalid(
            kind,
            "spec.resourceAttributes",
            "exactly one of nonResourceAttributes or resourceAttributes must be specified",
        )
    if isinstance(path, dict):
        return AccessQuery(
            verb=_text(path, "verb"), is_resource=False, path=_text(path, "path"), spec=spec
        )
    assert isinstance(resource, dict)
    return AccessQuery(
        verb=_text(resource, "verb"),
        namespace=_text(resource, "namespace"),
        group=_text(resource, "group"),
        resource=_text(resource, "resource"),
        subresource=_text(resource, "subresource"),
        name=_text(resource, "name"),
        spec=spec,
    )


def review_request(kind: ReviewKind, spec: Mapping[str, Any]) -> bytes:
    """A review to send a cluster (JSON, whatever the caller sent)."""
    return json.dumps({"kind": kind.kind, "apiVersion": kind.api_version, "spec": spec}).encode()


def access_review(
    kind: ReviewKind, query: AccessQuery, allowed: bool, reason: str = "", denied: bool = False
) -> dict[str, Any]:
    """The answer to a ``SelfSubjectAccessReview``: its spec and the decision."""
    status: dict[str, Any] = {"allowed": allowed}
    if denied and not allowed:
        status["denied"] = True
    if reason:
        status["reason"] = reason
    return {
        "kind": ACCESS,
        "apiVersion": kind.api_version,
        "metadata": {"creationTimestamp": None},
        "spec": dict(query.spec or {}),
        "status": status,
    }


def parse_access_status(body: bytes) -> tuple[bool, str]:
    """``(allowed, reason)`` of a cluster's ``SelfSubjectAccessReview`` answer
    (not allowed when unreadable)."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False, "the cluster's answer could not be read"
    status = obj.get("status") if isinstance(obj, dict) else None
    if not isinstance(status, dict):
        return False, "the cluster's answer has no status"
    reason = _text(status, "reason") or _text(status, "evaluationError")
    return status.get("allowed") is True, reason


# -- SelfSubjectRulesReview ----------------------------------------------------------


def parse_rules_review(body: bytes, kind: ReviewKind) -> str:
    """The namespace a ``SelfSubjectRulesReview`` body asks about (400 / 422)."""
    obj = _object(body, kind)
    spec = obj.get("spec")
    namespace = _text(spec, "namespace") if isinstance(spec, dict) else ""
    if not namespace:
        raise _invalid(kind, "spec.namespace", "Required value")
    return namespace


@dataclass(frozen=True)
class RulesStatus:
    """The ``status`` of a ``SelfSubjectRulesReview``."""

    resource_rules: tuple[ResourceRule, ...] = ()
    non_resource_rules: tuple[NonResourceRule, ...] = ()
    incomplete: bool = False
    evaluation_error: str = ""


def _strings(obj: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = obj.get(key)
    if not isinstance(value, list):
        return ()
    return tuple(v for v in value if isinstance(v, str))


def parse_rules_status(body: bytes) -> RulesStatus:
    """A cluster's ``SelfSubjectRulesReview`` answer; what cannot be read is
    no rule, and the status says it is incomplete."""
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        obj = None
    status = obj.get("status") if isinstance(obj, dict) else None
    if not isinstance(status, dict):
        return RulesStatus(incomplete=True, evaluation_error="the cluster's answer has no status")
    resource = [
        ResourceRule(
            _strings(r, "verbs"),
            _strings(r, "apiGroups"),
            _strings(r, "resources"),
            _strings(r, "resourceNames"),
        )
        for r in status.get("resourceRules") or ()
        if isinstance(r, dict)
    ]
    paths = [
        NonResourceRule(_strings(r, "verbs"), _strings(r, "nonResourceURLs"))
        for r in status.get("nonResourceRules") or ()
        if isinstance(r, dict)
    ]
    return RulesStatus(
        tuple(resource),
        tuple(paths),
        status.get("incomplete") is True,
        _text(status, "evaluationError"),
    )


def rules_review(kind: ReviewKind, namespace: str, status: RulesStatus) -> dict[str, Any]:
    """The answer to a ``SelfSubjectRulesReview`` of ``namespace``."""
    doc: dict[str, Any] = {
        "resourceRules": [r.document() for r in status.resource_rules],
        "nonResourceRules": [r.document() for r in status.non_resource_rules],
        "incomplete": status.incomplete,
    }
    if status.evaluation_error:
        doc["evaluationError"] = status.evaluation_error
    return {
        "kind": RULES,
        "apiVersion": kind.api_version,
        "metadata": {"creationTimestamp": None},
        "spec": {"namespace": namespace},
        "status": doc,
    }


def combine_rules(ours: RulesStatus, theirs: RulesStatus) -> RulesStatus:
    """What both answers allow: the rules' intersections; incomplete if either is."""
    return RulesStatus(
        tuple(intersect_resource_rules(ours.resource_rules, theirs.resource_rules)),
        tuple(intersect_non_resource_rules(ours.non_resource_rules, theirs.non_resource_rules)),
        ours.incomplete or theirs.incomplete,
        "; ".join(e for e in (ours.evaluation_error, theirs.evaluation_error) if e),
    )
