"""Karpor ``Cluster`` manifests: parsing and validation (sans-IO)."""

from __future__ import annotations

import base64
import datetime
import functools
from typing import Any

import pytest
import yaml
from cryptography import x509 as cx509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.ca import CertificateAuthority
from karpor.config.clusters import Validator, credential_type, is_dns_label
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
    """CA PEM, client cert PEM, its key PEM, and an unrelated key PEM."""
    ca = CertificateAuthority.create("test-ca")
    one = ca.issue_client("alice", ["dev"])
    other = ca.issue_client("bob")
    return ca.cert_pem, one.cert_pem, one.key_pem, other.key_pem


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def manifest(**access: Any) -> dict[str, Any]:
    access.setdefault("endpoint", "https://10.0.0.1:6443")
    return {
        "apiVersion": "cluster.karpor.io/v1beta1",
        "kind": "Cluster",
        "metadata": {"name": "prod-east", "labels": {"env": "prod"}},
        "spec": {"provider": "eks", "displayName": "Prod East", "access": access},
    }


def parse(obj: Any, files: FakeFiles | None = None, source: str = "/c/a.yaml") -> FileResult:
    return parse_documents(yaml.safe_dump(obj), source, files or FakeFiles())


def lines(result: FileResult) -> list[str]:
    return [str(p) for p in result.problems]


TOKEN = {"type": "ServiceAccountToken", "serviceAccountToken": "abc.def-SECRET"}


def test_token_cluster_with_ca_bundle() -> None:
    ca_pem = pki()[0]
    result = parse(manifest(caBundle=b64(ca_pem), credential=TOKEN))
    assert lines(result) == []
    (cluster,) = result.clusters
    assert cluster.name == "prod-east"
    assert cluster.endpoint == "https://10.0.0.1:6443"
    assert cluster.ca_pem == ca_pem
    assert cluster.credential == TokenCredential(token="abc.def-SECRET")
    assert dict(cluster.labels) == {"env": "prod"}
    assert (cluster.provider, cluster.display_name) == ("eks", "Prod East")
    assert (cluster.source, cluster.document) == ("/c/a.yaml", 1)
    assert "SECRET" not in repr(cluster)
    assert credential_type(cluster.credential) == "ServiceAccountToken"


def test_files_resolve_against_the_naming_file() -> None:
    ca_pem, cert, key, _ = pki()
    files = FakeFiles({"/c/ca.crt": ca_pem, "/c/t/token": b"tok-1\n", "/etc/k/c.crt": cert})
    files.files["/c/c.key"] = key
    result = parse(
        manifest(
            caFile="ca.crt", credential={"type": "ServiceAccountToken", "tokenFile": "t/token"}
        ),
        files,
    )
    assert lines(result) == []
    (cluster,) = result.clusters
    assert cluster.ca_file == "/c/ca.crt"
    assert cluster.ca_pem is None
    assert cluster.credential == TokenCredential(token_file="/c/t/token")

    x509 = {"certificateFile": "/etc/k/c.crt", "privateKeyFile": "c.key"}
    result = parse(
        manifest(insecure=True, credential={"type": "X509Certificate", "x509": x509}), files
    )
    assert lines(result) == []
    assert result.clusters[0].credential == X509Credential(
        certificate_file="/etc/k/c.crt", private_key_file="/c/c.key"
    )


def test_inline_x509() -> None:
    _, cert, key, _ = pki()
    cred = {"type": "X509Certificate", "x509": {"certificate": b64(cert), "privateKey": b64(key)}}
    result = parse(manifest(insecure=True, credential=cred))
    assert lines(result) == []
    credential = result.clusters[0].credential
    assert credential == X509Credential(certificate=cert, private_key=key)
    assert "PRIVATE" not in repr(result.clusters[0])


def test_mismatched_key_is_an_error() -> None:
    _, cert, _, other_key = pki()
    cred = {
        "type": "X509Certificate",
        "x509": {"certificate": b64(cert), "privateKey": b64(other_key)},
    }
    result = parse(manifest(insecure=True, credential=cred))
    assert result.clusters == ()
    assert lines(result) == [
        "/c/a.yaml: document 1: spec.access.credential.x509.privateKey: "
        "private key does not match the certificate"
    ]
    assert result.problems[0].names == ("prod-east",)


def test_exec_credential() -> None:
    execc = {
        "command": "bin/helper",
        "args": ["token", "--x"],
        "env": [{"name": "A", "value": "SECRET-ENV"}],
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "interactiveMode": "IfAvailable",
        "provideClusterInfo": True,
    }
    files = FakeFiles(executables=frozenset({"/c/bin/helper"}))
    result = parse(manifest(insecure=True, credential={"type": "OIDC", "execConfig": execc}), files)
    assert lines(result) == []
    cred = result.clusters[0].credential
    assert cred == ExecCredential(
        command="/c/bin/helper",
        args=("token", "--x"),
        env=(("A", "SECRET-ENV"),),
        api_version="client.authentication.k8s.io/v1beta1",
        provide_cluster_info=True,
        interactive_mode="IfAvailable",
    )
    assert "SECRET-ENV" not in repr(cred)
    # a bare command name is looked up in PATH at run time: not checked
    execc["command"] = "helper"
    assert parse(manifest(insecure=True, credential={"type": "OIDC", "execConfig": execc})).clusters


@pytest.mark.parametrize(
    ("access", "expected"),
    [
        (
            {"endpoint": "http://h:1"},
            "spec.access.endpoint: must be an https:// URL (found http://)",
        ),
        ({"endpoint": "https://"}, "spec.access.endpoint: has no host"),
        (
            {"endpoint": "https://h:99999"},
            "spec.access.endpoint: not a valid URL (bad port or host)",
        ),
        ({"endpoint": "https://u:p@h"}, "spec.access.endpoint: must not contain user information"),
        (
            {"endpoint": "https://h/?a=1"},
            "spec.access.endpoint: must not have a query or a fragment",
        ),
        (
            {"endpoint": "https://h_x"},
            'spec.access.endpoint: invalid host "h_x": must be an IP address or DNS name',
        ),
        ({"endpoint": 5}, "spec.access.endpoint: must be a string, not a number"),
        ({}, "spec.access.endpoint: required"),
        (
            {"caBundle": "-----BEGIN CERTIFICATE-----"},
            "spec.access.caBundle: must be base64-encoded PEM, found raw PEM",
        ),
        ({"caBundle": "!!!"}, "spec.access.caBundle: not valid base64"),
        ({"caBundle": b64(b"hello")}, "spec.access.caBundle: no PEM certificate found"),
        (
            {"caBundle": b64(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")},
            "spec.access.caBundle: not a valid PEM certificate",
        ),
        (
            {"caFile": "nope.crt"},
            "spec.access.caFile: cannot read /c/nope.crt: No such file or directory",
        ),
        (
            {"caFile": "x", "caBundle": "eA=="},
            "spec.access.caFile: give caBundle or caFile, not both",
        ),
        ({"insecure": "yes please"}, "spec.access.insecure: must be true or false, not a string"),
        (
            {"tlsServerName": "bad name"},
            'spec.access.tlsServerName: invalid server name "bad name"',
        ),
        ({"caBundel": "x"}, "spec.access.caBundel: unknown key (did you mean caBundle?)"),
    ],
)
def test_access_errors(access: dict[str, Any], expected: str) -> None:
    if "endpoint" not in access and access:
        access["endpoint"] = "https://h"
    obj = manifest()
    obj["spec"]["access"] = access
    result = parse(obj)
    assert result.clusters == ()
    assert f"/c/a.yaml: document 1: {expected}" in lines(result)


def test_insecure_with_a_ca_is_an_error() -> None:
    result = parse(manifest(insecure=True, caBundle=b64(pki()[0])))
    assert lines(result) == [
        "/c/a.yaml: document 1: spec.access.insecure: insecure cannot be combined with a CA"
    ]


@pytest.mark.parametrize(
    ("credential", "expected"),
    [
        (
            {"type": "Password"},
            'type: unknown type "Password": use ServiceAccountToken, X509Certificate, OIDC',
        ),
        ({}, "type: required"),
        ({"type": "ServiceAccountToken"}, ": give exactly one of serviceAccountToken or tokenFile"),
        (
            {"type": "ServiceAccountToken", "serviceAccountToken": "a", "tokenFile": "t"},
            ": give exactly one of serviceAccountToken or tokenFile",
        ),
        (
            {"type": "ServiceAccountToken", "serviceAccountToken": "a SECRET"},
            "serviceAccountToken: must be printable ASCII without spaces",
        ),
        (
            {"type": "ServiceAccountToken", "serviceAccountToken": "SECRET", "execConfig": {}},
            "execConfig: not allowed with type ServiceAccountToken",
        ),
        (
            {"type": "ServiceAccountToken", "tokenFile": "gone"},
            "tokenFile: cannot read /c/gone: No such file or directory",
        ),
        (
            {"type": "ServiceAccountToken", "tokenFile": "empty"},
            "tokenFile: /c/empty: file is empty",
        ),
        ({"type": "X509Certificate"}, "x509: required with type X509Certificate"),
        (
            {"type": "X509Certificate", "x509": {"certificate": "eA=="}},
            "x509.privateKey: required",
        ),
        (
            {"type": "X509Certificate", "x509": {"certificate": "eA==", "privateKeyFile": "k"}},
            "x509: give certificate and privateKey, or certificateFile and privateKeyFile",
        ),
        (
            {
                "type": "X509Certificate",
                "x509": {"certificate": "U0VDUkVU", "privateKey": "U0VDUkVU"},
            },
            "x509.privateKey: not a valid PEM private key",
        ),
        ({"type": "OIDC"}, "execConfig: required with type OIDC"),
        ({"type": "OIDC", "execConfig": {"args": ["x"]}}, "execConfig.command: required"),
        (
            {"type": "OIDC", "execConfig": {"command": "./gone"}},
            "execConfig.command: not an executable file: /c/./gone",
        ),
        (
            {"type": "OIDC", "execConfig": {"command": "c", "interactiveMode": "Always"}},
            "execConfig.interactiveMode: Always is not possible: the gateway has no terminal "
            "(use Never or IfAvailable)",
        ),
        (
            {"type": "OIDC", "execConfig": {"command": "c", "apiVersion": "v1"}},
            'execConfig.apiVersion: unsupported "v1": use client.authentication.k8s.io/v1 '
            "or client.authentication.k8s.io/v1beta1",
        ),
        (
            {"type": "OIDC", "execConfig": {"command": "c", "env": [{"name": "A", "value": 1}]}},
            "execConfig.env[0].value: must be a string, not a number",
        ),
    ],
)
def test_credential_errors(credential: dict[str, Any], expected: str) -> None:
    files = FakeFiles({"/c/empty": b" \n"})
    result = parse(manifest(insecure=True, credential=credential), files)
    assert result.clusters == ()
    field, _, message = expected.partition(": ")
    path = "spec.access.credential" + (f".{field}" if field else "")
    assert f"/c/a.yaml: document 1: {path}: {message}" in lines(result)
    assert all("SECRET" not in line for line in lines(result))


def test_metadata_and_spec_errors() -> None:
    obj = manifest(insecure=True)
    obj["apiVersion"] = "cluster.karpor.io/v1"
    obj["metadata"] = {"name": "Prod_East", "labels": {"env": "a b"}, "nmae": "x"}
    obj["spec"]["impersonate"] = "true"
    obj["spec"]["extra"] = 1
    assert lines(parse(obj)) == [
        "/c/a.yaml: document 1: apiVersion: must be cluster.karpor.io/v1beta1, "
        'not "cluster.karpor.io/v1"',
        "/c/a.yaml: document 1: metadata.nmae: unknown key (did you mean name?)",
        '/c/a.yaml: document 1: metadata.name: "Prod_East" is not a DNS-1123 label '
        "(lower-case letters, digits and '-', at most 63 characters)",
        '/c/a.yaml: document 1: metadata.labels.env: invalid label value "a b"',
        "/c/a.yaml: document 1: spec.extra: unknown key (known: provider, displayName, "
        "description, impersonate, finalized, access)",
        "/c/a.yaml: document 1: spec.impersonate: must be true or false, not a string",
    ]
    # an invalid name cannot be told: a reload keeps what the document held
    assert parse(obj).problems[0].names is None


def test_missing_sections() -> None:
    assert lines(parse({"apiVersion": "cluster.karpor.io/v1beta1", "kind": "Cluster"})) == [
        "/c/a.yaml: document 1: metadata: required",
        "/c/a.yaml: document 1: spec: required",
    ]


def test_exported_cluster_with_server_fields_loads() -> None:
    """What ``kubectl get cluster -o yaml`` prints from Karpor loads as is."""
    obj = manifest(insecure=True, credential=TOKEN)
    obj["metadata"].update(
        uid="1234",
        resourceVersion="42",
        creationTimestamp="2024-01-01T00:00:00Z",
        generation=3,
        managedFields=[{"manager": "kubectl"}],
    )
    obj["spec"]["finalized"] = True
    obj["status"] = {"healthy": True}
    result = parse(obj)
    assert lines(result) == []
    assert result.clusters[0].name == "prod-east"


def test_cluster_list() -> None:
    one = manifest(insecure=True)
    two = manifest(insecure=True)
    two["metadata"] = {"name": "two"}
    broken = manifest(endpoint="ftp://x")
    broken["metadata"] = {"name": "three"}
    result = parse({"apiVersion": "v1", "kind": "List", "items": [one, two, broken]})
    assert [c.name for c in result.clusters] == ["prod-east", "two"]
    assert [d.name_field for d in result.definitions] == [
        "items[0].metadata.name",
        "items[1].metadata.name",
    ]
    assert lines(result) == [
        "/c/a.yaml: document 1: items[2].spec.access.endpoint: must be an https:// URL (found ftp://)"
    ]
    assert result.problems[0].names == ("three",)


def test_annotations_and_options() -> None:
    obj = manifest(
        endpoint="https://[::1]:6443/prefix/", tlsServerName="Kubernetes.Default", insecure=False
    )
    obj["metadata"]["annotations"] = {"example.com/note": "any text: at all"}
    obj["spec"]["impersonate"] = True
    obj["spec"]["description"] = "d"
    result = parse(obj)
    assert lines(result) == []
    (c,) = result.clusters
    assert c.endpoint == "https://[::1]:6443/prefix"
    assert c.tls_server_name == "kubernetes.default"
    assert c.impersonate is True
    assert c.credential is None
    assert dict(c.annotations) == {"example.com/note": "any text: at all"}
    assert credential_type(c.credential) == "none"


# -- properties ----------------------------------------------------------

_label = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@given(name=st.text(max_size=70))
def test_dns_label_matches_the_kubernetes_rule(name: str) -> None:
    ok = (
        0 < len(name) <= 63
        and all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in name)
        and name[0] != "-"
        and name[-1] != "-"
    )
    assert is_dns_label(name) == ok


@given(
    host=st.one_of(
        st.lists(_label, min_size=1, max_size=4).map(".".join),
        st.ip_addresses().map(str),
    ),
    port=st.one_of(st.none(), st.integers(1, 65535)),
    path=st.from_regex(r"(/[a-z0-9-]{1,8}){0,3}/?", fullmatch=True),
)
def test_valid_endpoints_normalize(host: str, port: int | None, path: str) -> None:
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    v = Validator("/", FakeFiles())
    assert v.endpoint(f"https://{netloc}{path}", "e") == f"https://{netloc}{path.rstrip('/')}"
    assert v.errors == []


@given(value=st.text(max_size=60))
def test_endpoint_never_raises_and_never_quotes_the_url(value: str) -> None:
    v = Validator("/", FakeFiles())
    url = "https://" + value
    result = v.endpoint(url, "e")
    assert (result is None) == bool(v.errors)
    if result is not None:
        assert result.startswith("https://")
    for _, message in v.errors:
        assert url not in message or not value


_secret = st.from_regex(r"SECRET[A-Za-z0-9]{4,12}", fullmatch=True)


@given(secret=_secret, where=st.sampled_from(["token-space", "base64", "cert", "key", "env"]))
def test_credentials_never_reach_a_message(secret: str, where: str) -> None:
    cred: dict[str, Any]
    if where == "token-space":
        cred = {"type": "ServiceAccountToken", "serviceAccountToken": f"{secret} x"}
    elif where == "base64":
        cred = {
            "type": "X509Certificate",
            "x509": {"certificate": secret + "!", "privateKey": secret},
        }
    elif where == "cert":
        cred = {
            "type": "X509Certificate",
            "x509": {"certificate": b64(secret.encode()), "privateKey": b64(secret.encode())},
        }
    elif where == "key":
        cred = {
            "type": "X509Certificate",
            "x509": {
                "certificate": b64(pki()[1]),
                "privateKey": b64(f"-----BEGIN PRIVATE KEY-----\n{secret}\n".encode()),
            },
        }
    else:
        cred = {
            "type": "OIDC",
            "execConfig": {"command": "c", "env": [{"name": "A", "value": [secret]}]},
        }
    result = parse(manifest(insecure=True, credential=cred))
    assert result.clusters == ()
    assert result.problems
    for line in lines(result):
        assert secret not in line


def test_rsa_and_encrypted_keys() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = cx509.Name([cx509.NameAttribute(NameOID.COMMON_NAME, "rsa-user")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        cx509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    plain = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    locked = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    cred = {"type": "X509Certificate", "x509": {"certificate": b64(cert), "privateKey": b64(plain)}}
    assert lines(parse(manifest(insecure=True, credential=cred))) == []
    cred["x509"]["privateKey"] = b64(locked)  # type: ignore[index]
    assert lines(parse(manifest(insecure=True, credential=cred))) == [
        "/c/a.yaml: document 1: spec.access.credential.x509.privateKey: "
        "private key is encrypted (not supported)"
    ]


def test_tunnel_cluster_has_no_endpoint() -> None:
    obj = manifest()
    obj["spec"]["access"] = {"tunnel": True}
    result = parse(obj)
    assert lines(result) == []
    (cluster,) = result.clusters
    assert cluster.tunnel and cluster.endpoint == ""
    assert cluster.credential is None


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"endpoint": "https://10.0.0.1:6443"}, "endpoint"),
        ({"credential": TOKEN}, "credential"),
        ({"insecure": True}, "insecure"),
        ({"tlsServerName": "a.example"}, "tlsServerName"),
    ],
)
def test_tunnel_cluster_names_no_way_to_reach_it(extra: dict[str, Any], field: str) -> None:
    obj = manifest()
    obj["spec"]["access"] = {"tunnel": True, **extra}
    result = parse(obj)
    assert result.clusters == ()
    assert (
        f"/c/a.yaml: document 1: spec.access.{field}: a tunnel cluster is reached through "
        "its agent: remove it"
    ) in lines(result)


def test_tunnel_must_be_a_boolean() -> None:
    obj = manifest()
    obj["spec"]["access"] = {"tunnel": "yes"}
    result = parse(obj)
    assert result.clusters == ()
    assert "/c/a.yaml: document 1: spec.access.tunnel: must be true or false, not a string" in (
        lines(result)
    )
