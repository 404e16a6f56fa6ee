"""Fetching OpenID providers' signature keys, off the request path (``treq``).

A :class:`KeyFetcher` keeps an :class:`~karpor.auth.oidc.OidcAuthenticator`
supplied with every configured issuer's keys:

- at start, and every ``refresh_interval`` seconds (keys rotate), and
  whenever the authenticator asks (a token names a key not in hand; the
  authenticator asks at most once per 10 s per issuer), one fetch per
  issuer at a time: ``GET`` the discovery document
  (``ISSUER/.well-known/openid-configuration``), whose ``issuer`` must be
  the configured URL exactly, then ``GET`` its ``jwks_uri`` (``https``
  only);
- TLS checks the issuer's certificate against ``certificateAuthority``
  when the settings give one, else the system's trust store;
- each fetch is bounded: :data:`FETCH_TIMEOUT` seconds for a response's
  head and as many again for its body (an issuer that trickles its
  document never holds the fetch, which would stop every later one), at
  most :data:`MAX_DOCUMENT_BYTES` per document;
- a failure keeps the keys in hand (the issuer's state says ``failing``
  with the reason); an unreachable issuer at start stops nothing: its
  tokens get 401 until the keys arrive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import treq
from treq.client import HTTPClient
from twisted.internet import defer
from twisted.internet.ssl import Certificate, trustRootFromCertificates
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.web.client import Agent, BrowserLikePolicyForHTTPS, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IResponse

from karpor.auth.jwt import JwtIssuer, parse_jwks
from karpor.auth.oidc import OidcAuthenticator

log = Logger(namespace="karpor.oidc")

#: seconds one request to an issuer may take
FETCH_TIMEOUT = 10.0
#: the largest discovery document or JWKS read
MAX_DOCUMENT_BYTES = 1 << 20
#: seconds between two routine fetches of an issuer's keys
REFRESH_INTERVAL = 3600.0


class FetchError(Exception):
    """Why an issuer's keys could not be fetched (no secret in it)."""


def discovery_url(issuer: JwtIssuer) -> str:
    """Where the issuer's discovery document is."""
    return issuer.discovery_url or issuer.url.rstrip("/") + "/.well-known/openid-configuration"


def _pem_blocks(pem: str) -> list[bytes]:
    marker = "-----END CERTIFICATE-----"
    return [
        (block + marker).strip().encode("ascii")
        for block in pem.split(marker)
        if "-----BEGIN CERTIFICATE-----" in block
    ]


def _client(issuer: JwtIssuer, reactor: Any) -> HTTPClient:
    if issuer.certificate_authority:
        roots = [Certificate.loadPEM(b) for b in _pem_blocks(issuer.certificate_authority)]
        policy = BrowserLikePolicyForHTTPS(trustRoot=trustRootFromCertificates(roots))
    else:
        policy = BrowserLikePolicyForHTTPS()
    return HTTPClient(Agent(reactor, contextFactory=policy))


class KeyFetcher:
    """Keeps an authenticator's issuers' keys fresh (see the module docstring)."""

    def __init__(
        self,
        authenticator: OidcAuthenticator,
        reactor: Any,
        clock: Callable[[], float] = time.time,
        refresh_interval: float = REFRESH_INTERVAL,
        client: Callable[[JwtIssuer, Any], HTTPClient] = _client,
    ) -> None:
        self._authenticator = authenticator
        self._reactor = reactor
        self._clock = clock
        self._refresh_interval = refresh_interval
        self._clients = {
            url: client(state.issuer, reactor) for url, state in authenticator.issuers.items()
        }
        self._in_flight: dict[str, defer.Deferred[None]] = {}
        self._loop: LoopingCall | None = None
        authenticator.request_keys = self._requested

    def start(self) -> None:
        """Fetch every issuer's keys now and every ``refresh_interval`` seconds."""
        loop = self._loop = LoopingCall(self._refresh_all)
        loop.clock = self._reactor
        loop.start(self._refresh_interval, now=True)

    def stop(self) -> None:
        """Stop refreshing (fetches in flight are cancelled)."""
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()
        for d in list(self._in_flight.values()):
            d.cancel()

    def _requested(self, url: str) -> None:
        self.request(url)

    def _refresh_all(self) -> None:
        for url in self._authenticator.issuers:
            self.request(url)

    def request(self, url: str) -> defer.Deferred[None]:
        """Fetch ``url``'s keys unless a fetch is already under way."""
        running = self._in_flight.get(url)
        if running is not None:
            return running
        d = defer.ensureDeferred(self._fetch(url))
        if d.called:
            return d
        self._in_flight[url] = d
        d.addBoth(self._done, url)
        return d

    def _done(self, result: object, url: str) -> None:
        self._in_flight.pop(url, None)

    async def _fetch(self, url: str) -> None:
        state = self._authenticator.issuers[url]
        issuer = state.issuer
        try:
            discovery = await self._get_json(url, discovery_url(issuer), "discovery document")
            if discovery.get("issuer") != issuer.url:
                raise FetchError(
                    "the discovery document names another issuer (its issuer must be "
                    "the configured url exactly)"
                )
            jwks_uri = discovery.get("jwks_uri")
            if not isinstance(jwks_uri, str) or urlsplit(jwks_uri).scheme != "https":
                raise FetchError("the discovery document has no https jwks_uri")
            announced = discovery.get("id_token_signing_alg_values_supported", [])
            if not isinstance(announced, list):
                announced = []
            raw = await self._get(url, jwks_uri, "JWKS")
            try:
                keys = parse_jwks(raw)
            except ValueError as exc:
                raise FetchError(str(exc)) from None
            if not keys.keys:
                raise FetchError("the JWKS holds no usable signature key")
        except FetchError as exc:
            first = state.keys is None and not state.problem
            self._authenticator.keys_failed(url, str(exc))
            log.warn(
                "OIDC issuer {issuer}: cannot fetch its keys: {problem}{keeping}",
                issuer=url,
                problem=str(exc),
                keeping="" if state.keys is None else " (keeping the keys in hand)",
            )
            if first:
                log.info(
                    "OIDC issuer {issuer}: its tokens get 401 until its keys arrive", issuer=url
                )
            return
        was_ready = state.keys is not None
        self._authenticator.keys_arrived(
            url, keys, [a for a in announced if isinstance(a, str)], self._clock()
        )
        for line in keys.skipped:
            log.warn("OIDC issuer {issuer}: JWKS {line} (skipped)", issuer=url, line=line)
        if not was_ready:
            log.info("OIDC issuer {issuer}: {n} signing key(s)", issuer=url, n=len(keys.keys))

    async def _get(self, issuer_url: str, url: str, what: str) -> bytes:
        client = self._clients[issuer_url]
        try:
            response: IResponse = await client.get(
                url, timeout=FETCH_TIMEOUT, headers=Headers({b"Accept": [b"application/json"]})
            )
        except (defer.CancelledError, defer.TimeoutError):
            raise FetchError(f"the {what} did not answer within {FETCH_TIMEOUT:g} s") from None
        except (ResponseFailed, OSError, Exception) as exc:  # every transport error
            raise FetchError(f"the {what} cannot be fetched: {type(exc).__name__}") from None
        body = bytearray()
        late = FetchError(f"the {what} did not arrive within {FETCH_TIMEOUT:g} s")
        timed_out = False

        def collect(data: bytes) -> None:
            if timed_out:
                raise late  # closes the connection
            body.extend(data)
            if len(body) > MAX_DOCUMENT_BYTES:
                raise FetchError(f"the {what} is larger than {MAX_DOCUMENT_BYTES} bytes")

        collected = treq.collect(response, collect)
        collected.addTimeout(FETCH_TIMEOUT, self._reactor)
        try:
            await collected
        except FetchError:
            raise
        except (defer.CancelledError, defer.TimeoutError):
            timed_out = True
            raise late from None
        except Exception as exc:  # the body broke off
            raise FetchError(f"the {what} broke off: {type(exc).__name__}") from None
        if response.code != 200:
            raise FetchError(f"the {what} answered HTTP {response.code}")
        return bytes(body)

    async def _get_json(self, issuer_url: str, url: str, what: str) -> dict[str, Any]:
        raw = await self._get(issuer_url, url, what)
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise FetchError(f"the {what} is not JSON") from None
        if not isinstance(value, dict):
            raise FetchError(f"the {what} is not a JSON object")
        return value
