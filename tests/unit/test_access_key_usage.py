"""Client certificates need the ``clientAuth`` extended key usage; serving
certificates carry ``serverAuth`` only, and the gateway's own serving key is
never a client identity."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from OpenSSL import crypto

from karpor.app import state
from karpor.auth.access import Access
from karpor.auth.authenticate import CertificateAuthenticator, permits_client_auth
from karpor.auth.ca import CertificateAuthority
from karpor.auth.requestheader import RequestHeaderConfig
from karpor.auth.sections import AuthenticationSettings, AuthorizationSettings

SERVER, CLIENT, ANY = (
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
)


def made(
    ca: CertificateAuthority,
    user: str,
    usages: list[x509.ObjectIdentifier] | None,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    days: int = 1,
) -> x509.Certificate:
    """A certificate for ``user`` signed by ``ca`` with the extended key
    ``usages`` (``None``: no such extension), as another tool might make it."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    if usages is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    return builder.sign(ca._signing_key(), hashes.SHA256())


def usages_of(pem: bytes) -> list[x509.ObjectIdentifier]:
    cert = x509.load_pem_x509_certificate(pem)
    return list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)


def test_the_ca_issues_each_certificate_one_usage() -> None:
    ca = CertificateAuthority.create("ca")
    assert usages_of(ca.issue_server("karpor", ["127.0.0.1"]).cert_pem) == [SERVER]
    assert usages_of(ca.issue_client("alice", ["dev"]).cert_pem) == [CLIENT]


def test_a_serving_certificate_is_no_client_identity() -> None:
    ca = CertificateAuthority.create("ca")
    auth = CertificateAuthenticator([ca.cert_pem])
    serving = x509.load_pem_x509_certificate(ca.issue_server("karpor", ["::1"]).cert_pem)
    assert auth.identify_certificate(serving) is None
    assert auth.identify_certificate(made(ca, "s", [SERVER])) is None
    assert auth.identify_certificate(made(ca, "x", [ExtendedKeyUsageOID.CODE_SIGNING])) is None


def test_client_usages_as_go_verifies_them() -> None:
    """Go's ``x509.Verify`` for ``ExtKeyUsageClientAuth``: clientAuth,
    anyExtendedKeyUsage, or no extension at all (any usage)."""
    ca = CertificateAuthority.create("ca")
    auth = CertificateAuthenticator([ca.cert_pem])
    for user, usages in (
        ("both", [SERVER, CLIENT]),
        ("any", [ANY]),
        ("none", None),
        ("client", [CLIENT]),
    ):
        identity = auth.identify_certificate(made(ca, user, usages))
        assert identity is not None and identity.user == user


def test_a_ca_limited_to_server_auth_issues_no_client_identity() -> None:
    ca = CertificateAuthority.create("server-only-ca")
    limited = made(ca, "server-only-ca", [SERVER], ca._signing_key())  # self-signed, EKU set
    assert not permits_client_auth(limited)
    auth = CertificateAuthenticator([limited.public_bytes(serialization.Encoding.PEM)])
    leaf = made(ca, "alice", [CLIENT])  # issued by the same key and name
    leaf.verify_directly_issued_by(limited)  # a signature that verifies
    assert auth.identify_certificate(leaf) is None
    assert CertificateAuthenticator([ca.cert_pem]).identify_certificate(leaf) is not None


def test_the_serving_key_is_refused_whatever_its_certificate_says(tmp_path: Path) -> None:
    prepared = state.GatewayState.prepare(tmp_path / "state", "127.0.0.1")
    ca = prepared.ca
    serving = x509.load_pem_x509_certificate(prepared.serving.cert_pem)
    serving_key = serialization.load_pem_private_key(prepared.serving.key_pem, None)
    assert isinstance(serving_key, ec.EllipticCurvePrivateKey)
    # a certificate for the serving key without any extended key usage
    # (made elsewhere, e.g. for a read-only state): accepted by usage alone
    no_eku = made(ca, "karpor", None, serving_key)
    access = Access.from_settings(
        AuthenticationSettings(),
        AuthorizationSettings(),
        ca.cert_pem,
        prepared.directory,
        serving_cert_pem=prepared.serving.cert_pem,
    )
    for cert in (serving, no_eku):
        peer = access.peer(crypto.X509.from_cryptography(cert))
        assert peer.identity is None and peer.rejected
    user = x509.load_pem_x509_certificate(ca.issue_client("alice").cert_pem)
    assert access.peer(crypto.X509.from_cryptography(user)).identity is not None


def test_an_old_serving_certificate_is_issued_again(tmp_path: Path) -> None:
    """A state made before serving certificates were serverAuth only (both
    usages, or none) gets a new one on the next start."""
    directory = tmp_path / "state"
    first = state.GatewayState.prepare(directory, "127.0.0.1")
    for usages in ([SERVER, CLIENT], None):
        old = made(first.ca, "karpor", usages, days=400)
        # no SANs either: the usage is checked first, the SANs are kept from the last one
        (directory / "serving.crt").write_bytes(old.public_bytes(serialization.Encoding.PEM))
        again = state.GatewayState.prepare(directory, "127.0.0.1")
        assert again.serving.issued_because is not None
        assert "usage" in again.serving.issued_because
        assert usages_of(again.serving.cert_pem) == [SERVER]


def test_a_read_only_serving_certificate_with_client_usage_warns(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    made_state = state.GatewayState.prepare(directory, "127.0.0.1")
    key = serialization.load_pem_private_key(made_state.serving.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    both = made(made_state.ca, "karpor", [SERVER, CLIENT], key)
    # no SANs: a read-only state on a wildcard address needs none
    (directory / "serving.crt").write_bytes(both.public_bytes(serialization.Encoding.PEM))
    ro = state.GatewayState.prepare(directory, "0.0.0.0", read_only=True)
    assert any("serverAuth alone" in w for w in ro.warnings)


def test_a_front_proxy_certificate_needs_client_auth_too() -> None:
    front = CertificateAuthority.create("front-proxy-ca")
    access = Access(front_proxy_ca=[front.cert_pem], request_header=RequestHeaderConfig())
    server = front.issue_server("front-proxy-client", ["127.0.0.1"]).cert_pem
    client = front.issue_client("front-proxy-client").cert_pem
    as_peer = crypto.X509.from_cryptography
    assert access.peer(as_peer(x509.load_pem_x509_certificate(server))).front_proxy is None
    assert access.peer(as_peer(x509.load_pem_x509_certificate(client))).front_proxy == (
        "front-proxy-client"
    )
