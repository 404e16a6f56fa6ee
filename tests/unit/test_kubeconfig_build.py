"""The user kubeconfig (sans-IO): contexts, servers, the inline certificate."""

import base64

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from karpor.auth.ca import CertificateAuthority
from karpor.auth.kubeconfig import (
    build_kubeconfig,
    cluster_server,
    dump_kubeconfig,
    normalize_server,
    parse_duration,
)


@pytest.fixture(scope="module")
def ca():
    return CertificateAuthority.create("gateway-ca")


def build(ca, clusters, server="https://gw.example:8443"):
    issued = ca.issue_client("alice", ["dev", "ops"])
    return build_kubeconfig(server, ca.cert_pem, "alice", issued.cert_pem, issued.key_pem, clusters)


def test_one_context_per_cluster_plus_karpor(ca):
    config = build(ca, ["sim-2", "sim-1"])
    assert [c["name"] for c in config["contexts"]] == ["sim-1", "sim-2", "karpor"]
    servers = {c["name"]: c["cluster"]["server"] for c in config["clusters"]}
    assert servers == {
        "sim-1": "https://gw.example:8443/apis/cluster.karpor.io/v1beta1/clusters/sim-1/proxy",
        "sim-2": "https://gw.example:8443/apis/cluster.karpor.io/v1beta1/clusters/sim-2/proxy",
        "karpor": "https://gw.example:8443",
    }
    assert config["current-context"] == "sim-1"
    for context in config["contexts"]:
        assert context["context"] == {"cluster": context["name"], "user": "alice"}
    for cluster in config["clusters"]:
        ca_data = base64.b64decode(cluster["cluster"]["certificate-authority-data"])
        assert ca_data == ca.cert_pem


def test_the_certificate_names_user_and_groups(ca):
    config = build(ca, ["a"])
    [user] = config["users"]
    assert user["name"] == "alice"
    cert = x509.load_pem_x509_certificate(base64.b64decode(user["user"]["client-certificate-data"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["dev", "ops"]
    cert.verify_directly_issued_by(ca.cert)
    assert b"PRIVATE KEY" in base64.b64decode(user["user"]["client-key-data"])


def test_no_cluster_means_the_karpor_context_only(ca):
    config = build(ca, [])
    assert [c["name"] for c in config["contexts"]] == ["karpor"]
    assert config["current-context"] == "karpor"


def test_a_cluster_named_karpor_is_refused(ca):
    with pytest.raises(ValueError, match="karpor"):
        build(ca, ["karpor"])


def test_dump_is_a_kubeconfig(ca):
    text = dump_kubeconfig(build(ca, ["a"]))
    loaded = yaml.safe_load(text)
    assert loaded["kind"] == "Config"
    assert text.startswith(b"apiVersion: v1\nkind: Config\n")


@pytest.mark.parametrize(
    ("server", "expected"),
    [
        ("https://127.0.0.1:8443", "https://127.0.0.1:8443"),
        ("https://gw.example:8443/", "https://gw.example:8443"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("https://gw.example", "https://gw.example"),
    ],
)
def test_normalize_server(server, expected):
    assert normalize_server(server) == expected


@pytest.mark.parametrize(
    "server",
    [
        "http://127.0.0.1:8443",
        "127.0.0.1:8443",
        "https://gw/prefix",
        "https://gw:8443?x=1",
        "https://user:pw@gw:8443",
        "https://gw:99999",
        "https://",
    ],
)
def test_bad_servers(server):
    with pytest.raises(ValueError):
        normalize_server(server)


def test_cluster_server():
    assert cluster_server("https://gw:1", "x") == (
        "https://gw:1/apis/cluster.karpor.io/v1beta1/clusters/x/proxy"
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400), ("12h", 43200), ("1h30m", 5400), ("2w", 14 * 86400), ("45s", 45)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "90", "d", "1x", "1h 30m", "-1h"])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_host_routing_contexts(ca):
    issued = ca.issue_client("alice")
    config = build_kubeconfig(
        "https://127.0.0.1:8443",
        ca.cert_pem,
        "alice",
        issued.cert_pem,
        issued.key_pem,
        ["sim-2", "sim-1"],
        routing="host",
        host_suffix="clusters.karpor",
    )
    clusters = {c["name"]: c["cluster"] for c in config["clusters"]}
    assert clusters["sim-1"]["server"] == "https://127.0.0.1:8443"
    assert clusters["sim-1"]["tls-server-name"] == "sim-1.clusters.karpor"
    assert clusters["sim-2"]["tls-server-name"] == "sim-2.clusters.karpor"
    assert clusters["karpor"] == {
        "server": "https://127.0.0.1:8443",
        "certificate-authority-data": clusters["sim-1"]["certificate-authority-data"],
    }
    with pytest.raises(ValueError, match="host routing is off"):
        build_kubeconfig(
            "https://gw", ca.cert_pem, "a", issued.cert_pem, issued.key_pem, [], routing="host"
        )
    with pytest.raises(ValueError, match="routing must be one of"):
        build_kubeconfig(
            "https://gw", ca.cert_pem, "a", issued.cert_pem, issued.key_pem, [], routing="dns"
        )
