"""What the status page shows of the gateway's processes and certificates.

:class:`GatewayFacts` is read when the sampler runs (off the request path):
the worker processes as the supervisor tracks them (pid, generation, state,
restarts of their slot) with their resident memory from
``/proc/PID/status`` (:func:`rss_from_status` parses it), and the expiry
(``notAfter``) of the serving certificate and of the CA, read from the
certificate files of the state directory (:func:`certificate_expiry`;
the key files are never opened).
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

#: the most bytes of a certificate file read
MAX_CERTIFICATE_FILE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class WorkerFacts:
    """One worker process."""

    slot: int
    pid: int | None
    generation: int
    #: starting, ready, draining (``in-process``: the gateway is this process)
    state: str
    #: workers of its slot that died and were replaced
    restarts: int = 0
    #: resident memory in bytes (``None``: unknown)
    rss: int | None = None


@dataclass(frozen=True, slots=True)
class CertificateExpiry:
    """When a certificate of the state directory expires."""

    #: ``serving`` or ``ca``
    name: str
    #: its ``notAfter`` (epoch seconds; ``None``: could not be read)
    not_after: float | None
    #: why it could not be read ("" when it could)
    problem: str = ""


@dataclass(frozen=True)
class GatewayFacts:
    """The gateway's processes and certificates, as last read."""

    #: the process serving the page
    pid: int
    #: ``supervisor`` (worker processes) or ``single`` (the gateway in this process)
    mode: str = "single"
    workers: Sequence[WorkerFacts] = ()
    rolls: int = 0
    crash_looping: frozenset[int] = field(default_factory=frozenset)
    certificates: Sequence[CertificateExpiry] = ()


def rss_from_status(text: str) -> int | None:
    """``VmRSS`` in bytes from the text of ``/proc/PID/status``."""
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    return None


def read_rss(pid: int | None) -> int | None:
    """The resident memory of process ``pid`` (``None``: unknown, not Linux)."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/status").read_text(errors="replace")
    except OSError:
        return None
    return rss_from_status(text)


def expiry_of(pem: bytes) -> float:
    """The ``notAfter`` of the first certificate of ``pem`` (epoch seconds);
    :class:`ValueError` when there is none."""
    cert = x509.load_pem_x509_certificate(pem)
    return cert.not_valid_after_utc.timestamp()


def certificate_expiry(name: str, path: Path) -> CertificateExpiry:
    """The expiry of the certificate file ``path`` (a problem instead when
    it cannot be read or parsed)."""
    try:
        with path.open("rb") as f:
            pem = f.read(MAX_CERTIFICATE_FILE)
        return CertificateExpiry(name, expiry_of(pem))
    except OSError as exc:
        return CertificateExpiry(name, None, exc.strerror or type(exc).__name__)
    except ValueError:
        return CertificateExpiry(name, None, "not a PEM certificate")


def workers_from_state(state: Mapping[str, Any], rss: Any = read_rss) -> list[WorkerFacts]:
    """The workers of the supervisor's state (:meth:`karpor.app.supervisor.Supervisor.state`),
    exited ones left out, with their resident memory."""
    out = []
    for w in state.get("workers", []):
        if not isinstance(w, Mapping) or w.get("state") == "exited":
            continue
        pid = w.get("pid")
        pid = pid if isinstance(pid, int) else None
        out.append(
            WorkerFacts(
                slot=int(w.get("slot", 0)),
                pid=pid,
                generation=int(w.get("generation", 0)),
                state=str(w.get("state", "")),
                restarts=int(w.get("restarts", 0)),
                rss=rss(pid),
            )
        )
    return out


def days_left(not_after: float, now: float) -> float:
    """Days from ``now`` to ``not_after`` (negative: expired)."""
    return (not_after - now) / 86400.0


def rfc3339(epoch: float) -> str:
    """``epoch`` as RFC 3339 UTC with seconds."""
    return (
        datetime.datetime.fromtimestamp(epoch, datetime.UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )
