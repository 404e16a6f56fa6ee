"""karpor.sim.controllers: the deployment controller, with the kubelet and a fake clock."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from karpor.sim.controllers import (
    REVISION_ANNOTATION,
    REVISION_HISTORY_ANNOTATION,
    TEMPLATE_HASH_LABEL,
    DeploymentController,
    comparable_template,
    expired_replica_sets,
    new_replica_set,
    resolve_int_or_percent,
    same_template,
    template_hash,
)
from karpor.sim.events import EventRecorder
from karpor.sim.kubelet import Kubelet
from karpor.sim.resources import CATALOG, ResourceType
from karpor.sim.store import Store


def _type(group: str, plural: str) -> ResourceType:
    rt = CATALOG.lookup(group, "v1", plural)
    assert rt is not None
    return rt


DEPLOYMENTS = _type("apps", "deployments")
REPLICASETS = _type("apps", "replicasets")
EVENTS = _type("", "events")
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

    def replica_sets(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.store.list(REPLICASETS, "default")["items"]
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
        assert ref["kind"] == "ReplicaSet" and ref["controller"] is True
        assert ref["name"] == f"web-{digest}"
    (rs,) = c.replica_sets()
    (ref,) = rs["metadata"]["ownerReferences"]
    assert ref["kind"] == "Deployment" and ref["controller"] is True
    assert ref["uid"] == c.deployment()["metadata"]["uid"]
    assert rs["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", TEMPLATE_HASH_LABEL: digest}
    assert c.deployment()["metadata"]["annotations"][REVISION_ANNOTATION] == "1"
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


def test_rollout_history_and_undo_reuse_the_old_replica_set() -> None:
    c = Cluster()
    first = _deployment(2)
    first["metadata"]["annotations"] = {"kubernetes.io/change-cause": "first"}
    c.store.create(DEPLOYMENTS, "default", first)
    c.settle()
    (rs1,) = c.replica_sets()
    changed = c.deployment()
    changed["metadata"]["annotations"]["kubernetes.io/change-cause"] = "second"
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    c.store.update(DEPLOYMENTS, "default", "web", changed)
    c.settle()
    by_name = {rs["metadata"]["name"]: rs for rs in c.replica_sets()}
    assert len(by_name) == 2
    old = by_name[rs1["metadata"]["name"]]
    (new,) = [rs for name, rs in by_name.items() if name != rs1["metadata"]["name"]]
    assert old["spec"]["replicas"] == 0 and old["status"]["replicas"] == 0
    assert new["metadata"]["annotations"][REVISION_ANNOTATION] == "2"
    assert new["metadata"]["annotations"]["kubernetes.io/change-cause"] == "second"
    assert old["metadata"]["annotations"]["kubernetes.io/change-cause"] == "first"
    assert new["status"]["readyReplicas"] == 2
    assert {p["metadata"]["labels"][TEMPLATE_HASH_LABEL] for p in c.pods()} == {
        new["metadata"]["labels"][TEMPLATE_HASH_LABEL]
    }
    # undo as kubectl does: the old template (without the hash label, as a typed
    # client marshals it), the old annotations
    undo = c.deployment()
    template = dict(old["spec"]["template"])
    template["metadata"] = {
        "creationTimestamp": None,
        "labels": {"app": "web"},
        "annotations": template["metadata"]["annotations"],
    }
    undo["spec"]["template"] = template
    undo["metadata"]["annotations"] = {"kubernetes.io/change-cause": "first"}
    c.store.update(DEPLOYMENTS, "default", "web", undo)
    c.settle()
    assert len(c.replica_sets()) == 2
    back = c.store.get(REPLICASETS, "default", rs1["metadata"]["name"])
    assert back["spec"]["replicas"] == 2
    assert back["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
    assert back["metadata"]["annotations"][REVISION_HISTORY_ANNOTATION] == "1"
    assert c.deployment()["metadata"]["annotations"][REVISION_ANNOTATION] == "3"
    status = c.deployment()["status"]
    assert (status["replicas"], status["updatedReplicas"], status["availableReplicas"]) == (2, 2, 2)
    c.stop()


def test_revision_history_limit_prunes_empty_old_replica_sets() -> None:
    c = Cluster()
    limited = _deployment(1)
    limited["spec"]["revisionHistoryLimit"] = 1
    c.store.create(DEPLOYMENTS, "default", limited)
    c.settle()
    for image in ("nginx:1.28", "nginx:1.29", "nginx:1.30"):
        changed = c.deployment()
        changed["spec"]["template"]["spec"]["containers"][0]["image"] = image
        c.store.update(DEPLOYMENTS, "default", "web", changed)
        c.settle()
    revisions = sorted(
        int(rs["metadata"]["annotations"][REVISION_ANNOTATION]) for rs in c.replica_sets()
    )
    assert revisions == [3, 4]
    c.stop()


def test_a_standalone_replica_set_keeps_its_pods_and_deleting_it_deletes_them() -> None:
    c = Cluster()
    rs = {
        "metadata": {"name": "solo"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "solo"}},
            "template": {
                "metadata": {"labels": {"app": "solo"}},
                "spec": {"containers": [{"name": "c", "image": "busybox"}]},
            },
        },
    }
    c.store.create(REPLICASETS, "default", rs)
    c.settle()
    assert len(c.pods()) == 3
    status = c.store.get(REPLICASETS, "default", "solo")["status"]
    assert status == {
        "replicas": 3,
        "fullyLabeledReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "observedGeneration": 1,
    }
    c.store.delete(
        c.pods()[0]["metadata"]["name"] and PODS, "default", c.pods()[0]["metadata"]["name"]
    )
    c.settle()
    assert len(c.pods()) == 3
    c.store.delete(REPLICASETS, "default", "solo")
    c.clock.advance(0)
    assert c.pods() == []
    c.stop()


_LEAVES: st.SearchStrategy[Any] = st.one_of(
    st.none(), st.integers(), st.text(max_size=3), st.just({}), st.just([])
)
_TREES: st.SearchStrategy[Any] = st.recursive(
    _LEAVES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=50)
@given(st.dictionaries(st.text(max_size=4), _TREES, max_size=4), st.text(max_size=6))
def test_templates_compare_without_hash_label_and_empty_members(
    spec: dict[str, Any], hash_: str
) -> None:
    template = {"metadata": {"labels": {"app": "x"}}, "spec": spec}
    labelled = {
        "metadata": {"labels": {"app": "x", TEMPLATE_HASH_LABEL: hash_}, "creationTimestamp": None},
        "spec": {**spec, "extra": {}},
    }
    assert same_template(template, labelled)
    assert template_hash(template) == template_hash(labelled)
    assert comparable_template(comparable_template(template)) == comparable_template(template)


def test_new_replica_set_and_expiry() -> None:
    deployment = _deployment(3)
    deployment["metadata"].update(
        {
            "namespace": "ns",
            "uid": "u1",
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{}",
                "kubernetes.io/change-cause": "why",
                REVISION_ANNOTATION: "7",
            },
        }
    )
    rs = new_replica_set(deployment, 8)
    digest = template_hash(deployment["spec"]["template"])
    assert rs["metadata"]["name"] == f"web-{digest}"
    assert rs["metadata"]["annotations"] == {
        "kubernetes.io/change-cause": "why",
        "deployment.kubernetes.io/desired-replicas": "3",
        "deployment.kubernetes.io/max-replicas": "4",
        REVISION_ANNOTATION: "8",
    }
    assert rs["spec"]["template"]["metadata"]["labels"][TEMPLATE_HASH_LABEL] == digest
    assert rs["metadata"]["ownerReferences"][0]["uid"] == "u1"

    def old(revision: int, replicas: int) -> dict[str, Any]:
        return {
            "metadata": {"annotations": {REVISION_ANNOTATION: str(revision)}},
            "spec": {"replicas": replicas},
            "status": {"replicas": replicas},
        }

    rss = [old(3, 0), old(1, 0), old(2, 1), old(4, 0)]
    assert [
        rs["metadata"]["annotations"][REVISION_ANNOTATION] for rs in expired_replica_sets(rss, 1)
    ] == ["1", "3"]
    assert expired_replica_sets(rss, 10) == []


def test_controllers_record_kubes_events() -> None:
    c = Cluster()
    c.controller.stopService()
    recorder = EventRecorder(c.store, c.clock)
    c.controller = DeploymentController(c.store, c.clock, events=recorder)
    c.controller.startService()
    c.store.create(DEPLOYMENTS, "default", _deployment(2))
    c.settle()
    (rs1,) = c.replica_sets()
    scaled = c.deployment()
    scaled["spec"]["replicas"] = 1
    c.store.update(DEPLOYMENTS, "default", "web", scaled)
    c.settle()
    events = [
        (e["involvedObject"]["kind"], e["reason"], e["message"])
        for e in sorted(
            c.store.list(EVENTS, "default")["items"], key=lambda e: e["metadata"]["name"]
        )
    ]
    name = rs1["metadata"]["name"]
    pods = [m for kind, reason, m in events if reason == "SuccessfulCreate"]
    assert len(pods) == 2 and all(m.startswith(f"Created pod: {name}-") for m in pods)
    assert (
        "Deployment",
        "ScalingReplicaSet",
        f"Scaled up replica set {name} from 0 to 2",
    ) in events
    assert (
        "Deployment",
        "ScalingReplicaSet",
        f"Scaled down replica set {name} from 2 to 1",
    ) in events
    deleted = [m for kind, reason, m in events if reason == "SuccessfulDelete"]
    assert len(deleted) == 1 and deleted[0].removeprefix("Deleted pod: ") not in {
        p["metadata"]["name"] for p in c.pods()
    }
    first = next(
        e for e in c.store.list(EVENTS, "default")["items"] if e["reason"] == "ScalingReplicaSet"
    )
    assert first["source"] == {"component": "deployment-controller"}
    assert first["involvedObject"]["apiVersion"] == "apps/v1"
    c.stop()
