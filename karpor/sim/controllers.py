"""The simulator's controller manager: the deployment and replica-set controllers.

:class:`DeploymentController` plays kube's two controllers behind
Deployments, on one store:

- **deployments → ReplicaSets.**  Each Deployment owns one ReplicaSet per pod
  template it has had (``ownerReferences`` with ``controller: true``), named
  ``NAME-HASH`` with the template's ``pod-template-hash`` in its labels,
  selector and template.  The ReplicaSet of the current template (found by
  comparing templates without that label, as kube's ``EqualIgnoreHash``
  does) is created at need with the next revision in its
  ``deployment.kubernetes.io/revision`` annotation, and the Deployment's
  annotations copied (``kubernetes.io/change-cause`` among them); a template
  that returns to an older ReplicaSet's (``kubectl rollout undo``) gives that
  ReplicaSet the next revision and records its old one in
  ``deployment.kubernetes.io/revision-history``.  The Deployment carries the
  current revision in the same annotation.  So ``kubectl rollout history``,
  ``rollout undo`` and ``rollout status`` work as against a cluster.
- **the rollout.**  The current ReplicaSet is scaled to ``spec.replicas`` at
  once; the old ones are scaled to 0 when its pods are all ready (a rolling
  update with a 100 % surge); old ReplicaSets past
  ``spec.revisionHistoryLimit`` (10) are deleted once empty; ``spec.paused``
  freezes them all.  The Deployment's ``status`` is what kube's controller
  reports (``observedGeneration``, ``replicas``, ``updatedReplicas``,
  ``readyReplicas``, ``availableReplicas``, ``unavailableReplicas``, the
  ``Available`` and ``Progressing`` conditions).
- **ReplicaSets → pods.**  Each ReplicaSet (a Deployment's or one created
  directly) keeps ``spec.replicas`` pods from its template, owned by it
  (removing the pods that are not ready first, then the newest), and reports
  ``replicas``, ``fullyLabeledReplicas``, ``readyReplicas``,
  ``availableReplicas`` and ``observedGeneration``.  The simulator's
  :class:`~karpor.sim.kubelet.Kubelet` then starts the pods.
- **events.**  With an :class:`~karpor.sim.events.EventRecorder`, kube's
  ``ScalingReplicaSet`` (on the Deployment), ``SuccessfulCreate`` and
  ``SuccessfulDelete`` (on the ReplicaSet), so ``kubectl describe`` shows them.
- **garbage collection.**  A ReplicaSet whose owning Deployment is gone is
  deleted, and so are the pods of a deleted ReplicaSet (background cascading
  deletion, kube's default).

The decisions are plain functions (:func:`template_hash`,
:func:`same_template`, :func:`new_replica_set`, :func:`revision_of`...); the
service is driven by store watches and the reactor clock: an event schedules
a sync of the object concerned on the next reactor turn, so it never writes
from inside a store callback.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
from collections.abc import Iterable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karpor.kube.status import ApiError
from karpor.sim import events as ev
from karpor.sim.logs import format_rfc3339
from karpor.sim.resources import CATALOG, Catalog, ResourceType
from karpor.sim.store import GENERATE_NAME_ALPHABET, Store, Watcher, WatchEvent

#: the label kube's deployment controller puts on the pods of one template
TEMPLATE_HASH_LABEL = "pod-template-hash"
#: a ReplicaSet's revision within its Deployment (and the Deployment's current one)
REVISION_ANNOTATION = "deployment.kubernetes.io/revision"
#: the earlier revisions of a ReplicaSet that was rolled back to
REVISION_HISTORY_ANNOTATION = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS_ANNOTATION = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS_ANNOTATION = "deployment.kubernetes.io/max-replicas"
#: the Deployment annotations kube does not copy onto its ReplicaSets
SKIPPED_ANNOTATIONS = frozenset(
    {
        "kubectl.kubernetes.io/last-applied-configuration",
        REVISION_ANNOTATION,
        REVISION_HISTORY_ANNOTATION,
        DESIRED_REPLICAS_ANNOTATION,
        MAX_REPLICAS_ANNOTATION,
        "deprecated.deployment.rollback.to",
    }
)
DEFAULT_REVISION_HISTORY_LIMIT = 10
#: what the sync queue holds: (kind, namespace, name), kind ``Deployment`` or ``ReplicaSet``
_Key = tuple[str, str, str]


# -- decisions (no I/O) ------------------------------------------------------------


def _pruned(value: Any) -> Any:
    """``value`` without null, empty-object and empty-list members, recursively."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [_pruned(v) for v in value]
    return value


def comparable_template(template: dict[str, Any]) -> dict[str, Any]:
    """A pod template as kube compares two (``EqualIgnoreHash``): without the
    ``pod-template-hash`` label, with empty and null members equal to absent
    ones (what a typed client adds, such as ``creationTimestamp: null`` or
    ``resources: {}``, changes nothing)."""
    template = copy.deepcopy(template)
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(TEMPLATE_HASH_LABEL, None)
    pruned: dict[str, Any] = _pruned(template)
    return pruned


def same_template(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two pod templates are the same but for the hash label."""
    return comparable_template(a) == comparable_template(b)


def template_hash(template: dict[str, Any]) -> str:
    """A short stable hash of a pod template, spelled as kube's ``pod-template-hash``.

    kube hashes the template with FNV-1a (32 bits) and writes the decimal
    number with ``rand.SafeEncodeString``; the simulator hashes the
    :func:`comparable_template`'s canonical JSON the same way.
    """
    canonical = json.dumps(comparable_template(template), sort_keys=True, separators=(",", ":"))
    digest = 0x811C9DC5
    for byte in canonical.encode():
        digest = ((digest ^ byte) * 0x01000193) & 0xFFFFFFFF
    alphabet = GENERATE_NAME_ALPHABET
    return "".join(alphabet[ord(c) % len(alphabet)] for c in str(digest))


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    """``maxSurge``/``maxUnavailable`` (an int or ``"25%"``) against ``total`` replicas."""
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = int(value[:-1])
        except ValueError:
            return 0
        scaled = percent * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def revision_of(obj: dict[str, Any]) -> int:
    """The ``deployment.kubernetes.io/revision`` of a ReplicaSet (0 when none)."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    try:
        return int(annotations.get(REVISION_ANNOTATION, 0))
    except (TypeError, ValueError):
        return 0


def controller_ref(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    """The ``ownerReferences`` entry of ``obj``'s controller when it is a ``kind``."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") and ref.get("kind") == kind:
            return ref
    return None


def owner_reference(owner: dict[str, Any], kind: str) -> dict[str, Any]:
    """The controller ``ownerReferences`` entry pointing at ``owner``."""
    meta = owner["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def max_replicas(spec: dict[str, Any], desired: int) -> int:
    """``desired`` plus the rolling update's ``maxSurge`` (kube's ``max-replicas``)."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate":
        return desired
    surge = (strategy.get("rollingUpdate") or {}).get("maxSurge", "25%")
    return desired + resolve_int_or_percent(surge, desired, round_up=True)


def replica_set_annotations(
    deployment: dict[str, Any],
    revision: int,
    history: str = "",
) -> dict[str, str]:
    """A Deployment's ReplicaSet annotations: the Deployment's own (but the
    ones kube skips), the revision, the desired and max replica counts."""
    spec = deployment.get("spec") or {}
    desired = max(int(spec.get("replicas", 1) or 0), 0)
    source = (deployment.get("metadata") or {}).get("annotations") or {}
    out = {k: str(v) for k, v in source.items() if k not in SKIPPED_ANNOTATIONS}
    out[DESIRED_REPLICAS_ANNOTATION] = str(desired)
    out[MAX_REPLICAS_ANNOTATION] = str(max_replicas(spec, desired))
    out[REVISION_ANNOTATION] = str(revision)
    if history:
        out[REVISION_HISTORY_ANNOTATION] = history
    return out


def new_replica_set(deployment: dict[str, Any], revision: int) -> dict[str, Any]:
    """The ReplicaSet a Deployment's current template needs (not yet stored)."""
    meta = deployment["metadata"]
    spec = deployment.get("spec") or {}
    template = copy.deepcopy(spec.get("template") or {})
    hash_ = template_hash(template)
    template_meta = template.setdefault("metadata", {})
    labels = {**(template_meta.get("labels") or {}), TEMPLATE_HASH_LABEL: hash_}
    template_meta["labels"] = labels
    selector = copy.deepcopy(spec.get("selector") or {})
    selector["matchLabels"] = {**(selector.get("matchLabels") or {}), TEMPLATE_HASH_LABEL: hash_}
    rs_spec: dict[str, Any] = {
        "replicas": max(int(spec.get("replicas", 1) or 0), 0),
        "selector": selector,
        "template": template,
    }
    if spec.get("minReadySeconds"):
        rs_spec["minReadySeconds"] = spec["minReadySeconds"]
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": f"{meta['name']}-{hash_}",
            "namespace": meta["namespace"],
            "labels": dict(labels),
            "annotations": replica_set_annotations(deployment, revision),
            "ownerReferences": [owner_reference(deployment, "Deployment")],
        },
        "spec": rs_spec,
    }


def rolled_back_history(rs: dict[str, Any]) -> str:
    """The ``revision-history`` of a ReplicaSet given a new revision: its old
    ones, then its current one."""
    annotations = (rs.get("metadata") or {}).get("annotations") or {}
    previous = [r for r in str(annotations.get(REVISION_HISTORY_ANNOTATION, "")).split(",") if r]
    return ",".join([*previous, str(revision_of(rs))])


def expired_replica_sets(old: Iterable[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
    """The empty old ReplicaSets past ``limit`` kept ones, oldest revision first."""
    empty = [
        rs
        for rs in old
        if not int((rs.get("spec") or {}).get("replicas") or 0)
        and not int((rs.get("status") or {}).get("replicas") or 0)
    ]
    empty.sort(key=revision_of)
    return empty[: max(len(empty) - max(limit, 0), 0)]


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def _ready_since(pod: dict[str, Any]) -> str | None:
    """When the pod became ready (its ``Ready`` condition's transition), or ``None``."""
    meta = pod.get("metadata") or {}
    if meta.get("deletionTimestamp") or (pod.get("status") or {}).get("phase") != "Running":
        return None
    ready = _condition(pod, "Ready")
    if ready is None or ready.get("status") != "True":
        return None
    return str(ready.get("lastTransitionTime") or "")


def _availability(
    pods: Iterable[dict[str, Any]], min_ready: int, now: float
) -> tuple[int, int, float | None]:
    """Ready and available pod counts, and the seconds until the next becomes available."""
    ready = available = 0
    wake: float | None = None
    for pod in pods:
        since_text = _ready_since(pod)
        if since_text is None:
            continue
        ready += 1
        since = _parse_time(since_text)
        if since is None or since + min_ready <= now:
            available += 1
        else:
            wake = min(wake if wake is not None else math.inf, since + min_ready - now)
    return ready, available, wake


# -- the service ------------------------------------------------------------------------


class DeploymentController(Service):
    """Keeps the ReplicaSets, pods and statuses of every Deployment of a store (see the module)."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        reactor: IReactorTime,
        *,
        catalog: Catalog = CATALOG,
        events: ev.EventRecorder | None = None,
    ) -> None:
        self.store = store
        self.reactor = reactor
        self.events = events
        deployments = catalog.lookup("apps", "v1", "deployments")
        replica_sets = catalog.lookup("apps", "v1", "replicasets")
        pods = catalog.lookup("", "v1", "pods")
        assert deployments is not None and replica_sets is not None and pods is not None, (
            "the catalog lacks deployments/replicasets/pods"
        )
        self._deployments: ResourceType = deployments
        self._replica_sets: ResourceType = replica_sets
        self._pods: ResourceType = pods
        self._watchers: list[Watcher] = []
        self._queue: set[_Key] = set()
        self._drain_call: IDelayedCall | None = None
        self._timers: dict[_Key, IDelayedCall] = {}

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        """Watch deployments, replica sets and pods (existing ones arrive as ``ADDED`` first)."""
        super().startService()
        self._watchers = [
            self.store.watch(self._deployments, None, callback=self._on_deployment),
            self.store.watch(self._replica_sets, None, callback=self._on_replica_set),
            self.store.watch(self._pods, None, callback=self._on_pod),
        ]

    def stopService(self) -> None:
        """Stop watching; drop the pending syncs."""
        for watcher in self._watchers:
            watcher.cancel()
        self._watchers = []
        calls = list(self._timers.values())
        if self._drain_call is not None:
            calls.append(self._drain_call)
        for call in calls:
            if call.active():
                call.cancel()
        self._timers.clear()
        self._drain_call = None
        self._queue.clear()
        return super().stopService()  # type: ignore[no-any-return]

    # -- events --------------------------------------------------------------

    def _on_deployment(self, event: WatchEvent) -> None:
        meta = event.object.get("metadata") or {}
        self._enqueue(("Deployment", str(meta.get("namespace", "")), str(meta.get("name", ""))))

    def _on_replica_set(self, event: WatchEvent) -> None:
        meta = event.object.get("metadata") or {}
        namespace = str(meta.get("namespace", ""))
        self._enqueue(("ReplicaSet", namespace, str(meta.get("name", ""))))
        ref = controller_ref(event.object, "Deployment")
        if ref is not None:
            self._enqueue(("Deployment", namespace, str(ref.get("name", ""))))

    def _on_pod(self, event: WatchEvent) -> None:
        ref = controller_ref(event.object, "ReplicaSet")
        if ref is not None:
            namespace = str((event.object.get("metadata") or {}).get("namespace", ""))
            self._enqueue(("ReplicaSet", namespace, str(ref.get("name", ""))))

    def _enqueue(self, key: _Key) -> None:
        self._queue.add(key)
        if self._drain_call is None:
            self._drain_call = self.reactor.callLater(0, self._drain)

    def _drain(self) -> None:
        self._drain_call = None
        # ReplicaSets first: a Deployment's status counts their pods
        queue = sorted(self._queue, key=lambda k: (k[0] != "ReplicaSet", k))
        self._queue = set()
        for kind, namespace, name in queue:
            try:
                if kind == "ReplicaSet":
                    self.sync_replica_set(namespace, name)
                else:
                    self.sync(namespace, name)
            except ApiError as err:
                # a concurrent change (the namespace went away...): its event retries
                self.log.debug(
                    "controllers: {kind} {ns}/{name}: {err}",
                    kind=kind,
                    ns=namespace,
                    name=name,
                    err=err,
                )

    # -- store helpers -------------------------------------------------------

    def _get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return self.store.get(rt, namespace, name)
        except ApiError as err:
            if err.code != 404:
                raise
            return None

    def _delete(self, rt: ResourceType, namespace: str, name: str) -> None:
        try:
            self.store.delete(rt, namespace, name)
        except ApiError as err:
            if err.code != 404:
                raise

    def _controlled(self, rt: ResourceType, namespace: str, kind: str, name: str) -> list[Any]:
        items = self.store.list(rt, namespace).get("items") or []
        return [
            obj
            for obj in items
            if (controller_ref(obj, kind) or {}).get("name") == name
            and not (obj.get("metadata") or {}).get("deletionTimestamp")
        ]

    def _event(self, obj: dict[str, Any], component: str, reason: str, message: str) -> None:
        if self.events is None:
            return
        name = str(obj["metadata"].get("name", ""))
        self.events.record(
            ev.controller_event(
                obj,
                component,
                self.reactor.seconds(),
                self.events.next_name(name),
                reason=reason,
                message=message,
            )
        )

    def _scaled(self, deployment: dict[str, Any], rs_name: str, before: int, after: int) -> None:
        """kube's ``ScalingReplicaSet`` event on the Deployment."""
        if before != after:
            way = "up" if after > before else "down"
            self._event(
                deployment,
                "deployment-controller",
                "ScalingReplicaSet",
                f"Scaled {way} replica set {rs_name} from {before} to {after}",
            )

    # -- deployments -----------------------------------------------------------

    def sync(self, namespace: str, name: str) -> None:
        """Bring the ReplicaSets and the status of one Deployment up to date."""
        deployment = self._get(self._deployments, namespace, name)
        uid = ((deployment or {}).get("metadata") or {}).get("uid")
        owned: list[dict[str, Any]] = []
        for rs in self._controlled(self._replica_sets, namespace, "Deployment", name):
            if (controller_ref(rs, "Deployment") or {}).get("uid") != uid:
                # the Deployment is gone (or was recreated): collect its garbage
                self._delete(self._replica_sets, namespace, rs["metadata"]["name"])
            else:
                owned.append(rs)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return
        spec = deployment.get("spec") or {}
        desired = max(int(spec.get("replicas", 1) or 0), 0)
        template = spec.get("template") or {}
        current = next(
            (rs for rs in owned if same_template(rs["spec"].get("template") or {}, template)),
            None,
        )
        old = [rs for rs in owned if rs is not current]
        if not spec.get("paused"):
            current = self._roll(deployment, current, old, desired)
            deployment = self._note_revision(deployment, current)
        pods = self._pods_of(namespace, owned if current is None else [current, *old])
        self._write_status(deployment, current, pods, desired)

    def _roll(
        self,
        deployment: dict[str, Any],
        current: dict[str, Any] | None,
        old: list[dict[str, Any]],
        desired: int,
    ) -> dict[str, Any]:
        """Create or update the current ReplicaSet; scale down and prune the old ones."""
        namespace = deployment["metadata"]["namespace"]
        newest_old = max((revision_of(rs) for rs in old), default=0)
        if current is None:
            current = self.store.create(
                self._replica_sets, namespace, new_replica_set(deployment, newest_old + 1)
            )
            self._scaled(deployment, current["metadata"]["name"], 0, desired)
        else:
            revision = revision_of(current)
            history = (current["metadata"].get("annotations") or {}).get(
                REVISION_HISTORY_ANNOTATION, ""
            )
            if revision <= newest_old:  # rolled back to: the next revision
                history = rolled_back_history(current)
                revision = newest_old + 1
            wanted = copy.deepcopy(current)
            wanted["metadata"]["annotations"] = replica_set_annotations(
                deployment, revision, history
            )
            wanted["spec"]["replicas"] = desired
            if wanted != current:
                before = int(current["spec"].get("replicas") or 0)
                current = self.store.update(
                    self._replica_sets, namespace, current["metadata"]["name"], wanted
                )
                self._scaled(deployment, current["metadata"]["name"], before, desired)
        new_pods = self._pods_of(namespace, [current])
        ready, _, _ = _availability(new_pods, 0, self.reactor.seconds())
        if ready >= desired:
            for rs in old:
                before = int(rs["spec"].get("replicas") or 0)
                if before:
                    scaled = copy.deepcopy(rs)
                    scaled["spec"]["replicas"] = 0
                    self.store.update(self._replica_sets, namespace, rs["metadata"]["name"], scaled)
                    self._scaled(deployment, rs["metadata"]["name"], before, 0)
        limit = (deployment.get("spec") or {}).get("revisionHistoryLimit")
        limit = DEFAULT_REVISION_HISTORY_LIMIT if limit is None else int(limit)
        for rs in expired_replica_sets(old, limit):
            self._delete(self._replica_sets, namespace, rs["metadata"]["name"])
        return current

    def _note_revision(self, deployment: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
        """The Deployment carries its current ReplicaSet's revision."""
        revision = str(revision_of(current))
        annotations = deployment["metadata"].get("annotations") or {}
        if annotations.get(REVISION_ANNOTATION) == revision:
            return deployment
        wanted = copy.deepcopy(deployment)
        wanted["metadata"]["annotations"] = {**annotations, REVISION_ANNOTATION: revision}
        meta = deployment["metadata"]
        return self.store.update(self._deployments, meta["namespace"], meta["name"], wanted)

    def _pods_of(self, namespace: str, replica_sets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        uids = {rs["metadata"]["uid"] for rs in replica_sets}
        if not uids:
            return []
        items = self.store.list(self._pods, namespace).get("items") or []
        return [
            pod
            for pod in items
            if (controller_ref(pod, "ReplicaSet") or {}).get("uid") in uids
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
        ]

    def _write_status(
        self,
        deployment: dict[str, Any],
        current: dict[str, Any] | None,
        pods: list[dict[str, Any]],
        desired: int,
    ) -> None:
        meta = deployment["metadata"]
        spec = deployment.get("spec") or {}
        now = self.reactor.seconds()
        stamp = format_rfc3339(now)
        min_ready = max(int(spec.get("minReadySeconds") or 0), 0)
        current_uid = ((current or {}).get("metadata") or {}).get("uid")
        updated = [
            p for p in pods if (controller_ref(p, "ReplicaSet") or {}).get("uid") == current_uid
        ]
        ready, available, wake = _availability(pods, min_ready, now)
        if wake is not None:
            self._sync_later(("Deployment", meta["namespace"], meta["name"]), wake)
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = (
            resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
            if (spec.get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
            else desired
        )
        complete = len(updated) == desired == len(pods) and available >= desired
        rs_name = (
            current["metadata"]["name"]
            if current is not None
            else f"{meta['name']}-{template_hash(spec.get('template') or {})}"
        )
        old_status = deployment.get("status") or {}
        counts = {
            "observedGeneration": int(meta.get("generation") or 0),
            "replicas": len(pods),
            "updatedReplicas": len(updated),
            "readyReplicas": ready,
            "availableReplicas": available,
            "unavailableReplicas": max(desired - available, 0),
        }
        status: dict[str, Any] = {k: v for k, v in counts.items() if v}
        old_conditions = {c.get("type"): c for c in old_status.get("conditions") or []}
        if available >= desired - max_unavailable:
            available_cond = (
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            available_cond = (
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        if complete:
            progressing = (
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{rs_name}" has successfully progressed.',
            )
        else:
            progressing = ("True", "ReplicaSetUpdated", f'ReplicaSet "{rs_name}" is progressing.')
        status["conditions"] = [
            _next_condition(old_conditions.get(kind), kind, *values, stamp)
            for kind, values in (("Available", available_cond), ("Progressing", progressing))
        ]
        if "collisionCount" in old_status:
            status["collisionCount"] = old_status["collisionCount"]
        if status != old_status:
            self.store.update_status(self._deployments, meta["namespace"], meta["name"], status)

    # -- replica sets --------------------------------------------------------------

    def sync_replica_set(self, namespace: str, name: str) -> None:
        """Bring the pods and the status of one ReplicaSet up to date."""
        rs = self._get(self._replica_sets, namespace, name)
        uid = ((rs or {}).get("metadata") or {}).get("uid")
        owned: list[dict[str, Any]] = []
        for pod in self._controlled(self._pods, namespace, "ReplicaSet", name):
            if (controller_ref(pod, "ReplicaSet") or {}).get("uid") != uid:
                self._delete(self._pods, namespace, pod["metadata"]["name"])
            else:
                owned.append(pod)
        if rs is None or rs["metadata"].get("deletionTimestamp"):
            return
        owner = controller_ref(rs, "Deployment")
        if owner is not None:
            deployment = self._get(self._deployments, namespace, str(owner.get("name", "")))
            if deployment is None or deployment["metadata"].get("uid") != owner.get("uid"):
                self._delete(self._replica_sets, namespace, name)  # its pods follow
                return
        spec = rs.get("spec") or {}
        desired = max(int(spec.get("replicas", 1) or 0), 0)
        surplus = len(owned) - desired
        if surplus > 0:
            ranked = sorted(
                owned,
                key=lambda p: (
                    _ready_since(p) is not None,
                    str(p["metadata"].get("creationTimestamp", "")),
                ),
            )
            doomed = ranked[:surplus]
            for pod in doomed:
                self._delete(self._pods, namespace, pod["metadata"]["name"])
                self._event(
                    rs,
                    "replicaset-controller",
                    "SuccessfulDelete",
                    f"Deleted pod: {pod['metadata']['name']}",
                )
            owned = [p for p in owned if p not in doomed]
        for _ in range(desired - len(owned)):
            pod = self._create_pod(rs)
            owned.append(pod)
            self._event(
                rs,
                "replicaset-controller",
                "SuccessfulCreate",
                f"Created pod: {pod['metadata']['name']}",
            )
        now = self.reactor.seconds()
        min_ready = max(int(spec.get("minReadySeconds") or 0), 0)
        ready, available, wake = _availability(owned, min_ready, now)
        if wake is not None:
            self._sync_later(("ReplicaSet", namespace, name), wake)
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        labelled = sum(
            1
            for p in owned
            if template_labels.items() <= ((p["metadata"].get("labels") or {}).items())
        )
        counts = {
            "replicas": len(owned),
            "fullyLabeledReplicas": labelled,
            "readyReplicas": ready,
            "availableReplicas": available,
            "observedGeneration": int(rs["metadata"].get("generation") or 0),
        }
        status: dict[str, Any] = {k: v for k, v in counts.items() if v or k == "replicas"}
        if status != (rs.get("status") or {}):
            self.store.update_status(self._replica_sets, namespace, name, status)

    def _create_pod(self, rs: dict[str, Any]) -> dict[str, Any]:
        meta = rs["metadata"]
        template = copy.deepcopy((rs.get("spec") or {}).get("template") or {})
        template_meta = template.get("metadata") or {}
        pod_meta: dict[str, Any] = {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": dict(template_meta.get("labels") or {}),
            "ownerReferences": [owner_reference(rs, "ReplicaSet")],
        }
        if template_meta.get("annotations"):
            pod_meta["annotations"] = dict(template_meta["annotations"])
        pod = {"metadata": pod_meta, "spec": template.get("spec") or {}}
        return self.store.create(self._pods, meta["namespace"], pod)

    def _sync_later(self, key: _Key, delay: float) -> None:
        call = self._timers.get(key)
        if call is not None and call.active():
            return

        def fire() -> None:
            self._timers.pop(key, None)
            self._enqueue(key)

        self._timers[key] = self.reactor.callLater(max(delay, 0.0), fire)


def _parse_time(text: str) -> float | None:
    try:
        parsed = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return parsed.replace(tzinfo=datetime.UTC).timestamp()


def _next_condition(
    old: dict[str, Any] | None, kind: str, status: str, reason: str, message: str, stamp: str
) -> dict[str, Any]:
    """A DeploymentCondition, keeping the old times where kube keeps them."""
    transition = stamp
    update = stamp
    if old is not None and old.get("status") == status:
        transition = str(old.get("lastTransitionTime") or stamp)
        if old.get("reason") == reason and old.get("message") == message:
            update = str(old.get("lastUpdateTime") or stamp)
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": update,
        "lastTransitionTime": transition,
        "reason": reason,
        "message": message,
    }
