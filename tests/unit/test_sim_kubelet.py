"""karpor.sim.kubelet: pods start running on the reactor clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from karpor.sim.kubelet import Kubelet, pod_ip
from karpor.sim.resources import CATALOG, ResourceType
from karpor.sim.store import Store


def _pods() -> ResourceType:
    rt = CATALOG.lookup("", "v1", "pods")
    assert rt is not None
    return rt


PODS = _pods()


def test_created_pod_runs_after_delay() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds)
    kubelet = Kubelet(store, clock, start_delay=0.5)
    kubelet.startService()
    pod = {"metadata": {"name": "web"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    store.create(PODS, "default", pod)
    assert store.get(PODS, "default", "web")["status"]["phase"] == "Pending"
    clock.advance(0.5)
    status = store.get(PODS, "default", "web")["status"]
    assert status["phase"] == "Running"
    assert status["containerStatuses"][0]["ready"] is True
    assert status["containerStatuses"][0]["state"]["running"]["startedAt"]
    assert {c["type"] for c in status["conditions"]} >= {"Ready", "ContainersReady"}
    assert status["podIP"].startswith("10.244.")
    assert store.get(PODS, "default", "web")["spec"]["nodeName"]
    assert not clock.getDelayedCalls()
    kubelet.stopService()


def test_deleted_before_start_and_stop() -> None:
    clock = Clock()
    store = Store(clock=clock.seconds)
    kubelet = Kubelet(store, clock, start_delay=1.0)
    kubelet.startService()
    store.create(
        PODS,
        "default",
        {"metadata": {"name": "gone"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    store.delete(PODS, "default", "gone")
    assert not clock.getDelayedCalls()
    store.create(
        PODS,
        "default",
        {"metadata": {"name": "late"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    kubelet.stopService()
    assert not clock.getDelayedCalls()


def test_pod_ip_is_stable() -> None:
    assert pod_ip("uid-1") == pod_ip("uid-1")
