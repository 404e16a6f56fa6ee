"""Impersonation headers toward clusters, and callers who impersonate."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.identity import Identity
from karpor.auth.impersonation import (
    authorize_impersonation,
    escape_extra_key,
    impersonation_checks,
    impersonation_headers,
    requested_identity,
    upstream_identity,
)
from karpor.auth.policy import ALLOW_ALL, Exchange, parse_policy
from karpor.auth.requestheader import unescape_extra_key
from karpor.config.model import Cluster
from karpor.kube.status import ApiError

PLAIN = Cluster("sim-1", "https://h")
IMPERSONATING = Cluster("sim-2", "https://h", impersonate=True)
CALLER = Identity("alice", ("dev", "system:authenticated"), "u-1", {"scopes": ("a", "b")})


def test_headers_for_an_identity():
    assert impersonation_headers(CALLER) == [
        (b"Impersonate-User", b"alice"),
        (b"Impersonate-Group", b"dev"),
        (b"Impersonate-Uid", b"u-1"),
        (b"Impersonate-Extra-scopes", b"a"),
        (b"Impersonate-Extra-scopes", b"b"),
    ]
    assert impersonation_headers(None) == []
    odd = Identity("j\u00f6rg", extra={"example.com/team key%": ("x",)})
    assert impersonation_headers(odd) == [
        (b"Impersonate-User", "j\u00f6rg".encode()),
        (b"Impersonate-Extra-example.com%2Fteam%20key%25", b"x"),
    ]


def test_who_the_cluster_sees():
    assert upstream_identity(CALLER, PLAIN, None) is None
    assert upstream_identity(CALLER, IMPERSONATING, None) == CALLER
    mapped = Identity("admin", ("system:masters",))
    assert upstream_identity(CALLER, PLAIN, Exchange("r", target=mapped)) == mapped
    assert upstream_identity(CALLER, IMPERSONATING, Exchange("r", privileged=True)) is None
    asked = Identity("bob")
    assert upstream_identity(CALLER, PLAIN, Exchange("r", privileged=True), asked) == asked


def test_requested_identity_as_kube_reads_it():
    headers = [
        (b"impersonate-user", b"bob"),
        (b"Impersonate-User", b"ignored"),
        (b"Impersonate-Group", b"g1"),
        (b"IMPERSONATE-GROUP", b"g2"),
        (b"Impersonate-Uid", b"9"),
        (b"Impersonate-Extra-Example.com%2Fk", b"v"),
        (b"Authorization", b"Bearer x"),
    ]
    assert requested_identity(headers) == Identity(
        "bob", ("g1", "g2", "system:authenticated"), "9", {"example.com/k": ("v",)}
    )
    assert requested_identity([("Accept", "*/*")]) is None
    sa = requested_identity([("Impersonate-User", "system:serviceaccount:ns:builder")])
    assert sa is not None and sa.groups == (
        "system:serviceaccounts",
        "system:serviceaccounts:ns",
        "system:authenticated",
    )
    anonymous = requested_identity([("Impersonate-User", "system:anonymous")])
    assert anonymous is not None and anonymous.groups == ("system:unauthenticated",)
    with pytest.raises(ApiError) as info:
        requested_identity([("Impersonate-Group", "system:masters")])
    assert info.value.code == 500 and "without impersonating a user" in info.value.message


def test_checks_and_policy():
    asked = Identity("bob", ("admins", "system:authenticated"), "7", {"k": ("v",)})
    checks = impersonation_checks(asked)
    assert [(a.resource, a.subresource, a.name) for a in checks] == [
        ("users", "", "bob"),
        ("groups", "", "admins"),
        ("uids", "", "7"),
        ("userextras", "k", "v"),
    ]
    sa = Identity(
        "system:serviceaccount:ns:b", ("system:serviceaccounts", "system:serviceaccounts:ns")
    )
    (only,) = impersonation_checks(sa)
    assert (only.resource, only.namespace, only.name) == ("serviceaccounts", "ns", "b")

    policy = parse_policy(
        "rules:\n- users: [alice]\n  clusters: [sim-2]\n  verbs: [impersonate]\n", "p"
    )
    assert authorize_impersonation(policy, CALLER, IMPERSONATING, asked).allowed
    denied = authorize_impersonation(policy, CALLER, PLAIN, asked)
    assert not denied.allowed
    assert denied.error().message == (
        'users "bob" is forbidden: User "alice" cannot impersonate resource "users" '
        'in API group "" at the cluster scope on cluster "sim-1"'
    )
    assert authorize_impersonation(ALLOW_ALL, CALLER, PLAIN, asked).allowed


@given(st.text(min_size=1, max_size=20))
def test_extra_keys_survive_the_round_trip(key):
    escaped = escape_extra_key(key)
    assert escaped.isascii()
    assert all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in escaped)
    assert unescape_extra_key(escaped.lower()) == key.lower() or not key.isascii()
