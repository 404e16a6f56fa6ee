"""The simulator's controller manager: a minimal deployment controller.

:class:`DeploymentController` keeps, for every Deployment of a store, as many
pods as ``spec.replicas`` asks, built from ``spec.template`` and labelled with
kube's ``pod-template-hash``; the simulator's :class:`~karpor.sim.kubelet.Kubelet`
then starts them.  It reports what kube's controller reports in the
Deployment's ``status`` (``observedGeneration``, ``replicas``,
``updatedReplicas``, ``readyReplicas``, ``availableReplicas``,
``unavailableReplicas`` and the ``Available`` and ``Progressing``
conditions), so ``kubectl get deploy`` shows ``1/1`` and ``kubectl rollout
status`` completes.

Simplifications, on purpose: there are no ReplicaSets, the pods are owned by
the Deployment itself (``ownerReferences`` with ``controller: true``); a new
template creates every new pod at once and removes the old ones when the new
ones are ready (a rolling update with a 100 % surge); a deleted Deployment's
pods are deleted (background cascading deletion); ``spec.paused`` freezes the
pods.

Like the kubelet it is driven by store watches and the reactor clock: an
event schedules a sync of the Deployment concerned on the next reactor turn,
so it never writes from inside a store callback.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karpor.kube.status import ApiError
from karpor.sim.logs import format_rfc3339
from karpor.sim.resources import CATALOG, Catalog, ResourceType
from karpor.sim.store import GENERATE_NAME_ALPHABET, Store, Watcher, WatchEvent

#: the label kube's deployment controller puts on the pods of one template
TEMPLATE_HASH_LABEL = "pod-template-hash"
_Key = tuple[str, str]


def template_hash(template: dict[str, Any]) -> str:
    """A short stable hash of a pod template, spelled as kube's ``pod-template-hash``.

    kube hashes the template with FNV-1a (32 bits) and writes the decimal
    number with ``rand.SafeEncodeString``; the simulator hashes the
    template's canonical JSON the same way.
    """
    digest = 0x811C9DC5
    for byte in json.dumps(template, sort_keys=True, separators=(",", ":")).encode():
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


def _controller_ref(pod: dict[str, Any]) -> dict[str, Any] | None:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") and ref.get("kind") == "Deployment":
            return ref
    return None


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


class DeploymentController(Service):
    """Keeps the pods and the status of every Deployment of a store (see the module)."""

    log = Logger()

    def __init__(self, store: Store, reactor: IReactorTime, *, catalog: Catalog = CATALOG) -> None:
        self.store = store
        self.reactor = reactor
        deployments = catalog.lookup("apps", "v1", "deployments")
        pods = catalog.lookup("", "v1", "pods")
        assert deployments is not None and pods is not None, "the catalog lacks deployments/pods"
        self._deployments: ResourceType = deployments
        self._pods: ResourceType = pods
        self._watchers: list[Watcher] = []
        self._queue: set[_Key] = set()
        self._drain_call: IDelayedCall | None = None
        self._timers: dict[_Key, IDelayedCall] = {}

    # -- service -----------------------------------------------------------

    def startService(self) -> None:
        """Watch deployments and pods (existing ones arrive as ``ADDED`` first)."""
        super().startService()
        self._watchers = [
            self.store.watch(self._deployments, None, callback=self._on_deployment),
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
        self._enqueue((str(meta.get("namespace", "")), str(meta.get("name", ""))))

    def _on_pod(self, event: WatchEvent) -> None:
        ref = _controller_ref(event.object)
        if ref is not None:
            namespace = str((event.object.get("metadata") or {}).get("namespace", ""))
            self._enqueue((namespace, str(ref.get("name", ""))))

    def _enqueue(self, key: _Key) -> None:
        self._queue.add(key)
        if self._drain_call is None:
            self._drain_call = self.reactor.callLater(0, self._drain)

    def _drain(self) -> None:
        self._drain_call = None
        queue, self._queue = sorted(self._queue), set()
        for namespace, name in queue:
            try:
                self.sync(namespace, name)
            except ApiError as err:
                # a concurrent change (the namespace went away...): its event retries
                self.log.debug(
                    "deployment controller: {ns}/{name}: {err}", ns=namespace, name=name, err=err
                )

    # -- the reconciliation ------------------------------------------------------

    def sync(self, namespace: str, name: str) -> None:
        """Bring the pods and the status of one Deployment up to date."""
        try:
            deployment: dict[str, Any] | None = self.store.get(self._deployments, namespace, name)
        except ApiError as err:
            if err.code != 404:
                raise
            deployment = None
        uid = ((deployment or {}).get("metadata") or {}).get("uid")
        owned: list[dict[str, Any]] = []
        for pod in self._owned_pods(namespace, name):
            ref = _controller_ref(pod) or {}
            if ref.get("uid") != uid:  # the Deployment is gone (or was recreated)
                self._delete_pod(namespace, pod)
            else:
                owned.append(pod)
        if deployment is None or deployment["metadata"].get("deletionTimestamp"):
            return
        spec = deployment.get("spec") or {}
        desired = max(int(spec.get("replicas", 1) or 0), 0)
        current_hash = template_hash(spec.get("template") or {})
        if not spec.get("paused"):
            owned = self._scale_pods(deployment, owned, desired, current_hash)
        self._write_status(deployment, owned, desired, current_hash)

    def _owned_pods(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.store.list(self._pods, namespace).get("items") or []
        return [
            pod
            for pod in items
            if (_controller_ref(pod) or {}).get("name") == name
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
        ]

    def _delete_pod(self, namespace: str, pod: dict[str, Any]) -> None:
        try:
            self.store.delete(self._pods, namespace, pod["metadata"]["name"])
        except ApiError as err:
            if err.code != 404:
                raise

    def _scale_pods(
        self, deployment: dict[str, Any], owned: list[dict[str, Any]], desired: int, hash_: str
    ) -> list[dict[str, Any]]:
        namespace = deployment["metadata"]["namespace"]
        current = [p for p in owned if _pod_hash(p) == hash_]
        old = [p for p in owned if _pod_hash(p) != hash_]
        # too many: remove the pods that are not ready first, then the newest
        surplus = len(current) - desired
        if surplus > 0:
            ranked = sorted(
                current,
                key=lambda p: (
                    _ready_since(p) is not None,
                    str(p["metadata"].get("creationTimestamp", "")),
                ),
            )
            doomed = ranked[:surplus]
            for pod in doomed:
                self._delete_pod(namespace, pod)
            current = [p for p in current if p not in doomed]
        for _ in range(desired - len(current)):
            current.append(self._create_pod(deployment, hash_))
        # the old template's pods go once the new ones are all ready
        if old and sum(1 for p in current if _ready_since(p) is not None) >= desired:
            for pod in old:
                self._delete_pod(namespace, pod)
            old = []
        return current + old

    def _create_pod(self, deployment: dict[str, Any], hash_: str) -> dict[str, Any]:
        meta = deployment["metadata"]
        template = copy.deepcopy((deployment.get("spec") or {}).get("template") or {})
        template_meta = template.get("metadata") or {}
        labels = dict(template_meta.get("labels") or {})
        labels[TEMPLATE_HASH_LABEL] = hash_
        pod_meta: dict[str, Any] = {
            "generateName": f"{meta['name']}-{hash_}-",
            "namespace": meta["namespace"],
            "labels": labels,
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
        if template_meta.get("annotations"):
            pod_meta["annotations"] = dict(template_meta["annotations"])
        pod = {"metadata": pod_meta, "spec": template.get("spec") or {}}
        return self.store.create(self._pods, meta["namespace"], pod)

    def _write_status(
        self, deployment: dict[str, Any], pods: list[dict[str, Any]], desired: int, hash_: str
    ) -> None:
        meta = deployment["metadata"]
        spec = deployment.get("spec") or {}
        now = self.reactor.seconds()
        stamp = format_rfc3339(now)
        min_ready = max(int(spec.get("minReadySeconds") or 0), 0)
        updated = [p for p in pods if _pod_hash(p) == hash_]
        ready = [p for p in pods if _ready_since(p) is not None]
        available = 0
        wake: float | None = None
        for pod in ready:
            since = _parse_time(_ready_since(pod) or "")
            if since is None or since + min_ready <= now:
                available += 1
            else:
                wake = min(wake or math.inf, since + min_ready - now)
        if wake is not None:
            self._sync_later((meta["namespace"], meta["name"]), wake)
        rolling = (spec.get("strategy") or {}).get("rollingUpdate") or {}
        max_unavailable = (
            resolve_int_or_percent(rolling.get("maxUnavailable", "25%"), desired, round_up=False)
            if (spec.get("strategy") or {}).get("type", "RollingUpdate") == "RollingUpdate"
            else desired
        )
        complete = len(updated) == desired == len(pods) and available >= desired
        rs_name = f"{meta['name']}-{hash_}"
        old_status = deployment.get("status") or {}
        counts = {
            "observedGeneration": int(meta.get("generation") or 0),
            "replicas": len(pods),
            "updatedReplicas": len(updated),
            "readyReplicas": len(ready),
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

    def _sync_later(self, key: _Key, delay: float) -> None:
        call = self._timers.get(key)
        if call is not None and call.active():
            return

        def fire() -> None:
            self._timers.pop(key, None)
            self._enqueue(key)

        self._timers[key] = self.reactor.callLater(max(delay, 0.0), fire)


def _pod_hash(pod: dict[str, Any]) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(TEMPLATE_HASH_LABEL, ""))


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
