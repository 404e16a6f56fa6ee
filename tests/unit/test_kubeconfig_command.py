"""``karpor kubeconfig``: the command, against a state directory in a temp dir."""

import base64
import datetime
import io
import os
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from karpor.app import state
from karpor.auth.ca import CertificateAuthority
from karpor.cli import build_parser

CLUSTER = """\
apiVersion: cluster.karpor.io/v1beta1
kind: Cluster
metadata: {{name: {name}}}
spec:
  access:
    endpoint: https://127.0.0.1:6443
    insecure: true
    credential: {{type: ServiceAccountToken, serviceAccountToken: secret-token}}
"""


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "state"
    state.GatewayState.prepare(directory, "127.0.0.1")
    return directory


@pytest.fixture
def clusters_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "clusters"
    directory.mkdir()
    (directory / "b.yaml").write_text(CLUSTER.format(name="beta"))
    (directory / "a.yaml").write_text(CLUSTER.format(name="alpha") + "---\nkind: Nonsense\n")
    return directory


def run(*argv: str) -> tuple[int, str, str]:
    args = build_parser().parse_args(["kubeconfig", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.handler(args, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def test_writes_a_kubeconfig_file(state_dir, clusters_dir, tmp_path):
    target = tmp_path / "alice.kubeconfig"
    code, out, err = run(
        "--state-dir", str(state_dir), "--user", "alice", "--group", "dev", "--group", "ops",
        "--server", "https://127.0.0.1:8443", "--clusters-dir", str(clusters_dir),
        "-o", str(target), "--ttl", "2d",
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    assert os.stat(target).st_mode & 0o777 == 0o600
    config = yaml.safe_load(target.read_text())
    assert [c["name"] for c in config["contexts"]] == ["alpha", "beta", "all", "karpor"]
    assert config["current-context"] == "alpha"
    [user] = config["users"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["user"]["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "dev",
        "ops",
    ]
    cert.verify_directly_issued_by(CertificateAuthority.load(state_dir).cert)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=2) <= lifetime <= datetime.timedelta(days=2, minutes=10)
    # the bad document is a warning; the summary names the contexts
    assert "a.yaml: document 2" in err
    assert "contexts alpha, beta, all, karpor" in err
    assert "secret-token" not in err + target.read_text()


def test_prints_to_stdout_and_uses_the_recorded_clusters_dir(state_dir, clusters_dir):
    state.write_record(state_dir, state.GatewayRecord(str(clusters_dir), "https://localhost:9443"))
    code, out, err = run("--state-dir", str(state_dir), "--user", "bob")
    assert code == 0, err
    config = yaml.safe_load(out)
    assert [c["name"] for c in config["contexts"]] == ["alpha", "beta", "all", "karpor"]
    servers = {c["name"]: c["cluster"]["server"] for c in config["clusters"]}
    assert servers["karpor"] == "https://localhost:9443"


def test_without_a_clusters_dir_only_the_karpor_context(state_dir):
    code, out, err = run(
        "--state-dir", str(state_dir), "--user", "bob", "--server", "https://127.0.0.1:1", "-o", "-"
    )
    assert code == 0
    assert [c["name"] for c in yaml.safe_load(out)["contexts"]] == ["karpor"]
    assert "warning: no clusters directory known" in err


def test_default_ttl_is_90_days(state_dir):
    code, out, _ = run("--state-dir", str(state_dir), "--user", "u", "--server", "https://h:1")
    assert code == 0
    user = yaml.safe_load(out)["users"][0]["user"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["client-certificate-data"]))
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 90


def test_warns_when_the_server_is_not_covered(state_dir):
    code, _, err = run(
        "--state-dir", str(state_dir), "--user", "u", "--server", "https://gw.example:8443"
    )
    assert code == 0
    assert "does not cover 'gw.example'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--server", "http://h:1"], "must start with https://"),
        (["--server", "https://h:1", "--ttl", "soon"], "invalid duration"),
        (["--server", "https://h:1", "--clusters-dir", "/nonexistent"], "not a directory"),
        ([], "--server https://HOST:PORT is required"),
    ],
)
def test_errors(state_dir, args, message):
    code, out, err = run("--state-dir", str(state_dir), "--user", "u", *args)
    assert code == 1
    assert out == ""
    assert message in err


def test_a_state_dir_without_ca(tmp_path):
    code, _, err = run("--state-dir", str(tmp_path), "--user", "u", "--server", "https://h:1")
    assert code == 1
    assert "holds no gateway CA" in err


def _clusters_of(target: Path) -> dict[str, dict[str, str]]:
    return {c["name"]: c["cluster"] for c in yaml.safe_load(target.read_text())["clusters"]}


def test_routing_host_and_path(state_dir, clusters_dir, tmp_path):
    base = (
        *("--state-dir", str(state_dir), "--user", "alice"),
        *("--clusters-dir", str(clusters_dir), "--server", "https://127.0.0.1:8443"),
    )
    # the default: path
    code, _, err = run(*base, "-o", str(tmp_path / "path"))
    assert code == 0, err
    assert "clusters by path" in err
    assert _clusters_of(tmp_path / "path")["alpha"]["server"].endswith("/clusters/alpha/proxy")
    # host, with the suffix the gateway recorded
    state.write_record(state_dir, state.GatewayRecord(None, None, "k.example"))
    code, _, err = run(*base, "--routing", "host", "-o", str(tmp_path / "host"))
    assert code == 0, err
    assert "clusters by host (*.k.example)" in err
    assert "caches discovery per server URL" in err
    assert "does not cover '*.k.example'" in err  # the certificate predates the suffix
    alpha = _clusters_of(tmp_path / "host")["alpha"]
    assert alpha["server"] == "https://127.0.0.1:8443"
    assert alpha["tls-server-name"] == "alpha.k.example"
    # host routing off on the gateway
    state.write_record(state_dir, state.GatewayRecord(None, None, ""))
    code, _, err = run(*base, "--routing", "host", "-o", str(tmp_path / "off"))
    assert code == 1 and "host routing is off" in err
    code, _, err = run(*base, "-o", str(tmp_path / "off"))
    assert code == 0 and "clusters by path" in err


# -- fan-out contexts: all, --set NAME=SELECTOR ------------------------------------------

FANOUT = "https://127.0.0.1:8443/apis/cluster.karpor.io/v1beta1/clusters/{}/proxy"


def test_fanout_contexts_all_and_sets(state_dir, clusters_dir, tmp_path):
    base = (
        *("--state-dir", str(state_dir), "--user", "alice"),
        *("--clusters-dir", str(clusters_dir), "--server", "https://127.0.0.1:8443"),
    )
    target = tmp_path / "sets"
    code, _, err = run(*base, "--set", "prod=env=prod", "--set", "eu= region in (eu-1,eu-2)",
                       "-o", str(target))  # fmt: skip
    assert code == 0, err
    config = yaml.safe_load(target.read_text())
    names = [c["name"] for c in config["contexts"]]
    assert names == ["alpha", "beta", "all", "prod", "eu", "karpor"]
    assert "contexts alpha, beta, all, prod, eu, karpor" in err
    servers = _clusters_of(target)
    assert servers["all"]["server"] == FANOUT.format("*")
    assert servers["prod"]["server"] == FANOUT.format("env%3Dprod")
    assert servers["eu"]["server"] == FANOUT.format("region%20in%20%28eu-1%2Ceu-2%29")
    assert {c["context"]["user"] for c in config["contexts"]} == {"alice"}
    # host routing: the fan-out contexts stay on the path form
    state.write_record(state_dir, state.GatewayRecord(None, None, "k.example"))
    code, _, err = run(*base, "--routing", "host", "--set", "prod=env=prod",
                       "-o", str(target))  # fmt: skip
    assert code == 0, err
    assert "fan-out contexts reach the gateway by path" in err
    servers = _clusters_of(target)
    assert servers["all"] == {
        "server": FANOUT.format("*"),
        "certificate-authority-data": servers["alpha"]["certificate-authority-data"],
    }
    assert servers["prod"]["server"] == FANOUT.format("env%3Dprod")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("prod", "write NAME=SELECTOR"),
        ("=env=prod", "write NAME=SELECTOR"),
        ("Prod=env=prod", "must be a DNS-1123 label"),
        ("all=env=prod", "is reserved"),
        ("karpor=env=prod", "is reserved"),
        ("prod=", "the selector is empty"),
        ("prod=env in (a", "not a label selector"),
        ("prod=env", "would read as a cluster name"),
        ("alpha=env=prod", "a cluster has that name"),
        ("prod=" + "x" * 1100 + "=1", "longer than 1024"),
    ],
)
def test_set_errors(state_dir, clusters_dir, value, message):
    code, out, err = run(
        "--state-dir", str(state_dir), "--user", "alice", "--clusters-dir", str(clusters_dir),
        "--server", "https://127.0.0.1:8443", "--set", value,
    )  # fmt: skip
    assert code == 1 and out == ""
    assert message in err, err


def test_set_twice_and_a_cluster_called_all(state_dir, clusters_dir, tmp_path):
    base = (
        *("--state-dir", str(state_dir), "--user", "alice"),
        *("--clusters-dir", str(clusters_dir), "--server", "https://127.0.0.1:8443"),
    )
    code, _, err = run(*base, "--set", "p=env=prod", "--set", "p=env=dev")
    assert code == 1 and "given twice" in err
    (clusters_dir / "c.yaml").write_text(CLUSTER.format(name="all"))
    code, out, err = run(*base, "--set", "p=env=prod")
    assert code == 0, err
    assert "a cluster is named 'all'" in err
    config = yaml.safe_load(out)
    assert [c["name"] for c in config["contexts"]] == ["all", "alpha", "beta", "p", "karpor"]
    assert {c["name"]: c["cluster"] for c in config["clusters"]}["all"]["server"].endswith(
        "/clusters/all/proxy"
    )


# -- --oidc-issuer: the user signs in with karpor login --------------------------------

OIDC = ["--oidc-issuer", "https://idp.example.com", "--oidc-client-id", "karpor"]
POLICY = """\
rules:
- {groups: ["oidc:dev"], clusters: [alpha], verbs: [get]}
"""


def test_oidc_kubeconfig_runs_karpor_login(state_dir, clusters_dir, tmp_path):
    code, out, err = run(
        "--state-dir", str(state_dir), "--server", "https://127.0.0.1:8443",
        "--clusters-dir", str(clusters_dir), *OIDC, "--oidc-extra-scope", "groups",
        "--oidc-device-code", "--oidc-certificate-authority", "idp-ca.pem",
    )  # fmt: skip
    assert code == 0, err
    config = yaml.safe_load(out)
    assert [c["name"] for c in config["contexts"]] == ["alpha", "beta", "all", "karpor"]
    [user] = config["users"]
    assert user["name"] == "oidc"
    assert user["user"] == {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "karpor",
            "args": [
                "login", "--issuer", "https://idp.example.com", "--client-id", "karpor",
                "--device-code", "--extra-scope", "groups",
                "--certificate-authority", str(Path("idp-ca.pem").absolute()),
            ],
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": False,
        }
    }  # fmt: skip
    assert {c["context"]["user"] for c in config["contexts"]} == {"oidc"}
    assert "signs in at https://idp.example.com with 'karpor login'" in err


def test_oidc_contexts_follow_the_policy_for_the_groups_given(state_dir, clusters_dir, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    settings = tmp_path / "karpor.yaml"
    settings.write_text(f"authorization: {{policyFile: {policy}}}\n")
    common = ["--state-dir", str(state_dir), "--server", "https://127.0.0.1:8443",
              "--clusters-dir", str(clusters_dir), "--config", str(settings), *OIDC]  # fmt: skip
    code, out, err = run(*common, "--user", "ada", "--group", "oidc:dev")
    assert code == 0, err
    config = yaml.safe_load(out)
    assert [c["name"] for c in config["contexts"]] == ["alpha", "all", "karpor"]
    assert config["users"][0]["name"] == "ada"
    # groups unknown: every cluster
    code, out, err = run(*common)
    assert code == 0, err
    assert [c["name"] for c in yaml.safe_load(out)["contexts"]] == [
        "alpha",
        "beta",
        "all",
        "karpor",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--oidc-issuer", "https://idp"], "needs --oidc-client-id"),
        (["--oidc-issuer", "http://idp", "--oidc-client-id", "c"], "an https:// URL is required"),
        (["--oidc-client-id", "c", "--user", "u"], "goes with --oidc-issuer"),
        (["--token", "t", *OIDC], "--token goes alone"),
        ([], "give --user, --token or --oidc-issuer"),
    ],
)
def test_oidc_errors(state_dir, args, message):
    code, out, err = run("--state-dir", str(state_dir), "--server", "https://h:1", *args)
    assert code == 1
    assert out == ""
    assert message in err
