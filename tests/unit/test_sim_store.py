"""The simulator's store: kube-apiserver's registry semantics in memory."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.kube.selectors import object_fields, parse_field_selector, parse_label_selector
from karpor.kube.status import ApiError
from karpor.sim.resources import CATALOG, ResourceType
from karpor.sim.store import GENERATE_NAME_ALPHABET, Store, WatchEvent


def _rt(group: str, version: str, plural: str) -> ResourceType:
    rt = CATALOG.lookup(group, version, plural)
    assert rt is not None
    return rt


PODS = _rt("", "v1", "pods")
NAMESPACES = _rt("", "v1", "namespaces")
CONFIGMAPS = _rt("", "v1", "configmaps")
SERVICES = _rt("", "v1", "services")
SECRETS = _rt("", "v1", "secrets")
EVENTS = _rt("", "v1", "events")
ACCOUNTS = _rt("", "v1", "serviceaccounts")
DEPLOYMENTS = _rt("apps", "v1", "deployments")
REVIEWS = _rt("authentication.k8s.io", "v1", "selfsubjectreviews")
assert None not in (
    PODS,
    NAMESPACES,
    CONFIGMAPS,
    SERVICES,
    SECRETS,
    EVENTS,
    ACCOUNTS,
    DEPLOYMENTS,
    REVIEWS,
)

NOW = 1_700_000_000.0


@pytest.fixture
def store():
    return Store(clock=lambda: NOW, rng=random.Random(7), ca_bundle="PEM")


def pod(name="web", labels=None, **extra):
    metadata = {"name": name, **({"labels": labels} if labels else {})}
    return {
        "metadata": metadata,
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]},
        **extra,
    }


def cm(name, data=None, labels=None):
    return {
        "metadata": {"name": name, **({"labels": labels} if labels else {})},
        "data": data or {},
    }


def deployment(name="d", replicas=None):
    spec = {
        "selector": {"matchLabels": {"app": name}},
        "template": {
            "metadata": {"labels": {"app": name}},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]},
        },
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": name}, "spec": spec}


def error(call, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


# --- a fresh cluster ----------------------------------------------------------------------


def test_a_fresh_cluster_has_kubes_namespaces_and_their_content(store):
    names = [n["metadata"]["name"] for n in store.list(NAMESPACES, None)["items"]]
    assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]
    default = store.get(NAMESPACES, None, "default")
    assert default["status"] == {"phase": "Active"}
    assert default["spec"] == {"finalizers": ["kubernetes"]}
    assert default["metadata"]["labels"] == {"kubernetes.io/metadata.name": "default"}
    for namespace in names:
        assert store.get(ACCOUNTS, namespace, "default")["metadata"]["namespace"] == namespace
        assert store.get(CONFIGMAPS, namespace, "kube-root-ca.crt")["data"] == {"ca.crt": "PEM"}
    kubernetes = store.get(SERVICES, "default", "kubernetes")
    assert kubernetes["spec"]["clusterIP"] == "10.96.0.1"
    assert store.resource_version == 13


# --- get / create ----------------------------------------------------------------------------


def test_created_objects_carry_kube_metadata(store):
    created = store.create(PODS, "default", pod())
    assert created["kind"] == "Pod"
    assert created["apiVersion"] == "v1"
    meta = created["metadata"]
    assert meta["namespace"] == "default"
    assert meta["resourceVersion"] == str(store.resource_version)
    assert meta["creationTimestamp"] == "2023-11-14T22:13:20Z"
    assert len(meta["uid"]) == 36
    assert created["status"]["phase"] == "Pending"
    assert created["spec"]["nodeName"] == "sim-node"
    assert created["spec"]["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert store.get(PODS, "default", "web") == created


def test_objects_returned_are_copies(store):
    created = store.create(CONFIGMAPS, "default", cm("a", {"k": "v"}))
    created["data"]["k"] = "changed"
    fetched = store.get(CONFIGMAPS, "default", "a")
    fetched["data"]["k"] = "changed too"
    store.list(CONFIGMAPS, "default")["items"][0]["data"]["k"] = "and again"
    assert store.get(CONFIGMAPS, "default", "a")["data"] == {"k": "v"}


def test_generate_name(store):
    created = store.create(PODS, "default", {**pod(), "metadata": {"generateName": "web-"}})
    name = created["metadata"]["name"]
    assert name.startswith("web-")
    assert len(name) == 9
    assert set(name[4:]) <= set(GENERATE_NAME_ALPHABET)


def test_get_missing_is_kubes_404(store):
    status = error(store.get, PODS, "default", "nope").status()
    assert status == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "nope" not found',
        "reason": "NotFound",
        "details": {"name": "nope", "kind": "pods"},
        "code": 404,
    }
    status = error(store.get, DEPLOYMENTS, "default", "nope").status()
    assert status["message"] == 'deployments.apps "nope" not found'
    assert status["details"] == {"name": "nope", "group": "apps", "kind": "deployments"}


def test_create_twice_is_already_exists(store):
    store.create(CONFIGMAPS, "default", cm("a"))
    err = error(store.create, CONFIGMAPS, "default", cm("a"))
    assert (err.code, err.reason, err.message) == (
        409,
        "AlreadyExists",
        'configmaps "a" already exists',
    )
    assert err.details == {"name": "a", "kind": "configmaps"}


def test_create_without_a_name_is_invalid(store):
    err = error(
        store.create, PODS, "default", {"spec": {"containers": [{"name": "c", "image": "i"}]}}
    )
    assert err.code == 422
    assert err.reason == "Invalid"
    assert (
        err.message
        == 'Pod "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    assert err.details == {
        "kind": "Pod",
        "causes": [
            {
                "reason": "FieldValueRequired",
                "message": "Required value: name or generateName is required",
                "field": "metadata.name",
            }
        ],
    }


def test_create_validates_names_labels_and_specs(store):
    err = error(store.create, CONFIGMAPS, "default", cm("Bad_Name"))
    assert err.message.startswith(
        'ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
    )
    err = error(store.create, CONFIGMAPS, "default", cm("a", labels={"bad key": "v"}))
    assert err.message.startswith(
        'ConfigMap "a" is invalid: metadata.labels: Invalid value: "bad key": '
    )
    err = error(store.create, PODS, "default", {"metadata": {"name": "p"}, "spec": {}})
    assert err.message == 'Pod "p" is invalid: spec.containers: Required value'
    bad = deployment()
    del bad["spec"]["selector"]
    err = error(store.create, DEPLOYMENTS, "default", bad)
    assert err.message == 'Deployment.apps "d" is invalid: spec.selector: Required value'
    assert err.details is not None
    assert err.details["group"] == "apps"
    assert err.details["kind"] == "Deployment"


def test_create_in_a_missing_namespace(store):
    err = error(store.create, CONFIGMAPS, "nowhere", cm("a"))
    assert (err.code, err.message) == (404, 'namespaces "nowhere" not found')
    assert err.details == {"name": "nowhere", "kind": "namespaces"}


def test_create_with_a_mismatched_namespace_or_a_resource_version(store):
    body = cm("a")
    body["metadata"]["namespace"] = "kube-system"
    err = error(store.create, CONFIGMAPS, "default", body)
    assert (err.code, err.reason) == (400, "BadRequest")
    assert (
        err.message
        == "the namespace of the provided object does not match the namespace sent on the request"
    )
    body = cm("a")
    body["metadata"]["resourceVersion"] = "5"
    assert error(store.create, CONFIGMAPS, "default", body).message == (
        "resourceVersion should not be set on objects to be created"
    )


def test_dry_run_create_stores_nothing(store):
    rv = store.resource_version
    created = store.create(CONFIGMAPS, "default", cm("a"), dry_run=True)
    assert created["metadata"]["name"] == "a"
    assert store.resource_version == rv
    assert error(store.get, CONFIGMAPS, "default", "a").code == 404


def test_kind_defaults(store):
    svc = store.create(
        SERVICES, "default", {"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["clusterIPs"] == [svc["spec"]["clusterIP"]]
    assert svc["spec"]["clusterIP"].startswith("10.")
    assert svc["spec"]["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    node_port = store.create(
        SERVICES,
        "default",
        {"metadata": {"name": "n"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}},
    )
    assert 30000 <= node_port["spec"]["ports"][0]["nodePort"] <= 32767
    dep = store.create(DEPLOYMENTS, "default", deployment())
    assert dep["metadata"]["generation"] == 1
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    assert dep["spec"]["template"]["metadata"]["creationTimestamp"] is None
    secret = store.create(SECRETS, "default", {"metadata": {"name": "s"}, "stringData": {"k": "v"}})
    assert secret["type"] == "Opaque"
    assert secret["data"] == {"k": "dg=="}
    assert "stringData" not in secret


# --- update / update_status / patch --------------------------------------------------------------


def test_update_with_a_stale_resource_version_conflicts(store):
    created = store.create(CONFIGMAPS, "default", cm("a", {"k": "1"}))
    store.update(CONFIGMAPS, "default", "a", {**created, "data": {"k": "2"}})
    err = error(store.update, CONFIGMAPS, "default", "a", {**created, "data": {"k": "3"}})
    assert (err.code, err.reason) == (409, "Conflict")
    assert err.message == (
        'Operation cannot be fulfilled on configmaps "a": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert err.details == {"name": "a", "kind": "configmaps"}


def test_update_without_a_resource_version_is_unconditional(store):
    created = store.create(CONFIGMAPS, "default", cm("a", {"k": "1"}))
    body = {"metadata": {"name": "a"}, "data": {"k": "2"}}
    updated = store.update(CONFIGMAPS, "default", "a", body)
    assert updated["data"] == {"k": "2"}
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]
    assert updated["metadata"]["creationTimestamp"] == created["metadata"]["creationTimestamp"]
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])


def test_an_update_that_changes_nothing_writes_nothing(store):
    created = store.create(CONFIGMAPS, "default", cm("a", {"k": "1"}))
    rv = store.resource_version
    assert store.update(CONFIGMAPS, "default", "a", created) == created
    assert store.resource_version == rv


def test_update_errors(store):
    assert error(store.update, CONFIGMAPS, "default", "a", cm("a")).code == 404
    store.create(CONFIGMAPS, "default", cm("a"))
    err = error(store.update, CONFIGMAPS, "default", "a", cm("b"))
    assert (err.code, err.message) == (
        400,
        "the name of the object (b) does not match the name on the URL (a)",
    )


def test_events_are_created_by_update(store):
    event = {
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Pod", "name": "p"},
        "reason": "R",
    }
    created = store.update(EVENTS, "default", "e", event)
    assert created["reason"] == "R"


def test_update_keeps_status_and_bumps_generation_on_spec_change(store):
    created = store.create(DEPLOYMENTS, "default", deployment())
    store.update_status(DEPLOYMENTS, "default", "d", {"readyReplicas": 1})
    body = store.get(DEPLOYMENTS, "default", "d")
    body["status"] = {"readyReplicas": 99}
    body["metadata"]["labels"] = {"x": "y"}
    relabelled = store.update(DEPLOYMENTS, "default", "d", body)
    assert relabelled["status"] == {"readyReplicas": 1}
    assert relabelled["metadata"]["generation"] == 1
    relabelled["spec"]["replicas"] = 3
    scaled = store.update(DEPLOYMENTS, "default", "d", relabelled)
    assert scaled["metadata"]["generation"] == 2
    assert created["metadata"]["uid"] == scaled["metadata"]["uid"]


def test_update_status_is_the_kubelets_write(store):
    store.create(PODS, "default", pod())
    running = store.update_status(
        PODS, "default", "web", {"phase": "Running", "podIP": "10.244.0.5"}
    )
    assert running["status"] == {"phase": "Running", "podIP": "10.244.0.5"}
    assert running["spec"]["containers"][0]["name"] == "c"
    assert error(store.update_status, PODS, "default", "gone", {}).code == 404


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/merge-patch+json", {"metadata": {"labels": {"new": "yes"}}}),
        ("application/strategic-merge-patch+json", {"metadata": {"labels": {"new": "yes"}}}),
        (
            "application/json-patch+json",
            [{"op": "add", "path": "/metadata/labels/new", "value": "yes"}],
        ),
    ],
)
def test_patch(store, content_type, body):
    store.create(PODS, "default", pod(labels={"app": "web"}))
    patched = store.patch(PODS, "default", "web", content_type, json.dumps(body).encode())
    assert patched["metadata"]["labels"] == {"app": "web", "new": "yes"}
    assert store.get(PODS, "default", "web") == patched


def test_patch_errors(store):
    assert (
        error(store.patch, PODS, "default", "web", "application/merge-patch+json", b"{}").code
        == 404
    )
    store.create(PODS, "default", pod())
    assert error(store.patch, PODS, "default", "web", "text/plain", b"{}").code == 415
    stale = json.dumps({"metadata": {"resourceVersion": "1"}}).encode()
    assert (
        error(store.patch, PODS, "default", "web", "application/merge-patch+json", stale).code
        == 409
    )


def test_apply_patch_creates_then_updates(store):
    document = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\ndata:\n  k: '1'\n"
    created = store.patch(CONFIGMAPS, "default", "a", "application/apply-patch+yaml", document)
    assert created["data"] == {"k": "1"}
    updated = store.patch(
        CONFIGMAPS, "default", "a", "application/apply-patch+yaml", document.replace(b"'1'", b"'2'")
    )
    assert updated["data"] == {"k": "2"}
    assert updated["metadata"]["uid"] == created["metadata"]["uid"]


# --- delete -------------------------------------------------------------------------------


def test_delete_returns_the_deleted_object(store):
    store.create(PODS, "default", pod())
    deleted = store.delete(PODS, "default", "web")
    assert deleted["metadata"]["name"] == "web"
    assert deleted["metadata"]["resourceVersion"] == str(store.resource_version)
    assert error(store.get, PODS, "default", "web").code == 404
    assert error(store.delete, PODS, "default", "web").code == 404


def test_deleting_a_namespace_deletes_its_objects(store):
    store.create(NAMESPACES, None, {"metadata": {"name": "team"}})
    store.create(PODS, "team", pod())
    store.create(PODS, "default", pod())
    events: list[WatchEvent] = []
    store.watch(None, None, resource_version=str(store.resource_version), callback=events.append)
    deleted = store.delete(NAMESPACES, None, "team")
    assert deleted["status"]["phase"] == "Terminating"
    assert "deletionTimestamp" in deleted["metadata"]
    seen = [(e.type, e.resource_type.plural, e.object["metadata"]["name"]) for e in events]
    assert seen[0] == ("MODIFIED", "namespaces", "team")
    assert seen[-1] == ("DELETED", "namespaces", "team")
    assert sorted(seen[1:-1]) == [
        ("DELETED", "configmaps", "kube-root-ca.crt"),
        ("DELETED", "pods", "web"),
        ("DELETED", "serviceaccounts", "default"),
    ]
    assert store.get(PODS, "default", "web")
    assert store.list(PODS, "team")["items"] == []


def test_system_namespaces_may_not_be_deleted(store):
    err = error(store.delete, NAMESPACES, None, "kube-system")
    assert (err.code, err.reason) == (403, "Forbidden")
    assert err.message == 'namespaces "kube-system" is forbidden: this namespace may not be deleted'


def test_delete_collection(store):
    store.create(CONFIGMAPS, "default", cm("a", labels={"x": "1"}))
    store.create(CONFIGMAPS, "default", cm("b", labels={"x": "2"}))
    deleted = store.delete_collection(CONFIGMAPS, "default", label_selector="x")
    assert deleted["kind"] == "ConfigMapList"
    assert [i["metadata"]["name"] for i in deleted["items"]] == ["a", "b"]
    assert [i["metadata"]["name"] for i in store.list(CONFIGMAPS, "default")["items"]] == [
        "kube-root-ca.crt"
    ]
    assert error(store.delete_collection, NAMESPACES, None).code == 405


# --- list ----------------------------------------------------------------------------------


def test_list_is_sorted_and_shaped_like_kubes(store):
    store.create(CONFIGMAPS, "default", cm("b"))
    store.create(CONFIGMAPS, "default", cm("a"))
    listed = store.list(CONFIGMAPS, None)
    assert listed["kind"] == "ConfigMapList"
    assert listed["apiVersion"] == "v1"
    assert listed["metadata"] == {"resourceVersion": str(store.resource_version)}
    keys = [(i["metadata"]["namespace"], i["metadata"]["name"]) for i in listed["items"]]
    assert keys == sorted(keys)
    assert all("kind" not in i and "apiVersion" not in i for i in listed["items"])


def test_list_selectors(store):
    store.create(PODS, "default", pod("a", {"app": "web", "tier": "front"}))
    store.create(PODS, "default", pod("b", {"app": "web"}))
    store.create(PODS, "kube-system", pod("c", {"app": "dns"}))

    def names(**kwargs):
        return [
            i["metadata"]["name"]
            for i in store.list(PODS, kwargs.pop("ns", None), **kwargs)["items"]
        ]

    assert names(label_selector="app=web") == ["a", "b"]
    assert names(label_selector="app=web,!tier") == ["b"]
    assert names(label_selector="app in (dns)") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.namespace!=default") == ["c"]
    assert names(field_selector="status.phase=Pending", ns="default") == ["a", "b"]
    assert names(label_selector="app=") == []
    assert error(store.list, PODS, None, label_selector="a b").code == 400
    err = error(store.list, CONFIGMAPS, None, field_selector="status.phase=Running")
    assert (err.code, err.message) == (400, "field label not supported: status.phase")


def test_list_pagination(store):
    for name in "abcde":
        store.create(CONFIGMAPS, "default", cm(name))
    first = store.list(CONFIGMAPS, "default", limit=2)
    assert [i["metadata"]["name"] for i in first["items"]] == ["a", "b"]
    assert first["metadata"]["remainingItemCount"] == 4
    store.create(CONFIGMAPS, "default", cm("z"))
    second = store.list(
        CONFIGMAPS, "default", limit=2, continue_token=first["metadata"]["continue"]
    )
    assert [i["metadata"]["name"] for i in second["items"]] == ["c", "d"]
    assert second["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    third = store.list(
        CONFIGMAPS, "default", limit=5, continue_token=second["metadata"]["continue"]
    )
    assert [i["metadata"]["name"] for i in third["items"]] == ["e", "kube-root-ca.crt", "z"]
    assert "continue" not in third["metadata"]
    filtered = store.list(CONFIGMAPS, "default", limit=1, label_selector="!x")
    assert "remainingItemCount" not in filtered["metadata"]
    assert error(store.list, CONFIGMAPS, "default", continue_token="garbage!").code == 400


def test_types_that_are_not_stored(store):
    err = error(store.get, REVIEWS, None, "x")
    assert (err.code, err.reason) == (405, "MethodNotAllowed")
    assert error(store.list, REVIEWS, None).code == 405


# --- watch -----------------------------------------------------------------------------------


def test_watch_from_zero_lists_then_streams(store):
    store.create(PODS, "default", pod("a"))
    events: list[WatchEvent] = []
    watcher = store.watch(PODS, "default", resource_version="0", callback=events.append)
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [("ADDED", "a")]
    store.create(PODS, "default", pod("b"))
    store.create(PODS, "kube-system", pod("c"))
    store.update_status(PODS, "default", "a", {"phase": "Running"})
    store.delete(PODS, "default", "b")
    watcher.cancel()
    watcher.cancel()
    store.create(PODS, "default", pod("d"))
    assert [(e.type, e.object["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
        ("MODIFIED", "a"),
        ("DELETED", "b"),
    ]
    assert events[1].object["kind"] == "Pod"
    assert events[1].resource_type == PODS


def test_watch_resumes_from_a_resource_version(store):
    created = store.create(CONFIGMAPS, "default", cm("a", {"k": "1"}))
    store.update(CONFIGMAPS, "default", "a", {**created, "data": {"k": "2"}})
    store.delete(CONFIGMAPS, "default", "a")
    events: list[WatchEvent] = []
    store.watch(
        CONFIGMAPS,
        None,
        resource_version=created["metadata"]["resourceVersion"],
        callback=events.append,
    )
    assert [e.type for e in events] == ["MODIFIED", "DELETED"]
    assert events[0].object["data"] == {"k": "2"}


def test_watch_from_a_compacted_resource_version_is_expired():
    store = Store(history=5)
    for i in range(10):
        store.create(CONFIGMAPS, "default", cm(f"c{i}"))
    err = error(store.watch, CONFIGMAPS, None, resource_version="3", callback=lambda e: None)
    assert (err.code, err.reason) == (410, "Expired")
    assert err.message == f"too old resource version: 3 ({store.resource_version - 5})"
    store.watch(
        CONFIGMAPS, None, resource_version=str(store.resource_version - 5), callback=lambda e: None
    )
    assert (
        error(store.watch, CONFIGMAPS, None, resource_version="x", callback=lambda e: None).code
        == 400
    )


def test_watch_with_a_selector_sees_objects_enter_and_leave(store):
    events: list[WatchEvent] = []
    store.watch(CONFIGMAPS, "default", label_selector="app=web", callback=events.append)
    created = store.create(CONFIGMAPS, "default", cm("a"))
    labelled = store.update(
        CONFIGMAPS,
        "default",
        "a",
        {**created, "metadata": {**created["metadata"], "labels": {"app": "web"}}},
    )
    store.update(CONFIGMAPS, "default", "a", {**labelled, "data": {"k": "v"}})
    store.update(
        CONFIGMAPS, "default", "a", {**labelled, "metadata": {"name": "a", "labels": {"app": "db"}}}
    )
    assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]


def test_watch_every_type(store):
    events: list[WatchEvent] = []
    store.watch(None, None, callback=events.append)
    assert len(events) == 13
    store.create(PODS, "default", pod())
    assert (events[-1].type, events[-1].resource_type) == ("ADDED", PODS)


def test_a_failing_callback_does_not_break_writes(store):
    def explode(event):
        raise RuntimeError("boom")

    store.watch(CONFIGMAPS, None, resource_version=str(store.resource_version), callback=explode)
    assert store.create(CONFIGMAPS, "default", cm("a"))["metadata"]["name"] == "a"


# --- watch dispatch: the index notifies exactly the watchers a brute-force scan would ---------

_NAMESPACES = ("default", "kube-public")
_NAMES = ("a", "b")
_VALUES = ("x", "y", "z")
_label_sets = st.dictionaries(st.sampled_from(("app", "tier")), st.sampled_from(_VALUES))
_label_terms = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(("app", "tier")), st.sampled_from(_VALUES)),
    st.builds(lambda k, v: f"{k}=={v}", st.sampled_from(("app", "tier")), st.sampled_from(_VALUES)),
    st.builds(lambda k, v: f"{k}!={v}", st.sampled_from(("app", "tier")), st.sampled_from(_VALUES)),
    st.builds(
        lambda k, vs: f"{k} in ({','.join(vs)})",
        st.sampled_from(("app", "tier")),
        st.lists(st.sampled_from(_VALUES), min_size=1, max_size=2),
    ),
    st.builds(
        lambda k, vs: f"{k} notin ({','.join(vs)})",
        st.sampled_from(("app", "tier")),
        st.lists(st.sampled_from(_VALUES), min_size=1, max_size=2),
    ),
    st.sampled_from(("app", "!app", "tier")),
)
_label_selectors = st.lists(_label_terms, max_size=2).map(",".join)
_field_selectors = st.lists(
    st.one_of(
        st.builds(lambda n: f"metadata.name={n}", st.sampled_from(_NAMES)),
        st.builds(lambda n: f"metadata.name!={n}", st.sampled_from(_NAMES)),
        st.builds(lambda n: f"metadata.namespace=={n}", st.sampled_from(_NAMESPACES)),
    ),
    max_size=2,
).map(",".join)
_watches = st.tuples(
    st.sampled_from((CONFIGMAPS, SECRETS, None)),
    st.sampled_from((None, *_NAMESPACES)),
    _label_selectors,
    _field_selectors,
)
_writes = st.tuples(
    st.sampled_from((CONFIGMAPS, SECRETS)),
    st.sampled_from(_NAMESPACES),
    st.sampled_from(_NAMES),
    st.one_of(st.none(), _label_sets),
)


def _brute_force(
    watch: tuple[ResourceType | None, str | None, str, str],
    rt: ResourceType,
    change: str,
    new: dict[str, Any],
    old: dict[str, Any] | None,
) -> str | None:
    """The event a watch sees for a change, by checking its selectors against the objects."""
    watched, namespace, label_text, field_text = watch
    labels, fields = parse_label_selector(label_text), parse_field_selector(field_text)

    def selects(obj: dict[str, Any]) -> bool:
        meta = obj["metadata"]
        return (
            (namespace is None or meta.get("namespace") == namespace)
            and labels.matches(meta.get("labels"))
            and fields.matches(object_fields(rt.group, rt.kind, obj))
        )

    if watched is not None and watched != rt:
        return None
    if change == "MODIFIED" and old is not None:
        return {(True, True): "MODIFIED", (False, True): "ADDED", (True, False): "DELETED"}.get(
            (selects(old), selects(new))
        )
    return change if selects(new) else None


@settings(max_examples=150, deadline=None)
@given(
    st.lists(_watches, min_size=1, max_size=12),
    st.lists(_writes, min_size=1, max_size=25),
    st.data(),
)
def test_watch_dispatch_matches_a_brute_force_scan(watches, writes, data):
    store = Store(clock=lambda: NOW, rng=random.Random(7))
    received: list[list[tuple[str, str]]] = [[] for _ in watches]
    order: list[int] = []
    watchers = []
    rv = str(store.resource_version)
    for i, (rt, namespace, labels, fields) in enumerate(watches):

        def on_event(event: WatchEvent, i: int = i) -> None:
            received[i].append((event.type, event.object["metadata"]["resourceVersion"]))
            order.append(i)

        watchers.append(
            store.watch(
                rt,
                namespace,
                label_selector=labels,
                field_selector=fields,
                resource_version=rv,
                callback=on_event,
            )
        )
    expected: list[list[tuple[str, str]]] = [[] for _ in watches]
    cancelled: set[int] = set()
    for rt, namespace, name, labels in writes:
        if data.draw(st.booleans(), label="cancel one") and len(cancelled) < len(watchers):
            victim = data.draw(st.sampled_from(range(len(watchers))), label="victim")
            watchers[victim].cancel()
            cancelled.add(victim)
        try:
            old = store.get(rt, namespace, name)
        except ApiError:
            old = None
        order.clear()
        if old is not None and labels is None:
            new = store.delete(rt, namespace, name)
            change = "DELETED"
        else:
            body = {"metadata": {"name": name, "labels": labels or {}}}
            if old is None:
                new = store.create(rt, namespace, body)
                change = "ADDED"
            else:
                new = store.update(rt, namespace, name, {**old, **body})
                change = "MODIFIED"
        if (
            old is not None
            and new["metadata"]["resourceVersion"] == old["metadata"]["resourceVersion"]
        ):
            continue  # a no-op update writes nothing
        assert order == sorted(order)  # registration order, as before the index
        for i, watch in enumerate(watches):
            if i in cancelled:
                continue
            kind = _brute_force(watch, rt, change, new, old if change == "MODIFIED" else None)
            if kind is not None:
                expected[i].append((kind, new["metadata"]["resourceVersion"]))
    assert received == expected
    for watcher in watchers:
        watcher.cancel()
    assert len(store._watchers) == 0
    assert store._watchers._buckets == {}


def test_watchers_of_one_change_share_its_encoded_line(store):
    lines: dict[str, list[bytes]] = {"json": [], "own": []}

    def shared(event: WatchEvent) -> None:
        lines["json"].append(event.shared("line", lambda e: json.dumps(e.view).encode()))
        lines["own"].append(json.dumps(event.object).encode())
        event.object["metadata"]["name"] = "mine"  # each event's object is its own copy

    rv = str(store.resource_version)
    for _ in range(3):
        store.watch(CONFIGMAPS, "default", callback=shared, resource_version=rv)
    store.create(CONFIGMAPS, "default", cm("a", labels={"app": "web"}))
    first = lines["json"][0]
    assert all(line is first for line in lines["json"])
    assert lines["own"] == [first] * 3
    assert store.get(CONFIGMAPS, "default", "a")["metadata"]["name"] == "a"


def test_a_watcher_cancelled_by_another_callback_gets_nothing_more(store):
    events: list[str] = []
    second = None

    def first(event: WatchEvent) -> None:
        events.append("first")
        assert second is not None
        second.cancel()

    rv = str(store.resource_version)
    store.watch(CONFIGMAPS, None, label_selector="app=web", callback=first, resource_version=rv)
    second = store.watch(
        CONFIGMAPS,
        "default",
        label_selector="app in (web)",
        callback=lambda e: events.append("second"),
        resource_version=rv,
    )
    store.create(CONFIGMAPS, "default", cm("a", labels={"app": "web"}))
    assert events == ["first"]
