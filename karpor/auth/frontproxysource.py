"""Reading the front-proxy trust from the host cluster (``requestHeader.fromCluster``).

:func:`fetch` is one blocking ``GET`` of the ConfigMap
``kube-system/extension-apiserver-authentication`` with the pod's service
account: the token file (re-read every time: the kubelet rotates it), the
cluster CA file, the apiserver from ``KUBERNETES_SERVICE_HOST``/``_PORT``
unless ``fromCluster.server`` names it.  :class:`FrontProxyRefresh` applies
what it reads to :class:`~karpor.auth.access.Access`:

- :meth:`FrontProxyRefresh.load`, at start (before serving, blocking): a
  failure is an :class:`~karpor.auth.access.AccessError` and the gateway
  does not start (the message says what to fix; a pod then restarts with it
  in its log);
- :meth:`FrontProxyRefresh.start`: every ``refreshInterval`` seconds the
  fetch runs in the reactor's thread pool (never on the event loop); a
  change of the CA or the allowed names holds for new connections and
  requests; a failure is logged and the last good settings stay.

The token never appears in a message.
"""

from __future__ import annotations

import http.client
import os
import ssl
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import defer, threads
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from karpor.auth.access import Access, AccessError
from karpor.auth.frontproxy import (
    CONFIGMAP,
    CONFIGMAP_PATH,
    FrontProxyError,
    FrontProxyTrust,
    in_cluster_server,
    interpret_response,
    refreshed,
)
from karpor.auth.sections import AuthenticationSettings, FromClusterSettings

log = Logger(namespace="karpor.frontproxy")

#: seconds one read of the ConfigMap may take
FETCH_TIMEOUT = 10.0

Fetch = Callable[[FromClusterSettings], FrontProxyTrust]


def fetch(
    source: FromClusterSettings,
    env: Mapping[str, str] | None = None,
    timeout: float = FETCH_TIMEOUT,
) -> FrontProxyTrust:
    """Read the ConfigMap (blocking); :class:`FrontProxyError` saying why not."""
    try:
        server = source.server or in_cluster_server(os.environ if env is None else env)
        return _get(server, source, timeout)
    except FrontProxyError as exc:
        raise FrontProxyError(f"cannot read the ConfigMap {CONFIGMAP}: {exc}") from None


def _get(server: str, source: FromClusterSettings, timeout: float) -> FrontProxyTrust:
    try:
        with open(source.token_file, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or type(exc).__name__
        raise FrontProxyError(f"token file {source.token_file}: cannot read: {why}") from None
    if not token:
        raise FrontProxyError(f"token file {source.token_file}: empty")
    try:
        context = ssl.create_default_context(cafile=source.ca_file)
    except ssl.SSLError:
        raise FrontProxyError(f"CA file {source.ca_file}: cannot use: no PEM certificate") from None
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise FrontProxyError(f"CA file {source.ca_file}: cannot use: {why}") from None
    parts = urlsplit(server)
    if parts.hostname is None:
        raise FrontProxyError(f"{server}: not a URL")
    conn = http.client.HTTPSConnection(
        parts.hostname, parts.port or 443, context=context, timeout=timeout
    )
    try:
        conn.request(
            "GET",
            parts.path.rstrip("/") + CONFIGMAP_PATH,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
    except ssl.SSLError as exc:
        raise FrontProxyError(f"{server}: TLS: {exc.reason or exc}") from None
    except (OSError, http.client.HTTPException) as exc:
        why = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise FrontProxyError(f"{server}: {why}") from None
    finally:
        conn.close()
    try:
        return interpret_response(response.status, body)
    except FrontProxyError as exc:
        raise FrontProxyError(f"{server}: {exc}") from None


def from_cluster(authentication: AuthenticationSettings) -> FromClusterSettings | None:
    """The ``fromCluster`` settings, if front-proxy trust comes from the host cluster."""
    header = authentication.request_header
    return header.from_cluster if header is not None else None


def check(authentication: AuthenticationSettings, fetcher: Fetch = fetch) -> None:
    """Read the ConfigMap once when ``fromCluster`` is on (the supervisor,
    before it starts workers); :class:`AccessError` when it cannot be used."""
    source = from_cluster(authentication)
    if source is None:
        return
    try:
        trust = fetcher(source)
    except FrontProxyError as exc:
        raise AccessError(f"requestHeader.fromCluster: {exc}") from None
    log.info("front-proxy settings from {cm}: {trust}", cm=CONFIGMAP, trust=trust.describe())


class FrontProxyRefresh:
    """Keeps an :class:`Access`'s front-proxy trust as the host cluster publishes it."""

    def __init__(
        self,
        access: Access,
        source: FromClusterSettings,
        reactor: Any,
        fetcher: Fetch = fetch,
        in_thread: Callable[[Fetch, FromClusterSettings], defer.Deferred[FrontProxyTrust]]
        | None = None,
    ) -> None:
        self.access = access
        self.source = source
        self.reactor = reactor
        self._fetch = fetcher
        self._in_thread = in_thread or self._thread_pool
        self.trust: FrontProxyTrust | None = None
        self._timer: LoopingCall | None = None

    def _thread_pool(
        self, fetcher: Fetch, source: FromClusterSettings
    ) -> defer.Deferred[FrontProxyTrust]:
        reactor = self.reactor
        return threads.deferToThreadPool(reactor, reactor.getThreadPool(), fetcher, source)

    def load(self) -> FrontProxyTrust:
        """The first read, blocking (at start); :class:`AccessError` on failure."""
        try:
            trust = self._fetch(self.source)
        except FrontProxyError as exc:
            raise AccessError(f"requestHeader.fromCluster: {exc}") from None
        self._apply(trust)
        log.info("front-proxy settings from {cm}: {trust}", cm=CONFIGMAP, trust=trust.describe())
        return trust

    def _apply(self, trust: FrontProxyTrust) -> None:
        self.access.set_front_proxy([trust.ca_pem], trust.config)
        self.trust = trust

    def start(self) -> None:
        """Re-read every ``refreshInterval`` seconds."""
        timer = LoopingCall(self.refresh)
        timer.clock = self.reactor
        timer.start(self.source.refresh_interval, now=False)
        self._timer = timer

    def stop(self) -> None:
        """Stop re-reading."""
        timer, self._timer = self._timer, None
        if timer is not None and timer.running:
            timer.stop()

    def refresh(self) -> defer.Deferred[None]:
        """One re-read in a thread (the timer waits for it before the next)."""
        return self._in_thread(self._fetch, self.source).addCallbacks(self._refreshed, self._failed)

    def _refreshed(self, trust: FrontProxyTrust) -> None:
        current = self.trust
        if current is None:
            self._apply(trust)
            return
        applied, notes = refreshed(current, trust)
        if notes:
            self._apply(applied)
        for level, message in notes:
            if level == "warn":
                log.warn("{message}", message=message)
            else:
                log.info("{message}", message=message)

    def _failed(self, failure: Any) -> None:
        error = failure.value
        if isinstance(error, FrontProxyError):
            log.warn("{error} (keeping the last good front-proxy settings)", error=str(error))
        else:
            log.failure("refreshing the front-proxy settings", failure)


def start_refresh(
    authentication: AuthenticationSettings, access: Access, reactor: Any
) -> FrontProxyRefresh | None:
    """With ``fromCluster``: load the trust into ``access`` (blocking; an
    :class:`AccessError` when it cannot) and keep it refreshed."""
    source = from_cluster(authentication)
    if source is None:
        return None
    refresh = FrontProxyRefresh(access, source, reactor)
    refresh.load()
    refresh.start()
    return refresh
