"""The gateway's state directory (``--state-dir``).

It holds:

* ``ca.crt`` / ``ca.key`` (0600): the gateway CA, created on first start; it
  signs the serving certificate and the users' client certificates
  (``karpor kubeconfig``), and the gateway trusts the certificates it signed;
* ``serving.crt`` / ``serving.key`` (0600): the serving certificate, whose
  SANs cover the host served, ``localhost``, ``127.0.0.1`` and ``::1`` (and
  the machine's name when serving every address).  It is issued again when
  a host is not covered (keeping the names it covered), when it expires
  within :data:`RENEW_BEFORE`, or when it was not signed by the CA;
* ``gateway.json``: what ``karpor kubeconfig`` needs to know of the gateway
  (the clusters directory it serves, its address).

The directory is created readable by its owner only.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from karpor.auth.ca import CertificateAuthority, write_private

SERVING_CERT_FILE = "serving.crt"
SERVING_KEY_FILE = "serving.key"
RECORD_FILE = "gateway.json"
CA_COMMON_NAME = "karpor-gateway-ca"
SERVING_COMMON_NAME = "karpor"
#: a serving certificate expiring sooner than this is issued again
RENEW_BEFORE = datetime.timedelta(days=30)

_LOOPBACK = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (names, not a bind)


def _normal(host: str) -> str:
    """A host as a SAN compares: IP addresses in canonical form, names lower-case."""
    host = host.strip().strip("[]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.lower().rstrip(".")


def serving_hosts(host: str) -> list[str]:
    """The names the serving certificate must cover for a gateway on ``host``."""
    hosts: list[str] = []
    if host in _WILDCARDS:
        for name in (socket.gethostname(), socket.getfqdn()):
            if name and name not in hosts:
                hosts.append(name)
    else:
        hosts.append(host)
    hosts.extend(_LOOPBACK)
    return list(dict.fromkeys(_normal(h) for h in hosts))


def certificate_hosts(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate's SANs cover."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [_normal(n) for n in sans.get_values_for_type(x509.DNSName)]
    names.extend(str(a) for a in sans.get_values_for_type(x509.IPAddress))
    return names


def renewal_reason(
    cert_pem: bytes,
    ca: CertificateAuthority,
    hosts: Iterable[str],
    now: datetime.datetime | None = None,
) -> str | None:
    """Why the serving certificate ``cert_pem`` must be issued again, or ``None``."""
    now = now or datetime.datetime.now(datetime.UTC)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        return "it does not parse"
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "it was not issued by the gateway CA"
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    missing = sorted(set(_normal(h) for h in hosts) - set(certificate_hosts(cert)))
    if missing:
        return f"it does not cover {', '.join(missing)}"
    return None


@dataclass(frozen=True)
class ServingCertificate:
    """The serving certificate and key (PEM) and the hosts it covers."""

    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    hosts: tuple[str, ...] = ()
    #: why it was issued on this start (``None``: it was loaded as it was)
    issued_because: str | None = None


def ensure_serving_certificate(
    directory: Path,
    ca: CertificateAuthority,
    hosts: Sequence[str],
    now: datetime.datetime | None = None,
) -> ServingCertificate:
    """Load the serving certificate kept in ``directory``, issuing it when
    missing or when :func:`renewal_reason` gives a reason."""
    cert_path = directory / SERVING_CERT_FILE
    key_path = directory / SERVING_KEY_FILE
    reason: str | None = "there was none"
    covered: list[str] = []
    if cert_path.exists() and key_path.exists():
        cert_pem = cert_path.read_bytes()
        reason = renewal_reason(cert_pem, ca, hosts, now)
        if reason is None:
            cert = x509.load_pem_x509_certificate(cert_pem)
            return ServingCertificate(
                cert_pem, key_path.read_bytes(), tuple(certificate_hosts(cert))
            )
        try:
            covered = certificate_hosts(x509.load_pem_x509_certificate(cert_pem))
        except ValueError:
            covered = []
    names = list(dict.fromkeys([*(_normal(h) for h in hosts), *covered]))
    issued = ca.issue_server(SERVING_COMMON_NAME, names)
    issued.write(cert_path, key_path)
    return ServingCertificate(issued.cert_pem, issued.key_pem, tuple(names), reason)


@dataclass(frozen=True)
class GatewayRecord:
    """What the gateway records of itself for ``karpor kubeconfig``."""

    clusters_dir: str | None = None
    server: str | None = None

    def to_json(self) -> bytes:
        """The record as ``gateway.json`` holds it."""
        doc = {"clustersDir": self.clusters_dir, "server": self.server}
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> GatewayRecord:
        """Read ``gateway.json``; ``ValueError`` when it is not a record."""
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        clusters_dir = doc.get("clustersDir")
        server = doc.get("server")
        return cls(
            clusters_dir if isinstance(clusters_dir, str) else None,
            server if isinstance(server, str) else None,
        )


def write_record(directory: Path, record: GatewayRecord) -> None:
    """Write ``gateway.json`` (atomically)."""
    write_private(directory / RECORD_FILE, record.to_json())


def read_record(directory: Path) -> GatewayRecord | None:
    """Read ``gateway.json``, or ``None`` when there is none (or it is unreadable)."""
    try:
        return GatewayRecord.from_json((directory / RECORD_FILE).read_bytes())
    except (OSError, ValueError):
        return None


def create_directory(directory: Path) -> None:
    """Create the state directory (owner-only) if it does not exist."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def has_ca(directory: Path) -> bool:
    """Whether ``directory`` holds a gateway CA."""
    return (directory / "ca.crt").exists() and (directory / "ca.key").exists()


@dataclass(frozen=True)
class GatewayState:
    """The gateway CA and serving certificate, ready to serve."""

    directory: Path
    ca: CertificateAuthority
    serving: ServingCertificate

    @classmethod
    def prepare(
        cls, directory: Path, host: str, now: datetime.datetime | None = None
    ) -> GatewayState:
        """Open (creating on first use) the state in ``directory`` for a gateway on ``host``."""
        create_directory(directory)
        ca = CertificateAuthority.load_or_create(directory, CA_COMMON_NAME)
        serving = ensure_serving_certificate(directory, ca, serving_hosts(host), now)
        return cls(directory, ca, serving)


def default_server(host: str, port: int) -> str:
    """The URL clients use for a gateway on ``host:port`` (the machine's name
    for a wildcard address)."""
    if host in _WILDCARDS:
        host = socket.gethostname() or "localhost"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass
    return f"https://{host}:{port}"


def absolute(path: str) -> str:
    """``path`` made absolute (the record outlives the working directory)."""
    return os.path.abspath(path)
