"""The simulator's scheduler and kubelet: created pods start running.

:class:`Kubelet` watches every pod in the store.  A pod that is not yet
running is, after ``start_delay`` seconds of the reactor clock, bound to the
simulated node (``spec.nodeName``, as the scheduler's binding does) and then
given the status a kubelet reports for a started pod: phase ``Running``,
``hostIP``/``podIP``, ``startTime``, the ``PodScheduled``, ``Initialized``,
``ContainersReady`` and ``Ready`` conditions, and one running, ready
``containerStatuses`` entry per container.  No process runs; the log lines of
:mod:`karpor.sim.logs` are derived from the containers' ``startedAt``.

With an :class:`~karpor.sim.events.EventRecorder` it records the events a
cluster shows for this: ``Scheduled``, then ``Pulled``, ``Created``,
``Started`` per container, and ``Killing`` per container when a started pod
is deleted (on the next reactor turn: never from inside a store callback).
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from karpor.kube.status import ApiError
from karpor.sim import events as ev
from karpor.sim.logs import format_rfc3339
from karpor.sim.resources import CATALOG, Catalog
from karpor.sim.store import Store, Watcher, WatchEvent

DEFAULT_NODE = "sim-node-1"
DEFAULT_HOST_IP = "10.0.0.10"
DEFAULT_POD_NETWORK = "10.244.0.0/16"


def _digest(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()


def pod_ip(uid: str, network: str = DEFAULT_POD_NETWORK) -> str:
    """A stable address for the pod ``uid`` inside ``network``."""
    net = ipaddress.ip_network(network)
    offset = int(_digest(uid)[:8], 16) % (net.num_addresses - 2) + 1
    return str(net.network_address + offset)


def running_status(
    pod: dict[str, Any], now: float, host_ip: str = DEFAULT_HOST_IP
) -> dict[str, Any]:
    """The status a kubelet reports for ``pod`` once its containers started at ``now``."""
    meta = pod.get("metadata", {})
    uid = meta.get("uid", "") or meta.get("name", "")
    stamp = format_rfc3339(now)
    containers = pod.get("spec", {}).get("containers", []) or []
    statuses = []
    for c in containers:
        image = c.get("image", "")
        statuses.append(
            {
                "name": c.get("name", ""),
                "state": {"running": {"startedAt": stamp}},
                "lastState": {},
                "ready": True,
                "restartCount": 0,
                "image": image,
                "imageID": f"{image}@sha256:{_digest('image', image)}",
                "containerID": f"containerd://{_digest(uid, c.get('name', ''))}",
                "started": True,
            }
        )
    ip = pod_ip(uid)
    conditions = [
        {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp}
        for kind in (
            "PodReadyToStartContainers",
            "Initialized",
            "Ready",
            "ContainersReady",
            "PodScheduled",
        )
    ]
    status = dict(pod.get("status") or {})
    status.update(
        {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": host_ip,
            "hostIPs": [{"ip": host_ip}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": stamp,
            "containerStatuses": statuses,
            "qosClass": status.get("qosClass") or _qos_class(containers),
        }
    )
    return status


def _qos_class(containers: list[dict[str, Any]]) -> str:
    resources = [c.get("resources") or {} for c in containers]
    if not any(r.get("requests") or r.get("limits") for r in resources):
        return "BestEffort"
    if all(
        r.get("limits") and r.get("requests", r.get("limits")) == r["limits"] for r in resources
    ):
        return "Guaranteed"
    return "Burstable"


class Kubelet(Service):
    """Binds and starts every pod of a store, ``start_delay`` seconds after it appears."""

    log = Logger()

    def __init__(
        self,
        store: Store,
        reactor: IReactorTime,
        *,
        node_name: str = DEFAULT_NODE,
        host_ip: str = DEFAULT_HOST_IP,
        start_delay: float = 0.5,
        catalog: Catalog = CATALOG,
        events: ev.EventRecorder | None = None,
    ) -> None:
        self.store = store
        self.events = events
        self.reactor = reactor
        self.node_name = node_name
        self.host_ip = host_ip
        self.start_delay = start_delay
        pods = catalog.lookup("", "v1", "pods")
        assert pods is not None, "the catalog has no pods"
        self._pods = pods
        self._watcher: Watcher | None = None
        self._pending: dict[tuple[str, str], IDelayedCall] = {}
        self._starting: tuple[str, str] | None = None

    def startService(self) -> None:
        """Watch pods (existing ones are seen as ``ADDED`` first)."""
        super().startService()
        self._watcher = self.store.watch(self._pods, None, callback=self._on_event)

    def stopService(self) -> None:
        """Stop watching and drop the pending starts."""
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None
        for call in self._pending.values():
            if call.active():
                call.cancel()
        self._pending.clear()
        return super().stopService()  # type: ignore[no-any-return]

    def _on_event(self, event: WatchEvent) -> None:
        meta = event.object.get("metadata", {})
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if event.type == "DELETED":
            call = self._pending.pop(key, None)
            if call is not None and call.active():
                call.cancel()
            if self.events is not None and _is_running(event.object):
                self.reactor.callLater(0, self._record, event.object, ev.killing_events)
            return
        if event.type not in ("ADDED", "MODIFIED") or key in self._pending or key == self._starting:
            return
        if meta.get("deletionTimestamp") or _is_running(event.object):
            return
        uid = meta.get("uid", "")
        self._pending[key] = self.reactor.callLater(self.start_delay, self._start, key, uid)

    def _start(self, key: tuple[str, str], uid: str) -> None:
        self._pending.pop(key, None)
        namespace, name = key
        self._starting = key
        try:
            pod = self.store.get(self._pods, namespace, name)
            if pod.get("metadata", {}).get("uid", "") != uid or _is_running(pod):
                return
            if not pod.get("spec", {}).get("nodeName"):
                bound = dict(pod)
                bound["spec"] = {**pod.get("spec", {}), "nodeName": self.node_name}
                pod = self.store.update(self._pods, namespace, name, bound)
            if self.events is not None:  # the store binds pods as it creates them
                now = self.reactor.seconds()
                event_name = self.events.next_name(name)
                node = str(pod["spec"].get("nodeName") or self.node_name)
                self.events.record(ev.scheduled_event(pod, node, now, event_name))
            status = running_status(pod, self.reactor.seconds(), self.host_ip)
            pod = self.store.update_status(self._pods, namespace, name, status)
            self._record(pod, ev.container_events)
        except ApiError as err:
            # the pod went away or changed under us: the next event retries
            self.log.debug("kubelet: pod {ns}/{name}: {err}", ns=namespace, name=name, err=err)
        finally:
            self._starting = None

    def _record(
        self,
        pod: dict[str, Any],
        events: Callable[[dict[str, Any]], list[tuple[str, str, str]]],
    ) -> None:
        """Record the kubelet's ``events`` about ``pod``."""
        if self.events is None:
            return
        now = self.reactor.seconds()
        name = str((pod.get("metadata") or {}).get("name", ""))
        for reason, message, path in events(pod):
            self.events.record(
                ev.kubelet_event(
                    pod,
                    str((pod.get("spec") or {}).get("nodeName") or self.node_name),
                    now,
                    self.events.next_name(name),
                    reason=reason,
                    message=message,
                    field_path=path,
                )
            )


def _is_running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"
