"""Kubeconfig documents as cluster definitions (sans-IO)."""

from __future__ import annotations

import base64
import functools
from typing import Any

import yaml

from karpor.auth.ca import CertificateAuthority
from karpor.config.directory import FileResult, parse_documents
from karpor.config.model import ExecCredential, TokenCredential, X509Credential


class FakeFiles:
    """A FileReader over a dict of path -> bytes; executables listed apart."""

    def __init__(
        self, files: dict[str, bytes] | None = None, executables: frozenset[str] = frozenset()
    ):
        self.files = files or {}
        self.executables = executables

    def read(self, path: str) -> bytes:
        try:
            return self.files[path]
        except KeyError:
            raise FileNotFoundError(2, "No such file or directory", path) from None

    def executable(self, path: str) -> bool:
        return path in self.executables


@functools.cache
def pki() -> tuple[bytes, bytes, bytes, bytes]:
    ca = CertificateAuthority.create("test-ca")
    one = ca.issue_client("alice")
    return ca.cert_pem, one.cert_pem, one.key_pem, ca.issue_client("bob").key_pem


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig(
    clusters: dict[str, Any], users: dict[str, Any], contexts: list[tuple[str, str, str | None]]
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": contexts[0][0] if contexts else "",
        "preferences": {},
        "clusters": [{"name": n, "cluster": c} for n, c in clusters.items()],
        "users": [{"name": n, "user": u} for n, u in users.items()],
        "contexts": [
            {"name": n, "context": {"cluster": c, "user": u, "namespace": "default"}}
            for n, c, u in contexts
        ],
    }


def parse(obj: Any, files: FakeFiles | None = None) -> FileResult:
    return parse_documents(yaml.safe_dump(obj), "/k/config.yaml", files or FakeFiles())


def lines(result: FileResult) -> list[str]:
    return [str(p) for p in result.problems]


def test_each_context_is_a_cluster() -> None:
    ca_pem, cert, key, _ = pki()
    obj = kubeconfig(
        {
            "c1": {
                "server": "https://c1.example.com:6443/",
                "certificate-authority-data": b64(ca_pem),
            },
            "c2": {
                "server": "https://10.1.1.1",
                "insecure-skip-tls-verify": True,
                "tls-server-name": "kube",
                "extensions": [{"name": "x", "extension": {}}],
            },
        },
        {
            "tok": {"token": "SECRET-TOKEN"},
            "cert": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            "ex": {
                "exec": {
                    "command": "gke-auth",
                    "apiVersion": "client.authentication.k8s.io/v1beta1",
                }
            },
        },
        [("one", "c1", "tok"), ("two", "c2", "cert"), ("three", "c1", "ex"), ("four", "c2", None)],
    )
    result = parse(obj)
    assert lines(result) == []
    one, two, three, four = result.clusters
    assert (one.name, one.endpoint, one.ca_pem) == ("one", "https://c1.example.com:6443", ca_pem)
    assert one.credential == TokenCredential(token="SECRET-TOKEN")
    assert (two.insecure, two.tls_server_name) == (True, "kube")
    assert two.credential == X509Credential(certificate=cert, private_key=key)
    assert three.credential == ExecCredential(
        command="gke-auth", api_version="client.authentication.k8s.io/v1beta1"
    )
    assert four.credential is None
    assert {c.document for c in result.clusters} == {1}
    assert [d.name_field for d in result.definitions] == [f"contexts[{i}].name" for i in range(4)]
    assert "SECRET" not in repr(result)


def test_relative_paths_resolve_against_the_kubeconfig() -> None:
    ca_pem, cert, key, _ = pki()
    files = FakeFiles(
        {"/k/ca.crt": ca_pem, "/k/certs/c.crt": cert, "/abs/c.key": key, "/k/tok": b"t0k\n"},
        executables=frozenset({"/k/bin/auth"}),
    )
    obj = kubeconfig(
        {"c": {"server": "https://h", "certificate-authority": "ca.crt"}},
        {
            "files": {"client-certificate": "certs/c.crt", "client-key": "/abs/c.key"},
            "mixed": {"client-certificate-data": b64(cert), "client-key": "/abs/c.key"},
            "tf": {"tokenFile": "tok"},
            "ex": {
                "exec": {"command": "bin/auth", "apiVersion": "client.authentication.k8s.io/v1"}
            },
        },
        [("a", "c", "files"), ("b", "c", "mixed"), ("t", "c", "tf"), ("e", "c", "ex")],
    )
    result = parse(obj, files)
    assert lines(result) == []
    a, b, t, e = result.clusters
    assert a.ca_file == "/k/ca.crt"
    assert a.credential == X509Credential(
        certificate_file="/k/certs/c.crt", private_key_file="/abs/c.key"
    )
    assert b.credential == X509Credential(certificate=cert, private_key_file="/abs/c.key")
    assert t.credential == TokenCredential(token_file="/k/tok")
    assert isinstance(e.credential, ExecCredential)
    assert e.credential.command == "/k/bin/auth"


def test_unsupported_users_take_down_their_contexts_only() -> None:
    obj = kubeconfig(
        {"c": {"server": "https://h"}},
        {
            "basic": {"username": "admin", "password": "SECRET"},
            "gcp": {"auth-provider": {"name": "gcp", "config": {"access-token": "SECRET"}}},
            "imp": {"token": "t", "as": "someone"},
            "ok": {"token": "SECRET"},
            "unused": {"username": "x", "password": "SECRET"},
        },
        [
            ("b1", "c", "basic"),
            ("b2", "c", "basic"),
            ("g", "c", "gcp"),
            ("i", "c", "imp"),
            ("fine", "c", "ok"),
        ],
    )
    result = parse(obj)
    assert [c.name for c in result.clusters] == ["fine"]
    assert lines(result) == [
        "/k/config.yaml: document 1: users[0].user.username: username/password authentication "
        "is not supported (used by contexts b1, b2)",
        "/k/config.yaml: document 1: users[1].user.auth-provider: auth-provider plugins are not "
        "supported (use an exec plugin) (used by context g)",
        "/k/config.yaml: document 1: users[2].user.as: impersonation in a kubeconfig user is "
        "not supported (used by context i)",
    ]
    assert [p.names for p in result.problems] == [("b1", "b2"), ("g",), ("i",)]
    assert all("SECRET" not in line for line in lines(result))


def test_context_names_must_be_dns_labels() -> None:
    obj = kubeconfig(
        {"c": {"server": "https://h"}},
        {"u": {"token": "t"}},
        [("kubernetes-admin@kubernetes", "c", "u"), ("ok", "c", "u")],
    )
    result = parse(obj)
    assert [c.name for c in result.clusters] == ["ok"]
    assert lines(result) == [
        '/k/config.yaml: document 1: contexts[0].name: context "kubernetes-admin@kubernetes" '
        "is not a DNS-1123 label (lower-case letters, digits and '-', at most 63 characters): "
        'rename it (kubectl config rename-context "kubernetes-admin@kubernetes" NEW-NAME)'
    ]


def test_broken_references_and_entries() -> None:
    _, cert, _, other_key = pki()
    obj = kubeconfig(
        {
            "bad": {"server": "http://h", "proxy-url": "http://proxy"},
            "good": {"server": "https://h"},
            "both": {
                "server": "https://h",
                "insecure-skip-tls-verify": True,
                "certificate-authority": "x",
            },
        },
        {
            "two": {"token": "t", "client-certificate-data": b64(cert)},
            "half": {"client-certificate-data": b64(cert)},
            "wrong": {"client-certificate-data": b64(cert), "client-key-data": b64(other_key)},
            "ok": {"token": "t"},
        },
        [
            ("a", "bad", "ok"),
            ("b", "missing", "ok"),
            ("c", "good", "missing"),
            ("d", "good", "two"),
            ("e", "good", "half"),
            ("f", "good", "wrong"),
            ("g", "both", "ok"),
            ("a", "good", "ok"),
        ],
    )
    result = parse(obj, FakeFiles({"/k/x": pki()[0]}))
    assert result.clusters == ()
    prefix = "/k/config.yaml: document 1: "
    assert lines(result) == [
        prefix + 'contexts[1].context.cluster: no cluster "missing"',
        prefix + 'contexts[2].context.user: no user "missing"',
        prefix + 'contexts[7].name: duplicate context "a"',
        prefix + "clusters[0].cluster.proxy-url: proxies are not supported (used by context a)",
        prefix
        + "clusters[0].cluster.server: must be an https:// URL (found http://) (used by context a)",
        prefix + "clusters[2].cluster.insecure-skip-tls-verify: insecure-skip-tls-verify cannot be "
        "combined with a certificate authority (used by context g)",
        prefix + "users[0].user: give exactly one credential, not token and client certificate "
        "(used by context d)",
        prefix + "users[1].user.client-key: required: give client-key or client-key-data "
        "(used by context e)",
        prefix + "users[2].user.client-key-data: private key does not match the certificate "
        "(used by context f)",
    ]


def test_document_level_errors() -> None:
    assert lines(parse({"kind": "Config", "apiVersion": "v2"})) == [
        "/k/config.yaml: document 1: apiVersion: a kubeconfig must have apiVersion v1"
    ]
    assert lines(parse({"kind": "Config", "apiVersion": "v1"})) == [
        "/k/config.yaml: document 1: contexts: no contexts: each context becomes a cluster"
    ]
    result = parse({"kind": "Config", "contexts": "x"})
    assert lines(result) == ["/k/config.yaml: document 1: contexts: must be a list, not a string"]
    assert result.problems[0].names is None
