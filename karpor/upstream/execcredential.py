"""Cluster credentials from a client-go exec plugin (``client.authentication.k8s.io``).

Cluster files' ``credential.type: OIDC`` with ``execConfig`` and kubeconfig
``user.exec`` (:class:`~karpor.config.model.ExecCredential`) name a command
that prints an ``ExecCredential`` with a bearer token or a client
certificate and key, as EKS (``aws eks get-token``), GKE
(``gke-gcloud-auth-plugin``) and AKS (``kubelogin``) kubeconfigs do.

The plugin runs as kubectl runs it (``k8s.io/client-go/plugin/pkg/client/auth/exec``):

- arguments as configured; a command without ``/`` is looked up in ``PATH``;
- the gateway's environment plus the configured ``env`` plus
  ``KUBERNETES_EXEC_INFO``: ``{"apiVersion": <the configured version>,
  "kind": "ExecCredential", "spec": {"interactive": false}}`` and, with
  ``provideClusterInfo``, ``spec.cluster`` (``server``,
  ``tls-server-name``, ``insecure-skip-tls-verify``,
  ``certificate-authority-data``) (:func:`exec_info`);
- standard input is empty (never interactive), standard output is the
  ``ExecCredential``, standard error is kept for the log only.

The output is checked as client-go checks it (:func:`parse_exec_output`):
``kind: ExecCredential``, the configured ``apiVersion``, a ``status`` with a
token or both ``clientCertificateData`` and ``clientKeyData`` (not only
one), an optional RFC 3339 ``expirationTimestamp``.

:class:`ExecCredentialCache` keeps one result per cluster: it is served
until :data:`REFRESH_MARGIN` seconds (at most half its lifetime) before it
expires; from then on callers still get it while one refresh runs in the
background; once expired, callers wait for the run.  A result without an
expiry is kept until :meth:`ExecCredentialCache.invalidate` (call it when
the cluster answers 401, as client-go does).  Never more than one run per
cluster at a time: concurrent callers share it.  A failed run is remembered
for :data:`FAILURE_BACKOFF` seconds, so a broken plugin is not started for
every request.

Processes are started by a *runner*: :class:`SpawnRunner` with
``reactor.spawnProcess`` (no threads, nothing blocks the reactor) in the
gateway, :func:`subprocess_runner` (blocking, for the command line and
tests).  Errors (:class:`ExecPluginError`) name the cluster and the command,
never the plugin's output; the plugin's standard error goes only to
:attr:`ExecPluginError.detail`, for the gateway's log.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorProcess, IReactorTime
from twisted.python.failure import Failure

from karpor.config.model import Cluster, ExecCredential
from karpor.kube.status import ApiError

#: seconds before expiry at which a credential is refreshed (at most half its lifetime)
REFRESH_MARGIN = 60.0
#: seconds a failed run is remembered (and its error returned) before the next try
FAILURE_BACKOFF = 5.0
#: seconds a plugin may run before it is killed
PLUGIN_TIMEOUT = 60.0
#: bytes of standard output (and of standard error) kept at most
MAX_OUTPUT = 1 << 20
#: characters of standard error kept for the log
_STDERR_EXCERPT = 500

EXEC_INFO_ENV = "KUBERNETES_EXEC_INFO"


class ExecPluginError(Exception):
    """A plugin that could not give a credential.

    ``str()`` is safe to show a caller (cluster, command, what went wrong);
    :attr:`detail` adds the plugin's standard error or install hint, for the
    gateway's log only.
    """

    def __init__(self, cluster: str, message: str, detail: str = "") -> None:
        super().__init__(f'cluster "{cluster}": {message}')
        self.cluster = cluster
        self.detail = detail

    def api_error(self) -> ApiError:
        """The 502 ``Status`` for the caller."""
        return ApiError(502, f"{self}", "BadGateway")


@dataclass(frozen=True)
class ExecResult:
    """What a plugin gave: a token and/or a client certificate; secrets not in ``repr``."""

    token: str | None = field(default=None, repr=False)
    client_certificate_pem: bytes | None = field(default=None, repr=False)
    client_key_pem: bytes | None = field(default=None, repr=False)
    #: when it expires (seconds since the epoch), ``None`` for never
    expiry: float | None = None


@dataclass(frozen=True)
class ProcessResult:
    """A finished process: exit code (``None`` when killed by a signal) and output."""

    exit_code: int | None
    stdout: bytes = field(default=b"", repr=False)
    stderr: bytes = field(default=b"", repr=False)
    #: why the runner stopped it ("" when it ended by itself)
    stopped: str = ""


#: starts ``argv`` with environment ``env`` and fires with its result
Runner = Callable[[Sequence[str], Mapping[str, str]], "Deferred[ProcessResult]"]


# -- sans-IO: the plugin's input and output -----------------------------------


def exec_info(
    credential: ExecCredential, cluster: Cluster, ca_data: bytes | None = None
) -> dict[str, Any]:
    """The ``KUBERNETES_EXEC_INFO`` object kubectl gives the plugin
    (``ca_data``: the cluster's CA bundle, when ``provideClusterInfo``)."""
    spec: dict[str, Any] = {"interactive": False}
    if credential.provide_cluster_info:
        info: dict[str, Any] = {"server": cluster.endpoint}
        if cluster.tls_server_name:
            info["tls-server-name"] = cluster.tls_server_name
        if cluster.insecure:
            info["insecure-skip-tls-verify"] = True
        if ca_data:
            info["certificate-authority-data"] = base64.b64encode(ca_data).decode("ascii")
        spec["cluster"] = info
    return {"kind": "ExecCredential", "apiVersion": credential.api_version, "spec": spec}


def plugin_environment(
    credential: ExecCredential,
    cluster: Cluster,
    base: Mapping[str, str],
    ca_data: bytes | None = None,
) -> dict[str, str]:
    """The plugin's environment: ``base`` (the gateway's), the configured
    ``env``, and ``KUBERNETES_EXEC_INFO``."""
    env = dict(base)
    env.update(credential.env)
    env[EXEC_INFO_ENV] = json.dumps(exec_info(credential, cluster, ca_data))
    return env


def _quote(text: str, limit: int = 80) -> str:
    if len(text) > limit:
        text = text[:limit] + "…"
    return json.dumps(text)


def _parse_time(value: str) -> float:
    moment = datetime.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def parse_exec_output(stdout: bytes, credential: ExecCredential, cluster: str) -> ExecResult:
    """The credential in a plugin's standard output; :class:`ExecPluginError`
    (never quoting a secret) when it is not a usable ``ExecCredential``."""
    command = _quote(os.path.basename(credential.command))

    def bad(reason: str) -> ExecPluginError:
        return ExecPluginError(cluster, f"exec plugin {command} returned {reason}")

    try:
        obj = json.loads(stdout)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        # the decoder's message gives a position, never the text
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else "bytes that are not UTF-8"
        raise bad(f"invalid JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise bad("JSON that is not an object")
    if obj.get("kind") != "ExecCredential":
        raise bad("an object whose kind is not ExecCredential")
    version = obj.get("apiVersion")
    if version != credential.api_version:
        shown = _quote(version) if isinstance(version, str) else "none"
        raise bad(f"API version {shown}; it is configured to use {credential.api_version}")
    status = obj.get("status")
    if not isinstance(status, dict):
        raise bad("no status")
    token = status.get("token") or None
    cert = status.get("clientCertificateData") or None
    key = status.get("clientKeyData") or None
    for name, value in (("token", token), ("clientCertificateData", cert), ("clientKeyData", key)):
        if value is not None and not isinstance(value, str):
            raise bad(f"a status.{name} that is not a string")
    if token is None and cert is None and key is None:
        raise bad("neither a token nor a client certificate and key")
    if (cert is None) != (key is None):
        raise bad("only a client certificate or key, not both")
    if token is not None and any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise bad("a token with characters not allowed in a header")
    expiry: float | None = None
    stamp = status.get("expirationTimestamp")
    if stamp is not None:
        try:
            expiry = _parse_time(stamp)
        except (TypeError, ValueError):
            raise bad("an expirationTimestamp that is not an RFC 3339 time") from None
    return ExecResult(
        token=token,
        client_certificate_pem=cert.encode() if cert else None,
        client_key_pem=key.encode() if key else None,
        expiry=expiry,
    )


def check_process(result: ProcessResult, credential: ExecCredential, cluster: str) -> ExecResult:
    """The credential of a finished plugin run, or :class:`ExecPluginError`."""
    command = _quote(os.path.basename(credential.command))
    stderr = result.stderr.decode("utf-8", "replace").strip()[-_STDERR_EXCERPT:]
    if result.stopped:
        raise ExecPluginError(cluster, f"exec plugin {command} {result.stopped}", stderr)
    if result.exit_code != 0:
        how = (
            f"exit status {result.exit_code}"
            if result.exit_code is not None
            else "killed by a signal"
        )
        raise ExecPluginError(cluster, f"exec plugin {command} failed ({how})", stderr)
    return parse_exec_output(result.stdout, credential, cluster)


def resolve_command(credential: ExecCredential, env: Mapping[str, str], cluster: str) -> str:
    """The plugin's executable: the command itself when it holds a ``/``,
    else looked up in the plugin's ``PATH``."""
    command = credential.command
    found = command if "/" in command else shutil.which(command, path=env.get("PATH"))
    if found is None or not os.access(found, os.X_OK):
        raise ExecPluginError(
            cluster, f"exec plugin {_quote(command)} not found", credential.install_hint
        )
    return found


# -- runners ----------------------------------------------------------------------


class _PluginProtocol(protocol.ProcessProtocol):
    """Collects a plugin's output; fires ``done`` when it has ended."""

    def __init__(self, done: Deferred[ProcessResult], limit: int = MAX_OUTPUT) -> None:
        self.done = done
        self._limit = limit
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        self._sizes = [0, 0]
        self.stopped = ""

    def connectionMade(self) -> None:
        assert self.transport is not None
        self.transport.closeStdin()

    def _collect(self, index: int, chunks: list[bytes], data: bytes) -> None:
        self._sizes[index] += len(data)
        if self._sizes[index] > self._limit:
            self.stop("wrote more than 1 MiB of output")
            return
        chunks.append(data)

    def outReceived(self, data: bytes) -> None:
        self._collect(0, self._out, data)

    def errReceived(self, data: bytes) -> None:
        self._collect(1, self._err, data)

    def stop(self, why: str) -> None:
        """Kill the plugin; its result says ``why``."""
        if not self.stopped:
            self.stopped = why
        if self.transport is not None:
            with contextlib.suppress(error.ProcessExitedAlready):
                self.transport.signalProcess("KILL")

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        code = getattr(value, "exitCode", None) if value is not None else None
        if isinstance(value, error.ProcessDone):
            code = 0
        result = ProcessResult(code, b"".join(self._out), b"".join(self._err), self.stopped)
        if not self.done.called:
            self.done.callback(result)


class SpawnRunner:
    """Runs plugins with ``reactor.spawnProcess``: nothing blocks the reactor."""

    def __init__(
        self, reactor: IReactorProcess, clock: IReactorTime, timeout: float = PLUGIN_TIMEOUT
    ) -> None:
        self._reactor = reactor
        self._clock = clock
        self._timeout = timeout

    def __call__(self, argv: Sequence[str], env: Mapping[str, str]) -> Deferred[ProcessResult]:
        """Start ``argv`` (``argv[0]`` a path) and fire with its result."""
        done: Deferred[ProcessResult] = Deferred()
        proto = _PluginProtocol(done)
        self._reactor.spawnProcess(
            proto,
            argv[0],
            list(argv),
            env=dict(env),
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        timer = self._clock.callLater(
            self._timeout, proto.stop, f"did not finish within {self._timeout:g} s"
        )

        def cancel_timer(result: ProcessResult) -> ProcessResult:
            if timer.active():
                timer.cancel()
            return result

        return done.addCallback(cancel_timer)


def subprocess_runner(
    timeout: float = PLUGIN_TIMEOUT,
) -> Callable[[Sequence[str], Mapping[str, str]], Deferred[ProcessResult]]:
    """A runner that runs the plugin with :mod:`subprocess`, *blocking* the
    calling thread (for ``karpor`` commands and tests, never the reactor)."""

    def run(argv: Sequence[str], env: Mapping[str, str]) -> Deferred[ProcessResult]:
        try:
            done = subprocess.run(
                list(argv),
                env=dict(env),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            stderr = exc.stderr if isinstance(exc.stderr, bytes) else b""
            return defer.succeed(
                ProcessResult(None, b"", stderr, f"did not finish within {timeout:g} s")
            )
        code = done.returncode if done.returncode >= 0 else None
        return defer.succeed(ProcessResult(code, done.stdout, done.stderr))

    return run


# -- the cache ----------------------------------------------------------------------


def _definition(cluster: Cluster) -> tuple[Any, ...]:
    """What a cached result depends on."""
    return (
        cluster.credential,
        cluster.endpoint,
        cluster.ca_pem,
        cluster.ca_file,
        cluster.insecure,
        cluster.tls_server_name,
    )


@dataclass
class _Entry:
    definition: tuple[Any, ...] = field(repr=False)
    result: ExecResult | None = None
    refresh_at: float | None = None
    waiting: list[Deferred[ExecResult]] | None = None
    failure: ExecPluginError | None = None
    failed_until: float = 0.0


class ExecCredentialCache:
    """Exec plugin results per cluster name (see the module docstring).

    ``environ`` is the environment plugins inherit (``os.environ`` when
    ``None``, read at each run).
    """

    def __init__(
        self,
        clock: IReactorTime,
        runner: Runner,
        *,
        refresh_margin: float = REFRESH_MARGIN,
        failure_backoff: float = FAILURE_BACKOFF,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._clock = clock
        self._runner = runner
        self._margin = refresh_margin
        self._backoff = failure_backoff
        self._environ = environ
        self._entries: dict[str, _Entry] = {}

    def __repr__(self) -> str:
        return f"<ExecCredentialCache {len(self._entries)} clusters>"

    def get(self, cluster: Cluster) -> Deferred[ExecResult]:
        """The credential for ``cluster`` (whose credential must be an
        :class:`ExecCredential`); fails with :class:`ExecPluginError`."""
        credential = cluster.credential
        if not isinstance(credential, ExecCredential):
            raise TypeError(f"cluster {cluster.name!r} has no exec credential")
        now = self._clock.seconds()
        definition = _definition(cluster)
        entry = self._entries.get(cluster.name)
        if entry is None or entry.definition != definition:
            entry = _Entry(definition)
            self._entries[cluster.name] = entry
        result = entry.result
        if result is not None:
            valid = result.expiry is None or now < result.expiry
            if valid:
                due = entry.refresh_at is not None and now >= entry.refresh_at
                if due and entry.waiting is None and now >= entry.failed_until:
                    self._start(cluster, credential, entry)  # in the background
                return defer.succeed(result)
        if entry.waiting is not None:
            waiter: Deferred[ExecResult] = Deferred()
            entry.waiting.append(waiter)
            return waiter
        if entry.failure is not None and now < entry.failed_until:
            return defer.fail(entry.failure)
        waiter = Deferred()
        self._start(cluster, credential, entry, waiter)
        return waiter

    def invalidate(self, name: str) -> None:
        """Forget the credential of cluster ``name`` (the cluster refused it);
        a run in progress still completes and is kept."""
        entry = self._entries.get(name)
        if entry is not None:
            entry.result = None
            entry.refresh_at = None

    def forget(self, names: Sequence[str]) -> None:
        """Drop the entries of clusters that no longer exist."""
        for name in names:
            self._entries.pop(name, None)

    def _start(
        self,
        cluster: Cluster,
        credential: ExecCredential,
        entry: _Entry,
        waiter: Deferred[ExecResult] | None = None,
    ) -> None:
        entry.waiting = [waiter] if waiter is not None else []
        name = cluster.name
        try:
            argv, env = self._prepare(cluster, credential)
        except ExecPluginError as exc:
            self._finished(Failure(exc), name, entry)
            return
        ran = defer.maybeDeferred(self._runner, argv, env)
        checked = ran.addCallback(check_process, credential, name)
        checked.addBoth(self._finished, name, entry)

    def _prepare(
        self, cluster: Cluster, credential: ExecCredential
    ) -> tuple[list[str], dict[str, str]]:
        ca_data = cluster.ca_pem
        if credential.provide_cluster_info and ca_data is None and cluster.ca_file:
            try:
                with open(cluster.ca_file, "rb") as f:
                    ca_data = f.read()
            except OSError as exc:
                raise ExecPluginError(
                    cluster.name, f"cannot read the CA file {cluster.ca_file}: {exc.strerror}"
                ) from None
        base = os.environ if self._environ is None else self._environ
        env = plugin_environment(credential, cluster, base, ca_data)
        executable = resolve_command(credential, env, cluster.name)
        return [executable, *credential.args], env

    def _finished(self, outcome: ExecResult | Failure, name: str, entry: _Entry) -> None:
        waiters = entry.waiting or []
        entry.waiting = None
        current = self._entries.get(name) is entry
        now = self._clock.seconds()
        if isinstance(outcome, ExecResult):
            if current:
                entry.result = outcome
                entry.refresh_at = self._refresh_at(outcome, now)
                entry.failure = None
            for w in waiters:
                w.callback(outcome)
            return
        exc = outcome.value
        if not isinstance(exc, ExecPluginError):
            exc = ExecPluginError(
                name, f"exec plugin could not be run ({type(exc).__name__})", str(exc)
            )
        if current:
            entry.failure = exc
            entry.failed_until = now + self._backoff
        for w in waiters:
            w.errback(Failure(exc))

    def _refresh_at(self, result: ExecResult, now: float) -> float | None:
        if result.expiry is None:
            return None
        lifetime = max(0.0, result.expiry - now)
        return result.expiry - min(self._margin, lifetime / 2)
