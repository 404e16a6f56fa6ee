"""Agent identities (:mod:`karpor.auth.agentidentity`): only a gateway-CA
certificate for ``system:karpor:agent:NAME`` in ``system:karpor:agents``
may open a tunnel, for ``NAME`` only; and those names get nothing else."""

from __future__ import annotations

from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st
from OpenSSL import crypto

from karpor.auth.access import Access, Forbidden
from karpor.auth.agentidentity import (
    AGENT_GROUP,
    AGENT_USER_PREFIX,
    agent_user,
    is_reserved,
    tunnel_cluster,
)
from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.ca import CertificateAuthority
from karpor.auth.identity import Identity
from karpor.auth.impersonation import requested_identity
from karpor.auth.policy import Policy, parse_policy
from karpor.auth.requestheader import RequestHeaderConfig
from karpor.auth.revocation import ReloadingFile
from karpor.auth.tokens import parse_token_file
from karpor.config.clusters import is_dns_label
from karpor.config.model import Cluster
from karpor.gatewayapi.handler import authenticated as own_paths_without_policy
from karpor.kube.status import ApiError

GATEWAY_CA = CertificateAuthority.create("karpor-ca")
FRONT_CA = CertificateAuthority.create("front-proxy-ca")
OTHER_CA = CertificateAuthority.create("someone-else")
CLUSTER = Cluster(name="prod-east", endpoint="https://10.0.0.1")
OTHER = Cluster(name="prod-west", endpoint="https://10.0.0.2")
AGENT = agent_user("prod-east")
TOKENS = parse_token_file(
    f'tok-agent,{AGENT},1,"{AGENT_GROUP}"\ntok-alice,alice,2,"dev"\n', "tokens.csv"
)
#: a policy a careless operator might write: everyone authenticated may do everything
EVERYONE = parse_policy(
    "rules:\n- groups: ['system:authenticated']\n  clusters: ['*']\n  verbs: ['*']\n"
    "- groups: ['system:authenticated']\n  nonResourceURLs: ['*']\n  verbs: ['*']\n",
    "policy.yaml",
)
#: a policy naming the agent itself
NAMING = parse_policy(
    f"rules:\n- users: ['{AGENT}']\n  groups: ['{AGENT_GROUP}']\n  clusters: ['*']\n"
    "  verbs: ['*']\n"
    f"- users: ['{AGENT}']\n  nonResourceURLs: ['*']\n  verbs: ['*']\n"
    "- users: [alice]\n  clusters: ['*']\n  verbs: ['*', impersonate]\n"
    "- users: [bob]\n  clusters: ['*']\n  verbs: ['*']\n",
    "policy.yaml",
)


def fixed(value: object) -> ReloadingFile:  # type: ignore[type-arg]
    return ReloadingFile("/nonexistent", lambda p: value, value)


def access(policy: Policy | None = None) -> Access:
    return Access(
        certificates=CertificateAuthenticator([GATEWAY_CA.cert_pem]),
        tokens=fixed(TOKENS),
        front_proxy_ca=[FRONT_CA.cert_pem],
        request_header=RequestHeaderConfig(),
        policy=fixed(policy) if policy is not None else None,
    )


def peer_cert(ca: CertificateAuthority, user: str, groups: tuple[str, ...]) -> crypto.X509:
    issued = ca.issue_client(user, groups)
    return crypto.X509.from_cryptography(x509.load_pem_x509_certificate(issued.cert_pem))


PROXY_CERT = peer_cert(FRONT_CA, "front-proxy-client", ())


def authenticated(
    ca: CertificateAuthority | None,
    user: str = AGENT,
    groups: tuple[str, ...] = (AGENT_GROUP,),
    headers: list[tuple[bytes, bytes]] | None = None,
    a: Access | None = None,
) -> Identity:
    a = a or access()
    peer = a.peer(peer_cert(ca, user, groups) if ca is not None else None)
    return a.authenticate(peer, headers or [])


# --- who may open a tunnel --------------------------------------------------------------


def test_an_agent_certificate_of_the_gateway_ca_names_its_cluster() -> None:
    identity = authenticated(GATEWAY_CA)
    assert identity.client_certificate
    assert tunnel_cluster(identity) == "prod-east"
    assert tunnel_cluster(identity.with_authenticated()) == "prod-east"


def test_the_certificate_needs_both_the_user_name_and_the_group() -> None:
    assert tunnel_cluster(authenticated(GATEWAY_CA, AGENT, ())) is None
    assert tunnel_cluster(authenticated(GATEWAY_CA, "prod-east", (AGENT_GROUP,))) is None
    assert tunnel_cluster(authenticated(GATEWAY_CA, "alice", ("dev",))) is None
    # the name must be a cluster name
    for user in (AGENT_USER_PREFIX, AGENT_USER_PREFIX + "Prod", AGENT_USER_PREFIX + "a/b"):
        assert tunnel_cluster(authenticated(GATEWAY_CA, user, (AGENT_GROUP,))) is None


def test_a_certificate_of_another_ca_is_no_agent() -> None:
    # the front-proxy CA authenticates a proxy, never a caller; another CA nothing
    for ca in (FRONT_CA, OTHER_CA):
        a = access()
        peer = a.peer(peer_cert(ca, AGENT, (AGENT_GROUP,)))
        assert peer.identity is None
        try:
            identity = a.authenticate(peer, [])
        except ApiError as refused:
            assert refused.code == 401
        else:
            assert tunnel_cluster(identity) is None


def test_front_proxy_headers_naming_an_agent_make_no_agent() -> None:
    identity = authenticated(
        FRONT_CA,
        "front-proxy-client",
        (),
        [(b"X-Remote-User", AGENT.encode()), (b"X-Remote-Group", AGENT_GROUP.encode())],
    )
    assert (identity.user, identity.groups) == (AGENT, (AGENT_GROUP,))
    assert tunnel_cluster(identity) is None


def test_a_static_token_of_an_agent_name_makes_no_agent() -> None:
    identity = authenticated(None, headers=[(b"Authorization", b"Bearer tok-agent")])
    assert (identity.user, identity.groups) == (AGENT, (AGENT_GROUP,))
    assert tunnel_cluster(identity) is None


def test_impersonating_an_agent_makes_no_agent() -> None:
    requested = requested_identity(
        [(b"Impersonate-User", AGENT.encode()), (b"Impersonate-Group", AGENT_GROUP.encode())]
    )
    assert requested is not None and tunnel_cluster(requested) is None


_names = st.text(alphabet="abcz09-:/.AZ", max_size=20)
_users = st.one_of(_names, _names.map(lambda n: AGENT_USER_PREFIX + n))
_groups = st.lists(st.one_of(st.just(AGENT_GROUP), _names), max_size=4).map(tuple)


@given(user=_users, groups=_groups, certificate=st.booleans())
def test_tunnel_cluster_decides_on_proof_name_and_group(
    user: str, groups: tuple[str, ...], certificate: bool
) -> None:
    identity = Identity(user, groups, client_certificate=certificate)
    name = user.removeprefix(AGENT_USER_PREFIX)
    agent = certificate and AGENT_GROUP in groups and user.startswith(AGENT_USER_PREFIX)
    assert tunnel_cluster(identity) == (name if agent and is_dns_label(name) else None)
    # whoever claims the names is refused as a user, proven or not
    assert is_reserved(identity) == (user.startswith(AGENT_USER_PREFIX) or AGENT_GROUP in groups)


@given(
    values=st.lists(
        st.tuples(
            st.sampled_from(["X-Remote-User", "X-Remote-Group", "X-Remote-Extra-Scopes"]),
            st.one_of(st.sampled_from([AGENT, AGENT_GROUP, "prod-east"]), _names),
        ),
        max_size=6,
    )
)
def test_no_front_proxy_header_makes_an_agent(values: list[tuple[str, str]]) -> None:
    a = access()
    peer = a.peer(PROXY_CERT)
    try:
        identity = a.authenticate(peer, [(n.encode(), v.encode()) for n, v in values])
    except ApiError:
        return
    assert tunnel_cluster(identity) is None


# --- what an agent gets as a user: nothing ------------------------------------------------


def _refused_everything(a: Access, identity: Identity) -> None:
    for cluster in (CLUSTER, OTHER):
        assert not a.reaches(identity, cluster)
        assert not a.shows_endpoint(identity, cluster)
        for method, target in ((b"GET", b"/api/v1/pods"), (b"GET", b"/version")):
            try:
                a.authorize(identity, cluster, method, target, [])
            except Forbidden as denied:
                assert denied.code == 403
                assert "reserved for karpor agents" in denied.message
            else:
                raise AssertionError(f"{identity.user} reached {cluster.name}")
    assert not a.names(identity, "missing")
    unknown = a.unknown_cluster(identity, "missing", b"GET", b"/api/v1/pods", [])
    assert unknown.code == 403
    try:
        a.authorize_path(identity, "get", "/metrics")
    except Forbidden as denied:
        assert denied.code == 403
    else:
        raise AssertionError("an agent read /metrics")


def test_an_agent_reaches_nothing_without_a_policy_file() -> None:
    _refused_everything(access(), authenticated(GATEWAY_CA).with_authenticated())


def test_an_agent_reaches_nothing_under_a_policy_granting_everyone_everything() -> None:
    a = access(EVERYONE)
    _refused_everything(a, authenticated(GATEWAY_CA, a=a).with_authenticated())
    # the rule does grant ordinary users
    alice = Identity("alice", ("dev",)).with_authenticated()
    assert a.authorize(alice, CLUSTER, b"GET", b"/api/v1/pods", []).attrs is not None


def test_an_agent_reaches_nothing_even_under_a_rule_naming_it() -> None:
    a = access(NAMING)
    _refused_everything(a, authenticated(GATEWAY_CA, a=a))


def test_an_agent_name_asserted_otherwise_reaches_nothing_either() -> None:
    a = access(EVERYONE)
    by_token = authenticated(None, headers=[(b"Authorization", b"Bearer tok-agent")], a=a)
    by_proxy = authenticated(
        FRONT_CA,
        "front-proxy-client",
        (),
        [(b"X-Remote-User", b"someone"), (b"X-Remote-Group", AGENT_GROUP.encode())],
        a,
    )
    for identity in (by_token, by_proxy):
        _refused_everything(a, identity.with_authenticated())


def test_nobody_impersonates_an_agent() -> None:
    a = access(NAMING)  # alice may impersonate anyone on every cluster
    alice = Identity("alice", ("dev",))
    assert a.authorize(alice, CLUSTER, b"GET", b"/api/v1/pods", [(b"Impersonate-User", b"bob")])
    for headers in (
        [(b"Impersonate-User", AGENT.encode())],
        [(b"Impersonate-User", b"bob"), (b"Impersonate-Group", AGENT_GROUP.encode())],
    ):
        try:
            a.authorize(alice, CLUSTER, b"GET", b"/api/v1/pods", headers)
        except Forbidden as denied:
            assert denied.code == 403 and "reserved for karpor agents" in denied.message
        else:
            raise AssertionError(f"alice impersonated {headers}")


def test_the_gateways_own_paths_refuse_an_agent_without_a_policy() -> None:
    # the verbose health report is for authenticated callers: not agents
    agent = authenticated(GATEWAY_CA)
    try:
        own_paths_without_policy(agent, "get", "/healthz")
    except ApiError as denied:
        assert denied.code == 403
    else:
        raise AssertionError("an agent read the verbose health")
    own_paths_without_policy(Identity("alice"), "get", "/healthz")
