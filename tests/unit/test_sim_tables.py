"""Tables as kube-apiserver's printers build them, and HumanDuration."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.humanize import (
    age,
    format_micro_timestamp,
    format_timestamp,
    human_duration,
    parse_timestamp,
)
from karpor.sim.resources import CATALOG, ResourceType
from karpor.sim.store import Store
from karpor.sim.tables import to_table


def _rt(group: str, version: str, plural: str) -> ResourceType:
    rt = CATALOG.lookup(group, version, plural)
    assert rt is not None
    return rt


PODS = _rt("", "v1", "pods")
NAMESPACES = _rt("", "v1", "namespaces")
CONFIGMAPS = _rt("", "v1", "configmaps")
SECRETS = _rt("", "v1", "secrets")
SERVICES = _rt("", "v1", "services")
ACCOUNTS = _rt("", "v1", "serviceaccounts")
EVENTS = _rt("", "v1", "events")
DEPLOYMENTS = _rt("apps", "v1", "deployments")
CREATED = 1_700_000_000.0


# --- HumanDuration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [  # the cases of apimachinery's duration_test.go
        (-2, "<invalid>"),
        (-1.5, "0s"),
        (0, "0s"),
        (1, "1s"),
        (119, "119s"),
        (120, "2m"),
        (121, "2m1s"),
        (9 * 60 + 59, "9m59s"),
        (10 * 60, "10m"),
        (3 * 3600 - 1, "179m"),
        (3 * 3600, "3h"),
        (3 * 3600 + 60, "3h1m"),
        (8 * 3600 - 1, "7h59m"),
        (8 * 3600, "8h"),
        (48 * 3600 - 1, "47h"),
        (48 * 3600, "2d"),
        (48 * 3600 + 3600, "2d1h"),
        (8 * 86400 - 1, "7d23h"),
        (8 * 86400, "8d"),
        (2 * 365 * 86400 - 1, "729d"),
        (2 * 365 * 86400, "2y"),
        (2 * 365 * 86400 + 86400, "2y1d"),
        (8 * 365 * 86400, "8y"),
        (80 * 365 * 86400, "80y"),
    ],
)
def test_human_duration(seconds, text):
    assert human_duration(seconds) == text


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "y": 365 * 86400}


@given(st.integers(min_value=0, max_value=50 * 365 * 86400))
def test_human_duration_truncates_to_its_last_unit(seconds):
    parts = re.findall(r"(\d+)([smhdy])", human_duration(seconds))
    shown = sum(int(n) * _UNITS[u] for n, u in parts)
    assert shown <= seconds < shown + _UNITS[parts[-1][1]]


def test_timestamps():
    assert format_timestamp(CREATED) == "2023-11-14T22:13:20Z"
    assert format_micro_timestamp(CREATED + 0.25) == "2023-11-14T22:13:20.250000Z"
    assert parse_timestamp("2023-11-14T22:13:20Z") == CREATED
    assert parse_timestamp("2023-11-14T23:13:20.5+01:00") == CREATED + 0.5
    assert age("2023-11-14T22:13:20Z", CREATED + 3 * 3600 + 60) == "3h1m"
    assert age(None, CREATED) == "<unknown>"
    assert age("yesterday", CREATED) == "<unknown>"
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_timestamp("2023-11-14")


# --- tables --------------------------------------------------------------------------------


@pytest.fixture
def store():
    return Store(clock=lambda: CREATED, rng=random.Random(3))


def table(rt: ResourceType, objects, **kwargs):
    kwargs.setdefault("resource_version", "42")
    kwargs.setdefault("now", CREATED + 125)
    return to_table(rt, objects, **kwargs)


def columns(result):
    return [(c["name"], c["priority"]) for c in result["columnDefinitions"]]


def running_pod(store, name="web", **status):
    store.create(
        PODS,
        "default",
        {"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    full = {
        "phase": "Running",
        "podIP": "10.244.0.7",
        "podIPs": [{"ip": "10.244.0.7"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {
                "name": "c",
                "ready": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2023-11-14T22:13:21Z"}},
            }
        ],
        **status,
    }
    return store.update_status(PODS, "default", name, full)


def test_table_envelope(store):
    result = table(
        NAMESPACES, [store.get(NAMESPACES, None, "default")], continue_token="tok", remaining=3
    )
    assert result["kind"] == "Table"
    assert result["apiVersion"] == "meta.k8s.io/v1"
    assert result["metadata"] == {
        "resourceVersion": "42",
        "continue": "tok",
        "remainingItemCount": 3,
    }
    assert columns(result) == [("Name", 0), ("Status", 0), ("Age", 0)]
    assert set(result["columnDefinitions"][0]) == {
        "name",
        "type",
        "format",
        "description",
        "priority",
    }
    assert result["columnDefinitions"][0]["format"] == "name"
    assert result["rows"][0]["cells"] == ["default", "Active", "2m5s"]


def test_row_objects(store):
    ns = store.get(NAMESPACES, None, "default")
    partial = table(NAMESPACES, [ns])["rows"][0]["object"]
    assert partial == {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": ns["metadata"],
    }
    assert table(NAMESPACES, [ns], include_object="Object")["rows"][0]["object"] == ns
    assert "object" not in table(NAMESPACES, [ns], include_object="None")["rows"][0]


def test_pod_table(store):
    pending = store.create(
        PODS,
        "default",
        {"metadata": {"name": "new"}, "spec": {"containers": [{"name": "c", "image": "i"}]}},
    )
    running = running_pod(store)
    result = table(PODS, [pending, running])
    assert columns(result) == [
        ("Name", 0),
        ("Ready", 0),
        ("Status", 0),
        ("Restarts", 0),
        ("Age", 0),
        ("IP", 1),
        ("Node", 1),
        ("Nominated Node", 1),
        ("Readiness Gates", 1),
    ]
    assert result["rows"][0]["cells"] == [
        "new",
        "0/1",
        "Pending",
        "0",
        "2m5s",
        "<none>",
        "sim-node",
        "<none>",
        "<none>",
    ]
    assert result["rows"][1]["cells"] == [
        "web",
        "1/1",
        "Running",
        "0",
        "2m5s",
        "10.244.0.7",
        "sim-node",
        "<none>",
        "<none>",
    ]


def test_pod_statuses(store):
    def cells(**status):
        return table(
            PODS, [running_pod(store, f"p{len(store.list(PODS, None)['items'])}", **status)]
        )["rows"][0]

    crashing = cells(
        containerStatuses=[
            {
                "name": "c",
                "ready": False,
                "restartCount": 4,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2023-11-14T22:14:00Z"}},
            }
        ]
    )
    assert crashing["cells"][1:4] == ["0/1", "CrashLoopBackOff", "4 (85s ago)"]
    done = cells(
        phase="Succeeded",
        containerStatuses=[
            {"name": "c", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
        ],
    )
    assert done["cells"][2] == "Completed"
    assert done["conditions"] == [
        {
            "type": "Completed",
            "status": "True",
            "reason": "Succeeded",
            "message": "The pod has completed successfully.",
        }
    ]
    killed = cells(
        containerStatuses=[{"name": "c", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]
    )
    assert killed["cells"][2] == "Signal:9"


def test_terminating_pod(store):
    pod = running_pod(store)
    pod["metadata"]["deletionTimestamp"] = "2023-11-14T22:14:00Z"
    assert table(PODS, [pod])["rows"][0]["cells"][2] == "Terminating"


def test_configmap_secret_and_serviceaccount_tables(store):
    store.create(
        CONFIGMAPS,
        "default",
        {"metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "AA=="}},
    )
    store.create(SECRETS, "default", {"metadata": {"name": "s"}, "data": {"a": "MQ=="}})
    assert table(CONFIGMAPS, [store.get(CONFIGMAPS, "default", "c")])["rows"][0]["cells"] == [
        "c",
        2,
        "2m5s",
    ]
    secret = table(SECRETS, [store.get(SECRETS, "default", "s")])
    assert columns(secret) == [("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)]
    assert secret["rows"][0]["cells"] == ["s", "Opaque", 1, "2m5s"]
    account = table(ACCOUNTS, [store.get(ACCOUNTS, "default", "default")])
    assert account["rows"][0]["cells"] == ["default", 0, "2m5s"]


def test_service_table(store):
    svc = store.create(
        SERVICES,
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "web"},
                "ports": [{"port": 80, "nodePort": 30080}],
            },
        },
    )
    result = table(SERVICES, [store.get(SERVICES, "default", "kubernetes"), svc])
    assert columns(result)[-1] == ("Selector", 1)
    assert result["rows"][0]["cells"] == [
        "kubernetes",
        "ClusterIP",
        "10.96.0.1",
        "<none>",
        "443/TCP",
        "2m5s",
        "<none>",
    ]
    assert result["rows"][1]["cells"] == [
        "web",
        "NodePort",
        svc["spec"]["clusterIP"],
        "<none>",
        "80:30080/TCP",
        "2m5s",
        "app=web",
    ]
    lb = {
        "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.9"]},
        "status": {},
    }
    assert table(SERVICES, [lb])["rows"][0]["cells"][3] == "<pending>"


def test_deployment_table(store):
    dep = store.create(
        DEPLOYMENTS,
        "default",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]
                    },
                },
            },
        },
    )
    dep = store.update_status(
        DEPLOYMENTS,
        "default",
        "web",
        {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    )
    result = table(DEPLOYMENTS, [dep])
    assert [c["name"] for c in result["columnDefinitions"]] == [
        "Name",
        "Ready",
        "Up-to-date",
        "Available",
        "Age",
        "Containers",
        "Images",
        "Selector",
    ]
    assert result["rows"][0]["cells"] == ["web", "2/3", 3, 2, "2m5s", "a,b", "a:1,b:1", "app=web"]


def test_event_table():
    event = {
        "metadata": {
            "name": "web.17",
            "namespace": "default",
            "creationTimestamp": "2023-11-14T22:13:20Z",
        },
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{c}"},
        "reason": "Started",
        "message": "Started container c\n",
        "source": {"component": "kubelet", "host": "sim-node"},
        "firstTimestamp": "2023-11-14T22:13:20Z",
        "lastTimestamp": "2023-11-14T22:14:20Z",
        "count": 2,
        "type": "Normal",
    }
    result = table(EVENTS, [event])
    assert [c["name"] for c in result["columnDefinitions"]] == [
        "Last Seen",
        "Type",
        "Reason",
        "Object",
        "Subobject",
        "Source",
        "Message",
        "First Seen",
        "Count",
        "Name",
    ]
    assert result["rows"][0]["cells"] == [
        "65s",
        "Normal",
        "Started",
        "pod/web",
        "spec.containers{c}",
        "kubelet, sim-node",
        "Started container c",
        "2m5s",
        2,
        "web.17",
    ]
    bare = {
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Node"},
        "eventTime": "2023-11-14T22:13:20.000000Z",
    }
    cells = table(EVENTS, [bare])["rows"][0]["cells"]
    assert cells[0] == cells[7] == "2m5s"
    assert (cells[3], cells[8]) == ("node", 1)


def test_default_table_for_other_kinds():
    reviews = _rt("authentication.k8s.io", "v1", "selfsubjectreviews")
    result = table(
        reviews, [{"metadata": {"name": "x", "creationTimestamp": "2023-11-14T22:13:20Z"}}]
    )
    assert [(c["name"], c["type"]) for c in result["columnDefinitions"]] == [
        ("Name", "string"),
        ("Created At", "date"),
    ]
    assert result["rows"][0]["cells"] == ["x", "2023-11-14T22:13:20Z"]
