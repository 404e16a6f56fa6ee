"""The own-API handler, driven with a fake Responder and a fake clock."""

import json
from types import MappingProxyType

import pytest
from support.tables import table_rows
from twisted.internet.task import Clock

from karpor.auth.identity import Identity
from karpor.config.model import Cluster, TokenCredential
from karpor.gatewayapi.handler import GatewayApi
from karpor.gatewayapi.request import ApiRequest
from karpor.health.probe import ClusterStatus
from karpor.kube.humanize import parse_timestamp
from karpor.kube.status import ApiError

ALICE = Identity("alice", ("dev",))
TABLE = (
    "application/json;as=Table;v=v1;g=meta.k8s.io,"
    "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)
CREATED = "2025-01-02T03:04:05Z"
SECRET = "tok-do-not-show"


class FakeResponder:
    """Records what the handler answers."""

    def __init__(self):
        self.code = None
        self.headers = []
        self.body = b""
        self.chunks = []
        self.started = False
        self.finished = False
        self.close_callbacks = []

    def respond(self, code, headers, body):
        assert self.code is None
        self.code, self.headers, self.body = code, list(headers), body
        self.finished = True

    def start(self, code, headers):
        assert self.code is None
        self.code, self.headers, self.started = code, list(headers), True

    def write(self, data):
        assert self.started and not self.finished
        self.chunks.append(data)

    def finish(self):
        assert self.started and not self.finished
        self.finished = True

    def on_close(self, callback):
        self.close_callbacks.append(callback)

    def header(self, name):
        values = [v for k, v in self.headers if k.lower() == name]
        return values[-1].decode() if values else None

    def json(self):
        return json.loads(self.body)

    def events(self):
        return [json.loads(line) for c in self.chunks for line in c.splitlines()]


def cluster(name, **kw):
    kw.setdefault("endpoint", f"https://{name}.example:6443")
    kw.setdefault("created", CREATED)
    return Cluster(name=name, **kw)


class World:
    def __init__(self, *clusters):
        self.clusters = MappingProxyType({c.name: c for c in clusters})
        self.clock = Clock()
        self.clock.advance(parse_timestamp(CREATED) + 600)
        self.visible = lambda identity, c: True
        self.names = lambda identity, name: True
        self.shows_endpoint = lambda identity, c: True
        self.api = GatewayApi(
            lambda: self.clusters,
            self.clock,
            visible=lambda i, c: self.visible(i, c),
            now=self.clock.seconds,
            names=lambda i, n: self.names(i, n),
            shows_endpoint=lambda i, c: self.shows_endpoint(i, c),
        )

    def set(self, *clusters):
        self.clusters = MappingProxyType({c.name: c for c in clusters})

    def call(self, path, query="", method="GET", accept="application/json", identity=ALICE):
        responder = FakeResponder()
        request = ApiRequest(method, path, query, {"accept": accept}, identity)
        self.api.handle(request, responder)
        return responder


@pytest.fixture
def world():
    return World(
        cluster("sim-1", provider="sim", display_name="Sim 1", labels={"env": "dev"}),
        cluster("sim-2", credential=TokenCredential(token=SECRET)),
    )


@pytest.mark.parametrize("path", ["/healthz", "/livez", "/readyz", "/readyz/ping", "/healthz/"])
def test_health_needs_no_identity(world, path):
    r = world.call(path, identity=None)
    assert (r.code, r.body) == (200, b"ok")
    assert r.header(b"content-type").startswith("text/plain")


def test_health_verbose_needs_an_authenticated_caller(world):
    r = world.call("/readyz", query="verbose")
    assert r.body == (b"[+]ping ok\n[+]clusters-loaded ok\n[+]shutdown ok\nreadyz check passed\n")
    world.api.health.worker = "pid 4242 generation 1"
    assert b"pid 4242" in world.call("/healthz", query="verbose").body
    # as kube-apiserver answers what it does not permit: 401 without credentials,
    # 403 for system:anonymous; the plain probe stays open
    nobody = world.call("/healthz", query="verbose", identity=None)
    assert nobody.code == 401 and nobody.json()["reason"] == "Unauthorized"
    anonymous = world.call(
        "/livez",
        query="verbose",
        identity=Identity("system:anonymous", ("system:unauthenticated",)),
    )
    assert anonymous.code == 403
    assert anonymous.json()["message"] == (
        'forbidden: User "system:anonymous" cannot get path "/livez"'
    )
    assert b"4242" not in nobody.body + anonymous.body
    assert world.call("/healthz", identity=None).body == b"ok"


def test_version_needs_no_identity(world):
    r = world.call("/version", identity=None)
    assert r.code == 200
    info = r.json()
    assert info["major"] == "1"
    assert info["gitVersion"].startswith(f"v1.{info['minor']}.0-karpor.")


@pytest.mark.parametrize(
    "path", ["/", "/api", "/apis", "/apis/cluster.karpor.io/v1beta1/clusters", "/nope"]
)
def test_anything_else_needs_an_identity(world, path):
    r = world.call(path, identity=None)
    assert r.code == 401
    assert r.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": "Unauthorized",
        "reason": "Unauthorized",
        "code": 401,
    }


def test_unknown_path_is_404(world):
    r = world.call("/apis/apps/v1")
    assert r.code == 404
    assert r.json()["reason"] == "NotFound"
    assert world.call("/api/v1").code == 404
    assert world.call("/apis/cluster.karpor.io/v2").code == 404
    assert world.call("/apis/cluster.karpor.io/v1beta1/clusters/a/b/c").code == 404


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_writes_are_405(world, method):
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters/sim-1", method=method)
    assert r.code == 405
    assert r.json()["reason"] == "MethodNotAllowed"


def test_aggregated_discovery(world):
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    r = world.call("/apis", accept=accept)
    assert r.code == 200
    assert r.header(b"content-type") == (
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    assert r.json()["items"][0]["metadata"]["name"] == "cluster.karpor.io"
    r = world.call("/api", accept=accept.replace("v=v2", "v=v2beta1"))
    assert "v=v2beta1" in r.header(b"content-type")
    assert r.json()["items"] == []


def test_legacy_discovery(world):
    assert world.call("/api").json()["kind"] == "APIVersions"
    assert world.call("/apis").json()["kind"] == "APIGroupList"
    assert world.call("/apis/cluster.karpor.io").json()["kind"] == "APIGroup"
    r = world.call("/apis/cluster.karpor.io/v1beta1")
    assert r.header(b"content-type") == "application/json"
    assert r.json()["kind"] == "APIResourceList"
    assert world.call("/apis", accept="application/vnd.kubernetes.protobuf").code == 406


def test_root_paths(world):
    assert "/apis/cluster.karpor.io/v1beta1" in world.call("/").json()["paths"]


def test_list_get_and_no_secret(world):
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters")
    assert r.code == 200
    doc = r.json()
    assert doc["kind"] == "ClusterList"
    assert [i["metadata"]["name"] for i in doc["items"]] == ["sim-1", "sim-2"]
    assert SECRET.encode() not in r.body
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters/sim-2")
    assert r.json()["spec"]["access"]["credential"] == {"type": "ServiceAccountToken"}
    assert SECRET.encode() not in r.body


def test_get_unknown_is_404(world):
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters/nope")
    assert r.code == 404
    assert r.json()["message"] == 'clusters.cluster.karpor.io "nope" not found'


def test_table_list_and_get(world):
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="limit=500", accept=TABLE)
    table = r.json()
    assert table["kind"] == "Table"
    assert [row["cells"][0] for row in table["rows"]] == ["sim-1", "sim-2"]
    assert table["rows"][0]["cells"][1:] == [
        "Sim 1",
        "sim",
        "https://sim-1.example:6443",
        "Unknown",  # not probed: no prober in this world
        "<unknown>",
        "10m",
        "direct",
        "<none>",
        "<none>",
        "<none>",
    ]
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters/sim-2", accept=TABLE)
    assert [row["cells"][0] for row in r.json()["rows"]] == ["sim-2"]


def test_selectors(world):
    path = "/apis/cluster.karpor.io/v1beta1/clusters"
    names = lambda r: [i["metadata"]["name"] for i in r.json()["items"]]  # noqa: E731
    assert names(world.call(path, query="labelSelector=env%3Ddev")) == ["sim-1"]
    assert names(world.call(path, query="labelSelector=env%21%3Ddev")) == ["sim-2"]
    assert names(world.call(path, query="fieldSelector=metadata.name%3Dsim-2")) == ["sim-2"]
    r = world.call(path, query="fieldSelector=spec.provider%3Dx")
    assert r.code == 400
    assert "field label not supported" in r.json()["message"]
    assert world.call(path, query="labelSelector=a%20in").code == 400


def test_visibility_filters(world):
    world.visible = lambda identity, c: c.name != "sim-2"
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters")
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["sim-1"]
    assert world.call("/apis/cluster.karpor.io/v1beta1/clusters/sim-2").code == 403


def test_a_name_the_caller_may_not_see_is_403_whether_it_exists_or_not(world):
    world.visible = lambda identity, c: c.name != "sim-2"
    world.names = lambda identity, name: name.startswith("sim-1")
    path = "/apis/cluster.karpor.io/v1beta1/clusters/"
    existing, unknown = world.call(path + "sim-2"), world.call(path + "sim-9")
    assert existing.code == unknown.code == 403
    assert unknown.json() == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'clusters.cluster.karpor.io "sim-9" is forbidden: User "alice" cannot get '
        'resource "clusters" in API group "cluster.karpor.io" at the cluster scope',
        "reason": "Forbidden",
        "details": {"group": "cluster.karpor.io", "kind": "clusters", "name": "sim-9"},
        "code": 403,
    }
    assert existing.json()["message"] == unknown.json()["message"].replace("sim-9", "sim-2")
    for name in ("sim-2", "sim-9"):
        table = world.call(path + name, accept=TABLE)
        assert table.code == 403
    # a name her rules name: she may learn that it does not exist
    assert world.call(path + "sim-10").code == 404
    # lists and watches by name show nothing, either way
    for name in ("sim-2", "sim-9"):
        query = f"fieldSelector=metadata.name%3D{name}"
        assert world.call(path.rstrip("/"), query=query).json()["items"] == []
        watch = world.call(path.rstrip("/"), query=query + "&watch=1")
        assert watch.code == 200 and watch.events() == []


def test_where_a_cluster_is_shows_only_to_callers_allowed_to_see_it(world):
    world.shows_endpoint = lambda identity, c: c.name == "sim-1"
    path = "/apis/cluster.karpor.io/v1beta1/clusters"
    items = world.call(path).json()["items"]
    assert "access" in items[0]["spec"] and "access" not in items[1]["spec"]
    assert b"sim-2.example" not in world.call(path + "/sim-2").body
    assert "access" not in world.call(path + "/sim-2").json()["spec"]
    table = world.call(path, query="includeObject=Object", accept=TABLE).json()
    assert [row["Endpoint"] for row in table_rows(table)] == [
        "https://sim-1.example:6443",
        "<hidden>",
    ]
    assert "access" not in table["rows"][1]["object"]["spec"]
    for accept in ("application/json", TABLE):
        watch = world.call(path, query="watch=1", accept=accept)
        assert b"sim-2.example" not in b"".join(watch.chunks)
        assert b"sim-1.example" in b"".join(watch.chunks)


def test_watch_from_scratch_then_changes_then_timeout(world):
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="watch=true&timeoutSeconds=30")
    assert r.code == 200
    assert r.header(b"content-type") == "application/json;stream=watch"
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in r.events()] == [
        ("ADDED", "sim-1"),
        ("ADDED", "sim-2"),
    ]
    world.set(cluster("sim-1", endpoint="https://moved:6443"), cluster("sim-3"))
    world.api.refresh()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in r.events()[2:]] == [
        ("DELETED", "sim-2"),
        ("MODIFIED", "sim-1"),
        ("ADDED", "sim-3"),
    ]
    assert not r.finished
    world.clock.advance(30)
    assert r.finished


def test_watch_resumes_from_a_list(world):
    listed = world.call("/apis/cluster.karpor.io/v1beta1/clusters").json()
    rv = listed["metadata"]["resourceVersion"]
    r = world.call(
        "/apis/cluster.karpor.io/v1beta1/clusters", query=f"watch=1&resourceVersion={rv}"
    )
    assert r.events() == []
    world.set(world.clusters["sim-1"])
    world.call("/apis/cluster.karpor.io/v1beta1/clusters")  # any request refreshes
    [event] = r.events()
    assert event["type"] == "DELETED"
    assert event["object"]["metadata"]["name"] == "sim-2"


def test_watch_with_a_table_sends_headers_once(world):
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="watch=true", accept=TABLE)
    first, second = r.events()
    assert first["object"]["kind"] == "Table"
    assert len(first["object"]["columnDefinitions"]) == 11
    assert second["object"]["columnDefinitions"] == []
    assert second["object"]["rows"][0]["cells"][0] == "sim-2"


def test_watch_one_by_field_selector_reports_leaving_the_selection(world):
    r = world.call(
        "/apis/cluster.karpor.io/v1beta1/clusters",
        query="watch=true&labelSelector=env%3Ddev",
    )
    assert [e["object"]["metadata"]["name"] for e in r.events()] == ["sim-1"]
    world.set(cluster("sim-1"), world.clusters["sim-2"])  # label gone
    world.api.refresh()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in r.events()[1:]] == [
        ("DELETED", "sim-1")
    ]


def test_legacy_watch_path(world):
    r = world.call("/apis/cluster.karpor.io/v1beta1/watch/clusters/sim-2")
    assert [e["object"]["metadata"]["name"] for e in r.events()] == ["sim-2"]


def test_watch_too_old(world):
    world.set(cluster("a"))
    world.api.refresh()
    api = world.api
    api.catalog._history.clear()
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="watch=1&resourceVersion=1")
    [event] = r.events()
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410
    assert event["object"]["reason"] == "Expired"
    assert r.finished


def test_watch_send_initial_events_ends_with_a_bookmark(world):
    r = world.call(
        "/apis/cluster.karpor.io/v1beta1/clusters",
        query="watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan",
    )
    events = r.events()
    assert [e["type"] for e in events] == ["ADDED", "ADDED", "BOOKMARK"]
    assert events[-1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


def test_client_leaving_stops_the_watch(world):
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="watch=1")
    for callback in r.close_callbacks:
        callback()
    world.set()
    world.api.refresh()
    assert len(r.events()) == 2
    assert not world.api.catalog._subscribers
    assert not world.clock.getDelayedCalls()


def test_bad_query_is_400(world):
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="watch=1&timeoutSeconds=x")
    assert r.code == 400
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="watch=1&resourceVersion=x")
    assert r.code == 400


def test_watch_resumes_from_history_knowing_what_the_client_saw(world):
    rv = world.call("/apis/cluster.karpor.io/v1beta1/clusters").json()["metadata"][
        "resourceVersion"
    ]
    world.set(cluster("sim-1"), world.clusters["sim-2"])  # sim-1 loses its label
    world.api.refresh()
    r = world.call(
        "/apis/cluster.karpor.io/v1beta1/clusters",
        query=f"watch=1&resourceVersion={rv}&labelSelector=env%3Ddev",
    )
    # the client listed sim-1 (it matched then): it now learns it left the selection
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in r.events()] == [
        ("DELETED", "sim-1")
    ]


# -- /metrics ---------------------------------------------------------------------------


def metrics_world(authorize=None):
    w = World(cluster("sim-1"))
    scrapes = []

    def render(accept):
        scrapes.append(accept)
        return b"text/plain; version=0.0.4; charset=utf-8", b"karpor_requests_total 1.0\n"

    options = {"authorize_path": authorize} if authorize is not None else {}
    w.api = GatewayApi(lambda: w.clusters, w.clock, metrics=render, **options)
    return w, scrapes


def test_metrics_are_served_to_an_authorized_caller():
    w, scrapes = metrics_world()
    r = w.call("/metrics", accept="application/openmetrics-text; version=1.0.0")
    assert r.code == 200 and r.body == b"karpor_requests_total 1.0\n"
    assert r.header(b"content-type") == "text/plain; version=0.0.4; charset=utf-8"
    assert scrapes == ["application/openmetrics-text; version=1.0.0"]
    assert "/metrics" in w.call("/").json()["paths"]


def test_metrics_need_an_identity_and_the_grant():
    calls = []

    def deny(identity, verb, path):
        calls.append((identity.user, verb, path))
        raise ApiError(403, f'forbidden: User "{identity.user}" cannot {verb} path "{path}"')

    w, scrapes = metrics_world(deny)
    assert w.call("/metrics", identity=None).code == 401
    r = w.call("/metrics")
    assert (
        r.code == 403
        and r.json()["message"] == 'forbidden: User "alice" cannot get path "/metrics"'
    )
    assert w.call("/metrics", method="HEAD").code == 403
    assert calls == [("alice", "get", "/metrics"), ("alice", "head", "/metrics")]
    assert scrapes == []


def test_without_a_policy_anonymous_may_not_read_metrics():
    w, _ = metrics_world()
    r = w.call("/metrics", identity=Identity("system:anonymous", ("system:unauthenticated",)))
    assert r.code == 403


def test_without_metrics_the_path_is_404(world):
    assert world.call("/metrics").code == 404
    assert "/metrics" not in world.call("/").json()["paths"]


# -- paging (limit / continue) ------------------------------------------------------------


def paged_world():
    return World(*(cluster(f"c{i}", labels={"n": str(i % 2)}) for i in range(5)))


def pages(world, query="", accept="application/json", limit=2):
    """Every page of a list by ``limit``: (names, metadata) per page."""
    out, token = [], ""
    while True:
        q = f"limit={limit}" + (f"&continue={token}" if token else "")
        q += f"&{query}" if query else ""
        r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query=q, accept=accept)
        assert r.code == 200, r.body
        doc = r.json()
        rows = doc["rows"] if doc["kind"] == "Table" else doc["items"]
        names = [(row["object"] if "cells" in row else row)["metadata"]["name"] for row in rows]
        out.append((names, doc["metadata"]))
        token = doc["metadata"].get("continue", "")
        if not token:
            return out


@pytest.mark.parametrize("accept", ["application/json", TABLE])
def test_limit_pages_with_a_continue_token_and_remaining_count(accept):
    world = paged_world()
    found = pages(world, accept=accept)
    assert [names for names, _ in found] == [["c0", "c1"], ["c2", "c3"], ["c4"]]
    assert [meta.get("remainingItemCount") for _, meta in found] == [3, 1, None]
    # every page is of the same list: the first page's resourceVersion
    assert len({meta["resourceVersion"] for _, meta in found}) == 1


@pytest.mark.parametrize("limit", [1, 3, 4, 5, 6, 500])
def test_any_limit_lists_every_cluster_once_in_order(limit):
    found = pages(paged_world(), limit=limit, accept=TABLE)
    assert [n for names, _ in found for n in names] == ["c0", "c1", "c2", "c3", "c4"]
    assert len(found) == -(-5 // limit)


def test_remaining_count_is_left_out_with_a_selector():
    found = pages(paged_world(), query="labelSelector=n%3D0")
    assert [names for names, _ in found] == [["c0", "c2"], ["c4"]]
    assert "remainingItemCount" not in found[0][1] and found[0][1]["continue"]


def test_a_continued_list_shows_the_clusters_as_at_its_first_page():
    world = paged_world()
    first = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="limit=2").json()
    world.set(*(c for n, c in world.clusters.items() if n != "c3"), cluster("c2a"))
    world.api.refresh()
    world.clock.advance(1)
    token = first["metadata"]["continue"]
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query=f"limit=10&continue={token}")
    # c3 (deleted since) is still there, c2a (added since) not yet
    assert [i["metadata"]["name"] for i in r.json()["items"]] == ["c2", "c3", "c4"]
    assert r.json()["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"]
    fresh = world.call("/apis/cluster.karpor.io/v1beta1/clusters").json()
    assert [i["metadata"]["name"] for i in fresh["items"]] == ["c0", "c1", "c2", "c2a", "c4"]


def test_a_bad_continue_token_is_400_and_a_too_old_one_410():
    world = paged_world()
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="limit=2&continue=nope")
    assert r.code == 400 and r.json()["reason"] == "BadRequest"
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="limit=x")
    assert r.code == 400
    token = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query="limit=2").json()[
        "metadata"
    ]["continue"]
    for i in range(300):  # more changes than the history keeps
        world.set(cluster(f"c{i % 2}", description=str(i)))
        world.api.refresh()
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query=f"limit=2&continue={token}")
    assert r.code == 410 and r.json()["reason"] == "Expired"
    # kube's way on: a token continuing on the current state
    again = r.json()["metadata"]["continue"]
    r = world.call("/apis/cluster.karpor.io/v1beta1/clusters", query=f"limit=2&continue={again}")
    assert r.code == 200 and r.json()["items"] == []  # only c0, c1 remain: none after c1


def test_resource_versions_are_wall_clock_microseconds_and_change_with_status(world):
    listed = world.call("/apis/cluster.karpor.io/v1beta1/clusters").json()
    rv = int(listed["metadata"]["resourceVersion"])
    assert rv >= int(world.clock.seconds() * 1_000_000)
    item_rv = listed["items"][0]["metadata"]["resourceVersion"]
    world.clock.advance(5)
    world.api.catalog.set_status("sim-1", ClusterStatus(False, "down", world.clock.seconds()))
    after = world.call("/apis/cluster.karpor.io/v1beta1/clusters/sim-1").json()
    assert int(after["metadata"]["resourceVersion"]) == int(world.clock.seconds() * 1_000_000)
    assert after["metadata"]["resourceVersion"] != item_rv
    assert world.api.catalog.since(rv) is not None


def test_a_watch_from_before_this_process_started_is_410():
    world = paged_world()
    r = world.call(
        "/apis/cluster.karpor.io/v1beta1/clusters",
        query=f"watch=1&resourceVersion={int(world.clock.seconds() * 1_000_000) - 1}",
    )
    [event] = r.events()
    assert event["type"] == "ERROR" and event["object"]["code"] == 410


# -- OpenAPI --------------------------------------------------------------------------------


def test_openapi_v3_root_points_at_the_group_version_document(world):
    root = world.call("/openapi/v3").json()
    url = root["paths"]["apis/cluster.karpor.io/v1beta1"]["serverRelativeURL"]
    path, _, query = url.partition("?")
    assert query.startswith("hash=")
    r = world.call(path, query=query)
    assert r.code == 200 and r.header(b"content-type") == "application/json"
    doc = r.json()
    schema = doc["components"]["schemas"]["io.karpor.cluster.v1beta1.Cluster"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "cluster.karpor.io", "version": "v1beta1", "kind": "Cluster"}
    ]
    assert world.call("/openapi/v3/apis/apps/v1").code == 404
    assert world.call("/openapi/v3", identity=None).code == 401


def test_openapi_v2_is_json_or_protobuf_as_asked(world):
    r = world.call("/openapi/v2")
    assert r.code == 200 and r.json()["swagger"] == "2.0"
    pb = world.call(
        "/openapi/v2", accept="application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
    )
    assert pb.code == 200
    assert pb.header(b"content-type") == (
        "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
    )
    assert pb.body.startswith(b"\n\x032.0")
    assert "/openapi/v3" in world.call("/").json()["paths"]
