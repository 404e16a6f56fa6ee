"""A small certificate authority: the gateway's (and each simulated cluster's).

The CA signs serving certificates (SANs for the hosts served) and client
certificates in the Kubernetes convention: ``CN`` is the user name, each
``O`` a group.  Keys are ECDSA P-256: fast to make and cheap to handshake,
and accepted by every Kubernetes client.

:meth:`CertificateAuthority.load_or_create` keeps the CA in a directory
(``ca.crt``, ``ca.key``, the key readable by its owner only).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"

_CA_TTL = datetime.timedelta(days=3650)
_SERVER_TTL = datetime.timedelta(days=825)
DEFAULT_CLIENT_TTL = datetime.timedelta(days=90)
# Certificates are valid from a little before "now": clocks of clients drift.
_BACKDATE = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    serial: int = 0

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write the pair; the key file is created readable by its owner only."""
        cert_path.write_bytes(self.cert_pem)
        write_private(key_path, self.key_pem)


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, path)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class CertificateAuthority:
    """A CA certificate with its key, able to issue server and client
    certificates; or without the key (``key=None``: a gateway replica's
    read-only state, :mod:`karpor.app.state`), only trusted."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
        self.cert = cert
        self._key = key

    @property
    def can_issue(self) -> bool:
        """Whether the CA's private key is here."""
        return self._key is not None

    def _signing_key(self) -> ec.EllipticCurvePrivateKey:
        if self._key is None:
            raise ValueError(
                f"the CA {self.cert.subject.rfc4514_string()} has no private key here "
                f"({CA_KEY_FILE}): issue certificates where it is kept"
            )
        return self._key

    def __repr__(self) -> str:
        return f"CertificateAuthority({self.cert.subject.rfc4514_string()!r})"

    @classmethod
    def create(cls, common_name: str) -> CertificateAuthority:
        """Make a new self-signed CA."""
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = _now()
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + _CA_TTL)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """Load the CA kept in ``directory``."""
        cert = x509.load_pem_x509_certificate((directory / CA_CERT_FILE).read_bytes())
        key = serialization.load_pem_private_key(
            (directory / CA_KEY_FILE).read_bytes(), password=None
        )
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{directory / CA_KEY_FILE}: expected an EC private key")
        return cls(cert, key)

    @classmethod
    def load_or_create(cls, directory: Path, common_name: str) -> CertificateAuthority:
        """Load the CA kept in ``directory``, creating (and saving) it on first use."""
        if (directory / CA_CERT_FILE).exists():
            return cls.load(directory)
        directory.mkdir(parents=True, exist_ok=True)
        ca = cls.create(common_name)
        write_private(directory / CA_KEY_FILE, _key_pem(ca._signing_key()))
        (directory / CA_CERT_FILE).write_bytes(ca.cert_pem)
        return ca

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue_server(
        self, common_name: str, hosts: Iterable[str], ttl: datetime.timedelta = _SERVER_TTL
    ) -> IssuedCertificate:
        """A serving certificate whose SANs are ``hosts`` (DNS names or IP addresses)."""
        sans: list[x509.GeneralName] = []
        for host in dict.fromkeys(hosts):
            try:
                sans.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                sans.append(x509.DNSName(host))
        return self._issue(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]),
            ttl,
            [ExtendedKeyUsageOID.SERVER_AUTH],
            sans,
        )

    def issue_client(
        self,
        user: str,
        groups: Iterable[str] = (),
        ttl: datetime.timedelta = DEFAULT_CLIENT_TTL,
    ) -> IssuedCertificate:
        """A client certificate for ``user`` (CN) in ``groups`` (one O each)."""
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
        return self._issue(x509.Name(attrs), ttl, [ExtendedKeyUsageOID.CLIENT_AUTH], [])

    def _issue(
        self,
        subject: x509.Name,
        ttl: datetime.timedelta,
        usages: list[x509.ObjectIdentifier],
        sans: list[x509.GeneralName],
    ) -> IssuedCertificate:
        signing = self._signing_key()
        key = _new_key()
        now = _now()
        serial = x509.random_serial_number()
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(serial)
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + ttl)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signing.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(signing, hashes.SHA256())
        return IssuedCertificate(
            cert.public_bytes(serialization.Encoding.PEM), _key_pem(key), serial
        )
