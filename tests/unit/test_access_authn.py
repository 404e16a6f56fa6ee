"""Authentication order and authorization outcomes of :class:`karpor.auth.access.Access`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.access import ANONYMOUS, Access, Forbidden, Peer
from karpor.auth.identity import Identity
from karpor.auth.policy import Policy, parse_policy
from karpor.auth.requestheader import RequestHeaderConfig
from karpor.auth.revocation import ReloadingFile, RevocationList
from karpor.auth.tokens import TokenFile, load_token_file, parse_token_file
from karpor.config.model import Cluster
from karpor.http.headers import websocket_bearer
from karpor.kube.status import ApiError

ALICE = Identity("alice", ("dev",))
CLUSTER = Cluster(name="c", endpoint="https://10.0.0.1", impersonate=True)
TOKENS = parse_token_file('tok-1,bob,7,"ops,dev"\n', "tokens.csv")


def fixed(value: object) -> ReloadingFile:  # type: ignore[type-arg]
    return ReloadingFile("/nonexistent", lambda p: value, value)


def access(**kwargs: object) -> Access:
    return Access(tokens=fixed(TOKENS), request_header=RequestHeaderConfig(), **kwargs)  # type: ignore[arg-type]


def test_token_then_nothing() -> None:
    a = access()
    assert a.authenticate(Peer(), [(b"Authorization", b"Bearer tok-1")]) == Identity(
        "bob", ("ops", "dev"), "7"
    )
    with pytest.raises(ApiError) as denied:
        a.authenticate(Peer(), [])
    assert denied.value.code == 401


def _ws(protocols: bytes) -> list[tuple[bytes, bytes]]:
    return [
        (b"Connection", b"Upgrade"),
        (b"Upgrade", b"websocket"),
        (b"Sec-WebSocket-Protocol", protocols),
    ]


def test_a_websocket_upgrade_may_carry_its_token_in_the_subprotocols() -> None:
    a = access(anonymous=True)
    token = base64.urlsafe_b64encode(b"tok-1").rstrip(b"=")
    offered = b"v5.channel.k8s.io, base64url.bearer.authorization.k8s.io." + token
    assert a.authenticate(Peer(), _ws(offered)) == Identity("bob", ("ops", "dev"), "7")
    # Authorization wins when both are there
    with pytest.raises(ApiError):
        a.authenticate(Peer(), [(b"Authorization", b"Bearer wrong"), *_ws(offered)])
    # not on a plain request
    plain = [(b"Sec-WebSocket-Protocol", offered)]
    assert a.authenticate(Peer(), plain) == ANONYMOUS
    # a wrong, empty, padded, undecodable or doubled token is a refused credential
    wrong = base64.urlsafe_b64encode(b"nope").rstrip(b"=")
    for bad in (
        b"base64url.bearer.authorization.k8s.io." + wrong,
        b"base64url.bearer.authorization.k8s.io.",
        b"base64url.bearer.authorization.k8s.io." + base64.urlsafe_b64encode(b"tok-1"),
        b"base64url.bearer.authorization.k8s.io.!!!",
        offered + b", base64url.bearer.authorization.k8s.io." + token,
    ):
        with pytest.raises(ApiError) as refused:
            a.authenticate(Peer(), _ws(bad))
        assert refused.value.code == 401


@given(st.binary(min_size=1, max_size=64).filter(lambda b: b.isascii() and b.strip() == b))
def test_websocket_bearer_round_trips(token: bytes) -> None:
    encoded = base64.urlsafe_b64encode(token).rstrip(b"=")
    protocols = b"v4.channel.k8s.io, base64url.bearer.authorization.k8s.io." + encoded
    assert websocket_bearer(protocols) == token.decode()
    assert websocket_bearer(b"v4.channel.k8s.io") is None


def test_anonymous_only_without_a_refused_credential() -> None:
    a = access(anonymous=True)
    assert a.authenticate(Peer(), []) == ANONYMOUS
    with pytest.raises(ApiError):
        a.authenticate(Peer(), [(b"authorization", b"Bearer wrong")])
    with pytest.raises(ApiError):
        a.authenticate(Peer(rejected=True), [])


def test_certificate_first_unless_revoked_or_expired() -> None:
    peer = Peer(identity=ALICE, serial=5, not_after=float("inf"))
    revoked = fixed(RevocationList(frozenset({5})))
    assert access().authenticate(peer, [(b"Authorization", b"Bearer tok-1")]) == ALICE
    with pytest.raises(ApiError):
        access(revocations=revoked).authenticate(peer, [])
    late = Peer(identity=ALICE, serial=6, not_after=1.0)
    with pytest.raises(ApiError):
        access().authenticate(late, [])


def test_front_proxy_headers_only_on_a_front_proxy_connection() -> None:
    headers = [(b"X-Remote-User", b"carol"), (b"X-Remote-Group", b"g")]
    assert access().authenticate(Peer(front_proxy="front"), headers) == Identity("carol", ("g",))
    with pytest.raises(ApiError):
        access().authenticate(Peer(), headers)


def test_without_a_policy_impersonation_is_honoured_and_anonymous_reaches_nothing() -> None:
    a = access()
    assert a.authorize(ALICE, CLUSTER, b"GET", b"/api", []).upstream == ALICE
    plain = Cluster(name="p", endpoint="https://10.0.0.2")  # no spec.impersonate
    assert a.authorize(ALICE, plain, b"GET", b"/api", []).upstream is None
    # kubectl --as / --as-group: the identity asked for goes upstream, never dropped
    as_root = [(b"Impersonate-User", b"root"), (b"Impersonate-Group", b"admins")]
    for cluster in (CLUSTER, plain):
        upstream = a.authorize(ALICE, cluster, b"GET", b"/api", as_root).upstream
        assert upstream == Identity("root", ("admins", "system:authenticated"))
    with pytest.raises(ApiError) as no_user:  # groups without a user: kube's 500
        a.authorize(ALICE, plain, b"GET", b"/api", [(b"Impersonate-Group", b"admins")])
    assert no_user.value.code == 500
    with pytest.raises(Forbidden):
        a.authorize(ANONYMOUS, CLUSTER, b"GET", b"/api", [])
    with pytest.raises(Forbidden):
        a.authorize(ANONYMOUS, CLUSTER, b"GET", b"/api", [(b"Impersonate-User", b"root")])
    assert not a.reaches(ANONYMOUS, CLUSTER) and a.reaches(ALICE, CLUSTER)


def test_an_unknown_cluster_is_a_403_for_whoever_may_not_learn_its_name() -> None:
    policy: Policy = parse_policy(
        "rules:\n- users: [alice]\n  clusters: [c, 'team-*']\n  verbs: [get, list]\n"
        "- users: [alice]\n  clusterSelector: {matchLabels: {env: dev}}\n  verbs: ['*']\n",
        "p",
    )
    a = access(policy=fixed(policy))
    target = b"/api/v1/namespaces/x/pods"
    # a name her rules name: she learns that it does not exist
    assert a.unknown_cluster(ALICE, "team-9", b"GET", target, []).code == 404
    # other names: the very 403 of an existing cluster she may not reach
    other = Cluster(name="other", endpoint="https://10.0.0.3")
    for headers in ([], [(b"Impersonate-User", b"root")]):
        with pytest.raises(Forbidden) as existing:
            a.authorize(ALICE, other, b"GET", target, headers)
        unknown = a.unknown_cluster(ALICE, "other", b"GET", target, headers)
        assert isinstance(unknown, Forbidden)
        assert unknown.body() == existing.value.body()
        assert unknown.attrs == existing.value.attrs
    # a selector rule cannot know the labels of a cluster that does not exist
    assert a.unknown_cluster(ALICE, "dev-9", b"GET", target, []).code == 403
    # without a policy: 404 for the authenticated, the anonymous 403 otherwise
    no_policy = access()
    assert no_policy.unknown_cluster(ALICE, "other", b"GET", target, []).code == 404
    with pytest.raises(Forbidden) as anonymous:
        no_policy.authorize(ANONYMOUS, other, b"GET", target, [])
    unknown = no_policy.unknown_cluster(ANONYMOUS, "other", b"GET", target, [])
    assert unknown.body() == anonymous.value.body()


def test_policy_denial_carries_the_attributes() -> None:
    policy: Policy = parse_policy(
        "rules:\n- users: [alice]\n  clusters: [c]\n  verbs: [get, list]\n", "p"
    )
    a = access(policy=fixed(policy))
    ok = a.authorize(ALICE, CLUSTER, b"GET", b"/api/v1/namespaces/x/pods", [])
    assert ok.attrs is not None and ok.attrs.verb == "list"
    with pytest.raises(Forbidden) as denied:
        a.authorize(ALICE, CLUSTER, b"DELETE", b"/api/v1/namespaces/x/pods/p", [])
    assert denied.value.attrs is not None and denied.value.attrs.verb == "delete"
    assert 'User "alice" cannot delete resource "pods"' in denied.value.message
    assert 'on cluster "c"' in denied.value.message


def test_token_file_reload_applies_removals_despite_a_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("t1,u1,1\nt2,u2,2\n")
    file: ReloadingFile[TokenFile] = ReloadingFile(str(path), load_token_file, TOKENS)
    a = Access(tokens=file)
    assert a.poll(0.0) == [("info", f"reloaded {path}")]
    assert a.identify_token("t1") == Identity("u1", (), "1")
    # one edit: t1 removed, a bad line added
    path.write_text("t2,u2,2\nsecret-t3,u3\n")
    notes = a.poll(10.0)
    assert notes[0] == ("info", f"reloaded {path}")
    assert notes[1:] == [
        (
            "warn",
            f"{path}: line 2: must have at least 3 columns (token, user name, user uid), "
            "found 2 (record skipped)",
        )
    ]
    assert a.identify_token("t1") is None
    assert a.identify_token("t2") == Identity("u2", (), "2")
    assert a.identify_token("secret-t3") is None
    # a file that cannot be read keeps the last good version
    path.unlink()
    path.mkdir()
    notes = a.poll(20.0)
    assert notes and notes[0][0] == "warn"
    assert a.identify_token("t2") == Identity("u2", (), "2")


def test_bad_token_records_at_start_are_logged_once(tmp_path: Path) -> None:
    path = tmp_path / "tokens.csv"
    path.write_text("t1,u1,1\nbroken\n")
    file: ReloadingFile[TokenFile] = ReloadingFile(str(path), load_token_file, TOKENS)
    file.poll(0.0)
    a = Access(tokens=file)
    first = a.poll(1.0)
    assert [level for level, _ in first] == ["warn"] and "line 2" in first[0][1]
    assert a.poll(2.0) == []
    assert a.identify_token("t1") == Identity("u1", (), "1")


def test_gateway_paths_need_a_nonresourceurls_grant() -> None:
    policy = parse_policy(
        'rules:\n- users: [prometheus]\n  nonResourceURLs: ["/metrics"]\n  verbs: [get]\n',
        "policy.yaml",
    )
    a = access(policy=fixed(policy))
    a.authorize_path(Identity("prometheus"), "get", "/metrics")
    with pytest.raises(Forbidden) as denied:
        a.authorize_path(ALICE, "get", "/metrics")
    assert denied.value.code == 403
    assert denied.value.message == 'forbidden: User "alice" cannot get path "/metrics"'
    # without a policy file: anyone authenticated, but not anonymous
    access().authorize_path(ALICE, "get", "/metrics")
    with pytest.raises(Forbidden):
        access().authorize_path(ANONYMOUS, "get", "/metrics")
