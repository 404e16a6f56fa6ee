"""Cluster health probes, sans-IO: what a probe asks, what the answers mean.

One probe of a cluster (:class:`Probe`) is a short sequence of ``GET``
requests on the cluster's pooled connections, one at a time:

1. ``/readyz``; when it answers 404 (an old apiserver), ``/healthz``
   instead (and for the later probes of that cluster, as long as
   ``/healthz`` keeps answering);
2. when that answered 2xx, ``/version`` for the server's ``gitVersion``
   (a failure there leaves the last known version and the health as it is).

Any other answer, a failed connection or no answer within the probe's
timeout makes the cluster unhealthy, with a message naming the request and
the failure (the pool's own error text, or the status code and the
apiserver's first failed check).

:class:`ClusterHealth` follows one cluster from probe to probe: its
:class:`ClusterStatus` (``None`` until the first probe ends: healthy-unknown)
and when the next probe is due (:class:`Outcome`): ``interval`` after a
healthy probe, :attr:`ProbeSettings.retry_interval` (a quarter of it) after
a failed one.  With the defaults (interval 10 s, timeout 4 s) a cluster
that fails is marked unhealthy within 14 s (the next probe plus its
timeout) and one that recovers is seen within about 7 s (a failing probe's
timeout plus the retry interval).

:func:`refusal` is the fail-fast decision the front takes per request: the
``Status`` a request to an unhealthy cluster gets without any connection
attempt (503, or the 502 the pool gave when the cluster's TLS or credential
cannot work), or ``None`` to forward it (healthy, never probed, or
``failFast: false``: try anyway).

Nothing here does I/O or reads a clock: times are passed in.
"""

from __future__ import annotations

import http
import json
import math
from dataclasses import dataclass

from karpor.config.model import Cluster
from karpor.kube.discovery import GROUP
from karpor.kube.humanize import format_timestamp
from karpor.kube.status import ApiError
from karpor.kube.warning import warning_header

#: seconds between two probes of a healthy cluster
DEFAULT_INTERVAL = 10.0
#: seconds a probe (all its requests) may take before it counts as failed
DEFAULT_TIMEOUT = 4.0

READYZ = "/readyz"
HEALTHZ = "/healthz"
VERSION = "/version"

#: at most this much of a failed check's body goes into a message
MAX_DETAIL = 200
#: response bytes a probe keeps (the rest is read and dropped)
MAX_BODY = 64 * 1024

_PHRASES = {s.value: s.phrase for s in http.HTTPStatus}


@dataclass(frozen=True)
class ProbeSettings:
    """The ``healthProbe`` settings: how often, how long, and whether an
    unhealthy cluster's requests fail fast.  ``timeout`` must be less than
    ``interval`` (so probes never pile up); :class:`ValueError` otherwise."""

    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    #: ``True``: answer requests to an unhealthy cluster at once (503);
    #: ``False``: try anyway
    fail_fast: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.timeout < self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be less than interval ({self.interval:g}s)"
            )

    @property
    def retry_interval(self) -> float:
        """Seconds from a failed probe to the next: a quarter of the
        interval, at least a second (and never more than the interval)."""
        return min(self.interval, max(1.0, self.interval / 4))


@dataclass(frozen=True)
class ClusterStatus:
    """What the last probe of a cluster found."""

    healthy: bool
    #: what was asked and answered (``/readyz: ok``, or the failure)
    message: str
    #: wall-clock time (epoch seconds) the probe ended
    probed_at: float
    #: the server's ``gitVersion`` ("" while unknown)
    version: str = ""
    #: the status code of requests refused while it is unhealthy
    refusal_code: int = 503

    def same_as(self, other: ClusterStatus | None) -> bool:
        """Whether ``other`` says the same but for the probe time."""
        return other is not None and (self.healthy, self.version, self.message) == (
            other.healthy,
            other.version,
            other.message,
        )

    @property
    def probe_time(self) -> str:
        """:attr:`probed_at` in RFC 3339."""
        return format_timestamp(self.probed_at)


def _clean(text: str) -> str:
    """One printable line of at most :data:`MAX_DETAIL` characters."""
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def failure_detail(body: bytes) -> str:
    """The useful part of a failed check's body: a ``Status`` message, the
    apiserver's failed checks (``[-]etcd failed: reason withheld``), or its
    first line."""
    text = body[: MAX_DETAIL * 20].decode("utf-8", "replace")
    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        return _clean(doc["message"])
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("[-]")]
    return _clean("; ".join(failed) if failed else lines[0] if lines else "")


def parse_version(body: bytes) -> str | None:
    """``gitVersion`` of a ``/version`` answer (``None`` when there is none)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    version = doc.get("gitVersion") if isinstance(doc, dict) else None
    if isinstance(version, str) and 0 < len(version) <= 64 and version.isprintable():
        return version
    return None


class Probe:
    """One probe of one cluster: the requests to send, one at a time, and
    what their answers mean.

    :attr:`path` is the request to send now (``None``: the probe is over);
    feed its outcome to :meth:`answered` or :meth:`failed`, then look at
    :attr:`path` again.
    """

    def __init__(self, readyz: bool = True) -> None:
        #: the path to ``GET`` now (``None``: done)
        self.path: str | None = READYZ if readyz else HEALTHZ
        #: whether the cluster has ``/readyz`` (as far as this probe knows)
        self.readyz = readyz
        #: the verdict (``None`` until the health request is over)
        self.healthy: bool | None = None
        self.message = ""
        #: the status code of requests refused while unhealthy
        self.refusal_code = 503
        #: the ``gitVersion`` learnt (``None``: not learnt this time)
        self.version: str | None = None

    @property
    def done(self) -> bool:
        """Whether the probe is over."""
        return self.path is None

    def answered(self, code: int, body: bytes) -> None:
        """The request of :attr:`path` got a final answer."""
        path = self.path
        if path is None:
            return
        if path == VERSION:
            self.version = parse_version(body) if 200 <= code < 300 else None
            self.path = None
            return
        if path == READYZ and code == 404:
            self.readyz = False
            self.path = HEALTHZ
            return
        if 200 <= code < 300:
            self.healthy = True
            self.message = f"{path}: ok" if path == READYZ else f"{path}: ok (no /readyz)"
            self.path = VERSION
            return
        message = f"GET {path}: {code}"
        phrase = _PHRASES.get(code)
        if phrase:
            message += f" {phrase}"
        detail = failure_detail(body)
        if detail:
            message += f": {detail}"
        self._fail(message)

    def failed(self, reason: str, code: int = 503) -> None:
        """The request of :attr:`path` failed before an answer (``reason``
        is credential-free, as the pool words its errors); ``code``: the
        status the pool gave it."""
        path = self.path
        if path is None:
            return
        if path == VERSION:
            self.path = None  # the health stands; the version stays as last known
            return
        self._fail(f"GET {path}: {reason}", code)

    def timed_out(self, timeout: float, waiting_for: str = "") -> None:
        """The probe took longer than ``timeout`` seconds; ``waiting_for``
        names what it waited for when not the request itself."""
        what = f" ({waiting_for})" if waiting_for else ""
        self.failed(f"no answer within {timeout:g}s{what}")

    def _fail(self, message: str, code: int = 503) -> None:
        if self.path == HEALTHZ:
            self.readyz = True  # no working fallback: ask /readyz again next time
        self.healthy = False
        self.message = message
        self.refusal_code = code
        self.path = None


@dataclass(frozen=True)
class Outcome:
    """The end of a probe: the new status and when the next probe is due."""

    status: ClusterStatus
    previous: ClusterStatus | None
    #: seconds from now to the next probe
    delay: float

    @property
    def turned(self) -> bool:
        """Whether the cluster turned healthy or unhealthy (or got its first verdict)."""
        previous = self.previous
        return previous is None or previous.healthy != self.status.healthy

    @property
    def changed(self) -> bool:
        """Whether anything but the probe time changed."""
        return not self.status.same_as(self.previous)


class ClusterHealth:
    """One cluster's health from probe to probe."""

    def __init__(self, settings: ProbeSettings) -> None:
        self.settings = settings
        #: the last probe's verdict (``None``: never probed)
        self.status: ClusterStatus | None = None
        self._readyz = True

    def start(self) -> Probe:
        """The next probe."""
        return Probe(self._readyz)

    def finish(self, probe: Probe, now: float) -> Outcome:
        """Take the verdict of ``probe``, ended at wall-clock time ``now``."""
        previous = self.status
        self._readyz = probe.readyz
        healthy = probe.healthy is True
        version = probe.version
        if version is None:
            version = previous.version if previous is not None else ""
        status = ClusterStatus(
            healthy=healthy,
            message=probe.message or "the probe did not finish",
            probed_at=now,
            version=version,
            refusal_code=503 if healthy else probe.refusal_code,
        )
        self.status = status
        settings = self.settings
        delay = settings.interval if healthy else settings.retry_interval
        return Outcome(status, previous, delay)


def change_line(name: str, status: ClusterStatus) -> str:
    """The log line of a cluster turning healthy or unhealthy."""
    if status.healthy:
        version = f" ({status.version})" if status.version else ""
        return f"cluster {name} is healthy{version}: {status.message}"
    return f"cluster {name} is unhealthy: {status.message}"


def refusal(name: str, status: ClusterStatus | None, settings: ProbeSettings) -> ApiError | None:
    """The ``Status`` a request to cluster ``name`` gets without being
    forwarded, or ``None`` to forward it: only an unhealthy cluster with
    ``fail_fast`` is refused (a cluster never probed is not).  The
    ``Status`` carries a ``Warning`` header with the probe's message (which
    holds no secret: pool errors are worded without one, and an endpoint
    has no userinfo), as kubectl prints it where its discovery would show
    only "the server is currently unable to handle the request"."""
    if status is None or status.healthy or not settings.fail_fast:
        return None
    return ApiError(
        status.refusal_code,
        f'cluster "{name}" is unhealthy: {status.message} (probed {status.probe_time}); '
        "requests to it fail fast until a probe succeeds",
        details={
            "name": name,
            "group": GROUP,
            "kind": "clusters",
            "retryAfterSeconds": math.ceil(settings.retry_interval),
        },
        # kubectl prints it even where discovery drops the Status message
        headers=(warning_header(f'cluster "{name}" is unhealthy: {status.message}'),),
    )


def _access(cluster: Cluster) -> tuple[object, ...]:
    return (
        cluster.endpoint,
        cluster.credential,
        cluster.ca_pem,
        cluster.ca_file,
        cluster.insecure,
        cluster.tls_server_name,
    )


def same_access(a: Cluster, b: Cluster) -> bool:
    """Whether two definitions reach the cluster the same way (endpoint,
    TLS, credential): a probe of one tells of the other."""
    return a is b or _access(a) == _access(b)
