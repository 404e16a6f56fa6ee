"""The simulator's object store: kube-apiserver's registry semantics, in memory.

One resourceVersion counter orders every write, as etcd's revision does.
Objects come back as deep copies shaped as kube-apiserver sends them: ``kind``
and ``apiVersion`` on single objects and watch events, not on list items;
``metadata.uid``, ``creationTimestamp``, ``resourceVersion``; the defaults
kube's API types add.  Errors are :class:`~karpor.kube.status.ApiError` with
kube's codes, reasons, messages and details.

The store plays the controllers a fresh cluster runs: the namespaces
``default``, ``kube-system``, ``kube-public`` and ``kube-node-lease`` exist,
each with a ``default`` ServiceAccount and the ``kube-root-ca.crt`` ConfigMap;
the ``kubernetes`` Service sits in ``default``; a new pod is scheduled to the
store's node at once and waits, ``Pending``, for the simulator's kubelet to
report it running through :meth:`Store.update_status`.

It does no I/O and takes the time from an injectable clock.  Watch callbacks
run synchronously inside the call that changed the store, in the order the
watches were opened.  A write visits only the watches its object may concern
(:class:`WatchIndex`: by resource type, namespace and one ``=``/``in`` term of
their selectors), reads the object's labels and fields once for all of them,
and hands them events that share one memo per event type
(:meth:`WatchEvent.shared`: the encoded line, say) while each gets its own
copy of the object.
"""

from __future__ import annotations

import base64
import binascii
import copy
import ipaddress
import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cached_property
from typing import Any, TypeVar

from karpor.kube.humanize import format_timestamp
from karpor.kube.selectors import (
    DOUBLE_EQUALS,
    EQUALS,
    IN,
    NOT_EQUALS,
    FieldSelector,
    LabelSelector,
    check_field_selector,
    dns1035_label_errors,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    go_quote,
    label_selector_from_object,
    label_value_errors,
    object_fields,
    parse_field_selector,
    parse_label_selector,
    qualified_name_errors,
)
from karpor.kube.status import ApiError
from karpor.sim import patch as patches
from karpor.sim.resources import CATALOG, Catalog, ResourceType

log = logging.getLogger(__name__)

#: The namespaces a fresh cluster has.
SYSTEM_NAMESPACES: tuple[str, ...] = ("default", "kube-node-lease", "kube-public", "kube-system")
#: The namespaces kube refuses to delete.
PROTECTED_NAMESPACES: frozenset[str] = frozenset({"default", "kube-public", "kube-system"})
#: The alphabet of ``generateName`` suffixes (``k8s.io/apimachinery/pkg/util/rand``).
GENERATE_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
#: The service CIDR cluster IPs come from.
SERVICE_CIDR = ipaddress.IPv4Network("10.96.0.0/12")

_ROOT_CA_DESCRIPTION = (
    "Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
    "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
    "guaranteed across distributions of Kubernetes clusters."
)

_T = TypeVar("_T")

WatchCallback = Callable[["WatchEvent"], None]


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ``ADDED``, ``MODIFIED`` or ``DELETED`` and the object.

    ``source`` is the stored object, shared with the store and every other
    watcher: read it, never change it.  :attr:`object` is this event's own
    deep copy (made on first use).  :meth:`shared` computes a value once per
    change and event type for every watcher that receives it, such as the
    event's encoded bytes.
    """

    type: str
    source: dict[str, Any]
    resource_type: ResourceType
    memo: dict[Hashable, Any] = dataclass_field(default_factory=dict, repr=False, compare=False)

    @cached_property
    def object(self) -> dict[str, Any]:
        """A deep copy of the object with ``kind`` and ``apiVersion`` first (this event's own)."""
        return _typed(self.resource_type, self.source)

    @property
    def view(self) -> dict[str, Any]:
        """The object with ``kind`` and ``apiVersion`` first, not copied: read only."""
        rt = self.resource_type
        view: dict[str, Any] = {"kind": rt.kind, "apiVersion": rt.group_version}
        for key, value in self.source.items():
            if key not in ("kind", "apiVersion"):
                view[key] = value
        return view

    def shared(self, key: Hashable, make: Callable[[WatchEvent], _T]) -> _T:
        """``make(self)``, computed once for all watchers receiving this change as this type.

        ``make`` must depend only on the event (its type and object) and
        what ``key`` names, and its result must not be changed.
        """
        try:
            value: _T = self.memo[key]
        except KeyError:
            value = self.memo[key] = make(self)
        return value


@dataclass(frozen=True)
class _Change:
    """One write in the history: the new (or deleted) object and the previous one."""

    resource_version: int
    type: str
    resource_type: ResourceType
    object: dict[str, Any]
    old: dict[str, Any] | None


class _Subject:
    """What the selectors of a watcher look at in one object, computed once per change."""

    __slots__ = ("_fields", "labels", "namespace", "obj", "rt")

    def __init__(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        self.rt = rt
        self.obj = obj
        metadata = obj["metadata"]
        self.namespace: Any = metadata.get("namespace")
        labels = metadata.get("labels")
        self.labels: dict[str, Any] = labels if isinstance(labels, dict) else {}
        self._fields: dict[str, str] | None = None

    @property
    def fields(self) -> dict[str, str]:
        """The object's selectable fields (:func:`object_fields`), computed on first use."""
        if self._fields is None:
            self._fields = object_fields(self.rt.group, self.rt.kind, self.obj)
        return self._fields


#: How a watcher is indexed: ``("label", key)`` or ``("field", name)`` with the values
#: one of its terms requires, or ``None`` when no term requires a value.
_Term = tuple[tuple[str, str], tuple[str, ...]]

_LABEL = "label"
_FIELD = "field"


def _index_term(labels: LabelSelector, fields: FieldSelector) -> _Term | None:
    """A term every match satisfies by one of few values: the smallest value set, fields first.

    A field's value is compared as the string :func:`object_fields` gives; a
    label's must be present and equal one of the values.
    """
    best: _Term | None = None
    for f in fields.requirements:
        if f.operator != NOT_EQUALS:
            return (_FIELD, f.field), (f.value,)
    if labels.nothing:
        return None
    for r in labels.requirements:
        indexable = r.operator in (IN, EQUALS, DOUBLE_EQUALS) and r.values
        if indexable and (best is None or len(r.values) < len(best[1])):
            best = (_LABEL, r.key), r.values
    return best


class Watcher:
    """A registered watch; :meth:`cancel` stops its callbacks."""

    def __init__(
        self,
        store: Store,
        resource_type: ResourceType | None,
        namespace: str | None,
        label_selector: LabelSelector,
        field_selector: FieldSelector,
        callback: WatchCallback,
    ) -> None:
        self._store = store
        self.resource_type = resource_type
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.callback = callback
        self.active = True
        #: the registration order: events of one change go to watchers in this order
        self._seq = 0

    def cancel(self) -> None:
        """Stop delivering events (idempotent)."""
        if self.active:
            self.active = False
            self._store._remove_watcher(self)

    def _selects(self, subject: _Subject) -> bool:
        if self.namespace is not None and subject.namespace != self.namespace:
            return False
        if not self.label_selector.matches(subject.labels):
            return False
        return self.field_selector.empty or self.field_selector.matches(subject.fields)

    def _kind_for(self, change: _Change, now: _Subject, before: _Subject | None) -> str | None:
        """The event type this watcher sees for a change, if any (kube's filtered watch).

        A modification that makes the object start matching is ``ADDED``, one
        that makes it stop matching ``DELETED`` (with the new object).
        """
        if self.resource_type is not None and self.resource_type != change.resource_type:
            return None
        selected = self._selects(now)
        if change.type == "MODIFIED" and before is not None:
            return {
                (True, True): "MODIFIED",
                (False, True): "ADDED",
                (True, False): "DELETED",
            }.get((self._selects(before), selected))
        return change.type if selected else None

    def _event_for(self, change: _Change) -> WatchEvent | None:
        """The event this watcher sees for a change, if any."""
        rt = change.resource_type
        before = _Subject(rt, change.old) if change.old is not None else None
        kind = self._kind_for(change, _Subject(rt, change.object), before)
        return None if kind is None else WatchEvent(kind, change.object, rt)

    def _deliver(self, event: WatchEvent) -> None:
        try:
            self.callback(event)
        except Exception:
            log.exception("watch callback failed")


class _Bucket:
    """The watchers of one (resource type, namespace), by their index term."""

    __slots__ = ("by_term", "rest")

    def __init__(self) -> None:
        #: term key -> value -> watchers (by registration order) whose term admits the value
        self.by_term: dict[tuple[str, str], dict[str, dict[int, Watcher]]] = {}
        #: the watchers without an index term
        self.rest: dict[int, Watcher] = {}

    def add(self, watcher: Watcher, term: _Term | None) -> None:
        if term is None:
            self.rest[watcher._seq] = watcher
            return
        key, values = term
        by_value = self.by_term.setdefault(key, {})
        for value in values:
            by_value.setdefault(value, {})[watcher._seq] = watcher

    def remove(self, watcher: Watcher, term: _Term | None) -> None:
        if term is None:
            self.rest.pop(watcher._seq, None)
            return
        key, values = term
        by_value = self.by_term.get(key, {})
        for value in values:
            watchers = by_value.get(value)
            if watchers is not None:
                watchers.pop(watcher._seq, None)
                if not watchers:
                    del by_value[value]
        if not by_value:
            self.by_term.pop(key, None)

    @property
    def empty(self) -> bool:
        return not self.rest and not self.by_term

    def collect(self, subjects: tuple[_Subject, ...], into: dict[int, Watcher]) -> None:
        """Add the watchers that may select any of ``subjects`` to ``into``."""
        into.update(self.rest)
        for (kind, name), by_value in self.by_term.items():
            for subject in subjects:
                value = subject.fields.get(name, "") if kind == _FIELD else subject.labels.get(name)
                if isinstance(value, str):
                    watchers = by_value.get(value)
                    if watchers:
                        into.update(watchers)


class WatchIndex:
    """The open watchers, found by what a change can match (sans-IO).

    Watchers sit in a bucket per (resource type or ``None`` for every type,
    namespace or ``None`` for every namespace); within it, under each value of
    one term every match must satisfy (``metadata.name=x``, ``app in (a,b)``;
    see :func:`_index_term`), or in a list of the rest.  :meth:`candidates`
    of a change visits only the buckets of its type and namespace and the
    values its objects have: a superset of the watchers that select either
    object, in registration order.
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[ResourceType | None, str | None], _Bucket] = {}
        self._terms: dict[int, _Term | None] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._terms)

    def add(self, watcher: Watcher) -> None:
        """Register a watcher (after every watcher added before it)."""
        self._seq += 1
        watcher._seq = self._seq
        term = _index_term(watcher.label_selector, watcher.field_selector)
        self._terms[watcher._seq] = term
        key = (watcher.resource_type, watcher.namespace)
        self._buckets.setdefault(key, _Bucket()).add(watcher, term)

    def remove(self, watcher: Watcher) -> None:
        """Unregister a watcher (idempotent)."""
        if watcher._seq not in self._terms:
            return
        term = self._terms.pop(watcher._seq)
        key = (watcher.resource_type, watcher.namespace)
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.remove(watcher, term)
            if bucket.empty:
                del self._buckets[key]

    def candidates(self, rt: ResourceType, subjects: tuple[_Subject, ...]) -> list[Watcher]:
        """The watchers that may select any of ``subjects`` (objects of ``rt``), in order."""
        found: dict[int, Watcher] = {}
        namespaces: set[str | None] = {None}
        for subject in subjects:
            if isinstance(subject.namespace, str):
                namespaces.add(subject.namespace)
        for watched in (rt, None):
            for namespace in namespaces:
                bucket = self._buckets.get((watched, namespace))
                if bucket is not None:
                    bucket.collect(subjects, found)
        return [found[seq] for seq in sorted(found)]


def _typed(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a stored object with ``kind`` and ``apiVersion`` first."""
    typed: dict[str, Any] = {"kind": rt.kind, "apiVersion": rt.group_version}
    for key, value in obj.items():
        if key not in ("kind", "apiVersion"):
            typed[key] = copy.deepcopy(value)
    return typed


def _untyped(obj: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of a stored object as a list item (no ``kind``/``apiVersion``)."""
    return {k: copy.deepcopy(v) for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _details(name: str, rt: ResourceType, kind: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if rt.group:
        details["group"] = rt.group
    details["kind"] = kind if kind is not None else rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    """kube's 404 ``NotFound``: ``pods "x" not found``."""
    return ApiError(
        404, f'{rt.qualified_resource()} "{name}" not found', "NotFound", _details(name, rt)
    )


def already_exists(rt: ResourceType, name: str) -> ApiError:
    """kube's 409 ``AlreadyExists``: ``pods "x" already exists``."""
    return ApiError(
        409,
        f'{rt.qualified_resource()} "{name}" already exists',
        "AlreadyExists",
        _details(name, rt),
    )


def conflict(rt: ResourceType, name: str) -> ApiError:
    """kube's 409 ``Conflict`` for a stale resourceVersion."""
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rt.qualified_resource()} "{name}": the object has '
        "been modified; please apply your changes to the latest version and try again",
        "Conflict",
        _details(name, rt),
    )


def method_not_supported(rt: ResourceType, verb: str) -> ApiError:
    """kube's 405 ``MethodNotAllowed`` for a verb a resource does not serve."""
    return ApiError(
        405,
        f'{verb} is not supported on resources of kind "{rt.qualified_resource()}"',
        "MethodNotAllowed",
        _details("", rt),
    )


@dataclass(frozen=True)
class FieldError:
    """One validation error: the field path, kube's cause reason and its message."""

    field: str
    reason: str
    message: str

    @classmethod
    def required(cls, field: str, detail: str = "") -> FieldError:
        """``field.Required``."""
        return cls(
            field, "FieldValueRequired", "Required value" + (f": {detail}" if detail else "")
        )

    @classmethod
    def invalid(cls, field: str, value: str, detail: str) -> FieldError:
        """``field.Invalid`` of a string value."""
        return cls(field, "FieldValueInvalid", f"Invalid value: {go_quote(value)}: {detail}")


def invalid(rt: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    """kube's 422 ``Invalid``: ``Pod "x" is invalid: field: message`` with causes."""
    texts = [f"{e.field}: {e.message}" for e in errors]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(
        422,
        f'{rt.qualified_kind()} "{name}" is invalid: {summary}',
        "Invalid",
        {
            **_details(name, rt, rt.kind),
            "causes": [
                {"reason": e.reason, "message": e.message, "field": e.field} for e in errors
            ],
        },
    )


def _bad_request(message: str) -> ApiError:
    return ApiError(400, message, "BadRequest")


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    metadata = obj.get("metadata")
    if metadata is None:
        metadata = obj["metadata"] = {}
    if not isinstance(metadata, dict):
        raise _bad_request("metadata must be an object")
    return metadata


_NAME_RULES: dict[str, Callable[[str], list[str]]] = {
    "subdomain": dns1123_subdomain_errors,
    "label": dns1123_label_errors,
    "dns1035": dns1035_label_errors,
}


class Store:
    """An in-memory kube-apiserver registry for the resource types of a catalog."""

    def __init__(
        self,
        catalog: Catalog = CATALOG,
        *,
        clock: Callable[[], float] = time.time,
        history: int = 10_000,
        rng: random.Random | None = None,
        node_name: str = "sim-node",
        ca_bundle: str = "",
    ) -> None:
        self.catalog = catalog
        self.clock = clock
        self.node_name = node_name
        self.ca_bundle = ca_bundle
        self._rng = rng if rng is not None else random.Random()  # noqa: S311 - not crypto
        self._rv = 0
        self._objects: dict[ResourceType, dict[tuple[str, str], dict[str, Any]]] = {
            rt: {} for rt in catalog if rt.stored
        }
        self._history: deque[_Change] = deque(maxlen=max(history, 1))
        self._floor = 0
        self._watchers = WatchIndex()
        self._bootstrap()

    # --- bootstrap -------------------------------------------------------------

    def _type(self, group: str, plural: str) -> ResourceType | None:
        for rt in self._objects:
            if (rt.group, rt.plural) == (group, plural):
                return rt
        return None

    def _bootstrap(self) -> None:
        namespaces = self._type("", "namespaces")
        if namespaces is not None:
            for name in SYSTEM_NAMESPACES:
                self.create(namespaces, None, {"metadata": {"name": name}})
        services = self._type("", "services")
        if services is not None and namespaces is not None:
            self.create(
                services,
                "default",
                {
                    "metadata": {
                        "name": "kubernetes",
                        "labels": {"component": "apiserver", "provider": "kubernetes"},
                    },
                    "spec": {
                        "clusterIP": str(SERVICE_CIDR.network_address + 1),
                        "ports": [
                            {"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}
                        ],
                    },
                },
            )

    def _namespace_content(self, namespace: str) -> None:
        """What kube's controllers create in every namespace."""
        accounts = self._type("", "serviceaccounts")
        if accounts is not None:
            self.create(accounts, namespace, {"metadata": {"name": "default"}})
        configmaps = self._type("", "configmaps")
        if configmaps is not None:
            self.create(
                configmaps,
                namespace,
                {
                    "metadata": {
                        "name": "kube-root-ca.crt",
                        "annotations": {"kubernetes.io/description": _ROOT_CA_DESCRIPTION},
                    },
                    "data": {"ca.crt": self.ca_bundle},
                },
            )

    # --- plumbing ----------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        """The resourceVersion of the latest write (one counter for every type)."""
        return self._rv

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], dict[str, Any]]:
        bucket = self._objects.get(rt)
        if bucket is None:
            raise method_not_supported(rt, "get")
        return bucket

    def _require(self, rt: ResourceType, verb: str) -> dict[tuple[str, str], dict[str, Any]]:
        if verb not in rt.verbs or rt not in self._objects:
            raise method_not_supported(rt, verb)
        return self._objects[rt]

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return (namespace or "") if rt.namespaced else "", name

    def _now(self) -> str:
        return format_timestamp(self.clock())

    def _uid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def _record(
        self, change_type: str, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None
    ) -> None:
        if len(self._history) == self._history.maxlen:
            self._floor = self._history[0].resource_version
        change = _Change(self._rv, change_type, rt, obj, old)
        self._history.append(change)
        if not self._watchers:
            return
        now = _Subject(rt, obj)
        before = _Subject(rt, old) if old is not None and change_type == "MODIFIED" else None
        subjects = (now,) if before is None else (now, before)
        memos: dict[str, dict[Hashable, Any]] = {}
        for watcher in self._watchers.candidates(rt, subjects):
            if watcher.active:
                kind = watcher._kind_for(change, now, before)
                if kind is not None:
                    memo = memos.setdefault(kind, {})
                    watcher._deliver(WatchEvent(kind, obj, rt, memo))

    def _remove_watcher(self, watcher: Watcher) -> None:
        self._watchers.remove(watcher)

    def _namespace_exists(self, namespace: str) -> bool:
        namespaces = self._type("", "namespaces")
        return namespaces is None or ("", namespace) in self._objects[namespaces]

    # --- reads -------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        """The object, with ``kind`` and ``apiVersion``; 404 ``NotFound`` if missing."""
        bucket = self._require(rt, "get")
        obj = bucket.get(self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return _typed(rt, obj)

    def _matching(
        self,
        rt: ResourceType,
        namespace: str | None,
        labels: LabelSelector,
        fields: FieldSelector,
    ) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        bucket = self._bucket(rt)
        for key in sorted(bucket):
            if rt.namespaced and namespace is not None and key[0] != namespace:
                continue
            obj = bucket[key]
            if not labels.matches(obj["metadata"].get("labels")):
                continue
            if not fields.empty and not fields.matches(object_fields(rt.group, rt.kind, obj)):
                continue
            yield key, obj

    @staticmethod
    def _selectors(
        rt: ResourceType | None, label_selector: str, field_selector: str
    ) -> tuple[LabelSelector, FieldSelector]:
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector)
        check_field_selector(fields, rt.group if rt else "", rt.kind if rt else "")
        return labels, fields

    def list(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
    ) -> dict[str, Any]:
        """A ``XxxList`` of the matching objects, sorted by namespace and name.

        ``namespace`` ``None`` lists every namespace.  With ``limit``, the list
        stops after that many items and carries ``metadata.continue`` (and
        ``remainingItemCount`` when no selector filters, as kube does).
        """
        self._require(rt, "list")
        labels, fields = self._selectors(rt, label_selector, field_selector)
        resource_version = self._rv
        start = ""
        if continue_token:
            resource_version, start = decode_continue(continue_token)
        items: list[dict[str, Any]] = []
        last_key = ("", "")
        token = ""
        remaining: int | None = None
        matches = self._matching(rt, namespace, labels, fields)
        for key, obj in matches:
            flat = _flat_key(key)
            if start and flat < start:
                continue
            if limit > 0 and len(items) == limit:
                token = encode_continue(resource_version, _flat_key(last_key) + "\0")
                rest = 1 + sum(1 for _ in matches)
                if labels.empty and fields.empty:
                    remaining = rest
                break
            items.append(_untyped(obj))
            last_key = key
        metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
        if token:
            metadata["continue"] = token
        if remaining is not None:
            metadata["remainingItemCount"] = remaining
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.group_version,
            "metadata": metadata,
            "items": items,
        }

    # --- writes --------------------------------------------------------------------

    def create(
        self,
        rt: ResourceType,
        namespace: str | None,
        obj: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Create an object; the stored object comes back with ``kind``/``apiVersion``.

        Errors: 400 for a body namespace that differs from ``namespace`` or a
        set resourceVersion; 422 ``Invalid`` for a missing or bad name or
        labels (and the few validations of :meth:`_validate`); 404 when the
        namespace does not exist; 409 ``AlreadyExists``.
        """
        bucket = self._require(rt, "create")
        new = copy.deepcopy(obj)
        metadata = _metadata(new)
        self._place(rt, namespace, metadata)
        if metadata.get("resourceVersion"):
            raise _bad_request("resourceVersion should not be set on objects to be created")
        if not metadata.get("name"):
            prefix = metadata.get("generateName")
            if not prefix:
                raise invalid(
                    rt,
                    "",
                    [FieldError.required("metadata.name", "name or generateName is required")],
                )
            metadata["name"] = self._generate_name(rt, bucket, metadata.get("namespace"), prefix)
        name = metadata["name"]
        self._validate(rt, new)
        if rt.namespaced and not self._namespace_exists(metadata["namespace"]):
            namespaces = self._type("", "namespaces")
            assert namespaces is not None
            raise not_found(namespaces, metadata["namespace"])
        key = self._key(rt, metadata.get("namespace"), name)
        if key in bucket:
            raise already_exists(rt, name)
        for system in ("uid", "creationTimestamp", "deletionTimestamp", "selfLink"):
            metadata.pop(system, None)
        metadata["uid"] = self._uid()
        metadata["creationTimestamp"] = self._now()
        self._default(rt, new, None)
        _order_metadata(metadata)
        if dry_run:
            return _typed(rt, new)
        self._rv += 1
        metadata["resourceVersion"] = str(self._rv)
        _order_metadata(metadata)
        stored = _typed(rt, new)
        bucket[key] = stored
        self._record("ADDED", rt, stored, None)
        if (rt.group, rt.plural) == ("", "namespaces"):
            self._namespace_content(name)
        return _typed(rt, stored)

    def _place(self, rt: ResourceType, namespace: str | None, metadata: dict[str, Any]) -> None:
        """Set (or clear) ``metadata.namespace`` from the request's namespace."""
        if not rt.namespaced:
            metadata.pop("namespace", None)
            return
        body_namespace = metadata.get("namespace")
        if body_namespace and namespace and body_namespace != namespace:
            raise _bad_request(
                "the namespace of the provided object does not match the namespace sent on the "
                "request"
            )
        metadata["namespace"] = namespace or body_namespace or "default"

    def _generate_name(
        self,
        rt: ResourceType,
        bucket: dict[tuple[str, str], Any],
        namespace: str | None,
        prefix: str,
    ) -> str:
        prefix = prefix[: 63 - 5]
        for _ in range(100):
            suffix = "".join(self._rng.choice(GENERATE_NAME_ALPHABET) for _ in range(5))
            if self._key(rt, namespace, prefix + suffix) not in bucket:
                return prefix + suffix
        raise already_exists(rt, prefix)  # pragma: no cover - 27**5 names

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        obj: dict[str, Any],
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Replace an object (PUT).

        An empty ``metadata.resourceVersion`` updates unconditionally; a stale
        one is a 409 ``Conflict``.  System metadata (uid, creationTimestamp) is
        kept, ``status`` too for resources with a status subresource, and
        deployments get a new ``generation`` when their spec changes.  An
        update that changes nothing writes nothing.
        """
        bucket = self._require(rt, "update")
        new = copy.deepcopy(obj)
        metadata = _metadata(new)
        self._place(rt, namespace, metadata)
        if metadata.get("name") != name:
            raise _bad_request(
                f"the name of the object ({metadata.get('name', '')}) does not match the name on "
                f"the URL ({name})"
            )
        key = self._key(rt, metadata.get("namespace"), name)
        old = bucket.get(key)
        if old is None:
            if rt.allow_create_on_update:
                metadata.pop("resourceVersion", None)
                return self.create(rt, namespace, new, dry_run=dry_run)
            raise not_found(rt, name)
        wanted_rv = metadata.get("resourceVersion")
        if wanted_rv and wanted_rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name)
        self._validate(rt, new)
        old_meta = old["metadata"]
        for system in ("uid", "creationTimestamp", "deletionTimestamp", "generation"):
            if system in old_meta:
                metadata[system] = old_meta[system]
            else:
                metadata.pop(system, None)
        metadata["resourceVersion"] = old_meta["resourceVersion"]
        if rt.has_status:
            if "status" in old:
                new["status"] = copy.deepcopy(old["status"])
            else:
                new.pop("status", None)
        self._default(rt, new, old)
        if "generation" in metadata and new.get("spec") != old.get("spec"):
            metadata["generation"] = int(metadata["generation"]) + 1
        _order_metadata(metadata)
        typed = _typed(rt, new)
        if typed == old:
            return _typed(rt, old)
        if dry_run:
            return typed
        return self._replace(rt, key, typed, old)

    def _replace(
        self, rt: ResourceType, key: tuple[str, str], new: dict[str, Any], old: dict[str, Any]
    ) -> dict[str, Any]:
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[rt][key] = new
        self._record("MODIFIED", rt, new, old)
        return _typed(rt, new)

    def update_status(
        self, rt: ResourceType, namespace: str | None, name: str, status: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace an object's ``status`` (the kubelet's and controllers' write)."""
        bucket = self._bucket(rt)
        key = self._key(rt, namespace, name)
        old = bucket.get(key)
        if old is None:
            raise not_found(rt, name)
        new = _typed(rt, old)
        new["status"] = copy.deepcopy(status)
        if new == old:
            return _typed(rt, old)
        return self._replace(rt, key, new, old)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        content_type: str,
        body: bytes,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Patch an object (merge, JSON, strategic merge or apply patch).

        The patched object then goes through :meth:`update` (a patch that sets
        a stale resourceVersion conflicts).  An apply patch of a missing object
        creates it, as server-side apply does; other patches of a missing
        object are 404.  415 for an unsupported ``content_type``.
        """
        bucket = self._require(rt, "patch")
        media_type = content_type.split(";", 1)[0].strip().lower()
        if media_type not in patches.PATCH_TYPES:
            raise patches.unsupported_media_type()
        old = bucket.get(self._key(rt, namespace, name))
        if old is None:
            if media_type != patches.APPLY_PATCH:
                raise not_found(rt, name)
            document = patches.apply(media_type, {}, body)
            meta = _metadata(document)
            if meta.get("name") != name:
                raise _bad_request(
                    f"the name of the object ({meta.get('name', '')}) does not match the name on "
                    f"the URL ({name})"
                )
            return self.create(rt, namespace, document, dry_run=dry_run)
        patched = patches.apply(media_type, _typed(rt, old), body)
        return self.update(rt, namespace, name, patched, dry_run=dry_run)

    def delete(
        self, rt: ResourceType, namespace: str | None, name: str, *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Delete an object and return it (with the deletion's resourceVersion).

        Deleting a namespace first marks it ``Terminating`` (a ``MODIFIED``
        event), deletes everything in it (a ``DELETED`` event each), then the
        namespace itself; ``default``, ``kube-system`` and ``kube-public`` are
        403 ``Forbidden``.
        """
        bucket = self._require(rt, "delete")
        key = self._key(rt, namespace, name)
        old = bucket.get(key)
        if old is None:
            raise not_found(rt, name)
        is_namespace = (rt.group, rt.plural) == ("", "namespaces")
        if is_namespace and name in PROTECTED_NAMESPACES:
            raise ApiError(
                403,
                f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                "Forbidden",
                _details(name, rt),
            )
        if dry_run:
            return _typed(rt, old)
        if is_namespace:
            terminating = _typed(rt, old)
            terminating["metadata"]["deletionTimestamp"] = self._now()
            _order_metadata(terminating["metadata"])
            terminating.setdefault("status", {})["phase"] = "Terminating"
            self._replace(rt, key, terminating, old)
            for other in self._objects:
                if other.namespaced:
                    for other_key in [k for k in self._objects[other] if k[0] == name]:
                        self._remove(other, other_key)
        return self._remove(rt, key)

    def _remove(self, rt: ResourceType, key: tuple[str, str]) -> dict[str, Any]:
        obj = self._objects[rt].pop(key)
        self._rv += 1
        deleted = _typed(rt, obj)
        deleted["metadata"]["resourceVersion"] = str(self._rv)
        self._record("DELETED", rt, deleted, None)
        return _typed(rt, deleted)

    def delete_collection(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
    ) -> dict[str, Any]:
        """Delete every matching object; a ``XxxList`` of the deleted objects."""
        self._require(rt, "deletecollection")
        labels, fields = self._selectors(rt, label_selector, field_selector)
        keys = [key for key, _ in self._matching(rt, namespace, labels, fields)]
        items = [_untyped(self._remove(rt, key)) for key in keys]
        return {
            "kind": rt.list_kind,
            "apiVersion": rt.group_version,
            "metadata": {"resourceVersion": str(self._rv)},
            "items": items,
        }

    # --- watch ------------------------------------------------------------------------

    def watch(
        self,
        rt: ResourceType | None,
        namespace: str | None,
        *,
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
        callback: WatchCallback,
    ) -> Watcher:
        """Watch changes; ``callback`` gets each :class:`WatchEvent` synchronously.

        ``resource_version`` ``""`` or ``"0"``: first a synthetic ``ADDED`` for
        every current match, then live events.  ``"N"``: every change after N
        from the history, then live ones; when the history no longer reaches
        back to N, 410 ``Expired`` (``too old resource version: N (M)``).
        ``rt`` ``None`` watches every type.  A change that makes an object
        start or stop matching the selectors arrives as ``ADDED``/``DELETED``.
        """
        if rt is not None:
            self._require(rt, "watch")
        labels, fields = self._selectors(rt, label_selector, field_selector)
        start: int | None = None
        if resource_version not in ("", "0"):
            try:
                start = int(resource_version)
                if start < 0:
                    raise ValueError(resource_version)
            except ValueError:
                raise _bad_request(f"invalid resource version: {resource_version}") from None
            if start < self._floor:
                raise ApiError(410, f"too old resource version: {start} ({self._floor})", "Expired")
        watcher = Watcher(self, rt, namespace, labels, fields, callback)
        if start is None:
            types = [rt] if rt is not None else list(self._objects)
            for each in types:
                for _, obj in self._matching(each, namespace, labels, fields):
                    watcher._deliver(WatchEvent("ADDED", obj, each))
        else:
            for change in list(self._history):
                if change.resource_version > start:
                    event = watcher._event_for(change)
                    if event is not None:
                        watcher._deliver(event)
        if watcher.active:
            self._watchers.add(watcher)
        return watcher

    # --- kinds: validation and defaults -----------------------------------------------

    def _validate(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        metadata = obj["metadata"]
        name = str(metadata.get("name", ""))
        errors: list[FieldError] = []
        name_errors = _NAME_RULES[rt.name_rule](name)
        if name_errors:
            errors.append(FieldError.invalid("metadata.name", name, "; ".join(name_errors)))
        labels = metadata.get("labels") or {}
        if not isinstance(labels, dict):
            raise _bad_request("metadata.labels must be an object")
        for key, value in labels.items():
            key_errors = qualified_name_errors(key)
            if key_errors:
                errors.append(FieldError.invalid("metadata.labels", key, "; ".join(key_errors)))
            value_errors = label_value_errors(str(value))
            if value_errors:
                errors.append(
                    FieldError.invalid("metadata.labels", str(value), "; ".join(value_errors))
                )
        spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        if (rt.group, rt.kind) == ("", "Pod"):
            errors.extend(_container_errors(spec, "spec"))
        elif (rt.group, rt.kind) in (("apps", "Deployment"), ("apps", "ReplicaSet")):
            errors.extend(_deployment_errors(spec))
        elif (rt.group, rt.kind) == ("", "Service"):
            kind = spec.get("type", "ClusterIP")
            if kind != "ExternalName" and spec.get("clusterIP") != "None" and not spec.get("ports"):
                errors.append(FieldError.required("spec.ports"))
        if errors:
            raise invalid(rt, name, errors)

    def _default(self, rt: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Add the defaults kube's API types (and admission) add."""
        kind = (rt.group, rt.kind)
        if kind == ("", "Namespace"):
            obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj[
                "metadata"
            ]["name"]
            obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            if old is None:
                obj["status"] = {"phase": "Active"}
        elif kind == ("", "Pod"):
            self._default_pod(obj, old)
        elif kind == ("", "Service"):
            self._default_service(obj, old)
        elif kind == ("apps", "Deployment"):
            _default_deployment(obj, old)
        elif kind == ("apps", "ReplicaSet"):
            _default_replica_set(obj, old)
        elif kind == ("", "Secret"):
            _default_secret(obj)
        elif kind == ("", "Event"):
            for field in ("eventTime", "firstTimestamp", "lastTimestamp"):
                obj.setdefault(field, None)
            obj.setdefault("reportingComponent", "")
            obj.setdefault("reportingInstance", "")

    def _default_pod(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = obj.setdefault("spec", {})
        _default_pod_spec(spec)
        spec.setdefault("serviceAccountName", "default")
        spec.setdefault("serviceAccount", spec["serviceAccountName"])
        spec.setdefault("enableServiceLinks", True)
        spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
        spec.setdefault("priority", 0)
        if old is not None:
            for carried in ("nodeName", "tolerations"):
                if carried in old["spec"] and carried not in spec:
                    spec[carried] = copy.deepcopy(old["spec"][carried])
        else:
            spec.setdefault("nodeName", self.node_name)
            spec.setdefault(
                "tolerations",
                [
                    {
                        "key": f"node.kubernetes.io/{taint}",
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                    for taint in ("not-ready", "unreachable")
                ],
            )
            conditions = []
            if spec.get("nodeName"):
                conditions.append(
                    {
                        "type": "PodScheduled",
                        "status": "True",
                        "lastProbeTime": None,
                        "lastTransitionTime": self._now(),
                    }
                )
            obj["status"] = {
                "phase": "Pending",
                "conditions": conditions,
                "qosClass": _qos_class(spec),
            }

    def _default_service(self, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        spec = obj.setdefault("spec", {})
        old_spec = (old or {}).get("spec") or {}
        kind = spec.setdefault("type", "ClusterIP")
        for port in spec.get("ports") or []:
            port.setdefault("protocol", "TCP")
            if kind != "ExternalName":
                port.setdefault("targetPort", port.get("port"))
        if kind != "ExternalName":
            spec.setdefault("sessionAffinity", "None")
            if not spec.get("clusterIP"):
                spec["clusterIP"] = old_spec.get("clusterIP") or self._allocate_cluster_ip()
            spec.setdefault("clusterIPs", [spec["clusterIP"]])
            if spec["clusterIP"] != "None":
                spec.setdefault("ipFamilies", ["IPv4"])
                spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("internalTrafficPolicy", "Cluster")
        if kind in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
            old_ports = {p.get("port"): p.get("nodePort") for p in old_spec.get("ports") or []}
            for port in spec.get("ports") or []:
                if not port.get("nodePort"):
                    port["nodePort"] = old_ports.get(port.get("port")) or self._allocate_node_port()
        if kind == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)
        if old is None:
            obj["status"] = {"loadBalancer": {}}

    def _services(self) -> Iterator[dict[str, Any]]:
        services = self._type("", "services")
        if services is not None:
            yield from self._objects[services].values()

    def _allocate_cluster_ip(self) -> str:
        used = {s["spec"].get("clusterIP") for s in self._services()}
        hosts = SERVICE_CIDR.num_addresses - 2
        while True:
            ip = str(SERVICE_CIDR.network_address + 1 + self._rng.randrange(hosts))
            if ip not in used:
                return ip

    def _allocate_node_port(self) -> int:
        used = {p.get("nodePort") for s in self._services() for p in s["spec"].get("ports") or []}
        while True:
            port = self._rng.randrange(30000, 32768)
            if port not in used:
                return port


def _flat_key(key: tuple[str, str]) -> str:
    namespace, name = key
    return f"{namespace}/{name}" if namespace else name


def encode_continue(resource_version: int, start: str) -> str:
    """A continue token as kube-apiserver makes them (base64url JSON, no padding)."""
    raw = json.dumps(
        {"v": "meta.k8s.io/v1", "rv": resource_version, "start": start}, separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    """The resourceVersion and start key of a continue token; 400 if invalid."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError("continue key is not valid: incorrect encoded start resourceVersion")
        resource_version = int(data["rv"])
        start = str(data["start"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as e:
        raise _bad_request(f"invalid continue token: {e}") from None
    return resource_version, start


_METADATA_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
)


def _order_metadata(metadata: dict[str, Any]) -> None:
    """Put metadata fields in the order kube's JSON encoder writes them."""
    ordered = {k: metadata[k] for k in _METADATA_ORDER if k in metadata}
    ordered.update({k: v for k, v in metadata.items() if k not in ordered})
    metadata.clear()
    metadata.update(ordered)


def _container_errors(spec: dict[str, Any], path: str) -> list[FieldError]:
    containers = spec.get("containers")
    if not containers:
        return [FieldError.required(f"{path}.containers")]
    errors = []
    for i, container in enumerate(containers):
        if not isinstance(container, dict):
            errors.append(FieldError.required(f"{path}.containers[{i}]"))
            continue
        if not container.get("name"):
            errors.append(FieldError.required(f"{path}.containers[{i}].name"))
        if not container.get("image"):
            errors.append(FieldError.required(f"{path}.containers[{i}].image"))
    return errors


def _deployment_errors(spec: dict[str, Any]) -> list[FieldError]:
    errors = []
    template = spec.get("template") or {}
    selector = spec.get("selector")
    if not selector:
        errors.append(FieldError.required("spec.selector"))
    else:
        labels = (template.get("metadata") or {}).get("labels") or {}
        try:
            matches = label_selector_from_object(selector).matches(labels)
        except ValueError:
            matches = False
        if not matches:
            shown = (
                "map[string]string{"
                + ", ".join(f"{go_quote(k)}:{go_quote(str(v))}" for k, v in sorted(labels.items()))
                + "}"
            )
            errors.append(
                FieldError(
                    "spec.template.metadata.labels",
                    "FieldValueInvalid",
                    f"Invalid value: {shown}: `selector` does not match template `labels`",
                )
            )
    errors.extend(_container_errors(template.get("spec") or {}, "spec.template.spec"))
    return errors


def _default_container(container: dict[str, Any]) -> None:
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    image = str(container.get("image", ""))
    tagged = ":" in image.rsplit("/", 1)[-1] or "@" in image
    latest = image.endswith(":latest") or not tagged
    container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")


def _default_pod_spec(spec: dict[str, Any]) -> None:
    for field in ("initContainers", "containers"):
        for container in spec.get(field) or []:
            if isinstance(container, dict):
                _default_container(container)
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")


def _qos_class(spec: dict[str, Any]) -> str:
    containers = [c for c in spec.get("containers") or [] if isinstance(c, dict)]
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    for r in resources:
        limits = r.get("limits") or {}
        requests = r.get("requests") or limits
        for resource in ("cpu", "memory"):
            if resource not in limits or requests.get(resource) != limits[resource]:
                return "Burstable"
    return "Guaranteed"


def _default_deployment(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    _default_pod_spec(template.setdefault("spec", {}))
    if old is None:
        obj["metadata"]["generation"] = 1
        obj["status"] = {}


def _default_replica_set(obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("replicas", 1)
    template = spec.setdefault("template", {})
    template.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    _default_pod_spec(template.setdefault("spec", {}))
    if old is None:
        obj["metadata"]["generation"] = 1
        obj["status"] = {"replicas": 0}


def _default_secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = obj.setdefault("data", {})
        for key, value in string_data.items():
            data[key] = base64.b64encode(str(value).encode()).decode()
