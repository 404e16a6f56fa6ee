"""The CA issues certificates that the authenticator accepts, and only those."""

import datetime
import os

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from karpor.auth.authenticate import CertificateAuthenticator
from karpor.auth.ca import CertificateAuthority


def test_load_or_create_keeps_the_ca(tmp_path):
    first = CertificateAuthority.load_or_create(tmp_path, "karpor-ca")
    second = CertificateAuthority.load_or_create(tmp_path, "karpor-ca")
    assert first.cert_pem == second.cert_pem
    assert os.stat(tmp_path / "ca.key").st_mode & 0o077 == 0


def test_server_certificate_sans():
    ca = CertificateAuthority.create("ca")
    issued = ca.issue_server("karpor", ["localhost", "127.0.0.1", "::1", "gw.example"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "gw.example"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku


def test_client_certificate_identity():
    ca = CertificateAuthority.create("ca")
    issued = ca.issue_client("alice", ["dev", "ops"])
    cert = x509.load_pem_x509_certificate(issued.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    ident = CertificateAuthenticator([ca.cert_pem]).identify_certificate(cert)
    assert ident is not None
    assert ident.user == "alice"
    assert ident.groups == ("dev", "ops")
    assert "PRIVATE" not in repr(issued)


def test_foreign_and_expired_certificates_are_refused():
    ca = CertificateAuthority.create("ca")
    other = CertificateAuthority.create("other")
    auth = CertificateAuthenticator([ca.cert_pem])
    foreign = x509.load_pem_x509_certificate(other.issue_client("mallory").cert_pem)
    assert auth.identify_certificate(foreign) is None
    short = x509.load_pem_x509_certificate(
        ca.issue_client("bob", ttl=datetime.timedelta(seconds=1)).cert_pem
    )
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    assert auth.identify_certificate(short, now=later) is None
    assert auth.identify(None) is None


def test_signature_verdicts_are_kept_per_certificate_and_validity_is_checked_each_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ca = CertificateAuthority.create("ca")
    other = CertificateAuthority.create("other")
    auth = CertificateAuthenticator([ca.cert_pem])
    checks: list[x509.Certificate] = []
    issued_by = CertificateAuthenticator._issued_by

    def counting(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
        checks.append(cert)
        return issued_by(cert, issuer)

    monkeypatch.setattr(CertificateAuthenticator, "_issued_by", staticmethod(counting))
    pem = ca.issue_client("alice", ttl=datetime.timedelta(minutes=5)).cert_pem
    foreign_pem = other.issue_client("mallory").cert_pem
    for _ in range(3):
        # a new connection presenting the same certificate parses it anew
        assert auth.identify_certificate(x509.load_pem_x509_certificate(pem)) is not None
        assert auth.identify_certificate(x509.load_pem_x509_certificate(foreign_pem)) is None
    assert len(checks) == 2  # one signature check per certificate
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    assert auth.identify_certificate(x509.load_pem_x509_certificate(pem), now=later) is None
    # the kept verdicts are bounded: the oldest goes first
    monkeypatch.setattr("karpor.auth.authenticate.VERDICTS_KEPT", 2)
    third = x509.load_pem_x509_certificate(ca.issue_client("carol").cert_pem)
    assert auth.identify_certificate(third) is not None
    assert len(checks) == 3
    assert auth.identify_certificate(x509.load_pem_x509_certificate(pem)) is not None
    assert len(checks) == 4  # alice's verdict was the oldest, dropped for carol's
