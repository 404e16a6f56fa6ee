"""Events as kube's scheduler and kubelet record them, and their two API shapes.

The simulator's :class:`~karpor.sim.kubelet.Kubelet` records, through an
:class:`EventRecorder`, what a cluster shows in ``kubectl describe pod`` and
``kubectl get events``: ``Scheduled`` (from ``default-scheduler``, written
as the scheduler writes it through ``events.k8s.io/v1``: ``eventTime``,
``reportingController``, ``action: Binding``), then per container
``Pulling``/``Pulled``, ``Created`` and ``Started`` (from the ``kubelet``,
as its ``core/v1`` recorder writes them: ``source``, ``firstTimestamp``,
``lastTimestamp``, ``count``), and ``Killing`` when a started pod is
deleted.  The simulator's controllers record theirs the same way
(:func:`controller_event`): ``ScalingReplicaSet`` on Deployments,
``SuccessfulCreate`` and ``SuccessfulDelete`` on ReplicaSets.

Events are stored once, as ``core/v1`` ``Event`` objects;
``events.k8s.io/v1`` is a view of the same objects (:func:`to_events_v1`,
:func:`from_events_v1`), as kube-apiserver converts between the two.  Like
kube-apiserver's ``--event-ttl`` (1 h), the recorder deletes the events it
wrote once they are older than ``ttl`` (checked as it records, no timer), so
a long run does not grow without bound.

The builders (:func:`scheduled_event`, :func:`kubelet_event`,
:func:`container_events`) are plain functions of their inputs.
"""

from __future__ import annotations

import collections
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from karpor.kube.status import ApiError
from karpor.sim.logs import format_rfc3339
from karpor.sim.resources import CATALOG, Catalog, ResourceType
from karpor.sim.store import Store

#: kube-apiserver's default ``--event-ttl``
DEFAULT_EVENT_TTL = 3600.0
SCHEDULER = "default-scheduler"
KUBELET = "kubelet"


def format_micro_time(t: float) -> str:
    """``t`` as kube writes a ``metav1.MicroTime`` (``2024-08-13T07:28:49.123456Z``)."""
    whole = math.floor(t)
    micros = round((t - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, 0
    return format_rfc3339(whole)[:-1] + f".{micros:06d}Z"


def involved_object(pod: dict[str, Any], field_path: str = "") -> dict[str, Any]:
    """The ``involvedObject`` (``regarding``) reference to a pod."""
    meta = pod.get("metadata") or {}
    ref: dict[str, Any] = {
        "kind": "Pod",
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "apiVersion": "v1",
        "resourceVersion": meta.get("resourceVersion", ""),
    }
    if field_path:
        ref["fieldPath"] = field_path
    return ref


def event_name(object_name: str, now: float, sequence: int) -> str:
    """``NAME.HEX`` as kube names events (the hex of the Unix time in nanoseconds;
    ``sequence`` keeps two events of one instant apart)."""
    return f"{object_name}.{int(now * 1e9) + sequence:x}"


def scheduled_event(pod: dict[str, Any], node: str, now: float, name: str) -> dict[str, Any]:
    """The scheduler's ``Scheduled`` event for ``pod`` bound to ``node``."""
    meta = pod.get("metadata") or {}
    return {
        "metadata": {"name": name, "namespace": meta.get("namespace", "")},
        "involvedObject": involved_object(pod),
        "reason": "Scheduled",
        "message": f"Successfully assigned {meta.get('namespace', '')}/{meta.get('name', '')} "
        f"to {node}",
        "source": {},
        "firstTimestamp": None,
        "lastTimestamp": None,
        "type": "Normal",
        "eventTime": format_micro_time(now),
        "action": "Binding",
        "reportingComponent": SCHEDULER,
        "reportingInstance": f"{SCHEDULER}-{node}",
    }


def kubelet_event(
    pod: dict[str, Any],
    node: str,
    now: float,
    name: str,
    *,
    reason: str,
    message: str,
    field_path: str = "",
    type_: str = "Normal",
) -> dict[str, Any]:
    """An event the kubelet records about ``pod`` (``core/v1`` style)."""
    meta = pod.get("metadata") or {}
    stamp = format_rfc3339(now)
    return {
        "metadata": {"name": name, "namespace": meta.get("namespace", "")},
        "involvedObject": involved_object(pod, field_path),
        "reason": reason,
        "message": message,
        "source": {"component": KUBELET, "host": node},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": type_,
        "eventTime": None,
        "reportingComponent": KUBELET,
        "reportingInstance": node,
    }


def controller_event(
    obj: dict[str, Any],
    component: str,
    now: float,
    name: str,
    *,
    reason: str,
    message: str,
) -> dict[str, Any]:
    """An event a controller (``deployment-controller``, ``replicaset-controller``)
    records about ``obj``, an ``apps/v1`` object (``core/v1`` style)."""
    meta = obj.get("metadata") or {}
    stamp = format_rfc3339(now)
    return {
        "metadata": {"name": name, "namespace": meta.get("namespace", "")},
        "involvedObject": {
            "kind": obj.get("kind", ""),
            "namespace": meta.get("namespace", ""),
            "name": meta.get("name", ""),
            "uid": meta.get("uid", ""),
            "apiVersion": obj.get("apiVersion", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": reason,
        "message": message,
        "source": {"component": component},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": "Normal",
        "eventTime": None,
        "reportingComponent": component,
        "reportingInstance": "",
    }


def container_events(pod: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(reason, message, fieldPath)`` of what the kubelet records starting
    ``pod``'s containers: the image pull (or that it is present), created, started."""
    out: list[tuple[str, str, str]] = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        name = str(container.get("name", ""))
        image = str(container.get("image", ""))
        path = f"spec.containers{{{name}}}"
        if container.get("imagePullPolicy") == "Always":
            out.append(("Pulling", f'Pulling image "{image}"', path))
            out.append(
                (
                    "Pulled",
                    f'Successfully pulled image "{image}" in 0s (0s including waiting). '
                    "Image size: 0 bytes.",
                    path,
                )
            )
        else:
            out.append(("Pulled", f'Container image "{image}" already present on machine', path))
        out.append(("Created", f"Created container {name}", path))
        out.append(("Started", f"Started container {name}", path))
    return out


def killing_events(pod: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(reason, message, fieldPath)`` of what the kubelet records stopping ``pod``."""
    return [
        (
            "Killing",
            f"Stopping container {c.get('name', '')}",
            f"spec.containers{{{c.get('name')}}}",
        )
        for c in (pod.get("spec") or {}).get("containers") or []
    ]


# -- the two API shapes -------------------------------------------------------------

#: ``events.k8s.io/v1`` field ← ``core/v1`` field (the same in both when absent)
_V1_FIELDS = (
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)
_COMMON = ("metadata", "reason", "type", "eventTime", "series", "action", "related")


def to_events_v1(event: dict[str, Any]) -> dict[str, Any]:
    """A stored ``core/v1`` Event as ``events.k8s.io/v1`` shows it."""
    out: dict[str, Any] = {"kind": "Event", "apiVersion": "events.k8s.io/v1"}
    for name in _COMMON:
        if name in event:
            out[name] = event[name]
    out["reportingController"] = event.get("reportingComponent", "")
    out["reportingInstance"] = event.get("reportingInstance", "")
    for new, old in _V1_FIELDS:
        if new == "reportingController":
            continue
        value = event.get(old)
        if value not in (None, {}, "", 0):
            out[new] = value
    return out


def from_events_v1(event: dict[str, Any]) -> dict[str, Any]:
    """An ``events.k8s.io/v1`` Event as the ``core/v1`` object stored."""
    out: dict[str, Any] = {"kind": "Event", "apiVersion": "v1"}
    for name in _COMMON:
        if name in event:
            out[name] = event[name]
    for new, old in _V1_FIELDS:
        if new in event:
            out[old] = event[new]
    out["reportingInstance"] = event.get("reportingInstance", "")
    return out


@dataclass(frozen=True)
class View:
    """A resource served from another's stored objects, converted both ways."""

    #: the resource whose objects are stored
    stored: ResourceType
    #: a stored object as the view shows it
    show: Callable[[dict[str, Any]], dict[str, Any]]
    #: an object of the view as it is stored
    store_form: Callable[[dict[str, Any]], dict[str, Any]]


def views(catalog: Catalog = CATALOG) -> dict[ResourceType, View]:
    """The resources of ``catalog`` served as views: ``events.k8s.io/v1`` events."""
    core = catalog.lookup("", "v1", "events")
    modern = catalog.lookup("events.k8s.io", "v1", "events")
    if core is None or modern is None:
        return {}
    return {modern: View(core, to_events_v1, from_events_v1)}


class EventRecorder:
    """Writes events into a store; forgets (deletes) its events after ``ttl`` seconds."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        reactor: IReactorTime,
        *,
        ttl: float = DEFAULT_EVENT_TTL,
        catalog: Catalog = CATALOG,
    ) -> None:
        events = catalog.lookup("", "v1", "events")
        assert events is not None, "the catalog has no events"
        self._events = events
        self.store = store
        self.reactor = reactor
        self.ttl = ttl
        self._sequence = 0
        #: (recorded at, namespace, name), oldest first
        self._written: collections.deque[tuple[float, str, str]] = collections.deque()

    def next_name(self, object_name: str) -> str:
        """A fresh event name for an event about ``object_name``."""
        self._sequence += 1
        return event_name(object_name, self.reactor.seconds(), self._sequence)

    def record(self, event: dict[str, Any]) -> None:
        """Store ``event`` (errors, e.g. its namespace being gone, are dropped)."""
        now = self.reactor.seconds()
        self._expire(now)
        namespace = str(event["metadata"].get("namespace", ""))
        try:
            created = self.store.create(self._events, namespace, event)
        except ApiError as err:
            self.log.debug("events: not recorded: {err}", err=err)
            return
        self._written.append((now, namespace, str(created["metadata"]["name"])))

    def _expire(self, now: float) -> None:
        while self._written and self._written[0][0] + self.ttl <= now:
            _, namespace, name = self._written.popleft()
            # already gone (deleted by a client, or with its namespace): no matter
            with contextlib.suppress(ApiError):
                self.store.delete(self._events, namespace, name)

    def __len__(self) -> int:
        return len(self._written)
