"""karpor.sim.controllers: the deployment controller, with the kubelet and a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.task import Clock

from karpor.sim.controllers import (
    TEMPLATE_HASH_LABEL,
    DeploymentController,
    resolve_int_or_percent,
    template_hash,
)
from karpor.sim.kubelet import Kubelet
from karpor.sim.resources import CATALOG, ResourceType
from karpor.sim.store import Store


def _type(group: str, plural: str) -> ResourceType:
    rt = CATALOG.lookup(group, "v1", plural)
    assert rt is not None
    return rt


DEPLOYMENTS = _type("apps", "deployments")
PODS = _type("", "pods")


def _deployment(replicas: int = 2, image: str = "nginx:1.27") -> dict[str, Any]:
    return {
        "metadata": {"name": "web"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}, "annotations": {"a": "b"}},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }


class Cluster:
    def __init__(self) -> None:
        self.clock = Clock()
        self.clock.advance(1_700_000_000)
        self.store = Store(clock=self.clock.seconds)
        self.kubelet = Kubelet(self.store, self.clock, start_delay=1.0)
        self.controller = DeploymentController(self.store, self.clock)
        self.kubelet.startService()
        self.controller.startService()

    def settle(self, seconds: float = 2.0) -> None:
        for _ in range(int(seconds * 10)):
            self.clock.advance(0.1)

    def pods(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.store.list(PODS, "default")["items"]
        return items

    def deployment(self) -> dict[str, Any]:
        return self.store.get(DEPLOYMENTS, "default", "web")

    def stop(self) -> None:
        self.controller.stopService()
        self.kubelet.stopService()


def test_creates_pods_and_reports_a_complete_rollout() -> None:
    c = Cluster()
    c.store.create(DEPLOYMENTS, "default", _deployment(2))
    c.clock.advance(0)
    pods = c.pods()
    assert len(pods) == 2
    template = c.deployment()["spec"]["template"]
    digest = template_hash(template)
    for pod in pods:
        meta = pod["metadata"]
        assert meta["name"].startswith(f"web-{digest}-")
        assert meta["labels"] == {"app": "web", TEMPLATE_HASH_LABEL: digest}
        assert meta["annotations"] == {"a": "b"}
        (ref,) = meta["ownerReferences"]
        assert ref["kind"] == "Deployment" and ref["controller"] is True
        assert ref["uid"] == c.deployment()["metadata"]["uid"]
    status = c.deployment()["status"]
    assert status["replicas"] == 2 and status["updatedReplicas"] == 2
    assert "readyReplicas" not in status and status["unavailableReplicas"] == 2
    assert {cond["type"]: cond["reason"] for cond in status["conditions"]} == {
        "Available": "MinimumReplicasUnavailable",
        "Progressing": "ReplicaSetUpdated",
    }
    c.settle()  # the kubelet starts the pods
    status = c.deployment()["status"]
    assert status["observedGeneration"] == 1
    assert (status["readyReplicas"], status["availableReplicas"]) == (2, 2)
    assert "unavailableReplicas" not in status
    conditions = {cond["type"]: cond for cond in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert conditions["Progressing"]["message"] == (
        f'ReplicaSet "web-{digest}" has successfully progressed.'
    )
    # nothing changes any more: the controller is quiet once settled
    rv = c.store.resource_version
    c.settle()
    assert c.store.resource_version == rv
    c.stop()


def test_scale_down_up_and_new_template_rolls() -> None:
    c = Cluster()
    c.store.create(DEPLOYMENTS, "default", _deployment(3))
    c.settle()
    scaled = c.deployment()
    scaled["spec"]["replicas"] = 1
    c.store.update(DEPLOYMENTS, "default", "web", scaled)
    c.settle()
    assert len(c.pods()) == 1
    assert c.deployment()["status"]["observedGeneration"] == 2
    assert c.deployment()["status"]["replicas"] == 1
    old_names = {p["metadata"]["name"] for p in c.pods()}
    changed = c.deployment()
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    c.store.update(DEPLOYMENTS, "default", "web", changed)
    c.clock.advance(0)
    # the new pod exists, the old one waits until it is ready
    assert len(c.pods()) == 2
    status = c.deployment()["status"]
    assert (status["replicas"], status["updatedReplicas"]) == (2, 1)
    c.settle()
    pods = c.pods()
    assert len(pods) == 1 and pods[0]["metadata"]["name"] not in old_names
    assert pods[0]["spec"]["containers"][0]["image"] == "nginx:1.28"
    status = c.deployment()["status"]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (1, 1, 1)
    c.stop()


def test_deleting_the_deployment_deletes_its_pods_and_zero_replicas() -> None:
    c = Cluster()
    c.store.create(DEPLOYMENTS, "default", _deployment(0))
    c.settle()
    assert c.pods() == []
    status = c.deployment()["status"]
    assert "replicas" not in status and status["observedGeneration"] == 1
    assert {cond["type"]: cond["status"] for cond in status["conditions"]} == {
        "Available": "True",
        "Progressing": "True",
    }
    grown = c.deployment()
    grown["spec"]["replicas"] = 2
    c.store.update(DEPLOYMENTS, "default", "web", grown)
    c.settle()
    assert len(c.pods()) == 2
    c.store.delete(DEPLOYMENTS, "default", "web")
    c.clock.advance(0)
    assert c.pods() == []
    c.stop()


def test_paused_deployment_keeps_its_pods_and_min_ready_seconds() -> None:
    c = Cluster()
    paused = _deployment(1)
    paused["spec"]["paused"] = True
    c.store.create(DEPLOYMENTS, "default", paused)
    c.settle()
    assert c.pods() == []
    waiting = _deployment(1)
    waiting["metadata"]["name"] = "slow"
    waiting["spec"]["minReadySeconds"] = 5
    c.store.create(DEPLOYMENTS, "default", waiting)
    c.settle(2)
    slow = c.store.get(DEPLOYMENTS, "default", "slow")["status"]
    assert slow["readyReplicas"] == 1 and "availableReplicas" not in slow
    c.settle(6)
    slow = c.store.get(DEPLOYMENTS, "default", "slow")["status"]
    assert slow["availableReplicas"] == 1
    c.stop()
    assert not c.clock.getDelayedCalls() or all(
        not call.active() for call in c.clock.getDelayedCalls()
    )


def test_int_or_percent() -> None:
    assert resolve_int_or_percent("25%", 10, round_up=False) == 2
    assert resolve_int_or_percent("25%", 10, round_up=True) == 3
    assert resolve_int_or_percent(1, 10, round_up=False) == 1
    assert resolve_int_or_percent("x%", 10, round_up=False) == 0
