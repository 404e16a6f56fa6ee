"""OIDC sign-in end to end (issue 19) against a real OpenID provider.

``oidc-provider`` (npm, pinned; :mod:`support.oidcprovider`) serves over TLS
with a public client and users whose groups are in a claim; a gateway of
this module trusts it (``authentication.jwt`` with its CA) and grants the
provider's group ``dev`` (``oidc:dev`` once mapped) read access to
``sim-1`` only.  ``karpor kubeconfig --oidc-*`` writes the kubeconfig;
kubectl runs ``karpor login`` as its exec plugin, which completes the
device-code flow (the test plays the browser with plain HTTP requests);
the next kubectl, once the ID token has expired, gets a refreshed one
without any sign-in.  ``karpor login``'s authorization-code flow (PKCE,
loopback redirect) runs with ``BROWSER`` set to a script that signs in.
No token appears in the gateway's log, the audit log or a response.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import kubernetes
import pytest
import yaml
from support.access import write_yaml
from support.gateway import GatewayRun, client_context, closed_port, request, start_gateway
from support.kubectl import Kubectl
from support.oidcprovider import CLIENT_ID, ProviderRun, browser_script, sign_in
from support.sim import SimRun, karpor_command

from karpor.auth.oidclogin import claims_of
from karpor.cli import main

pytest_plugins = ("support.oidcprovider",)

POLICY = {
    "rules": [
        {"groups": ["oidc:dev"], "clusters": ["sim-1"], "verbs": ["get", "list"]},
        {"groups": ["oidc:dev"], "nonResourceURLs": ["/metrics"], "verbs": ["get"]},
    ]
}


@dataclass
class Setup:
    gateway: GatewayRun
    provider: ProviderRun
    tmp: Path
    audit: Path
    #: the environment kubectl (and so ``karpor login``) runs in
    env: dict[str, str]

    @property
    def cache_dir(self) -> Path:
        return Path(self.env["HOME"]) / ".kube" / "cache" / "karpor"

    def cached(self) -> dict[str, str]:
        files = list(self.cache_dir.glob("*.json"))
        assert len(files) == 1, files
        doc: dict[str, str] = json.loads(files[0].read_text())
        return doc


@pytest.fixture(scope="module")
def setup(
    sim_clusters: SimRun, oidc_provider: ProviderRun, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("oidc")
    clusters = tmp / "clusters"
    clusters.mkdir()
    for name in ("sim-1", "sim-2"):
        (clusters / f"{name}.yaml").write_text(sim_clusters[name].cluster_file.read_text())
    write_yaml(tmp / "policy.yaml", POLICY)
    audit = tmp / "audit.jsonl"
    unreachable = f"https://127.0.0.1:{closed_port()}"
    config = {
        "auditLog": str(audit),
        "authentication": {
            "jwt": [
                {
                    "issuer": {
                        "url": oidc_provider.issuer,
                        "audiences": [CLIENT_ID],
                        "certificateAuthority": oidc_provider.ca_file.read_text(),
                    },
                    "claimMappings": {
                        "username": {"claim": "email"},
                        "groups": {"claim": "groups", "prefix": "oidc:"},
                    },
                },
                {  # an issuer nobody answers for: the gateway starts all the same
                    "issuer": {"url": unreachable, "audiences": ["other"]},
                    "claimMappings": {"username": {"claim": "sub", "prefix": "other:"}},
                },
            ]
        },
        "authorization": {"policyFile": str(tmp / "policy.yaml")},
    }
    write_yaml(tmp / "config.yaml", config)
    gateway = start_gateway(
        clusters, tmp / "state", "--workers", "1", "--config", str(tmp / "config.yaml")
    )
    # karpor on the PATH of kubectl's exec plugin; a HOME of the test's own
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "karpor"
    wrapper.write_text(f'#!/bin/sh\nexec {" ".join(karpor_command())} "$@"\n')
    wrapper.chmod(0o755)
    home = tmp / "home"
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    try:
        yield Setup(gateway, oidc_provider, tmp, audit, env)
    finally:
        gateway.stop()


def kubeconfig(setup: Setup, *extra: str) -> Path:
    out = setup.tmp / "oidc.kubeconfig"
    code = main(
        [
            "kubeconfig",
            "--state-dir",
            str(setup.gateway.state_dir),
            "--server",
            setup.gateway.url,
            "--oidc-issuer",
            setup.provider.issuer,
            "--oidc-client-id",
            CLIENT_ID,
            "--oidc-extra-scope",
            "email",
            "--oidc-extra-scope",
            "groups",
            "--oidc-certificate-authority",
            str(setup.provider.ca_file),
            "-o",
            str(out),
            *extra,
        ]
    )
    assert code == 0
    return out


def kubectl_env(setup: Setup, kubectl: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        kubectl.command(*args), capture_output=True, text=True, timeout=60, env=setup.env
    )


def test_kubectl_signs_in_with_the_device_code_and_refreshes(
    setup: Setup, kubectl_bins: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    if "1.33" not in kubectl_bins and "path" not in kubectl_bins:
        pytest.fail(f"no kubectl to run: {kubectl_bins}")
    config_file = kubeconfig(setup, "--oidc-device-code")
    config = yaml.safe_load(config_file.read_text())
    user = config["users"][0]["user"]
    assert set(user) == {"exec"}  # no certificate, no token
    assert user["exec"]["apiVersion"] == "client.authentication.k8s.io/v1"
    assert user["exec"]["interactiveMode"] == "IfAvailable"
    kubectl = Kubectl(kubectl_bins.get("1.33") or kubectl_bins["path"], config_file)

    # the first request: kubectl runs karpor login, which asks the user to sign in
    first = subprocess.Popen(
        kubectl.command("--context", "sim-1", "get", "namespaces", "-o", "name"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=setup.env,
    )
    assert first.stderr is not None
    prompt = ""
    for line in first.stderr:
        prompt += line
        match = re.search(r"visit (https://\S+)", line)
        if match:
            break
    else:
        raise AssertionError(f"karpor login printed no URL:\n{prompt}")
    page = sign_in(match.group(1), "alice", setup.provider.ca_file)
    assert "Sign-in Success" in page
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, prompt + err
    assert "namespace/default" in out
    cached = setup.cached()
    first_token = cached["idToken"]
    refresh_token = cached["refreshToken"]
    claims = claims_of(first_token)
    assert claims["groups"] == ["dev"]
    mode = next(setup.cache_dir.glob("*.json")).stat().st_mode & 0o777
    assert mode == 0o600

    # once the ID token expired, the next kubectl gets a refreshed one, silently
    # not a wait: the subject of the test is the token's expiry, so it idles past it
    time.sleep(max(0.0, claims["exp"] - time.time() + 0.5))
    again = kubectl_env(setup, kubectl, "--context", "sim-1", "get", "namespaces", "-o", "name")
    assert again.returncode == 0, again.stderr
    assert "visit" not in again.stderr
    refreshed = setup.cached()["idToken"]
    assert refreshed != first_token
    assert claims_of(refreshed)["exp"] > claims["exp"]

    # the policy applies to the token's groups: sim-2 is not granted to them
    denied = kubectl_env(setup, kubectl, "--context", "sim-2", "get", "namespaces")
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower(), denied.stderr
    whoami = kubectl_env(setup, kubectl, "--context", "karpor", "auth", "whoami", "-o", "json")
    assert whoami.returncode == 0, whoami.stderr
    info = json.loads(whoami.stdout)["status"]["userInfo"]
    assert info["username"] == "alice@example.com"
    assert "oidc:dev" in info["groups"]

    # the kubernetes Python client runs the same plugin (in this process: cheap)
    monkeypatch.setenv("HOME", setup.env["HOME"])
    monkeypatch.setenv("PATH", setup.env["PATH"])
    api = kubernetes.client.CoreV1Api(
        kubernetes.config.new_client_from_config(str(config_file), context="sim-1")
    )
    assert api.list_namespace().items

    last = setup.cached()
    secrets = [first_token, refresh_token, refreshed, last["idToken"], last["refreshToken"]]
    outputs = [out, err, denied.stdout, denied.stderr, again.stdout, whoami.stdout]
    no_secret_anywhere(setup, secrets, outputs)
    audited = [json.loads(line) for line in setup.audit.read_text().splitlines()]
    alice = [r for r in audited if r.get("user") == "alice@example.com"]
    assert alice, audited[-3:]
    assert {r["authentication"]["issuer"] for r in alice} == {setup.provider.issuer}
    assert {r["authentication"]["subject"] for r in alice} == {"alice"}
    assert any(r["cluster"] == "sim-2" and r["code"] == 403 for r in alice)


def no_secret_anywhere(setup: Setup, secrets: list[str], outputs: list[str]) -> None:
    for secret in filter(None, secrets):
        # the signature part alone would be enough to use the token again
        for piece in {secret, secret.rsplit(".", 1)[-1]}:
            assert piece not in setup.gateway.process.output, "a token in the gateway's log"
            assert piece not in setup.audit.read_text(), "a token in the audit log"
            for text in outputs:
                assert piece not in text, "a token in a response"


def test_login_with_the_browser_flow_and_refusals(setup: Setup) -> None:
    home = setup.tmp / "browser-home"
    script = browser_script(setup.tmp, "alice", setup.provider.ca_file)
    result = subprocess.run(
        [
            *karpor_command(),
            "login",
            "--issuer",
            setup.provider.issuer,
            "--client-id",
            CLIENT_ID,
            "--listen-address",
            f"127.0.0.1:{setup.provider.redirect_port}",
            "--extra-scope",
            "email groups",
            "--certificate-authority",
            str(setup.provider.ca_file),
            "--cache-dir",
            str(home),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**setup.env, "BROWSER": str(script)},
    )
    assert result.returncode == 0, result.stderr
    credential = json.loads(result.stdout)
    assert credential["kind"] == "ExecCredential"
    assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
    token = credential["status"]["token"]
    assert credential["status"]["expirationTimestamp"].endswith("Z")
    assert "code_challenge_method=S256" in result.stderr
    context = client_context(setup.gateway.ca_pem)
    path = "/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy/api/v1/namespaces"
    ok = request(setup.gateway.port, path, context, headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200, ok.body
    # a token whose signature is not the issuer's: 401, saying why, not echoing it
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"
    refused = request(
        setup.gateway.port, path, context, headers={"Authorization": f"Bearer {forged}"}
    )
    assert refused.status == 401
    assert json.loads(refused.body)["message"] == "Unauthorized: signature invalid"
    # the issuers' key states: in verbose health and in the metrics
    bearer = {"Authorization": f"Bearer {token}"}
    health = request(setup.gateway.port, "/readyz?verbose", context, headers=bearer)
    assert health.status == 200
    text = health.body.decode()
    assert f"[+]oidc-issuers ok: {setup.provider.issuer} ready; https://127.0.0.1:" in text
    # the issuer nobody answers for (connection refused)
    assert re.search(r"https://127\.0\.0\.1:\d+ failing \(the discovery document ", text), text
    metrics = request(setup.gateway.port, "/metrics", context, headers=bearer)
    assert metrics.status == 200
    exposed = metrics.body.decode()
    issuer = setup.provider.issuer
    assert f'karpor_oidc_issuer_state{{issuer="{issuer}",state="ready"}} 1.0' in exposed
    assert f'karpor_oidc_issuer_state{{issuer="{issuer}",state="pending"}} 0.0' in exposed
    outputs = [ok.body.decode(), refused.body.decode(), result.stderr, text, exposed]
    no_secret_anywhere(setup, [token, f"{signature[:-4]}AAAA"], outputs)
