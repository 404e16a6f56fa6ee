"""The virtual ``clusters`` resource: Cluster objects as the API shows them.

Pure building blocks of ``GET /apis/cluster.karpor.io/v1beta1/clusters``:

* :func:`cluster_object` turns a :class:`~karpor.config.model.Cluster` into the
  Karpor ``Cluster`` object (``kubectl get cluster X -o yaml``): metadata,
  ``spec.provider``/``displayName``/``description``/``impersonate`` and
  ``spec.access`` with the endpoint, the CA (public: ``caBundle`` or
  ``caFile``), ``insecure`` and the credential's *type* only; a token, key or
  credential file path never appears, and ``spec.access`` is left out for a
  caller who may not see where the cluster is (the Table's Endpoint cell
  then reads ``<hidden>``); ``status`` is what this process's
  last health probe found (:mod:`karpor.health.probe`): ``healthy``,
  ``version`` (the server's gitVersion), ``lastProbeTime`` and ``message``
  (only ``message: not probed yet`` before the first probe);
* :func:`cluster_table` builds the ``meta.k8s.io/v1`` ``Table`` kubectl prints
  (Name, Display Name, Provider, Endpoint, Ready, Version, Age, Reach,
  Agent, and with ``-o wide`` Agent Since, Agent Version; Ready is ``True``,
  ``False`` or ``Unknown`` before the first probe; Reach is ``direct`` or ``tunnel``, and for a
  tunnelled cluster Agent says whether its agent is connected to the worker
  that answered, since when and in which version: ``agents``);
* :class:`ClusterCatalog` gives the objects their ``resourceVersion`` and
  ``uid`` and turns successive registry snapshots and health verdicts
  (:meth:`ClusterCatalog.set_status`) into watch events
  (ADDED/MODIFIED/DELETED), keeping a short history so a watch may resume
  from a resourceVersion it was given.

Resource versions: every change of a cluster's definition or of its
health, version or probe message takes a new, higher resourceVersion (a
probe that only moves ``lastProbeTime`` does not: watches are told of
changes, not of every probe); a list's resourceVersion is the latest, or
the time of the list when that is later
(:meth:`ClusterCatalog.list_version`, as kube gives a list the current
revision).  The gateway's own API gives the catalog a ``floor`` of
wall-clock microseconds (:class:`~karpor.gatewayapi.handler.GatewayApi`),
so a resourceVersion is the time this process saw the change or served the
list (one more than the last when the clock has not moved or went back).
That keeps several worker processes (and replicas) consistent enough for
clients, though each loads the clusters directory and probes the clusters
on its own and none shares a counter: a resourceVersion from one worker
means "the state as of that time" to every other.  A watch (or a continued
list) that reaches another worker resumes from that worker's history after
that time, so it may repeat a change both saw (an ADDED or MODIFIED of what
the client already has); it misses one only when one worker saw it before
the list and the other after (a reload reaches every worker within
milliseconds; health verdicts are each worker's own).  A worker that
started after that time has no history reaching back to it: 410 Expired,
and the client lists again, as after a kube-apiserver restart.  The
history keeps the last ``history`` events (256 by default); an older
resourceVersion is a 410 too.  The ``uid`` derives from the name and
creation time, so it is stable for a definition across restarts.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from karpor.config.clusters import credential_type
from karpor.config.model import Cluster
from karpor.config.registry import same_definition
from karpor.health.probe import ClusterStatus
from karpor.kube.discovery import GROUP_VERSION, media_ranges
from karpor.kube.humanize import age, format_timestamp
from karpor.upstream.tunnel import AgentStatus

#: what the clusters Table shows of a tunnelled cluster's agent (by cluster name)
AgentLookup = Callable[[str], AgentStatus]

KIND = "Cluster"
LIST_KIND = "ClusterList"

_UID_NAMESPACE = uuid.UUID("6f1c7c55-3a0e-4f0c-9a57-6b9d0c1b2a10")

#: ``Content-Type`` of a watch stream (kube's ``application/json;stream=watch``)
WATCH_CONTENT_TYPE = "application/json;stream=watch"


#: shown instead of the endpoint to a caller who may not see where a cluster is
HIDDEN = "<hidden>"


@dataclass(frozen=True)
class Entry:
    """A cluster as an API object: its definition with ``uid`` and ``resourceVersion``."""

    cluster: Cluster
    uid: str
    resource_version: int
    #: RFC 3339 creation time (the definition's, else when first seen)
    created: str
    #: the last health probe's verdict (``None``: never probed)
    status: ClusterStatus | None = None


@dataclass(frozen=True)
class Event:
    """A change of the cluster set, as a watch reports it."""

    type: str
    entry: Entry
    #: the object before a MODIFIED event
    previous: Entry | None = None


def _uid(name: str, created: str) -> str:
    return str(uuid.uuid5(_UID_NAMESPACE, f"{name}\0{created}"))


class ClusterCatalog:
    """The clusters as API objects, and their history of changes.

    :meth:`update` takes each new snapshot of the registry (a mapping of name
    to :class:`Cluster`); calling it with the same mapping object again is a
    no-op, so callers may call it on every request.  :meth:`set_status`
    takes each health verdict.  Subscribers are told of every change as it
    is found.
    """

    def __init__(
        self,
        now: Callable[[], float] = time.time,
        history: int = 256,
        floor: Callable[[], int] = lambda: 0,
    ) -> None:
        self._now = now
        self._floor = floor
        self._snapshot: Mapping[str, Cluster] | None = None
        self._entries: dict[str, Entry] = {}
        self._version = floor()
        self._history: deque[tuple[int, Event]] = deque(maxlen=history)
        #: the history holds every event after this resourceVersion
        self._known_since = self._version
        self._subscribers: list[Callable[[Event], None]] = []
        self._statuses: dict[str, ClusterStatus] = {}

    @property
    def resource_version(self) -> int:
        """The latest resourceVersion (that of the last change)."""
        return self._version

    def list_version(self) -> int:
        """The resourceVersion of a list served now: the latest change's, or
        the floor (the time) when that is higher, as kube gives a list the
        current revision; every later change takes a higher one."""
        self._version = max(self._version, self._floor())
        return self._version

    def _bump(self) -> None:
        """The next resourceVersion: one more, or the floor when that is higher."""
        self._version = max(self._version + 1, self._floor())

    def entries(self) -> list[Entry]:
        """The current objects, sorted by name."""
        return [self._entries[name] for name in sorted(self._entries)]

    def get(self, name: str) -> Entry | None:
        """The current object named ``name``."""
        return self._entries.get(name)

    def update(self, clusters: Mapping[str, Cluster]) -> list[Event]:
        """Take a new snapshot; return (and publish) the changes it makes."""
        if clusters is self._snapshot:
            return []
        self._snapshot = clusters
        events: list[Event] = []
        for name in [n for n in self._statuses if n not in clusters]:
            del self._statuses[name]  # removed (perhaps before the catalog ever saw it)
        for name in sorted(self._entries.keys() - clusters.keys()):
            old = self._entries.pop(name)
            self._bump()
            gone = Entry(old.cluster, old.uid, self._version, old.created, old.status)
            events.append(Event("DELETED", gone))
        for name in sorted(clusters):
            cluster = clusters[name]
            previous = self._entries.get(name)
            if previous is not None and same_definition(previous.cluster, cluster):
                # the same definition (perhaps moved to another file): no change
                self._entries[name] = dataclasses.replace(previous, cluster=cluster)
                continue
            self._bump()
            if previous is not None:
                # an edited definition: the same object, modified
                entry = Entry(
                    cluster, previous.uid, self._version, previous.created, previous.status
                )
                events.append(Event("MODIFIED", entry, previous))
            else:
                created = cluster.created or format_timestamp(self._now())
                status = self._statuses.get(name)
                entry = Entry(cluster, _uid(name, created), self._version, created, status)
                events.append(Event("ADDED", entry))
            self._entries[name] = entry
        self._publish(events)
        return events

    def set_status(self, name: str, status: ClusterStatus | None) -> Event | None:
        """Take a health verdict on cluster ``name`` (``None``: unknown
        again); return (and publish) the MODIFIED event when the health,
        version or message changed.  A verdict on a cluster not in the
        catalog yet is kept for when it arrives."""
        if status is None:
            self._statuses.pop(name, None)
        else:
            self._statuses[name] = status
        entry = self._entries.get(name)
        if entry is None:
            return None
        old = entry.status
        if old is status or (status is not None and status.same_as(old)):
            # the probe time only: the same object, no event
            self._entries[name] = dataclasses.replace(entry, status=status)
            return None
        self._bump()
        changed = dataclasses.replace(entry, resource_version=self._version, status=status)
        self._entries[name] = changed
        event = Event("MODIFIED", changed, entry)
        self._publish([event])
        return event

    def _publish(self, events: list[Event]) -> None:
        history = self._history
        for event in events:
            if len(history) == history.maxlen:
                self._known_since = history[0][0]  # about to be forgotten
            history.append((event.entry.resource_version, event))
        for event in events:
            for subscriber in list(self._subscribers):
                subscriber(event)

    def since(self, resource_version: int) -> list[Event] | None:
        """The events after ``resource_version``, or ``None`` when the history
        no longer reaches back that far (the watch must then re-list: 410)."""
        if resource_version >= self._version:
            return []
        if resource_version < self._known_since:
            return None
        return [event for version, event in self._history if version > resource_version]

    def state_at(self, resource_version: int) -> dict[str, Entry] | None:
        """The objects as they were at ``resource_version`` (``None`` when the
        history no longer reaches back that far)."""
        events = self.since(resource_version)
        if events is None:
            return None
        state = dict(self._entries)
        for event in reversed(events):
            name = event.entry.cluster.name
            if event.type == "ADDED":
                state.pop(name, None)
            elif event.type == "DELETED":
                state[name] = event.entry
            elif event.previous is not None:
                state[name] = event.previous
        return state

    def subscribe(self, subscriber: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``subscriber`` with every later event; returns the unsubscribe function."""
        self._subscribers.append(subscriber)

        def unsubscribe() -> None:
            if subscriber in self._subscribers:
                self._subscribers.remove(subscriber)

        return unsubscribe


def _metadata(entry: Entry) -> dict[str, Any]:
    cluster = entry.cluster
    meta: dict[str, Any] = {"name": cluster.name}
    if cluster.labels:
        meta["labels"] = dict(cluster.labels)
    if cluster.annotations:
        meta["annotations"] = dict(cluster.annotations)
    meta["creationTimestamp"] = entry.created
    meta["resourceVersion"] = str(entry.resource_version)
    meta["uid"] = entry.uid
    return meta


def _access(cluster: Cluster) -> dict[str, Any]:
    if cluster.tunnel:
        return {"tunnel": True}
    access: dict[str, Any] = {"endpoint": cluster.endpoint}
    if cluster.ca_pem:
        access["caBundle"] = base64.b64encode(cluster.ca_pem).decode()
    if cluster.ca_file:
        access["caFile"] = cluster.ca_file
    access["insecure"] = cluster.insecure
    if cluster.tls_server_name:
        access["tlsServerName"] = cluster.tls_server_name
    if cluster.credential is not None:
        # the type only: never a token, key or the path of a secret
        access["credential"] = {"type": credential_type(cluster.credential)}
    return access


#: ``status.message`` of a cluster never probed
NOT_PROBED = "not probed yet"


def cluster_status(status: ClusterStatus | None) -> dict[str, Any]:
    """The ``status`` of a Cluster object (Karpor's ``healthy``, plus the
    server version, the probe time and what the probe found)."""
    if status is None:
        return {"message": NOT_PROBED}
    out: dict[str, Any] = {"healthy": status.healthy}
    if status.version:
        out["version"] = status.version
    out["lastProbeTime"] = status.probe_time
    out["message"] = status.message
    return out


def _always(entry: Entry) -> bool:
    return True


def cluster_object(entry: Entry, where: bool = True) -> dict[str, Any]:
    """The ``Cluster`` object of an entry (no credential but its type);
    ``where=False`` leaves out ``spec.access`` (where the cluster is)."""
    cluster = entry.cluster
    spec: dict[str, Any] = {}
    if cluster.provider:
        spec["provider"] = cluster.provider
    if cluster.display_name:
        spec["displayName"] = cluster.display_name
    if cluster.description:
        spec["description"] = cluster.description
    spec["impersonate"] = cluster.impersonate
    if where:
        spec["access"] = _access(cluster)
    return {
        "apiVersion": GROUP_VERSION,
        "kind": KIND,
        "metadata": _metadata(entry),
        "spec": spec,
        "status": cluster_status(entry.status),
    }


def list_metadata(
    resource_version: int | None, continue_token: str = "", remaining: int | None = None
) -> dict[str, Any]:
    """A list's ``ListMeta``: its resourceVersion and, for a page with more
    to come, ``continue`` and ``remainingItemCount``."""
    meta: dict[str, Any] = {}
    if resource_version is not None:
        meta["resourceVersion"] = str(resource_version)
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return meta


def cluster_list(
    entries: Iterable[Entry],
    resource_version: int,
    where: Callable[[Entry], bool] = _always,
    continue_token: str = "",
    remaining: int | None = None,
) -> dict[str, Any]:
    """The ``ClusterList`` of ``entries`` (``spec.access`` where ``where``
    says); a page of a longer list carries ``continue_token`` and ``remaining``."""
    return {
        "apiVersion": GROUP_VERSION,
        "kind": LIST_KIND,
        "metadata": list_metadata(resource_version, continue_token, remaining),
        "items": [cluster_object(e, where(e)) for e in entries],
    }


_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, "
    "although some resources may allow a client to request the generation of an "
    "appropriate name automatically. Name is primarily intended for creation "
    "idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_AGE_DESCRIPTION = (
    "CreationTimestamp is a timestamp representing the server time when this object "
    "was created. It is not guaranteed to be set in happens-before order across "
    "separate operations. Clients may not set this value. It is represented in "
    "RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for "
    "lists. More info: https://git.k8s.io/community/contributors/devel/"
    "sig-architecture/api-conventions.md#metadata"
)

#: the ``columnDefinitions`` of the clusters Table
COLUMNS: tuple[dict[str, Any], ...] = (
    {"name": "Name", "type": "string", "format": "name", "description": _NAME_DESCRIPTION},
    {"name": "Display Name", "type": "string", "format": "", "description": "Display name."},
    {"name": "Provider", "type": "string", "format": "", "description": "Provider."},
    {"name": "Endpoint", "type": "string", "format": "", "description": "API server URL."},
    {
        "name": "Ready",
        "type": "string",
        "format": "",
        "description": "Whether the last health probe passed (True, False, Unknown).",
    },
    {
        "name": "Version",
        "type": "string",
        "format": "",
        "description": "The cluster's Kubernetes version (gitVersion).",
    },
    {"name": "Age", "type": "date", "format": "", "description": _AGE_DESCRIPTION},
    {
        "name": "Reach",
        "type": "string",
        "format": "",
        "description": "How the gateway reaches the cluster: direct, or tunnel (karpor agent).",
    },
    {
        "name": "Agent",
        "type": "string",
        "format": "",
        "description": "A tunnelled cluster's agent: connected (to the worker that answered) "
        "or disconnected.",
    },
    {
        "name": "Agent Since",
        "type": "string",
        "priority": 1,
        "format": "",
        "description": "How long the agent's oldest tunnel to this worker has been up.",
    },
    {
        "name": "Agent Version",
        "type": "string",
        "priority": 1,
        "format": "",
        "description": "The connected agent's version.",
    },
)

#: ``?includeObject=`` values (``metav1.IncludeObjectPolicy``)
INCLUDE_OBJECT = ("None", "Metadata", "Object")


def _row_object(entry: Entry, include: str, where: bool) -> dict[str, Any] | None:
    if include == "None":
        return None
    if include == "Object":
        return cluster_object(entry, where)
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": _metadata(entry),
    }


def cluster_table(
    entries: Sequence[Entry],
    resource_version: int | None,
    now: float,
    headers: bool = True,
    include_object: str = "Metadata",
    where: Callable[[Entry], bool] = _always,
    continue_token: str = "",
    remaining: int | None = None,
    agents: AgentLookup | None = None,
) -> dict[str, Any]:
    """The ``Table`` of ``entries`` at time ``now`` (for the Age column);
    a page of a longer list carries ``continue_token`` and ``remaining``.

    ``headers=False`` leaves ``columnDefinitions`` empty, as kube does for
    every watch event after the first.  For an entry ``where`` refuses, the
    Endpoint cell reads :data:`HIDDEN` and the object has no ``spec.access``.
    """
    rows = []
    for entry in entries:
        cluster = entry.cluster
        status = entry.status
        shown = where(entry)
        row: dict[str, Any] = {
            "cells": [
                cluster.name,
                cluster.display_name or "<none>",
                cluster.provider or "<none>",
                (cluster.endpoint or "<none>") if shown else HIDDEN,
                "Unknown" if status is None else str(status.healthy),
                (status.version if status is not None else "") or "<unknown>",
                age(entry.created, now),
                *_agent_cells(cluster, agents, now),
            ]
        }
        obj = _row_object(entry, include_object, shown)
        if obj is not None:
            row["object"] = obj
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_metadata(resource_version, continue_token, remaining),
        "columnDefinitions": [{"priority": 0, **c} for c in COLUMNS] if headers else [],
        "rows": rows,
    }


def _agent_cells(cluster: Cluster, agents: AgentLookup | None, now: float) -> list[str]:
    """Reach, Agent, Agent Since and Agent Version of a Table row."""
    if not cluster.tunnel:
        return ["direct", "<none>", "<none>", "<none>"]
    status = agents(cluster.name) if agents is not None else AgentStatus(0, None, "")
    if not status.connected or status.since is None:
        return ["tunnel", "disconnected", "<none>", "<none>"]
    since = age(format_timestamp(status.since), now)
    return ["tunnel", "connected", since, status.version or "<unknown>"]


def wants_table(accept: str) -> bool:
    """Whether an ``Accept`` header asks for a ``meta.k8s.io`` Table first
    (``application/json;as=Table;v=v1;g=meta.k8s.io``, or ``v1beta1``)."""
    for media in media_ranges(accept):
        if not media.matches_json():
            continue
        params = media.params
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            if params.get("v") in ("v1", "v1beta1"):
                return True
            continue
        if media.is_plain():
            return False
    return False


def watch_event(event_type: str, obj: Mapping[str, Any]) -> bytes:
    """One line of a watch stream."""
    return json.dumps({"type": event_type, "object": obj}, separators=(",", ":")).encode() + b"\n"
