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
                          :mod:`karpor.server.state`); a directory the
                          gateway cannot write to is read-only anyway
healthProbe (see below)   cluster health probes: ``interval`` (10 s),
                          ``timeout`` (4 s, less than the interval),
                          ``failFast`` (true; false: try anyway)
metricsAddress (none)     ``HOST:PORT`` where the supervisor serves
                          ``/metrics`` in plain HTTP without
                          authentication, for a scraper (``[::1]:9090``
                          for IPv6)
upstream   (see below)    the clusters' side: ``responseHeaderTimeout``
                          (60 s): how long a cluster may take to send
                          the response head of a request that is not
                          long-running (then ``504``;
                          :mod:`karpor.proxy.deadline`)
clientConnections (per field) bounds on client connections, per worker:
                          ``maxHeaderBytes`` (1048576),
                          ``handshakeTimeout`` (10 s),
                          ``headerReadTimeout`` (30 s),
                          ``idleTimeout`` (120 s), ``maxConnections``
                          (20000); see :mod:`karpor.server.connections`
tlsImplementation fast    ``fast``: karpor's TLS transport and worker
                          reactor (falling back on their own where the
                          installed Twisted or pyOpenSSL lacks what they
                          need); ``twisted``: Twisted's own TLS and stock
                          reactor (:mod:`karpor.net.implementation`)
========== ============== ===========================================

``healthProbe`` fields have flags of their own (``--health-probe-interval``,
``--health-probe-timeout``, ``--health-fail-fast true|false``): a flag's
attribute is ``section.field`` (``health_probe.interval``, see
:data:`SECTION_FIELDS`) and overrides that one field of the file's section.

Relative paths in the file resolve against the file's directory; relative
paths given as flags against the working directory.  An unknown key is an
error naming the file and the key (typos never pass silently).  Flags win
over the file (:func:`merge`).

Adding a key: a field on :class:`Settings` and one :class:`Key` in
:data:`KEYS`.  A later section with keys of its own (``auditLog``,
``authentication``, ``authorization``…) is a frozen dataclass with its own
key table, parsed by :func:`parse_section` from the key's ``parse``
function (see :func:`section_parser`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TypeVar

import yaml

from karpor.auth.sections import (
    AuthenticationSettings,
    AuthorizationSettings,
    parse_audit_log,
    parse_authentication,
    parse_authorization,
    parse_bool,
)
from karpor.config.clusters import describe, quote
from karpor.config.hostnames import parse_host_names
from karpor.config.textfile import TextFileError, read_text
from karpor.health.probe import ProbeSettings
from karpor.server.connections import ClientConnectionSettings

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

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
#: default request timeout; :data:`karpor.proxy.deadline.DEFAULT_RESPONSE_HEADER_TIMEOUT`)
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
    #: where the audit log goes (a file, ``-`` for standard output, ``None``: none)
    audit_log: str | None = None
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
    #: ``fast`` or ``twisted`` (``tlsImplementation``, :mod:`karpor.net.implementation`)
    tls_implementation: str = "fast"
    #: the ``--config`` file these came from ("" for none)
    source: str = ""


class SettingsError(ValueError):
    """Settings that cannot be used; ``problems`` holds ``where: field: message`` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


class Key(NamedTuple):
    """One settings key: its name in the file, its attribute, its parser.

    ``parse(value, base_dir)`` returns the typed value or raises
    :class:`ValueError` with a message; ``base_dir`` resolves relative paths.
    """

    name: str
    attribute: str
    parse: Callable[[Any, str], Any]
    flag: str


def _port(value: Any, base_dir: str) -> int:
    number = _integer(value, base_dir)
    if not 1 <= number <= 65535:
        raise ValueError("must be a port number from 1 to 65535")
    return number


def _integer(value: Any, base_dir: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, not {describe(value)}")
    return value


def _workers(value: Any, base_dir: str) -> int:
    number = _integer(value, base_dir)
    if not 0 <= number <= 1024:
        raise ValueError("must be from 0 (serve in the twistd process) to 1024")
    return number


def _seconds(value: Any, base_dir: str) -> float:
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
        raise ValueError(f"must be a positive number of seconds, not {describe(value)}")
    return float(number)


def _log_format(value: Any, base_dir: str) -> str:
    if value not in LOG_FORMATS:
        raise ValueError(f"must be one of {', '.join(LOG_FORMATS)}")
    return str(value)


def _host(value: Any, base_dir: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value):
        raise ValueError("must be an address or host name")
    return value


def _address(value: Any, base_dir: str) -> str:
    text = value if isinstance(value, str) else ""
    host, colon, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not colon or not host or any(c.isspace() for c in host) or not port.isdigit():
        shown = quote(value) if isinstance(value, str) else describe(value)
        raise ValueError(f"must be HOST:PORT ([::1]:9090 for IPv6), not {shown}")
    _port(port, base_dir)
    return text


def _directory(value: Any, base_dir: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a path, not {describe(value)}")
    return os.path.join(base_dir, value)


def _tls_implementation(value: Any, base_dir: str) -> str:
    if value not in ("fast", "twisted"):
        shown = quote(value) if isinstance(value, str) else describe(value)
        raise ValueError(f"must be fast or twisted, not {shown}")
    return str(value)


def _boolean(value: Any, base_dir: str) -> bool:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # as a flag gives it
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, not {describe(value)}")
    return value


#: the keys of ``healthProbe``
HEALTH_PROBE_KEYS: tuple[Key, ...] = (
    Key("interval", "interval", _seconds, "--health-probe-interval"),
    Key("timeout", "timeout", _seconds, "--health-probe-timeout"),
    Key("failFast", "fail_fast", _boolean, "--health-fail-fast"),
)


def _health_probe(value: Any, base_dir: str) -> ProbeSettings:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping, not {describe(value)}")
    return section_parser(ProbeSettings, HEALTH_PROBE_KEYS, "healthProbe")(value, base_dir)


#: the keys of ``upstream``
UPSTREAM_KEYS: tuple[Key, ...] = (
    Key("responseHeaderTimeout", "response_header_timeout", _seconds, "responseHeaderTimeout"),
)


def _upstream(value: Any, base_dir: str) -> UpstreamSettings:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping, not {describe(value)}")
    return section_parser(UpstreamSettings, UPSTREAM_KEYS, "upstream")(value, base_dir)


def _count(value: Any, base_dir: str) -> int:
    number = _integer(value, base_dir)
    if number < 1:
        raise ValueError("must be a positive integer")
    return number


#: the keys of ``clientConnections``
CLIENT_CONNECTIONS_KEYS: tuple[Key, ...] = (
    Key("maxHeaderBytes", "max_header_bytes", _count, "clientConnections"),
    Key("handshakeTimeout", "handshake_timeout", _seconds, "clientConnections"),
    Key("headerReadTimeout", "header_read_timeout", _seconds, "clientConnections"),
    Key("idleTimeout", "idle_timeout", _seconds, "clientConnections"),
    Key("maxConnections", "max_connections", _count, "clientConnections"),
)


def _client_connections(value: Any, base_dir: str) -> ClientConnectionSettings:
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping, not {describe(value)}")
    parse = section_parser(ClientConnectionSettings, CLIENT_CONNECTIONS_KEYS, "clientConnections")
    return parse(value, base_dir)


#: sections whose fields have flags of their own: attribute -> the fields' keys
SECTION_FIELDS: dict[str, tuple[Key, ...]] = {"health_probe": HEALTH_PROBE_KEYS}


#: the top-level keys of the settings file
KEYS: tuple[Key, ...] = (
    Key("port", "port", _port, "--port"),
    Key("host", "host", _host, "--host"),
    Key("workers", "workers", _workers, "--workers"),
    Key("clustersDir", "clusters_dir", _directory, "--clusters-dir"),
    Key("stateDir", "state_dir", _directory, "--state-dir"),
    Key("drainTimeout", "drain_timeout", _seconds, "--drain-timeout"),
    Key(
        "sessionDrainTimeout",
        "session_drain_timeout",
        _seconds,
        "--session-drain-timeout",
    ),
    Key("logFormat", "log_format", _log_format, "--log-format"),
    Key("auditLog", "audit_log", parse_audit_log, "--audit-log"),
    Key("authentication", "authentication", parse_authentication, "authentication"),
    Key("authorization", "authorization", parse_authorization, "authorization"),
    Key("servingNames", "serving_names", parse_host_names, "--serving-names"),
    Key("stateReadOnly", "state_read_only", parse_bool, "stateReadOnly"),
    Key("healthProbe", "health_probe", _health_probe, "healthProbe"),
    Key("metricsAddress", "metrics_address", _address, "--metrics-address"),
    Key("upstream", "upstream", _upstream, "upstream"),
    Key("clientConnections", "client_connections", _client_connections, "clientConnections"),
    Key("tlsImplementation", "tls_implementation", _tls_implementation, "tlsImplementation"),
)

_T = TypeVar("_T")


def parse_section(
    obj: Any, keys: Sequence[Key], path: str, base_dir: str, errors: list[str]
) -> dict[str, Any]:
    """The attributes a mapping of settings sets, by attribute name.

    Problems are appended to ``errors`` as ``path.key: message``.
    """
    prefix = f"{path}." if path else ""
    if not isinstance(obj, Mapping):
        errors.append(f"{path or 'settings'}: must be a mapping, not {describe(obj)}")
        return {}
    by_name = {k.name: k for k in keys}
    out: dict[str, Any] = {}
    for name, value in obj.items():
        key = by_name.get(name) if isinstance(name, str) else None
        if key is None:
            shown = quote(name) if isinstance(name, str) else repr(name)
            errors.append(f"{prefix}{shown[1:-1]}: unknown key (known: {', '.join(by_name)})")
            continue
        if value is None:
            continue
        try:
            out[key.attribute] = key.parse(value, base_dir)
        except ValueError as exc:
            errors.append(f"{prefix}{name}: {exc}")
    return out


def section_parser(
    cls: Callable[..., _T], keys: Sequence[Key], path: str
) -> Callable[[Any, str], _T]:
    """A :class:`Key` parser for a nested section built as ``cls(**attributes)``."""

    def parse(value: Any, base_dir: str) -> _T:
        errors: list[str] = []
        values = parse_section(value, keys, path, base_dir, errors)
        if errors:
            # the outer key adds its own name; inner lines keep theirs
            raise ValueError("; ".join(e.removeprefix(f"{path}.") for e in errors))
        return cls(**values)

    return parse


def parse_settings(text: str, source: str, base_dir: str | None = None) -> Settings:
    """Settings from the YAML text of a file named ``source`` (sans-IO).

    An empty file gives the defaults.  Raises :class:`SettingsError` with
    one ``source: field: message`` line per problem.
    """
    if base_dir is None:
        base_dir = os.path.dirname(source)
    try:
        obj = yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise SettingsError([f"{source}: yaml: {problem}{where}"]) from None
    if obj is None:
        return Settings(source=source)
    errors: list[str] = []
    values = parse_section(obj, KEYS, "", base_dir, errors)
    if errors:
        raise SettingsError([f"{source}: {e}" for e in errors])
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
                try:
                    fields.setdefault(section, {})[name] = field_key.parse(value, base_dir)
                except ValueError as exc:
                    errors.append(f"{field_key.flag}: {exc}")
            continue
        key = by_attribute.get(attribute)
        if key is None:
            errors.append(f"{attribute}: not a setting")
            continue
        if value is None:
            continue
        try:
            values[attribute] = key.parse(value, base_dir)
        except ValueError as exc:
            errors.append(f"{key.flag}: {exc}")
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
