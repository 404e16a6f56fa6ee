"""The clusters resource: objects without secrets, the Table, the catalog's
events, and the health status (``status``, the Ready and Version columns)."""

import dataclasses
import json
from types import MappingProxyType

from support.tables import table_rows

from karpor.config.model import Cluster, ExecCredential, TokenCredential, X509Credential
from karpor.gatewayapi.clusters import (
    ClusterCatalog,
    Entry,
    Event,
    cluster_list,
    cluster_object,
    cluster_table,
    wants_table,
)
from karpor.health.probe import ClusterStatus
from karpor.kube.clusterstatus import not_found
from karpor.kube.humanize import parse_timestamp
from karpor.upstream.tunnel import AgentStatus

SECRET_TOKEN = "s3cr3t-t0ken-value"
SECRET_KEY = b"-----BEGIN PRIVATE KEY-----\nsecret-key-bytes\n-----END PRIVATE KEY-----\n"

CREATED = "2025-01-02T03:04:05Z"


def cluster(name="sim-1", **kw):
    kw.setdefault("endpoint", "https://127.0.0.1:6443")
    kw.setdefault("created", CREATED)
    return Cluster(name=name, **kw)


def get(catalog: ClusterCatalog, name: str) -> Entry:
    entry = catalog.get(name)
    assert entry is not None
    return entry


def since(catalog: ClusterCatalog, rv: int) -> list[Event]:
    events = catalog.since(rv)
    assert events is not None
    return events


def snapshot(*clusters):
    return MappingProxyType({c.name: c for c in clusters})


def test_object_shows_the_credential_type_only():
    c = cluster(
        credential=TokenCredential(token=SECRET_TOKEN, token_file="/etc/secret/token"),
        ca_pem=b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        labels=MappingProxyType({"env": "dev"}),
        provider="kind",
        display_name="Sim One",
        description="the first",
        impersonate=True,
    )
    catalog = ClusterCatalog()
    catalog.update(snapshot(c))
    obj = cluster_object(get(catalog, "sim-1"))
    text = json.dumps(obj)
    assert SECRET_TOKEN not in text
    assert "/etc/secret" not in text
    assert obj["apiVersion"] == "cluster.karpor.io/v1beta1"
    assert obj["kind"] == "Cluster"
    meta = obj["metadata"]
    assert meta["name"] == "sim-1"
    assert meta["labels"] == {"env": "dev"}
    assert meta["creationTimestamp"] == CREATED
    assert meta["resourceVersion"] == "1"
    assert meta["uid"]
    spec = obj["spec"]
    assert spec["provider"] == "kind"
    assert spec["displayName"] == "Sim One"
    assert spec["description"] == "the first"
    assert spec["impersonate"] is True
    assert spec["access"]["endpoint"] == "https://127.0.0.1:6443"
    assert spec["access"]["insecure"] is False
    assert spec["access"]["credential"] == {"type": "ServiceAccountToken"}
    assert spec["access"]["caBundle"]


def test_x509_and_exec_credentials_show_their_type_only():
    x509 = cluster("a", credential=X509Credential(certificate=b"CERT", private_key=SECRET_KEY))
    exe = cluster("b", credential=ExecCredential("aws", ("eks", "get-token"), (("K", "secret"),)))
    catalog = ClusterCatalog()
    catalog.update(snapshot(x509, exe))
    a, b = (cluster_object(e) for e in catalog.entries())
    assert a["spec"]["access"]["credential"] == {"type": "X509Certificate"}
    assert b["spec"]["access"]["credential"] == {"type": "OIDC"}
    text = json.dumps([a, b])
    assert "secret" not in text
    assert "aws" not in text


def test_uid_is_stable_for_a_definition():
    first, second = ClusterCatalog(), ClusterCatalog()
    first.update(snapshot(cluster()))
    second.update(snapshot(cluster()))
    assert get(first, "sim-1").uid == get(second, "sim-1").uid
    third = ClusterCatalog()
    third.update(snapshot(cluster(created="2025-02-02T00:00:00Z")))
    assert get(third, "sim-1").uid != get(first, "sim-1").uid


def test_catalog_events_and_history():
    catalog = ClusterCatalog()
    seen: list[Event] = []
    catalog.subscribe(seen.append)
    one = snapshot(cluster("a"), cluster("b"))
    assert [(e.type, e.entry.cluster.name) for e in catalog.update(one)] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]
    assert catalog.update(one) == []  # the same snapshot: nothing
    assert catalog.resource_version == 2
    two = snapshot(cluster("a", endpoint="https://10.0.0.1:6443"), cluster("c"))
    events = catalog.update(two)
    assert [(e.type, e.entry.cluster.name, e.entry.resource_version) for e in events] == [
        ("DELETED", "b", 3),
        ("MODIFIED", "a", 4),
        ("ADDED", "c", 5),
    ]
    assert [e.type for e in seen] == ["ADDED", "ADDED", "DELETED", "MODIFIED", "ADDED"]
    # a modification keeps uid and creation time
    assert get(catalog, "a").uid == cluster_object(get(catalog, "a"))["metadata"]["uid"]
    assert [e.entry.cluster.name for e in since(catalog, 3)] == ["a", "c"]
    assert since(catalog, 5) == []
    assert len(since(catalog, 0)) == 5


def test_moving_a_definition_to_another_file_is_no_change():
    catalog = ClusterCatalog()
    catalog.update(snapshot(cluster(source="a.yaml")))
    assert catalog.update(snapshot(cluster(source="b.yaml", document=2))) == []
    assert get(catalog, "sim-1").cluster.source == "b.yaml"


def test_history_runs_out():
    catalog = ClusterCatalog(history=2)
    for i in range(4):
        catalog.update(snapshot(cluster(endpoint=f"https://10.0.0.{i}:6443")))
    assert catalog.resource_version == 4
    assert catalog.since(0) is None
    assert [e.entry.resource_version for e in since(catalog, 2)] == [3, 4]


def test_unsubscribe():
    catalog = ClusterCatalog()
    seen: list[Event] = []
    unsubscribe = catalog.subscribe(seen.append)
    unsubscribe()
    catalog.update(snapshot(cluster()))
    assert seen == []


def test_table():
    catalog = ClusterCatalog()
    catalog.update(snapshot(cluster("sim-1", display_name="Sim", provider="kind"), cluster("x")))
    now = parse_timestamp(CREATED) + 3 * 3600 + 60
    table = cluster_table(catalog.entries(), 2, now)
    assert table["kind"] == "Table"
    assert table["apiVersion"] == "meta.k8s.io/v1"
    assert table["metadata"] == {"resourceVersion": "2"}
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Display Name",
        "Provider",
        "Endpoint",
        "Ready",
        "Version",
        "Age",
        "Reach",
        "Agent",
        "Agent Since",
        "Agent Version",
    ]
    assert table["rows"][0]["cells"] == [
        "sim-1",
        "Sim",
        "kind",
        "https://127.0.0.1:6443",
        "Unknown",  # never probed
        "<unknown>",
        "3h1m",
        "direct",
        "<none>",
        "<none>",
        "<none>",
    ]
    assert table["rows"][1]["cells"][1:3] == ["<none>", "<none>"]
    obj = table["rows"][0]["object"]
    assert obj["kind"] == "PartialObjectMetadata"
    assert obj["metadata"]["name"] == "sim-1"
    assert cluster_table(catalog.entries(), 2, now, headers=False)["columnDefinitions"] == []
    bare = cluster_table(catalog.entries(), 2, now, include_object="None")
    assert "object" not in bare["rows"][0]
    full = cluster_table(catalog.entries(), 2, now, include_object="Object")
    assert full["rows"][0]["object"]["kind"] == "Cluster"


def test_list():
    catalog = ClusterCatalog()
    catalog.update(snapshot(cluster("b"), cluster("a")))
    doc = cluster_list(catalog.entries(), catalog.resource_version)
    assert doc["kind"] == "ClusterList"
    assert doc["metadata"]["resourceVersion"] == "2"
    assert [i["metadata"]["name"] for i in doc["items"]] == ["a", "b"]


def test_wants_table():
    kubectl = (
        "application/json;as=Table;v=v1;g=meta.k8s.io,"
        "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
    )
    assert wants_table(kubectl)
    assert not wants_table("application/json")
    assert not wants_table("")
    assert not wants_table("application/json, application/json;as=Table;v=v1;g=meta.k8s.io")


def test_not_found_status():
    error = not_found("nope")
    assert error.code == 404
    assert error.status()["message"] == 'clusters.cluster.karpor.io "nope" not found'
    assert error.status()["details"] == {
        "name": "nope",
        "group": "cluster.karpor.io",
        "kind": "clusters",
    }


HEALTHY = ClusterStatus(True, "/readyz: ok", 1_700_000_000.0, "v1.31.0")
DOWN = ClusterStatus(
    False, "GET /readyz: cluster 'sim-1' is unreachable: refused", 1_700_000_010.0, "v1.31.0"
)


def test_status_in_the_object_and_the_table():
    catalog = ClusterCatalog()
    catalog.update(snapshot(cluster("sim-1"), cluster("sim-2")))
    assert cluster_object(get(catalog, "sim-2"))["status"] == {"message": "not probed yet"}
    catalog.set_status("sim-1", HEALTHY)
    obj = cluster_object(get(catalog, "sim-1"))
    assert obj["status"] == {
        "healthy": True,
        "version": "v1.31.0",
        "lastProbeTime": "2023-11-14T22:13:20Z",
        "message": "/readyz: ok",
    }
    catalog.set_status("sim-2", ClusterStatus(False, "GET /readyz: 500 Internal Server Error", 0))
    assert cluster_object(get(catalog, "sim-2"))["status"] == {
        "healthy": False,
        "lastProbeTime": "1970-01-01T00:00:00Z",
        "message": "GET /readyz: 500 Internal Server Error",
    }
    now = parse_timestamp(CREATED) + 60
    rows = table_rows(cluster_table(catalog.entries(), None, now))
    assert [(row["Ready"], row["Version"]) for row in rows] == [
        ("True", "v1.31.0"),
        ("False", "<unknown>"),
    ]


def test_a_status_change_is_a_modified_event_a_probe_time_is_not():
    catalog = ClusterCatalog()
    catalog.update(snapshot(cluster("sim-1")))
    seen: list[Event] = []
    catalog.subscribe(seen.append)
    event = catalog.set_status("sim-1", HEALTHY)
    assert event is not None and event.type == "MODIFIED"
    assert event.entry.resource_version == 2 and event.previous is not None
    assert event.previous.status is None
    # the next probe finds the same: only lastProbeTime moves, no event, no new version
    later = ClusterStatus(True, "/readyz: ok", 1_700_000_600.0, "v1.31.0")
    assert catalog.set_status("sim-1", later) is None
    assert catalog.resource_version == 2
    shown = cluster_object(get(catalog, "sim-1"))
    assert shown["status"]["lastProbeTime"] == "2023-11-14T22:23:20Z"
    assert shown["metadata"]["resourceVersion"] == "2"
    down = catalog.set_status("sim-1", DOWN)
    assert down is not None and down.entry.status == DOWN
    back = catalog.set_status("sim-1", later)
    assert back is not None and back.entry.resource_version == 4
    assert [e.type for e in seen] == ["MODIFIED", "MODIFIED", "MODIFIED"]
    # a watch resuming from before the outage sees it
    assert [e.entry.status for e in since(catalog, 2)] == [DOWN, later]
    state = catalog.state_at(3)
    assert state is not None and state["sim-1"].status == DOWN
    # unknown again (a new endpoint, say)
    assert catalog.set_status("sim-1", None) is not None
    assert cluster_object(get(catalog, "sim-1"))["status"] == {"message": "not probed yet"}


def test_status_follows_definitions_and_may_come_first():
    catalog = ClusterCatalog()
    # a verdict on a cluster the catalog has not seen yet is kept for it
    assert catalog.set_status("sim-1", HEALTHY) is None
    [added] = catalog.update(snapshot(cluster("sim-1")))
    assert added.type == "ADDED" and added.entry.status == HEALTHY
    # an edited definition keeps the verdict (the prober resets it when the access changes)
    [edited] = catalog.update(snapshot(cluster("sim-1", display_name="One")))
    assert edited.entry.status == HEALTHY
    [gone] = catalog.update(snapshot())
    assert gone.type == "DELETED"
    # removed then added again: unknown, not the old verdict
    [again] = catalog.update(snapshot(cluster("sim-1")))
    assert again.entry.status is None
    # a verdict on a cluster the catalog never saw, and not in the next snapshot: dropped
    catalog.set_status("sim-2", HEALTHY)
    catalog.update(snapshot(cluster("sim-1")))
    [late] = catalog.update(snapshot(cluster("sim-1"), cluster("sim-2")))
    assert late.type == "ADDED" and late.entry.status is None


def test_two_workers_read_each_others_resource_versions_as_times():
    """Each worker process keeps a catalog of its own; with wall-clock
    floors, one's resourceVersion means "as of that time" to the other."""
    clock = [100.0]

    def floor() -> int:
        return int(clock[0] * 1_000_000)

    a = ClusterCatalog(floor=floor)
    one = snapshot(cluster("sim-1"))
    a.update(one)
    early = a.list_version()
    clock[0] += 0.002
    b = ClusterCatalog(floor=floor)  # started a little later
    b.update(one)
    # a worker started after a list cannot tell what happened before it: 410
    assert b.since(early) is None
    clock[0] += 60
    # a list long after both started: its version is its time, not the last change's
    listed_on_a = a.list_version()
    assert listed_on_a == floor() and since(b, listed_on_a) == []
    clock[0] += 1
    two = snapshot(cluster("sim-1"), cluster("sim-2"))
    b.update(two)  # b sees the new file first...
    clock[0] += 0.001
    a.update(two)  # ...a a millisecond later
    # a watch resumed on b from a's list sees the change, once
    assert [(e.type, e.entry.cluster.name) for e in since(b, listed_on_a)] == [("ADDED", "sim-2")]
    # and from a's later list, nothing more
    assert since(b, a.list_version()) == []
    # a change in the same microsecond as a list still comes after it
    listed = a.list_version()
    a.set_status("sim-1", ClusterStatus(False, "down", 0))
    assert a.resource_version > listed
    # resourceVersions only grow, even when the clock goes back
    clock[0] -= 50
    a.set_status("sim-1", ClusterStatus(True, "up", 0))
    assert a.list_version() > listed + 1


def test_table_shows_how_a_cluster_is_reached_and_its_agent():
    catalog = ClusterCatalog()
    tunnelled = dataclasses.replace(cluster("edge"), endpoint="", tunnel=True)
    catalog.update(snapshot(tunnelled, cluster("lonely-edge")))
    now = parse_timestamp(CREATED) + 3600
    agents = {"edge": AgentStatus(2, now - 90, "0.1.0")}

    def lookup(name: str) -> AgentStatus:
        return agents.get(name, AgentStatus(0, None, ""))

    table = cluster_table(catalog.entries(), 2, now, agents=lookup)
    # plain `kubectl get clusters` shows how each is reached; -o wide adds since/version
    priority = {c["name"]: c["priority"] for c in table["columnDefinitions"]}
    assert [priority[n] for n in ("Reach", "Agent", "Agent Since", "Agent Version")] == [0, 0, 1, 1]
    agent_columns = ("Reach", "Agent", "Agent Since", "Agent Version")
    cells = {row["Name"]: row for row in table_rows(table)}
    assert cells["edge"]["Endpoint"] == "<none>"
    assert [cells["edge"][n] for n in agent_columns] == ["tunnel", "connected", "90s", "0.1.0"]
    agents.clear()
    cells = {
        row["Name"]: row
        for row in table_rows(cluster_table(catalog.entries(), 2, now, agents=lookup))
    }
    assert [cells["edge"][n] for n in agent_columns] == [
        "tunnel",
        "disconnected",
        "<none>",
        "<none>",
    ]
    assert [cells["lonely-edge"][n] for n in agent_columns] == [
        "direct",
        "<none>",
        "<none>",
        "<none>",
    ]
    obj = cluster_table(catalog.entries(), 2, now, include_object="Object")["rows"]
    edge = next(r["object"] for r in obj if r["object"]["metadata"]["name"] == "edge")
    assert edge["spec"]["access"] == {"tunnel": True}
