"""Identity and access end to end (issue 6): a real gateway process with a
token file, a front-proxy CA, an access policy with identity exchange, an
audit log, an impersonating cluster and exec-plugin clusters, in front of
the simulated clusters; raw HTTPS requests and kubectl.

One gateway serves the whole module (module fixtures); every test uses
identities of its own, so the order does not matter.
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.access import (
    Cert,
    exec_cluster,
    exec_plugin,
    expired,
    issue,
    runs,
    status,
    write_tokens,
    write_yaml,
)
from support.gateway import (
    GatewayRun,
    Response,
    client_context,
    request,
    start_gateway,
    write_kubeconfig,
)
from support.kubectl import Kubectl
from support.sim import SimRun, karpor_command
from support.waits import wait_for

from karpor.auth.ca import CertificateAuthority

TOKENS = {
    "reader-token-0123456789": ("reader", ("readers",)),
    "team-token-0123456789": ("teamuser", ()),
    "ops-token-0123456789": ("opsuser", ("ops",)),
    "imp-token-0123456789": ("impersonator", ()),
    "exec-user-token-0123456789": ("execer", ()),
}
READER, TEAM, OPS, IMPERSONATOR, EXECER = list(TOKENS)
EXEC_TOKEN_LIFETIME = 4.0

POLICY = {
    "rules": [
        {"users": ["admin"], "clusters": ["*"], "verbs": ["*"]},
        {"groups": ["readers"], "clusters": ["*"], "verbs": ["get", "list", "watch"]},
        {"users": ["teamuser"], "clusters": ["sim-1"], "verbs": ["*"], "namespaces": ["team-a"]},
        {"groups": ["devs"], "clusterSelector": {"matchLabels": {"env": "dev"}}, "verbs": ["*"]},
        {"users": ["execer"], "clusters": ["sim-1"], "verbs": ["get", "list", "exec"]},
        {"users": ["impersonator"], "clusters": ["sim-2"], "verbs": ["impersonate"]},
        {"users": ["bob"], "clusters": ["sim-2"], "verbs": ["get", "list", "create"]},
        {"groups": ["ops"], "clusters": ["sim-2"], "verbs": ["*"]},
        {"users": ["proxyuser"], "clusters": ["sim-1", "sim-2"], "verbs": ["*"]},
        {
            "users": ["sre"],
            "clusters": ["sim-1"],
            "nonResourceURLs": ["/metrics", "/logs/*"],
            "verbs": ["get"],
        },
    ],
    "identityExchange": [
        {
            "name": "ops-to-admin",
            "type": "StaticMapping",
            "source": {"group": "ops", "cluster": "sim-2"},
            "target": {"user": "mapped-admin", "groups": ["mapped-group"]},
        }
    ],
}


@dataclass
class Setup:
    """The module's gateway and what it was given."""

    gateway: GatewayRun
    ca: CertificateAuthority
    front_ca: CertificateAuthority
    audit: Path
    exec_count: Path
    exec_token: str
    sim: SimRun
    tmp: Path
    secrets: list[str]

    def ctx(self, cert: Cert | None = None) -> Any:
        """A TLS client context (with ``cert`` when given)."""
        if cert is None:
            return client_context(self.gateway.ca_pem)
        return client_context(self.gateway.ca_pem, cert.cert_pem, cert.key_pem)

    def get(
        self,
        cluster: str,
        path: str,
        cert: Cert | None = None,
        token: str | None = None,
        method: str = "GET",
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
    ) -> Response:
        """One request to ``path`` on ``cluster`` (``""``: the gateway's own API)."""
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            all_headers.setdefault("Content-Type", "application/json")
        prefix = f"/apis/cluster.karpor.io/v1beta1/clusters/{cluster}/proxy" if cluster else ""
        return request(
            self.gateway.port,
            prefix + path,
            self.ctx(cert),
            method=method,
            headers=all_headers,
            body=body,
        )

    def whoami(self, cluster: str, **kwargs: Any) -> dict[str, Any]:
        """The gateway's ``SelfSubjectReview`` of the caller on ``cluster``: ``userInfo``."""
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
        response = self.get(
            cluster,
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            method="POST",
            body=json.dumps(review).encode(),
            **kwargs,
        )
        assert response.status == 201, (response.status, response.body)
        info: dict[str, Any] = response.json()["status"]["userInfo"]
        return info


@pytest.fixture(scope="module")
def setup(sim_clusters: SimRun, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("access")
    clusters = tmp / "clusters"
    clusters.mkdir()
    for name, labels, impersonate in (("sim-1", {"env": "dev"}, False), ("sim-2", {}, True)):
        sim = sim_clusters[name]
        doc = yaml.safe_load(sim.cluster_file.read_text())
        doc["metadata"]["labels"] = {**labels, "env": labels.get("env", "prod")}
        doc["spec"]["impersonate"] = impersonate
        write_yaml(clusters / f"{name}.yaml", doc)
    sim1 = sim_clusters["sim-1"]
    sim1_doc = yaml.safe_load(sim1.cluster_file.read_text())
    ca_b64 = sim1_doc["spec"]["access"]["caBundle"]
    exec_count = tmp / "exec-runs"
    plugin = exec_plugin(tmp / "plugin.py", sim1.token, exec_count, lifetime=EXEC_TOKEN_LIFETIME)
    write_yaml(clusters / "exec-1.yaml", exec_cluster("exec-1", sim1.endpoint, ca_b64, plugin))
    broken = exec_plugin(tmp / "broken.py", "unused", tmp / "broken-runs", fail=True)
    write_yaml(clusters / "exec-bad.yaml", exec_cluster("exec-bad", sim1.endpoint, ca_b64, broken))
    write_yaml(tmp / "policy.yaml", POLICY)
    write_tokens(tmp / "tokens.csv", TOKENS)
    front_ca = CertificateAuthority.create("front-proxy-ca")
    (tmp / "front-proxy-ca.crt").write_bytes(front_ca.cert_pem)
    audit = tmp / "audit.jsonl"
    config = {
        "auditLog": str(audit),
        "authentication": {
            "tokenFile": str(tmp / "tokens.csv"),
            "requestHeader": {
                "clientCAFile": str(tmp / "front-proxy-ca.crt"),
                "allowedNames": ["front-proxy-client"],
            },
        },
        "authorization": {"policyFile": str(tmp / "policy.yaml")},
    }
    write_yaml(tmp / "config.yaml", config)
    state_dir = tmp / "state"
    gateway = start_gateway(
        clusters, state_dir, "--workers", "1", "--config", str(tmp / "config.yaml")
    )
    try:
        ca = CertificateAuthority.load(state_dir)
        secrets = [*TOKENS, sim1.token, sim_clusters["sim-2"].token]
        yield Setup(
            gateway, ca, front_ca, audit, exec_count, sim1.token, sim_clusters, tmp, secrets
        )
    finally:
        gateway.stop()


def forbidden(response: Response, *words: str) -> None:
    assert response.status == 403, (response.status, response.body)
    message = status(response.body)["message"]
    for word in words:
        assert word in message, message


# -- authentication -------------------------------------------------------------------


def test_client_certificate_token_and_nothing(setup: Setup) -> None:
    admin = issue(setup.ca, "admin", ("system:masters",))
    assert setup.get("sim-1", "/api/v1/namespaces", cert=admin).status == 200
    assert setup.get("sim-1", "/api/v1/namespaces", token=READER).status == 200
    nothing = setup.get("sim-1", "/api/v1/namespaces")
    assert nothing.status == 401
    assert status(nothing.body)["reason"] == "Unauthorized"
    assert setup.get("sim-1", "/api/v1/namespaces", token="not-a-token").status == 401
    # both at once: the certificate is tried first
    both = setup.whoami("sim-2", cert=admin, token=READER)
    assert both["username"] == "admin"
    for path in ("/healthz", "/livez", "/readyz", "/readyz/ping", "/livez/ping", "/version"):
        assert setup.get("", path).status == 200, path
    assert setup.get("", "/apis/cluster.karpor.io/v1beta1/clusters").status == 401


def test_h2load_with_a_token_is_all_2xx(setup: Setup) -> None:
    """The same token authentication over HTTP/2: h2load (nghttp2-client,
    installed by .ci/run), 2 connections x 8 streams, every answer 2xx; a
    wrong token is 401 on every stream."""
    h2load = shutil.which("h2load")
    if h2load is None:
        pytest.skip("h2load not installed (apt-get install -y nghttp2-client)")
    url = (
        f"https://127.0.0.1:{setup.gateway.port}"
        "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api/v1/namespaces/default"
    )

    def run(token: str) -> str:
        argv = [h2load, "-c2", "-m8", "-n200", "-H", f"authorization: Bearer {token}", url]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Application protocol: h2" in done.stdout, done.stdout
        return done.stdout

    out = run(READER)
    assert re.search(r"^requests: 200 total, 200 started, 200 done, 200 succeeded", out, re.M), out
    assert re.search(r"^status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx", out, re.M), out
    out = run("not-a-token")
    assert re.search(r"^status codes: 0 2xx, 0 3xx, 200 4xx, 0 5xx", out, re.M), out


def test_expired_and_foreign_certificates_are_401(setup: Setup) -> None:
    old = expired(setup.ca, "admin")
    assert setup.get("sim-1", "/api/v1/namespaces", cert=old).status == 401
    other = CertificateAuthority.create("another-ca")
    foreign = issue(other, "admin", ("system:masters",))
    response = setup.get("sim-1", "/api/v1/namespaces", cert=foreign)
    assert response.status == 401
    # a foreign certificate does not fall back to anonymous, nor to X-Remote headers
    fake = setup.get(
        "sim-1", "/api/v1/namespaces", cert=foreign, headers={"X-Remote-User": "admin"}
    )
    assert fake.status == 401


def test_revoked_certificate_is_401_within_a_second(setup: Setup) -> None:
    cert = issue(setup.ca, "revokee", ("devs",))
    assert setup.get("sim-1", "/api/v1/namespaces", cert=cert).status == 200
    result = subprocess.run(
        [
            *karpor_command(),
            "revoke",
            "--state-dir",
            str(setup.gateway.state_dir),
            "--user",
            "revokee",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    wait_for(
        lambda: setup.get("sim-1", "/api/v1/namespaces", cert=cert).status == 401,
        15,  # a safety net, not the assertion
        "the revoked certificate refused",
        step=0.2,
    )
    # a certificate issued after the revocation (whole seconds: from the next one on) is good
    revoked = json.loads((setup.gateway.state_dir / "revoked.json").read_text())
    at = datetime.datetime.fromisoformat(revoked["users"]["revokee"])
    wait_for(
        lambda: datetime.datetime.now(datetime.UTC).replace(microsecond=0) > at,
        5,
        f"the second after the revocation at {at}",
    )
    fresh = issue(setup.ca, "revokee", ("devs",))
    assert setup.get("sim-1", "/api/v1/namespaces", cert=fresh).status == 200


def test_front_proxy_headers_from_an_allowed_certificate(setup: Setup) -> None:
    proxy = issue(setup.front_ca, "front-proxy-client")
    headers = {"X-Remote-User": "proxyuser", "X-Remote-Group": "aggregated"}
    assert setup.get("sim-1", "/api/v1/namespaces", cert=proxy, headers=headers).status == 200
    seen = setup.whoami("sim-2", cert=proxy, headers=headers)
    assert seen["username"] == "proxyuser"
    assert "aggregated" in seen["groups"]
    # without the headers, or from a CN not allowed: not authenticated
    assert setup.get("sim-1", "/api/v1/namespaces", cert=proxy).status == 401
    other = issue(setup.front_ca, "someone-else")
    assert setup.get("sim-1", "/api/v1/namespaces", cert=other, headers=headers).status == 401
    # X-Remote headers over a token or a gateway certificate change nothing
    assert setup.whoami("sim-2", token=OPS, headers=headers)["username"] == "opsuser"


# -- authorization --------------------------------------------------------------------


def test_policy_matrix(setup: Setup) -> None:
    configmap = json.dumps(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}
    ).encode()
    # read-only
    assert setup.get("sim-1", "/api/v1/namespaces/default/pods", token=READER).status == 200
    forbidden(
        setup.get(
            "sim-1",
            "/api/v1/namespaces/default/configmaps",
            token=READER,
            method="POST",
            body=configmap,
        ),
        'User "reader" cannot create resource "configmaps" in API group ""',
        'in the namespace "default"',
        'on cluster "sim-1"',
    )
    # namespace-limited
    assert setup.get("sim-1", "/api/v1/namespaces/team-a/pods", token=TEAM).status == 200
    forbidden(setup.get("sim-1", "/api/v1/namespaces/team-b/pods", token=TEAM), '"team-b"')
    forbidden(setup.get("sim-1", "/api/v1/nodes", token=TEAM), "at the cluster scope")
    forbidden(setup.get("sim-1", "/api/v1/pods", token=TEAM))
    forbidden(setup.get("sim-2", "/api/v1/namespaces/team-a/pods", token=TEAM), '"sim-2"')
    # exec and portforward are verbs of their own
    pods = "/api/v1/namespaces/default/pods/nope"
    assert (
        setup.get("sim-1", pods + "/exec?command=true", token=EXECER, method="POST").status != 403
    )
    forbidden(
        setup.get("sim-1", pods + "/portforward?ports=80", token=EXECER, method="POST"),
        "cannot portforward",
    )
    forbidden(
        setup.get("sim-1", pods + "/exec?command=true", token=READER, method="POST"),
        "cannot exec",
    )
    # label-selected clusters
    dev = issue(setup.ca, "dana", ("devs",))
    assert setup.get("sim-1", "/api/v1/namespaces", cert=dev).status == 200
    forbidden(setup.get("sim-2", "/api/v1/namespaces", cert=dev))
    # deny by default
    nobody = issue(setup.ca, "nobody")
    forbidden(setup.get("sim-1", "/api/v1/namespaces", cert=nobody), 'User "nobody"')
    # discovery is open to whoever reaches a cluster
    assert setup.get("sim-1", "/api", token=TEAM).status == 200


def test_get_clusters_lists_only_reachable_clusters(setup: Setup) -> None:
    def names(**kwargs: Any) -> list[str]:
        response = setup.get("", "/apis/cluster.karpor.io/v1beta1/clusters", **kwargs)
        assert response.status == 200, response.body
        return sorted(item["metadata"]["name"] for item in response.json()["items"])

    assert names(cert=issue(setup.ca, "dana", ("devs",))) == ["sim-1"]
    assert names(token=TEAM) == ["sim-1"]
    assert names(cert=issue(setup.ca, "nobody")) == []
    assert names(cert=issue(setup.ca, "admin")) == ["exec-1", "exec-bad", "sim-1", "sim-2"]


# -- impersonation ----------------------------------------------------------------------


def test_impersonating_cluster_sees_the_caller(setup: Setup) -> None:
    # whoami answers for the caller; extra says whom the cluster sees (issue 17)
    admin = issue(setup.ca, "admin", ("system:masters", "ops-team"))
    seen = setup.whoami("sim-2", cert=admin)
    assert seen["username"] == "admin"
    assert "system:masters" in seen["groups"] and "ops-team" in seen["groups"]
    assert seen["extra"]["karpor.io/cluster-identity"] == ["impersonated"]
    assert seen["extra"]["karpor.io/cluster-user"] == ["admin"]
    assert "ops-team" in seen["extra"]["karpor.io/cluster-groups"]
    # a cluster without impersonation sees the gateway's credential
    plain = setup.whoami("sim-1", cert=admin)
    assert plain["username"] == "admin"
    assert plain["extra"]["karpor.io/cluster-identity"] == ["credential"]
    assert "karpor.io/cluster-user" not in plain["extra"]
    # identity exchange: ops callers are mapped on sim-2
    mapped = setup.whoami("sim-2", token=OPS)
    assert mapped["username"] == "opsuser" and "ops" in mapped["groups"]
    assert mapped["extra"]["karpor.io/cluster-user"] == ["mapped-admin"]
    assert "mapped-group" in mapped["extra"]["karpor.io/cluster-groups"]
    assert "ops" not in mapped["extra"]["karpor.io/cluster-groups"]
    assert mapped["extra"]["karpor.io/identity-exchange"] == ["ops-to-admin"]


def test_callers_impersonation_needs_the_impersonate_verb(setup: Setup) -> None:
    as_bob = {"Impersonate-User": "bob"}
    forbidden(
        setup.get("sim-2", "/api/v1/namespaces", token=READER, headers=as_bob),
        "cannot impersonate",
    )
    admin = issue(setup.ca, "admin")
    # admin has "*" (impersonate included): granted, and authorized as bob
    assert setup.whoami("sim-2", cert=admin, headers=as_bob)["username"] == "bob"
    seen = setup.whoami("sim-2", token=IMPERSONATOR, headers=as_bob)
    assert seen["username"] == "bob"
    # bob may not reach sim-1: neither may whoever impersonates him there
    forbidden(setup.get("sim-1", "/api/v1/namespaces", token=IMPERSONATOR, headers=as_bob))
    # authorized as bob: what bob may not do is forbidden, whoever asks
    forbidden(
        setup.get(
            "sim-2",
            "/api/v1/namespaces/default",
            token=IMPERSONATOR,
            headers=as_bob,
            method="DELETE",
        ),
        'User "bob" cannot delete',
    )


# -- exec-plugin credentials -----------------------------------------------------------


def test_exec_plugin_token_is_cached_until_near_expiry(setup: Setup) -> None:
    admin = issue(setup.ca, "admin")
    before = len(runs(setup.exec_count))  # the gateway's health probes use the plugin too
    for _ in range(3):
        assert setup.get("exec-1", "/api/v1/namespaces", cert=admin).status == 200
    first = runs(setup.exec_count)
    assert len(first) - before <= 1  # three requests, one token at most

    def ran_again() -> bool:
        assert setup.get("exec-1", "/api/v1/namespaces", cert=admin).status == 200
        return len(runs(setup.exec_count)) > len(first)

    # requests every 0.2 s until one runs the plugin again, near the token's expiry
    wait_for(ran_again, 20, "the plugin run again", step=0.2)  # a safety net, not the assertion
    later = runs(setup.exec_count)
    assert len(later) > len(first) >= 1
    # each run no earlier than half the token's lifetime after the one before
    # (its expiry is in whole seconds: up to one less)
    half = (EXEC_TOKEN_LIFETIME - 1) / 2 - 0.1
    assert all(b - a >= half for a, b in itertools.pairwise(later))


def test_failing_exec_plugin_is_502_naming_the_cluster(setup: Setup) -> None:
    admin = issue(setup.ca, "admin")
    response = setup.get("exec-bad", "/api/v1/namespaces", cert=admin)
    assert response.status == 502
    message = status(response.body)["message"]
    assert 'cluster "exec-bad"' in message and "exit status 3" in message


# -- kubectl ---------------------------------------------------------------------------


def test_kubectl_with_a_token_kubeconfig_and_a_certificate(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    if not kubectl_bins:
        pytest.skip("no kubectl binary on this machine")
    binary = next(iter(kubectl_bins.values()))
    state = setup.gateway.state_dir
    out = setup.tmp / "team.kubeconfig"
    result = subprocess.run(
        [
            *karpor_command(),
            "kubeconfig",
            "--state-dir",
            str(state),
            "--token",
            TEAM,
            "-o",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert TEAM not in result.stderr
    config = yaml.safe_load(out.read_text())
    assert sorted(c["name"] for c in config["contexts"]) == ["all", "karpor", "sim-1"]
    team = Kubectl(binary, out)
    assert team.run("get", "pods", "-n", "team-a", "--context", "sim-1").returncode == 0
    denied = team.run("get", "pods", "-n", "team-b", "--context", "sim-1", check=False)
    assert denied.returncode != 0 and "Forbidden" in denied.stderr
    assert "sim-1" in team.run("get", "clusters", "--context", "karpor").stdout
    dev_config = write_kubeconfig(
        state, setup.tmp / "dev.kubeconfig", setup.gateway.url, "dana", ("devs",)
    )
    dev = yaml.safe_load(dev_config.read_text())
    assert sorted(c["name"] for c in dev["contexts"]) == ["all", "karpor", "sim-1"]
    admin = write_kubeconfig(state, setup.tmp / "admin.kubeconfig", setup.gateway.url, "admin")
    whoami = Kubectl(binary, admin).run("auth", "whoami", "-o", "json", "--context", "sim-2")
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == "admin" and "system:masters" in info["groups"]


# -- what a restricted caller may reach and learn (issue 14) ---------------------------

PROXY = "/apis/cluster.karpor.io/v1beta1/clusters"
ALIAS = "/apis/cluster.core.oam.dev/v1alpha1/clustergateways"


def team_kubectl(setup: Setup, kubectl_bins: dict[str, Path]) -> Kubectl:
    """kubectl with the namespace-limited user's kubeconfig (``karpor kubeconfig --token``)."""
    if not kubectl_bins:
        pytest.skip("no kubectl binary on this machine")
    out = setup.tmp / "team-limited.kubeconfig"
    if not out.exists():
        argv = [*karpor_command(), "kubeconfig", "--state-dir", str(setup.gateway.state_dir)]
        result = subprocess.run(
            [*argv, "--token", TEAM, "-o", str(out)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
    return Kubectl(next(iter(kubectl_bins.values())), out)


def test_namespace_limited_user_reads_no_non_resource_path(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    team = team_kubectl(setup, kubectl_bins)
    for path in ("/metrics", "/logs/", "/debug/pprof/", "/configz"):
        raw = f"{PROXY}/sim-1/proxy{path}"
        denied = team.run("get", "--raw", raw, "--context", "karpor", check=False)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr
    # what the rule grants, and discovery, still work
    assert team.run("get", "pods", "-n", "team-a", "--context", "sim-1").returncode == 0
    version = json.loads(team.out("get", "--raw", "/version", "--context", "sim-1"))
    assert version["gitVersion"].startswith("v1.")
    for path in ("/api", "/apis", "/api/v1", "/apis/apps/v1", "/healthz", "/readyz"):
        assert setup.get("sim-1", path, token=TEAM).status == 200, path
    # "*" on every cluster grants no non-resource path either (as in kube RBAC) ...
    admin = issue(setup.ca, "admin")
    forbidden(
        setup.get("sim-1", "/logs/", cert=admin),
        'User "admin" cannot get path "/logs/" on cluster "sim-1"',
    )
    forbidden(setup.get("sim-1", "/healthz/etcd", cert=admin))
    # ... a nonResourceURLs rule naming the cluster does: forwarded, the cluster answers
    sre = issue(setup.ca, "sre")
    assert setup.get("sim-1", "/logs/", cert=sre).status != 403
    assert setup.get("sim-1", "/metrics", cert=sre).status != 403
    assert setup.get("sim-1", "/metrics", cert=sre, method="HEAD").status == 403  # no body
    forbidden(setup.get("sim-1", "/debug/pprof/", cert=sre))
    forbidden(setup.get("sim-1", "/api/v1/namespaces", cert=sre))


def test_unknown_and_forbidden_clusters_look_alike(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    target = "/proxy/api/v1/namespaces/team-a/pods"
    for prefix in (PROXY, ALIAS):
        unknown = setup.get("", f"{prefix}/nope{target}", token=TEAM)
        existing = setup.get("", f"{prefix}/sim-2{target}", token=TEAM)
        assert unknown.status == existing.status == 403, (unknown.body, existing.body)
        assert status(unknown.body) == json.loads(existing.body.replace(b"sim-2", b"nope"))
        # a caller whose rules name every cluster learns that it does not exist
        assert setup.get("", f"{prefix}/nope{target}", token=READER).status == 404
    # the gateway's own API: get clusters NAME
    unknown = setup.get("", f"{PROXY}/nope", token=TEAM)
    existing = setup.get("", f"{PROXY}/sim-2", token=TEAM)
    assert unknown.status == existing.status == 403
    assert status(unknown.body) == json.loads(existing.body.replace(b"sim-2", b"nope"))
    assert setup.get("", f"{PROXY}/nope", token=READER).status == 404
    team = team_kubectl(setup, kubectl_bins)
    for name in ("nope", "sim-2"):
        denied = team.run("get", "clusters", name, "--context", "karpor", check=False)
        assert denied.returncode != 0 and "Forbidden" in denied.stderr, denied.stderr


def test_endpoints_show_only_beyond_namespace_limited_rules(
    setup: Setup, kubectl_bins: dict[str, Path]
) -> None:
    endpoint = setup.sim["sim-1"].endpoint
    team = team_kubectl(setup, kubectl_bins)
    listed = team.out("get", "clusters", "-o", "yaml", "--context", "karpor")
    assert "sim-1" in listed and endpoint not in listed and "endpoint" not in listed
    table = team.out("get", "clusters", "--context", "karpor")
    assert "<hidden>" in table and endpoint not in table
    one = setup.get("", f"{PROXY}/sim-1", token=TEAM).json()
    assert "access" not in one["spec"]
    # a rule covering the cluster in every namespace shows it
    dana = issue(setup.ca, "dana", ("devs",))
    assert setup.get("", f"{PROXY}/sim-1", cert=dana).json()["spec"]["access"]["endpoint"] == (
        endpoint
    )
    assert endpoint in setup.get("", PROXY, token=READER).body.decode()
    # the verbose health report needs credentials; the plain probes do not
    nobody = setup.get("", "/healthz?verbose")
    assert nobody.status == 401 and b"pid" not in nobody.body
    assert setup.get("", "/readyz").body == b"ok"
    assert b"[+]worker ok: pid " in setup.get("", "/healthz?verbose", token=TEAM).body


# -- audit and secrets (last: they read what the others did) ---------------------------


def test_zz_audit_lines_and_no_secret_anywhere(setup: Setup) -> None:
    admin = issue(setup.ca, "admin", ("system:masters",))
    assert setup.whoami("sim-2", cert=admin)["username"] == "admin"
    forbidden(setup.get("sim-1", "/api/v1/nodes", token=TEAM))

    def audited() -> list[dict[str, Any]]:
        records = [json.loads(line) for line in setup.audit.read_text().splitlines()]
        denied = any(r.get("user") == "teamuser" and r.get("resource") == "nodes" for r in records)
        return records if denied else []

    # a safety net: the writer thread appends soon
    records = wait_for(audited, 10, "the denial in the audit log")
    denial = next(r for r in records if r["user"] == "teamuser" and r["resource"] == "nodes")
    assert denial["code"] == 403 and denial["cluster"] == "sim-1" and denial["verb"] == "list"
    review = [
        r
        for r in records
        if r["user"] == "admin"
        and r["cluster"] == "sim-2"
        and r["resource"] == "selfsubjectreviews"
    ]
    assert review and review[-1]["code"] == 201
    assert review[-1]["impersonatedUser"]["username"] == "admin"
    assert review[-1]["bytesIn"] > 0 and review[-1]["bytesOut"] > 0
    for key in (
        "time",
        "requestID",
        "groups",
        "sourceIP",
        "namespace",
        "path",
        "durationSeconds",
    ):
        assert key in denial
    texts = {"audit log": setup.audit.read_text(), "gateway log": setup.gateway.process.output}
    ca_key = (setup.gateway.state_dir / "ca.key").read_text()
    keys = [admin.key_pem.decode().splitlines()[1], ca_key.splitlines()[1]]
    for where, text in texts.items():
        for secret in [*setup.secrets, *keys]:
            assert secret not in text, f"a secret in the {where}"
