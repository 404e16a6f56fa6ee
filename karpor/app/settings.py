"""The gateway's settings: the ``--config`` YAML file, then command-line flags.

Keys of the file (all optional; see ``etc/karpor.yaml``):

========== ============== ===========================================
key        default        meaning
========== ============== ===========================================
port       8443           TCP port to serve HTTPS on
host       127.0.0.1      address to bind; loopback by default, so a
                          gateway is never exposed by accident (give
                          ``0.0.0.0`` or ``::`` to serve the network)
workers    number of CPUs worker processes
clustersDir (none)        the clusters directory
stateDir   (none)         the gateway's state: CA, serving certificate
sessionDrainTimeout 3600 s how long a worker replaced by a rolling
                          restart keeps its upgraded sessions (exec,
                          attach, port-forward) before cutting them
                          (flag ``--session-drain-timeout``)
servingNames []           extra DNS names / IP addresses the serving
                          certificate covers (flag ``--serving-names
                          a,b``)
stateReadOnly false       use the state directory as it is (replicas
                          sharing a Secret; see
                          :mod:`karpor.app.state`); a directory the
                          gateway cannot write to is read-only anyway
healthProbe (see below)   cluster health probes: ``interval`` (10 s),
                          ``timeout`` (4 s, less than the interval),
                          ``failFast`` (true; false: try anyway)
metricsAddress (none)     ``HOST:PORT`` where the supervisor serves
                          ``/metrics`` in plain HTTP without
                          authentication, for a scraper (``[::1]:9090``
                          for IPv6), and the fleet status page
                          (:mod:`karpor.status`)
upstream   (see below)    the clusters' side: ``responseHeaderTimeout``
                          (60 s): how long a cluster may take to send
                          the response head of a request that is not
                          long-running (then ``504``;
                          :mod:`karpor.upstream.deadline`)
clientConnections (per field) bounds on client connections, per worker:
                          ``maxHeaderBytes`` (1048576),
                          ``handshakeTimeout`` (10 s),
                          ``headerReadTimeout`` (30 s),
                          ``idleTimeout`` (120 s), ``maxConnections``
                          (20000), ``maxConcurrentStreams`` (1000
                          HTTP/2 streams per connection), ``http2``
                          (true: ALPN offers ``h2``); see
                          :mod:`karpor.http.bounds`
hostRouting (see below)   clusters by TLS server name: ``suffix``
                          (``clusters.karpor``): a request for
                          ``NAME.<suffix>`` (SNI, else ``Host``) goes to
                          cluster NAME, its path the cluster's own; the
                          serving certificate covers ``*.<suffix>``;
                          ``""`` turns it off (:mod:`karpor.http.route`)
limits     (none)         per-user and per-cluster limits, gateway-wide:
                          ``user: {inflight, watches, qps, burst}``,
                          ``cluster: {inflight}``, ``exempt: {groups}``;
                          a limit left out is none (``429`` past one;
                          :mod:`karpor.front.limits`)
tlsImplementation fast    ``fast``: karpor's TLS transport and worker
                          reactor (falling back on their own where the
                          installed Twisted or pyOpenSSL lacks what they
                          need); ``twisted``: Twisted's own TLS and stock
                          reactor (:mod:`karpor.net.implementation`)
auditLog   (none)         the audit log: a path, ``-`` (standard
                          output) or ``{path, maxSizeMB, maxBackups,
                          stdout}`` (:mod:`karpor.auth.sections`)
sessionRecording (none)   exec/attach recordings: ``{dir, clusters}``
                          (:mod:`karpor.config.recording`); re-read
                          with the file on SIGHUP (the workers roll)
========== ============== ===========================================

``healthProbe`` fields have flags of their own (``--health-probe-interval``,
``--health-probe-timeout``, ``--health-fail-fast true|false``): a flag's
attribute is ``section.field`` (``health_probe.interval``, see
:data:`SECTION_FIELDS`) and overrides that one field of the file's section.

Relative paths in the file resolve against the file's directory; relative
paths given as flags against the working directory.  An unknown key is an
error naming the file and the key (typos never pass silently).  Problems
read ``FILE: FIELD: MESSAGE`` (``karpor.yaml: healthProbe.interval: must
be a positive number of seconds, not a number``), as in every configuration
file (:mod:`karpor.config.validation`); a flag's read ``--flag: MESSAGE``.
Flags win over the file (:func:`merge`).

Adding a key: a field on :class:`Settings` and one :class:`Key` in
:data:`KEYS`, whose parser (a :data:`~karpor.config.validation.FieldParser`:
a :class:`~karpor.config.validation.Checker` method such as
``Checker.seconds``, or a function of the same shape) reads its value.  A
section with keys of its own (``auditLog``, ``authentication``,
``healthProbe``…) is a frozen dataclass with its own key table, read by the
parser :func:`section_parser` makes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from karpor.auth.sections import (
    AuditLogSettings,
    AuthenticationSettings,
    AuthorizationSettings,
    parse_audit_log,
    parse_authentication,
    parse_authorization,
)
from karpor.config.hostnames import parse_host_names
from karpor.config.recording import SessionRecordingSettings, parse_session_recording
from karpor.config.textfile import TextFileError, read_text
from karpor.config.validation import (
    Checker,
    FileProblems,
    Key,
    YamlError,
    describe,
    join,
    load_yaml,
    parse_section,
    parse_value,
    problem_line,
    quote,
    section_parser,
)
from karpor.front.limits import ClusterLimits, Exemptions, LimitSettings, UserLimits
from karpor.health.probe import ProbeSettings
from karpor.http.bounds import ClientConnectionSettings
from karpor.http.route import HostRouting, check_host_suffix

DEFAULT_PORT = 8443
DEFAULT_HOST = "127.0.0.1"


def default_workers() -> int:
    """The default worker count: the CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


DEFAULT_DRAIN_TIMEOUT = 30.0
#: how long a worker replaced by a rolling restart keeps its upgraded sessions
DEFAULT_SESSION_DRAIN_TIMEOUT = 3600.0
LOG_FORMATS = ("text", "json")
#: seconds a cluster may take to send a response head (kube-apiserver's
#: default request timeout; :data:`karpor.upstream.deadline.DEFAULT_RESPONSE_HEADER_TIMEOUT`)
DEFAULT_RESPONSE_HEADER_TIMEOUT = 60.0


@dataclass(frozen=True)
class UpstreamSettings:
    """The ``upstream`` section: limits on the clusters' side."""

    #: seconds a cluster may take to send the response head of a request
    #: that is not long-running (``responseHeaderTimeout``)
    response_header_timeout: float = DEFAULT_RESPONSE_HEADER_TIMEOUT


@dataclass(frozen=True)
class Settings:
    """What the gateway runs with."""

    port: int = DEFAULT_PORT
    host: str = DEFAULT_HOST
    workers: int = field(default_factory=default_workers)
    clusters_dir: str | None = None
    state_dir: str | None = None
    #: seconds a draining worker gives long-running streams before ending them
    drain_timeout: float = DEFAULT_DRAIN_TIMEOUT
    #: seconds upgraded sessions (exec, attach, port-forward) of a worker
    #: replaced by a rolling restart (SIGHUP) may run on before they are cut
    session_drain_timeout: float = DEFAULT_SESSION_DRAIN_TIMEOUT
    #: ``text`` (human-readable lines) or ``json`` (one JSON object per line)
    log_format: str = "text"
    #: where the audit log goes (a file and/or standard output, rotation; ``None``: none)
    audit_log: AuditLogSettings | None = None
    authentication: AuthenticationSettings = field(default_factory=AuthenticationSettings)
    authorization: AuthorizationSettings = field(default_factory=AuthorizationSettings)
    #: extra names the serving certificate covers (``servingNames``)
    serving_names: tuple[str, ...] = ()
    #: never write to the state directory (``stateReadOnly``)
    state_read_only: bool = False
    #: cluster health probes (``healthProbe``)
    health_probe: ProbeSettings = field(default_factory=ProbeSettings)
    #: ``HOST:PORT`` of the plain-HTTP ``/metrics`` listener (``None``: none)
    metrics_address: str | None = None
    #: limits on the clusters' side (``upstream``)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    #: bounds on client connections (``clientConnections``)
    client_connections: ClientConnectionSettings = field(default_factory=ClientConnectionSettings)
    #: clusters by TLS server name or ``Host`` (``hostRouting``)
    host_routing: HostRouting = field(default_factory=HostRouting)
    #: per-user and per-cluster limits (``limits``; ``None``: none)
    limits: LimitSettings | None = None
    #: ``fast`` or ``twisted`` (``tlsImplementation``, :mod:`karpor.net.implementation`)
    tls_implementation: str = "fast"
    #: exec and attach sessions recorded (``sessionRecording``; ``None``: none)
    session_recording: SessionRecordingSettings | None = None
    #: the ``--config`` file these came from ("" for none)
    source: str = ""


class SettingsError(FileProblems):
    """Settings that cannot be used; ``problems`` holds ``where: field: message`` lines."""


def _port(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> int | None:
    number = c.integer(obj, key, path)
    if number is not None and not 1 <= number <= 65535:
        c.error(join(path, key), "must be a port number from 1 to 65535")
        return None
    return number


def _workers(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> int | None:
    number = c.integer(obj, key, path)
    if number is not None and not 0 <= number <= 1024:
        c.error(join(path, key), "must be from 0 (serve in the twistd process) to 1024")
        return None
    return number


def _count(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> int | None:
    number = c.integer(obj, key, path)
    if number is not None and number < 1:
        c.error(join(path, key), "must be a positive integer")
        return None
    return number


def _log_format(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    return c.choice(obj, key, path, LOG_FORMATS)


def _host(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    if not isinstance(value, str) or not value or any(ch.isspace() for ch in value):
        c.error(join(path, key), "must be an address or host name")
        return None
    return value


def _address(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = obj.get(key)
    text = value if isinstance(value, str) else ""
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or any(ch.isspace() for ch in host) or not port.isdigit():
        shown = quote(value) if isinstance(value, str) else describe(value)
        c.error(join(path, key), f"must be HOST:PORT ([::1]:9090 for IPv6), not {shown}")
        return None
    if _port(c, {key: port}, key, path) is None:
        return None
    return text


def _boolean(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> bool:
    return c.boolean(obj, key, path, words=True)  # "true"/"false" as a flag gives it


#: the values of ``tlsImplementation``
TLS_IMPLEMENTATIONS = ("fast", "twisted")


def _tls_implementation(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    return c.choice(obj, key, path, TLS_IMPLEMENTATIONS)


#: the keys of ``healthProbe``
HEALTH_PROBE_KEYS: tuple[Key, ...] = (
    Key("interval", "interval", Checker.seconds, "--health-probe-interval"),
    Key("timeout", "timeout", Checker.seconds, "--health-probe-timeout"),
    Key("failFast", "fail_fast", _boolean, "--health-fail-fast"),
)

#: the keys of ``upstream``
UPSTREAM_KEYS: tuple[Key, ...] = (
    Key(
        "responseHeaderTimeout", "response_header_timeout", Checker.seconds, "responseHeaderTimeout"
    ),
)


def _host_suffix(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> str | None:
    value = c.string(obj, key, path)
    if value is None:
        return None
    try:
        return check_host_suffix(value)
    except ValueError as exc:
        c.error(join(path, key), str(exc))
        return None


#: the keys of ``hostRouting``
HOST_ROUTING_KEYS: tuple[Key, ...] = (Key("suffix", "suffix", _host_suffix, "hostRouting"),)

#: the keys of ``clientConnections``
CLIENT_CONNECTIONS_KEYS: tuple[Key, ...] = (
    Key("maxHeaderBytes", "max_header_bytes", _count, "clientConnections"),
    Key("handshakeTimeout", "handshake_timeout", Checker.seconds, "clientConnections"),
    Key("headerReadTimeout", "header_read_timeout", Checker.seconds, "clientConnections"),
    Key("idleTimeout", "idle_timeout", Checker.seconds, "clientConnections"),
    Key("maxConnections", "max_connections", _count, "clientConnections"),
    Key("maxConcurrentStreams", "max_concurrent_streams", _count, "clientConnections"),
    Key("http2", "http2", Checker.boolean, "clientConnections"),
)


def _rate(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> float | None:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        c.error(join(path, key), "must be a positive number (requests per second)")
        return None
    return float(value)


def _groups(c: Checker, obj: Mapping[str, Any], key: str, path: str) -> tuple[str, ...] | None:
    return c.strings(obj, key, path, empty_items=False)


#: the keys of ``limits`` and of its sections
LIMITS_USER_KEYS: tuple[Key, ...] = (
    Key("inflight", "inflight", _count, "limits"),
    Key("watches", "watches", _count, "limits"),
    Key("qps", "qps", _rate, "limits"),
    Key("burst", "burst", _count, "limits"),
)
LIMITS_KEYS: tuple[Key, ...] = (
    Key("user", "user", section_parser(UserLimits, LIMITS_USER_KEYS), "limits"),
    Key(
        "cluster",
        "cluster",
        section_parser(ClusterLimits, (Key("inflight", "inflight", _count, "limits"),)),
        "limits",
    ),
    Key(
        "exempt",
        "exempt",
        section_parser(Exemptions, (Key("groups", "groups", _groups, "limits"),)),
        "limits",
    ),
)


#: sections whose fields have flags of their own: attribute -> the fields' keys
SECTION_FIELDS: dict[str, tuple[Key, ...]] = {"health_probe": HEALTH_PROBE_KEYS}


#: the top-level keys of the settings file
KEYS: tuple[Key, ...] = (
    Key("port", "port", _port, "--port"),
    Key("host", "host", _host, "--host"),
    Key("workers", "workers", _workers, "--workers"),
    Key("clustersDir", "clusters_dir", Checker.path, "--clusters-dir"),
    Key("stateDir", "state_dir", Checker.path, "--state-dir"),
    Key("drainTimeout", "drain_timeout", Checker.seconds, "--drain-timeout"),
    Key(
        "sessionDrainTimeout",
        "session_drain_timeout",
        Checker.seconds,
        "--session-drain-timeout",
    ),
    Key("logFormat", "log_format", _log_format, "--log-format"),
    Key("auditLog", "audit_log", parse_audit_log, "--audit-log"),
    Key("authentication", "authentication", parse_authentication, "authentication"),
    Key("authorization", "authorization", parse_authorization, "authorization"),
    Key("servingNames", "serving_names", parse_host_names, "--serving-names"),
    Key("stateReadOnly", "state_read_only", Checker.boolean, "stateReadOnly"),
    Key(
        "healthProbe",
        "health_probe",
        section_parser(ProbeSettings, HEALTH_PROBE_KEYS),
        "healthProbe",
    ),
    Key("metricsAddress", "metrics_address", _address, "--metrics-address"),
    Key("upstream", "upstream", section_parser(UpstreamSettings, UPSTREAM_KEYS), "upstream"),
    Key(
        "clientConnections",
        "client_connections",
        section_parser(ClientConnectionSettings, CLIENT_CONNECTIONS_KEYS),
        "clientConnections",
    ),
    Key("tlsImplementation", "tls_implementation", _tls_implementation, "tlsImplementation"),
    Key("limits", "limits", section_parser(LimitSettings, LIMITS_KEYS), "limits"),
    Key(
        "hostRouting",
        "host_routing",
        section_parser(HostRouting, HOST_ROUTING_KEYS),
        "hostRouting",
    ),
    Key("sessionRecording", "session_recording", parse_session_recording, "sessionRecording"),
)


def parse_settings(text: str, source: str, base_dir: str | None = None) -> Settings:
    """Settings from the YAML text of a file named ``source`` (sans-IO).

    An empty file gives the defaults.  Raises :class:`SettingsError` with
    one ``source: field: message`` line per problem
    (:mod:`karpor.config.validation`).
    """
    if base_dir is None:
        base_dir = os.path.dirname(source)
    try:
        obj = load_yaml(text)
    except YamlError as exc:
        raise SettingsError([problem_line(source, 0, "yaml", str(exc))]) from None
    if obj is None:
        return Settings(source=source)
    c = Checker(base_dir)
    top = c.mapping(obj, "")
    values = parse_section(c, top, KEYS, "") if top is not None else {}
    if c.errors:
        raise SettingsError(c.lines(source))
    return Settings(source=source, **values)


def load_settings(path: str) -> Settings:
    """Settings from the ``--config`` file at ``path``."""
    try:
        text = read_text(path)
    except TextFileError as exc:
        raise SettingsError([str(exc)]) from None
    return parse_settings(text, path)


def merge(
    file_settings: Settings, flag_overrides: Mapping[str, Any], base_dir: str = ""
) -> Settings:
    """``file_settings`` with the flags given on the command line.

    ``flag_overrides`` maps :class:`Settings` attribute names
    (``clusters_dir``) to flag values, typed or as strings (``"8443"``);
    ``None`` means the flag was not given; ``section.field`` names one
    field of a section (:data:`SECTION_FIELDS`).  Relative paths resolve
    against ``base_dir`` (the working directory when empty).  Raises
    :class:`SettingsError` with ``--flag: message`` lines.
    """
    by_attribute = {k.attribute: k for k in KEYS}
    errors: list[str] = []

    def parse(key: Key, value: Any) -> Any:
        try:
            return parse_value(key.parse, value, key.flag, base_dir)
        except FileProblems as exc:
            errors.extend(exc.problems)
            return None

    values: dict[str, Any] = {}
    fields: dict[str, dict[str, Any]] = {}
    for attribute, value in flag_overrides.items():
        section, dot, name = attribute.partition(".")
        if dot:
            field_key = next(
                (k for k in SECTION_FIELDS.get(section, ()) if k.attribute == name), None
            )
            if field_key is None:
                errors.append(f"{attribute}: not a setting")
            elif value is not None:
                before = len(errors)
                parsed = parse(field_key, value)
                if len(errors) == before:
                    fields.setdefault(section, {})[name] = parsed
            continue
        key = by_attribute.get(attribute)
        if key is None:
            errors.append(f"{attribute}: not a setting")
            continue
        if value is None:
            continue
        before = len(errors)
        parsed = parse(key, value)
        if len(errors) == before:
            values[attribute] = parsed
    for section, changed in fields.items():
        base = values.get(section, getattr(file_settings, section))
        try:
            values[section] = dataclasses.replace(base, **changed)
        except ValueError as exc:  # the fields disagree (a timeout above the interval)
            flags = {k.attribute: k.flag for k in SECTION_FIELDS[section]}
            errors.append(f"{', '.join(flags[n] for n in changed)}: {exc}")
    if errors:
        raise SettingsError(errors)
    return dataclasses.replace(file_settings, **values)
