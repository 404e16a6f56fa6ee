"""karpor.kube.requestinfo against the cases of kube's requestinfo_test.go and properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.requestinfo import (
    RequestInfoError,
    exact_match,
    parse_field_selector,
    parse_request_info,
    query_bool,
)

# method, url, verb, prefix, group, version, namespace, resource, subresource, name, parts
CASES = [
    ("GET", "/api/v1/namespaces", "list", "api", "", "v1", "", "namespaces", "", "",
     ["namespaces"]),
    ("GET", "/api/v1/namespaces/other", "get", "api", "", "v1", "other", "namespaces", "", "other",
     ["namespaces", "other"]),
    ("GET", "/api/v1/namespaces/other/pods", "list", "api", "", "v1", "other", "pods", "", "",
     ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "", "foo",
     ["pods", "foo"]),
    ("HEAD", "/api/v1/namespaces/other/pods/foo", "get", "api", "", "v1", "other", "pods", "",
     "foo", ["pods", "foo"]),
    ("GET", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("HEAD", "/api/v1/pods", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    # special verbs
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo", "proxy", "api", "", "v1", "other", "pods",
     "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/proxy/namespaces/other/pods/foo/subpath/not/a/subresource", "proxy", "api",
     "", "v1", "other", "pods", "", "foo", ["pods", "foo", "subpath", "not", "a", "subresource"]),
    ("GET", "/api/v1/watch/pods", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=true", "watch", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?watch=false", "list", "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/watch/namespaces/other/pods", "watch", "api", "", "v1", "other", "pods", "",
     "", ["pods"]),
    ("GET", "/api/v1/watch/namespaces/other/pods/foo", "watch", "api", "", "v1", "other", "pods",
     "", "foo", ["pods", "foo"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=1", "watch", "api", "", "v1", "other", "pods", "",
     "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=0", "list", "api", "", "v1", "other", "pods", "",
     "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch=FALSE", "list", "api", "", "v1", "other", "pods",
     "", "", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?watch", "watch", "api", "", "v1", "other", "pods", "",
     "", ["pods"]),
    # subresources
    ("GET", "/api/v1/namespaces/other/pods/foo/status", "get", "api", "", "v1", "other", "pods",
     "status", "foo", ["pods", "foo", "status"]),
    ("GET", "/api/v1/namespaces/other/pods/foo/log", "get", "api", "", "v1", "other", "pods", "log",
     "foo", ["pods", "foo", "log"]),
    ("GET", "/api/v1/namespaces/other/pods/foo/proxy/subpath", "get", "api", "", "v1", "other",
     "pods", "proxy", "foo", ["pods", "foo", "proxy", "subpath"]),
    ("POST", "/api/v1/namespaces/other/pods/foo/exec", "create", "api", "", "v1", "other", "pods",
     "exec", "foo", ["pods", "foo", "exec"]),
    ("PUT", "/api/v1/namespaces/other/finalize", "update", "api", "", "v1", "other", "namespaces",
     "finalize", "other", ["namespaces", "other", "finalize"]),
    ("PUT", "/api/v1/namespaces/other/status", "update", "api", "", "v1", "other", "namespaces",
     "status", "other", ["namespaces", "other", "status"]),
    # verbs by method
    ("PATCH", "/api/v1/namespaces/other/pods/foo", "patch", "api", "", "v1", "other", "pods", "",
     "foo", ["pods", "foo"]),
    ("DELETE", "/api/v1/namespaces/other/pods/foo", "delete", "api", "", "v1", "other", "pods", "",
     "foo", ["pods", "foo"]),
    ("POST", "/api/v1/namespaces/other/pods", "create", "api", "", "v1", "other", "pods", "", "",
     ["pods"]),
    ("OPTIONS", "/api/v1/namespaces/other/pods", "", "api", "", "v1", "other", "pods", "", "",
     ["pods"]),
    # deletecollection
    ("DELETE", "/api/v1/nodes", "deletecollection", "api", "", "v1", "", "nodes", "", "",
     ["nodes"]),
    ("DELETE", "/api/v1/namespaces", "deletecollection", "api", "", "v1", "", "namespaces", "", "",
     ["namespaces"]),
    ("DELETE", "/api/v1/namespaces/other/pods", "deletecollection", "api", "", "v1", "other",
     "pods", "", "", ["pods"]),
    ("DELETE", "/apis/extensions/v1/namespaces/other/pods", "deletecollection", "apis",
     "extensions", "v1", "other", "pods", "", "", ["pods"]),
    ("DELETE", "/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3Dfoo",
     "deletecollection", "api", "", "v1", "other", "pods", "", "", ["pods"]),
    # groups and versions
    ("POST", "/apis/extensions/v1/namespaces/other/pods", "create", "apis", "extensions", "v1",
     "other", "pods", "", "", ["pods"]),
    ("POST", "/apis/extensions/v1beta3/namespaces/other/pods", "create", "apis", "extensions",
     "v1beta3", "other", "pods", "", "", ["pods"]),
    ("GET", "/apis/apps/v1/watch/namespaces/default/deployments", "watch", "apis", "apps", "v1",
     "default", "deployments", "", "", ["deployments"]),
    # fieldSelector metadata.name on list and watch
    ("GET", "/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3Dfoo", "list", "api", "",
     "v1", "other", "pods", "", "foo", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?fieldSelector=metadata.name%3D%3Dfoo&watch=true",
     "watch", "api", "", "v1", "other", "pods", "", "foo", ["pods"]),
    ("GET", "/api/v1/namespaces/other/pods?fieldSelector=metadata.name!%3Dfoo", "list", "api", "",
     "v1", "other", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?fieldSelector=status.phase%3DRunning,metadata.name%3Dfoo", "list", "api",
     "", "v1", "", "pods", "", "foo", ["pods"]),
    ("GET", "/api/v1/pods?fieldSelector=metadata.name%3D..", "list", "api", "", "v1", "", "pods",
     "", "", ["pods"]),
    ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dfoo&limit=abc", "list", "api", "", "v1",
     "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dfoo&timeoutSeconds=x&watch=1", "watch",
     "api", "", "v1", "", "pods", "", "", ["pods"]),
    ("GET", "/api/v1/pods?fieldSelector=metadata.name%3Dfo%5C%3Do", "list", "api", "", "v1", "",
     "pods", "", "fo=o", ["pods"]),
    ("GET", "/api/v1/pods?fieldSelector=bogus", "list", "api", "", "v1", "", "pods", "", "",
     ["pods"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "url", "verb", "prefix", "group", "version", "namespace", "resource", "sub", "name",
     "parts"),
    CASES,
)  # fmt: skip
def test_resource_requests(
    method: str,
    url: str,
    verb: str,
    prefix: str,
    group: str,
    version: str,
    namespace: str,
    resource: str,
    sub: str,
    name: str,
    parts: list[str],
) -> None:
    path, _, query = url.partition("?")
    info = parse_request_info(method, path, query)
    assert info.is_resource_request
    assert (info.verb, info.api_prefix, info.api_group, info.api_version) == (
        verb,
        prefix,
        group,
        version,
    )
    assert (info.namespace, info.resource, info.subresource, info.name) == (
        namespace,
        resource,
        sub,
        name,
    )
    assert list(info.parts) == parts
    assert info.path == path


@pytest.mark.parametrize(
    "url",
    [
        "/",
        "/api",
        "/api/v1",
        "/api/version/",
        "/apis",
        "/apis/apps",
        "/apis/group/version/",
        "/apis/version/resource",
        "/badprefix/version/resource",
        "/version",
        "/healthz",
        "/openapi/v3/apis/apps/v1",
    ],
)
def test_non_resource_requests(url: str) -> None:
    info = parse_request_info("GET", url)
    assert not info.is_resource_request
    assert info.verb == "get"
    assert info.path == url
    assert info.resource == ""


def test_non_resource_verb_is_lowercased_method() -> None:
    assert parse_request_info("POST", "/healthz").verb == "post"


def test_watch_without_resource_is_an_error() -> None:
    with pytest.raises(RequestInfoError):
        parse_request_info("GET", "/api/v1/watch")


def test_parsed_query_mapping_is_accepted() -> None:
    info = parse_request_info("GET", "/api/v1/pods", {"watch": ["true"]})
    assert info.verb == "watch"


def test_path_is_percent_decoded() -> None:
    info = parse_request_info("GET", "/api/v1/namespaces/a%2Db/pods")
    assert info.namespace == "a-b"
    assert info.path == "/api/v1/namespaces/a-b/pods"


@pytest.mark.parametrize(
    ("values", "expected"),
    [(None, False), ([], False), (["0"], False), (["False"], False), ([""], True), (["yes"], True)],
)
def test_query_bool(values: list[str] | None, expected: bool) -> None:
    assert query_bool(values) is expected


def test_field_selector_terms_are_sorted_and_unescaped() -> None:
    terms = parse_field_selector(r"z=1,a==x\,y,b!=2")
    assert terms == [("a", "=", "x,y"), ("b", "!=", "2"), ("z", "=", "1")]
    assert exact_match(terms, "a") == "x,y"
    assert exact_match(terms, "b") is None


@pytest.mark.parametrize("bad", ["noop", r"a=b\q", "a=b=c", "a=b\\"])
def test_invalid_field_selectors(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_field_selector(bad)


_segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=12)
_safe = _segment.filter(lambda s: s not in (".", "..", "watch", "proxy", "namespaces"))


@given(
    group=st.one_of(st.just(""), _safe),
    version=_safe,
    namespace=st.one_of(st.just(""), _safe),
    resource=_safe,
    name=st.one_of(st.just(""), _safe),
    method=st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE"]),
)
def test_built_paths_parse_back(
    group: str, version: str, namespace: str, resource: str, name: str, method: str
) -> None:
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    path = prefix
    if namespace:
        path += f"/namespaces/{namespace}"
    path += f"/{resource}"
    if name:
        path += f"/{name}"
    info = parse_request_info(method, path)
    assert info.is_resource_request
    assert info.api_group == group
    assert info.api_version == version
    assert info.namespace == namespace
    assert info.resource == resource
    assert info.name == name
    expected = {"GET": "get" if name else "list", "POST": "create", "PUT": "update"}
    expected["PATCH"] = "patch"
    expected["DELETE"] = "delete" if name else "deletecollection"
    assert info.verb == expected[method]


@given(st.text(max_size=60), st.text(max_size=60), st.sampled_from(["GET", "DELETE", "FOO"]))
def test_never_crashes(path: str, query: str, method: str) -> None:
    try:
        info = parse_request_info(method, "/" + path, query)
    except RequestInfoError:
        return
    assert info.path.startswith("/")
