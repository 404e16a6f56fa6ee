"""The gateway's state directory (``--state-dir``).

It holds:

* ``ca.crt`` / ``ca.key`` (0600): the gateway CA, created on first start; it
  signs the serving certificate and the users' client certificates
  (``karpor kubeconfig``), and the gateway trusts the certificates it signed
  (a read-only state holds ``ca.crt`` only, see below);
* ``serving.crt`` / ``serving.key`` (0600): the serving certificate, whose
  SANs cover the host served, ``localhost``, ``127.0.0.1`` and ``::1`` (and
  the machine's name when serving every address).  It is issued again when
  a host is not covered (keeping the names it covered), when it expires
  within :data:`RENEW_BEFORE`, when it was not signed by the CA, or when
  its extended key usage is not ``serverAuth`` alone (a certificate made
  before that rule, or elsewhere: it could also pass as a client
  certificate);
* ``gateway.json``: what ``karpor kubeconfig`` needs to know of the gateway
  (the clusters directory it serves, its address, its host-routing suffix).

The directory is created readable by its owner only.  Extra names for the
serving certificate (``servingNames``: a load balancer's name, a Kubernetes
Service's DNS names) are added to the hosts it must cover, and so is
``*.<suffix>`` of host routing (``hostRouting.suffix``,
:mod:`karpor.http.route`): a certificate made before, or for another
suffix, is issued again on start (a read-only one lacking it is a warning:
host-routed contexts fail to verify it).

**Read-only state** (replicas): a state directory the gateway cannot write
to (a Kubernetes Secret volume), or one the settings declare read-only
(``stateReadOnly: true``), is used as it is: ``ca.crt``, ``serving.crt``
and ``serving.key`` must be there and valid — the serving certificate
issued by that CA, its key matching it, not expired, covering every
``servingNames`` entry (and the host served, unless a wildcard address) —
else :class:`StateError` names the file and what is wrong.  ``ca.key`` is
not needed there and should not be: a replica verifies client
certificates, it never issues them, and whoever can read the CA key can
issue a certificate for any user and group (``system:masters`` included);
when it is there, it must match ``ca.crt``.
Nothing is written there (no ``gateway.json``); a serving certificate
expiring within :data:`RENEW_BEFORE`, or whose extended key usage is not
``serverAuth`` alone, is a warning (the gateway refuses its key as a
client's all the same, see
:class:`~karpor.auth.authenticate.CertificateAuthenticator`).  Replicas that share
such a directory share the CA (every replica trusts the same client
certificates) and the serving certificate (one ``caBundle`` verifies them
all).  ``karpor certificates DIR`` (:mod:`karpor.cli.certificates`)
writes its content.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from karpor.auth.ca import CA_CERT_FILE, CA_KEY_FILE, CertificateAuthority, write_private
from karpor.config.hostnames import normal_host, url_host

if TYPE_CHECKING:
    from twisted.logger import Logger

    from karpor.app.settings import Settings

SERVING_CERT_FILE = "serving.crt"
SERVING_KEY_FILE = "serving.key"
RECORD_FILE = "gateway.json"
CA_COMMON_NAME = "karpor-gateway-ca"
SERVING_COMMON_NAME = "karpor"
#: a serving certificate expiring sooner than this is issued again
RENEW_BEFORE = datetime.timedelta(days=30)

#: the names every serving certificate covers
LOOPBACK = ("localhost", "127.0.0.1", "::1")
_WILDCARDS = frozenset({"", "0.0.0.0", "::"})  # noqa: S104 (names, not a bind)
_HINT = "create the state with `karpor certificates DIR --name NAME...`"
_normal = normal_host


class StateError(Exception):
    """A state directory that cannot be used; the message names the file."""


def serving_hosts(host: str, names: Sequence[str] = ()) -> list[str]:
    """The names the serving certificate must cover for a gateway on ``host``
    (plus the configured ``names``)."""
    hosts: list[str] = []
    if host in _WILDCARDS:
        for name in (socket.gethostname(), socket.getfqdn()):
            if name and name not in hosts:
                hosts.append(name)
    else:
        hosts.append(host)
    hosts.extend(LOOPBACK)
    hosts.extend(names)
    return list(dict.fromkeys(_normal(h) for h in hosts))


def required_hosts(host: str, names: Sequence[str]) -> list[str]:
    """What a read-only serving certificate must cover: the configured
    ``names`` and ``host`` unless it is a wildcard address (a pod's own
    name cannot be known when the certificate is made)."""
    hosts = [] if host in _WILDCARDS else [host]
    return list(dict.fromkeys(_normal(h) for h in [*hosts, *names]))


def certificate_hosts(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate's SANs cover."""
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    names = [_normal(n) for n in sans.get_values_for_type(x509.DNSName)]
    names.extend(str(a) for a in sans.get_values_for_type(x509.IPAddress))
    return names


def usage_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is not a serving certificate only (its extended key
    usage must be ``serverAuth`` alone), or ``None``."""
    try:
        usages = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return "it has no extended key usage (it would pass as a client certificate too)"
    if usages != [ExtendedKeyUsageOID.SERVER_AUTH]:
        names = ", ".join(getattr(u, "_name", None) or u.dotted_string for u in usages)
        return f"its extended key usage is {names or 'empty'}, not serverAuth alone"
    return None


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
    usage = usage_problem(cert)
    if usage is not None:
        return usage
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


def key_matches(cert: x509.Certificate, key_pem: bytes) -> bool:
    """Whether the PEM private key ``key_pem`` is the key of ``cert``."""
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    return bool(
        key.public_key().public_bytes(der, spki) == cert.public_key().public_bytes(der, spki)
    )


def ensure_serving_certificate(
    directory: Path,
    ca: CertificateAuthority,
    hosts: Sequence[str],
    now: datetime.datetime | None = None,
) -> ServingCertificate:
    """Load the serving certificate kept in ``directory``, issuing it when
    missing, when its key does not match it, or when :func:`renewal_reason`
    gives a reason."""
    cert_path = directory / SERVING_CERT_FILE
    key_path = directory / SERVING_KEY_FILE
    reason: str | None = "there was none"
    covered: list[str] = []
    if cert_path.exists() and key_path.exists():
        cert_pem = cert_path.read_bytes()
        reason = renewal_reason(cert_pem, ca, hosts, now)
        if reason is None:
            cert = x509.load_pem_x509_certificate(cert_pem)
            key_pem = key_path.read_bytes()
            if key_matches(cert, key_pem):
                return ServingCertificate(cert_pem, key_pem, tuple(certificate_hosts(cert)))
            reason = f"{SERVING_KEY_FILE} does not match it"
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
    #: ``hostRouting.suffix`` (``None``: not recorded, ``""``: host routing off)
    host_suffix: str | None = None

    def to_json(self) -> bytes:
        """The record as ``gateway.json`` holds it."""
        doc = {
            "clustersDir": self.clusters_dir,
            "server": self.server,
            "hostSuffix": self.host_suffix,
        }
        return json.dumps(doc, indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> GatewayRecord:
        """Read ``gateway.json``; ``ValueError`` when it is not a record."""
        doc = json.loads(data)
        if not isinstance(doc, dict):
            raise ValueError("not a JSON object")
        clusters_dir = doc.get("clustersDir")
        server = doc.get("server")
        suffix = doc.get("hostSuffix")
        return cls(
            clusters_dir if isinstance(clusters_dir, str) else None,
            server if isinstance(server, str) else None,
            suffix if isinstance(suffix, str) else None,
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
    return (directory / CA_CERT_FILE).exists() and (directory / CA_KEY_FILE).exists()


def is_read_only(directory: Path) -> bool:
    """Whether ``directory`` exists and this process cannot write to it."""
    return directory.is_dir() and not os.access(directory, os.W_OK)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise StateError(f"{path}: missing from the read-only state directory; {_HINT}") from None
    except OSError as exc:
        raise StateError(f"{path}: cannot read: {exc.strerror or exc}") from None


def load_read_only(
    directory: Path,
    hosts: Sequence[str],
    now: datetime.datetime | None = None,
) -> tuple[CertificateAuthority, ServingCertificate, tuple[str, ...]]:
    """The CA and serving certificate of a read-only state directory, and
    warnings to log; :class:`StateError` naming the file that is missing
    or wrong (the serving certificate must cover ``hosts``)."""
    if not directory.is_dir():
        raise StateError(f"{directory}: the read-only state directory does not exist; {_HINT}")
    now = now or datetime.datetime.now(datetime.UTC)
    ca_cert_pem = _read(directory / CA_CERT_FILE)
    try:
        ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    except ValueError:
        raise StateError(f"{directory / CA_CERT_FILE}: not a PEM certificate") from None
    if not (directory / CA_KEY_FILE).exists():
        # as recommended: a replica verifies client certificates, never issues them
        ca = CertificateAuthority(ca_cert, None)
    else:
        if not key_matches(ca_cert, _read(directory / CA_KEY_FILE)):
            raise StateError(
                f"{directory / CA_KEY_FILE}: not the private key of {CA_CERT_FILE} "
                "(or not a PEM private key)"
            )
        try:
            ca = CertificateAuthority.load(directory)
        except ValueError as exc:
            raise StateError(str(exc)) from None
    cert_path = directory / SERVING_CERT_FILE
    key_path = directory / SERVING_KEY_FILE
    cert_pem = _read(cert_path)
    key_pem = _read(key_path)
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise StateError(f"{cert_path}: not a PEM certificate") from None
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        raise StateError(f"{cert_path}: not issued by the CA of {CA_CERT_FILE}; {_HINT}") from None
    if not key_matches(cert, key_pem):
        raise StateError(
            f"{key_path}: not the private key of {SERVING_CERT_FILE} (or not a PEM private key)"
        )
    if cert.not_valid_after_utc <= now:
        raise StateError(
            f"{cert_path}: expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "issue it again (`karpor certificates DIR` on a copy holding the CA) "
            "and update the directory"
        )
    covered = certificate_hosts(cert)
    missing = [h for h in (_normal(h) for h in hosts) if h not in covered]
    if missing:
        raise StateError(
            f"{cert_path}: does not cover {', '.join(missing)} (servingNames, or the host "
            f"served); it covers {', '.join(covered) or 'nothing'}; issue it again with "
            "`karpor certificates DIR --name NAME...` and update the directory"
        )
    warnings: list[str] = []
    usage = usage_problem(cert)
    if usage is not None:
        warnings.append(
            f"{cert_path}: {usage}; the gateway refuses its key as a client's, but issue it "
            "again (`karpor certificates DIR` on a copy holding the CA) and update the directory"
        )
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        warnings.append(
            f"{cert_path} expires on {cert.not_valid_after_utc:%Y-%m-%d} and the state "
            "directory is read-only: issue it again with `karpor certificates DIR` and "
            "update the directory"
        )
    return ca, ServingCertificate(cert_pem, key_pem, tuple(covered)), tuple(warnings)


@dataclass(frozen=True)
class GatewayState:
    """The gateway CA and serving certificate, ready to serve."""

    directory: Path
    ca: CertificateAuthority
    serving: ServingCertificate
    #: the directory is used as it is: nothing is written there
    read_only: bool = False
    #: what to log (a read-only serving certificate expiring soon)
    warnings: tuple[str, ...] = ()

    @classmethod
    def prepare(
        cls,
        directory: Path,
        host: str,
        now: datetime.datetime | None = None,
        *,
        names: Sequence[str] = (),
        read_only: bool | None = None,
        wildcards: Sequence[str] = (),
    ) -> GatewayState:
        """Open (creating on first use) the state in ``directory`` for a
        gateway on ``host`` whose serving certificate also covers ``names``
        and the ``wildcards`` of host routing (``*.<suffix>``: only a
        warning when a read-only certificate lacks one).

        ``read_only``: use the directory as it is (see the module
        docstring); ``None``: when it exists and cannot be written to.
        Raises :class:`StateError` for a read-only directory that cannot be used.
        """
        if read_only is None:
            read_only = is_read_only(directory)
        if read_only:
            ca, serving, warnings = load_read_only(directory, required_hosts(host, names), now)
            lacking = [w for w in (_normal(w) for w in wildcards) if w not in serving.hosts]
            if lacking:
                warnings += (
                    f"{directory / SERVING_CERT_FILE}: does not cover {', '.join(lacking)}: "
                    "host-routed contexts (hostRouting) will not verify it; issue it again "
                    "with `karpor certificates DIR --name NAME... --name '*.SUFFIX'` and "
                    "update the directory",
                )
            return cls(directory, ca, serving, True, warnings)
        create_directory(directory)
        ca = CertificateAuthority.load_or_create(directory, CA_COMMON_NAME)
        hosts = serving_hosts(host, [*names, *wildcards])
        serving = ensure_serving_certificate(directory, ca, hosts, now)
        return cls(directory, ca, serving)

    def record(self, record: GatewayRecord) -> None:
        """Write ``gateway.json`` (not in a read-only directory)."""
        if not self.read_only:
            write_record(self.directory, record)


def prepare_for(settings: Settings, log: Logger) -> GatewayState:
    """:meth:`GatewayState.prepare` as the settings say (``stateDir``,
    ``host``, ``servingNames``, ``stateReadOnly``, ``hostRouting``), logging what was issued
    and every warning; a :class:`StateError` ends the process with its message."""
    assert settings.state_dir is not None
    try:
        prepared = GatewayState.prepare(
            Path(settings.state_dir),
            settings.host,
            names=settings.serving_names,
            read_only=True if settings.state_read_only else None,
            wildcards=((settings.host_routing.wildcard,) if settings.host_routing.enabled else ()),
        )
    except StateError as exc:
        raise SystemExit(f"karpor: {exc}") from None
    if prepared.serving.issued_because is not None:
        log.info(
            "issued the serving certificate for {hosts} ({reason})",
            hosts=", ".join(prepared.serving.hosts),
            reason=prepared.serving.issued_because,
        )
    if prepared.read_only:
        log.info(
            "state directory {dir} is read-only: serving certificate for {hosts}; "
            "nothing is written there",
            dir=str(prepared.directory),
            hosts=", ".join(prepared.serving.hosts),
        )
    for warning in prepared.warnings:
        log.warn("{warning}", warning=warning)
    return prepared


def default_server(host: str, port: int) -> str:
    """The URL clients use for a gateway on ``host:port`` (the machine's name
    for a wildcard address)."""
    if host in _WILDCARDS:
        host = socket.gethostname() or "localhost"
    return f"https://{url_host(host)}:{port}"


def absolute(path: str) -> str:
    """``path`` made absolute (the record outlives the working directory)."""
    return os.path.abspath(path)
