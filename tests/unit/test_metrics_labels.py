"""Labels of a request: its verb (cached, the same as the access policy's)
and its long-running kind."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.policy import attributes
from karpor.kube.requestinfo import RequestInfoError, parse_request_info
from karpor.metrics.labels import request_verb, stream_kind


@pytest.mark.parametrize(
    ("method", "target", "verb"),
    [
        (b"GET", b"/api/v1/namespaces/d/pods", "list"),
        (b"GET", b"/api/v1/namespaces/d/pods?limit=500&resourceVersion=7", "list"),
        (b"GET", b"/api/v1/namespaces/d/pods?watch=true&resourceVersion=7", "watch"),
        (b"GET", b"/api/v1/namespaces/d/pods?watch=1", "watch"),
        (b"GET", b"/api/v1/namespaces/d/pods?watch=false", "list"),
        (b"GET", b"/api/v1/watch/namespaces/d/pods", "watch"),
        (b"GET", b"/api/v1/namespaces/d/pods/p", "get"),
        (b"GET", b"/api/v1/namespaces/d/pods/p/log?follow=true", "get"),
        (b"POST", b"/api/v1/namespaces/d/pods/p/exec?command=sh", "exec"),
        (b"GET", b"/api/v1/namespaces/d/pods/p/portforward", "portforward"),
        (b"GET", b"/api/v1/namespaces/d/services/s/proxy/x", "proxy"),
        (b"DELETE", b"/api/v1/namespaces/d/pods", "deletecollection"),
        (b"PATCH", b"/apis/apps/v1/namespaces/d/deployments/x", "patch"),
        (b"GET", b"/version", "get"),
        (b"GET", b"/metrics", "get"),
        (b"HEAD", b"/healthz", "head"),
        (b"GET", b"/apis/cluster.karpor.io/v1beta1/clusters", "list"),
        (b"GET", b"/api/v1/watch", "get"),  # kube: an error; the method then
    ],
)
def test_verbs(method: bytes, target: bytes, verb: str) -> None:
    assert request_verb(method, target) == verb


_segment = st.sampled_from(
    ["api", "apis", "v1", "apps", "namespaces", "d", "pods", "p", "watch", "log", "exec", "proxy"]
)


@given(
    st.sampled_from([b"GET", b"HEAD", b"POST", b"PUT", b"PATCH", b"DELETE"]),
    st.lists(_segment, max_size=8),
    st.sampled_from(["", "watch=true", "watch=0", "limit=5&watch=1", "follow=true", "watch"]),
)
def test_the_cached_verb_is_the_policys(method: bytes, segments: list[str], query: str) -> None:
    path = "/" + "/".join(quote(s) for s in segments)
    target = (path + ("?" + query if query else "")).encode()
    try:
        expected = attributes(parse_request_info(method.decode(), path, query)).verb
    except RequestInfoError:
        expected = method.decode().lower()
    assert request_verb(method, target) == expected


@pytest.mark.parametrize(
    ("target", "upgrade", "kind"),
    [
        (b"/api/v1/namespaces/d/pods?watch=true", False, "watch"),
        (b"/api/v1/watch/pods", False, "watch"),
        (b"/api/v1/namespaces/d/pods/p/log?follow=true&container=c", False, "logs"),
        (b"/api/v1/namespaces/d/pods/p/log?follow=false", False, None),
        (b"/api/v1/namespaces/d/pods", False, None),
        (b"/api/v1/namespaces/d/pods/p/exec?command=sh", True, "exec"),
        (b"/api/v1/namespaces/d/pods/p/attach", True, "attach"),
        (b"/api/v1/namespaces/d/pods/p/portforward?ports=80", True, "portforward"),
        (b"/api/v1/namespaces/d/services/s/proxy/ws", True, "proxy"),
        (b"/apis/cluster.karpor.io/v1beta1/clusters?watch=true", False, "watch"),
    ],
)
def test_stream_kinds(target: bytes, upgrade: bool, kind: str | None) -> None:
    assert stream_kind(target, upgrade) == kind
