"""Routing of raw request targets (sans-IO), with hypothesis for the
"no spelling reaches another cluster" property."""

from __future__ import annotations

import posixpath
import re
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.http.route import (
    ALIAS_PREFIX,
    KARPOR_PREFIX,
    ApiRoute,
    ClusterRoute,
    FanoutRoute,
    route,
)
from karpor.kube.status import ApiError


@pytest.mark.parametrize(
    ("target", "name", "upstream"),
    [
        (b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy", "a", b"/"),
        (b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/", "a", b"/"),
        (b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/api/v1/pods", "a", b"/api/v1/pods"),
        (
            b"/apis/cluster.karpor.io/v1beta1/clusters/prod-1/proxy/api/v1/pods?watch=1&labelSelector=a%3Db",
            "prod-1",
            b"/api/v1/pods?watch=1&labelSelector=a%3Db",
        ),
        (b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy?x=1", "a", b"/?x=1"),
        (
            b"/apis/cluster.core.oam.dev/v1alpha1/clustergateways/b2/proxy/version",
            "b2",
            b"/version",
        ),
        # an encoded slash *after* the prefix is the cluster's business
        (b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/x%2Fy", "a", b"/x%2Fy"),
        # the query string passes byte for byte, dots and all
        (b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/p?q=/../..%2e", "a", b"/p?q=/../..%2e"),
    ],
)
def test_proxy_routes(target: bytes, name: str, upstream: bytes) -> None:
    assert route(target) == ClusterRoute(name, upstream)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        (b"/version", "/version", ""),
        (b"/healthz?verbose", "/healthz", "verbose"),
        (
            b"/apis/cluster.karpor.io/v1beta1/clusters",
            "/apis/cluster.karpor.io/v1beta1/clusters",
            "",
        ),
        (
            b"/apis/cluster.karpor.io/v1beta1/clusters/a",
            "/apis/cluster.karpor.io/v1beta1/clusters/a",
            "",
        ),
        (
            b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxyx",
            "/apis/cluster.karpor.io/v1beta1/clusters/a/proxyx",
            "",
        ),
        (b"/apis?watch=true", "/apis", "watch=true"),
    ],
)
def test_own_api_routes(target: bytes, path: str, query: str) -> None:
    assert route(target) == ApiRoute(path, query)


def test_public_paths() -> None:
    assert route(b"/healthz").public  # type: ignore[union-attr]
    assert route(b"/version").public  # type: ignore[union-attr]
    assert not route(b"/apis").public  # type: ignore[union-attr]
    assert not route(b"/healthz/x").public  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "target",
    [
        b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/../../b/proxy/",
        b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/%2e%2e/%2E%2e/b/proxy",
        b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/./x",
        b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/..;/x",
        b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/x%2f..%2fy",
        b"/apis/cluster.karpor.io/v1beta1/clusters/a%2Fb/proxy/",
        b"/apis/cluster.karpor.io/v1beta1/clusters/%61/proxy/",
        b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy%2Fx",
        b"/apis/cluster.karpor.io/v1beta1/clusters/a/proxy/x%00",
        b"/apis/cluster.karpor.io/v1beta1/clusters/A/proxy/",
        b"/apis/cluster.karpor.io/v1beta1/clusters/-a/proxy/",
        b"/apis/cluster.karpor.io/v1beta1/clusters//proxy/",
        b"/apis/cluster.karpor.io/v1beta1/clusters/" + b"a" * 64 + b"/proxy/",
        b"/apis/cluster%2Ekarpor.io/v1beta1/clusters/a/proxy/",
        b"/apis/cluster.karpor.io/v1beta1/clusters/a/%2f/proxy",
        b"/apis//cluster.karpor.io/v1beta1/clusters/a/proxy",
        b"/healthz/..",
        b"http://evil/apis",
        b"*",
        b"/a\x00b",
        b"/a#frag",
    ],
)
def test_rejected(target: bytes) -> None:
    with pytest.raises(ApiError) as info:
        route(target)
    assert info.value.code == 400
    assert info.value.status()["reason"] == "BadRequest"


def test_longest_name_accepted() -> None:
    name = "a" * 63
    assert route(KARPOR_PREFIX + name.encode() + b"/proxy") == ClusterRoute(name, b"/")


# -- the property: no spelling of a path reaches a cluster other than the one a
# decoding, normalising reader would see ----------------------------------------

_PIECES = st.sampled_from(
    [
        b"a",
        b"b",
        b"proxy",
        b"apis",
        b"cluster.karpor.io",
        b"v1beta1",
        b"clusters",
        b"clustergateways",
        b".",
        b"..",
        b"%2e",
        b"%2E%2e",
        b"%2f",
        b"%2F",
        b"%61",
        b"%62",
        b"%00",
        b"",
        b"x;y",
        b"..;",
        b"%252e",
        b"A",
    ]
)
_PREFIX = st.sampled_from([KARPOR_PREFIX, ALIAS_PREFIX, b"/", b"/apis/", KARPOR_PREFIX + b"a/"])
_NAME_RE = re.compile(
    rb"/apis/(?:cluster\.karpor\.io/v1beta1/clusters|cluster\.core\.oam\.dev/v1alpha1/clustergateways)/([^/]*)/proxy(?:/|$)"
)


def _reader_cluster(target: bytes) -> bytes | None:
    """The cluster a naive reader sees: percent-decode, then normalise dots."""
    path = target.partition(b"?")[0]
    decoded = unquote_to_bytes(path)
    normal = posixpath.normpath(decoded.decode("latin-1")).encode("latin-1")
    for candidate in (path, decoded, normal):
        m = _NAME_RE.match(candidate)
        if m:
            return m.group(1)
    return None


@given(_PREFIX, st.lists(_PIECES, max_size=8), st.sampled_from([b"", b"?a=1", b"?x=/../b"]))
def test_no_spelling_reaches_another_cluster(
    prefix: bytes, pieces: list[bytes], query: bytes
) -> None:
    target = prefix + b"/".join(pieces) + query
    try:
        result = route(target)
    except ApiError as e:
        assert e.code == 400
        return
    seen = _reader_cluster(target)
    if isinstance(result, ClusterRoute):
        # the raw name is the name every reader sees
        assert seen == result.name.encode()
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", result.name)
        assert b".." not in result.target.partition(b"?")[0].split(b"/")
        assert result.target.endswith(query)
    else:
        # the own API never receives something a reader would take for a cluster
        assert seen is None


@given(st.binary(max_size=80))
def test_arbitrary_targets_never_crash(suffix: bytes) -> None:
    target = KARPOR_PREFIX + suffix
    try:
        result = route(target)
    except ApiError as e:
        assert e.code == 400
        return
    if isinstance(result, ClusterRoute):
        assert suffix.startswith(result.name.encode() + b"/proxy")
        assert b"%" not in result.name.encode()


# -- many clusters at once: * and label selectors --------------------------------------


@pytest.mark.parametrize(
    ("target", "selector", "upstream"),
    [
        (b"/apis/cluster.karpor.io/v1beta1/clusters/*/proxy/api", "", b"/api"),
        (b"/apis/cluster.karpor.io/v1beta1/clusters/%2A/proxy", "", b"/"),
        (b"/apis/cluster.karpor.io/v1beta1/clusters/env=prod/proxy/api/v1/pods?x=1", "env=prod",
         b"/api/v1/pods?x=1"),
        (b"/apis/cluster.karpor.io/v1beta1/clusters/env%20in%20(a,b)/proxy/api", "env in (a,b)",
         b"/api"),
        (b"/apis/cluster.karpor.io/v1beta1/clusters/tier!=edge/proxy/", "tier!=edge", b"/"),
        # a prefixed key: encoded, or with its slash as client-go sends it
        (b"/apis/cluster.karpor.io/v1beta1/clusters/a.io%2Fx%3D1/proxy/api", "a.io/x=1", b"/api"),
        (b"/apis/cluster.karpor.io/v1beta1/clusters/a.io/x=1,b.io/y!=2/proxy/api",
         "a.io/x=1,b.io/y!=2", b"/api"),
        (b"/apis/cluster.core.oam.dev/v1alpha1/clustergateways/*/proxy/version", "", b"/version"),
    ],
)  # fmt: skip
def test_a_star_or_a_selector_routes_to_many_clusters(
    target: bytes, selector: str, upstream: bytes
) -> None:
    assert route(target) == FanoutRoute(selector, upstream)


@pytest.mark.parametrize(
    "target",
    [
        b"/apis/cluster.karpor.io/v1beta1/clusters/sim-1/other/proxy/x",  # two plain segments
        b"/apis/cluster.karpor.io/v1beta1/clusters/a.io/x/proxy/api",  # no selector byte
    ],
)
def test_segments_without_a_selector_are_no_fanout(target: bytes) -> None:
    assert isinstance(route(target), ApiRoute)
