"""The simulator's catalog: the discovery facts kube-apiserver publishes."""

from __future__ import annotations

from karpor.sim.resources import ALL_VERBS, CATALOG, Catalog, ResourceType


def lookup(group: str, version: str, plural: str) -> ResourceType:
    rt = CATALOG.lookup(group, version, plural)
    assert rt is not None, plural
    return rt


def test_lookup_and_names():
    pods = lookup("", "v1", "pods")
    assert (pods.kind, pods.singular, pods.namespaced) == ("Pod", "pod", True)
    assert pods.group_version == "v1"
    assert pods.list_kind == "PodList"
    deployments = lookup("apps", "v1", "deployments")
    assert deployments.group_version == "apps/v1"
    assert deployments.qualified_kind() == "Deployment.apps"
    assert deployments.qualified_resource() == "deployments.apps"
    assert CATALOG.lookup("", "v1", "nodes") is None
    assert CATALOG.lookup("apps", "v1beta1", "deployments") is None
    assert CATALOG.lookup_kind("apps", "v1", "Deployment") is deployments
    assert CATALOG.lookup_kind("", "v1", "Nope") is None


def test_discovery_facts_are_kubes():
    facts = {
        rt.plural: (rt.short_names, rt.categories, rt.namespaced)
        for rt in CATALOG
        if rt.group in ("", "apps")
    }
    assert facts == {
        "configmaps": (("cm",), (), True),
        "events": (("ev",), (), True),
        "namespaces": (("ns",), (), False),
        "pods": (("po",), ("all",), True),
        "secrets": ((), (), True),
        "serviceaccounts": (("sa",), (), True),
        "services": (("svc",), ("all",), True),
        "deployments": (("deploy",), ("all",), True),
        "replicasets": (("rs",), ("all",), True),
    }
    assert lookup("", "v1", "namespaces").verbs == (
        "create",
        "delete",
        "get",
        "list",
        "patch",
        "update",
        "watch",
    )
    assert lookup("", "v1", "events").verbs == ALL_VERBS
    assert lookup("", "v1", "pods").verbs == ALL_VERBS


def test_subresources():
    pods = lookup("", "v1", "pods")
    assert set(pods.subresources) == {
        "status",
        "log",
        "exec",
        "attach",
        "portforward",
        "binding",
        "eviction",
    }
    assert pods.has_status
    eviction = pods.subresource("eviction")
    assert eviction is not None
    assert (eviction.kind, eviction.group, eviction.version, eviction.verbs) == (
        "Eviction",
        "policy",
        "v1",
        ("create",),
    )
    log = pods.subresource("log")
    assert log is not None and (log.kind, log.verbs) == ("Pod", ("get",))
    assert pods.subresource("proxy") is None
    scale = lookup("apps", "v1", "deployments").subresource("scale")
    assert scale is not None and (scale.kind, scale.group) == ("Scale", "autoscaling")
    assert not lookup("", "v1", "configmaps").has_status
    assert [s.name for s in pods.subresource_details] == list(pods.subresources)


def test_selfsubjectreviews_are_create_only_and_not_stored():
    for version in ("v1", "v1beta1", "v1alpha1"):
        rt = lookup("authentication.k8s.io", version, "selfsubjectreviews")
        assert rt.verbs == ("create",)
        assert rt.kind == "SelfSubjectReview"
        assert not rt.namespaced
        assert not rt.stored


def test_group_versions_in_kube_order():
    assert CATALOG.group_versions() == [
        ("", ["v1"]),
        ("apps", ["v1"]),
        ("events.k8s.io", ["v1"]),
        ("authentication.k8s.io", ["v1", "v1beta1", "v1alpha1"]),
        ("authorization.k8s.io", ["v1"]),
    ]
    assert [rt.plural for rt in CATALOG.resources("apps", "v1")] == ["deployments", "replicasets"]
    assert len(CATALOG.resources("", "v1")) == 7


def test_a_catalog_of_its_own():
    widgets = ResourceType("example.com", "v1", "widgets", "widget", "Widget", True)
    catalog = Catalog([widgets])
    assert list(catalog) == [widgets]
    assert catalog.group_versions() == [("example.com", ["v1"])]
    assert widgets.verbs == ALL_VERBS
    assert widgets.name_rule == "subdomain"
