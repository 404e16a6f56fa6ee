"""Bearer tokens from OpenID providers (``authentication.jwt``), sans-IO.

An :class:`OidcAuthenticator` holds, per configured issuer, its signature
keys (an :class:`IssuerKeys`) and a bounded cache of the tokens it has
judged: a request with a known token costs a hash and a dictionary lookup,
no signature check.  It never does I/O itself: when it needs an issuer's
keys (none yet, or a token names a ``kid`` the set does not hold) it calls
``request_keys(url)``, at most once per :data:`REFETCH_INTERVAL` per
issuer; the adapter (:mod:`karpor.auth.oidcfetch`) fetches the discovery
document and the JWKS off the request path and reports back with
:meth:`~OidcAuthenticator.keys_arrived` or
:meth:`~OidcAuthenticator.keys_failed`.  Until the new set arrives the old
keys keep serving; a token the missing keys would check is refused now
(401) and works once they are there.

The issuers' states (:data:`PENDING`, :data:`READY`, :data:`FAILING` and
the last problem) are read by :meth:`~OidcAuthenticator.states` (verbose
health) and reported to watchers on every change
(:meth:`~OidcAuthenticator.watch`: the metrics).

Judgements cached (:data:`CACHE_SIZE` entries at most, the oldest dropped
first): an identity until the token's ``exp`` (plus the clock skew); a
refusal that no new key could change (expired, wrong audience, bad
signature by a known key…) for :data:`REFUSAL_TTL` seconds.  Tokens are
kept only as SHA-256 digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from karpor.auth.identity import Identity
from karpor.auth.jwt import (
    CLOCK_SKEW,
    JwtError,
    JwtIssuer,
    KeySet,
    allowed_algorithms,
    check_claims,
    looks_like_jwt,
    parse_jwt,
    verify_signature,
)

#: the least seconds between two fetches of one issuer's keys asked by tokens
REFETCH_INTERVAL = 10.0
#: tokens judged and remembered, at most
CACHE_SIZE = 10_000
#: seconds a refusal is remembered
REFUSAL_TTL = 10.0

#: an issuer's state: no keys yet
PENDING = "pending"
#: keys in hand
READY = "ready"
#: the last fetch failed (any keys in hand still serve)
FAILING = "failing"


@dataclass
class IssuerKeys:
    """What the gateway knows of one issuer's keys."""

    issuer: JwtIssuer
    keys: KeySet | None = None
    algorithms: frozenset[str] = frozenset()
    #: when the keys in hand arrived (``None``: never)
    fetched_at: float | None = None
    #: when a fetch was last asked for
    asked_at: float = float("-inf")
    #: the last fetch's problem ("" after a success)
    problem: str = ""

    @property
    def state(self) -> str:
        """:data:`PENDING`, :data:`READY` or :data:`FAILING`."""
        if self.problem:
            return FAILING
        return READY if self.keys is not None else PENDING


class _Judgement:
    __slots__ = ("identity", "refusal", "until")

    def __init__(self, identity: Identity | None, refusal: str, until: float) -> None:
        self.identity = identity
        self.refusal = refusal
        self.until = until


class OidcAuthenticator:
    """Judges bearer JWTs against the configured issuers (see the module docstring)."""

    def __init__(
        self,
        issuers: Sequence[JwtIssuer],
        request_keys: Callable[[str], None] = lambda url: None,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.issuers = {i.url: IssuerKeys(i) for i in issuers}
        self.request_keys = request_keys
        self._watchers: list[Callable[[str, str], None]] = []
        self._cache: dict[bytes, _Judgement] = {}
        self._cache_size = cache_size

    def __len__(self) -> int:
        return len(self.issuers)

    # -- the issuers' states --------------------------------------------------------

    def states(self) -> list[tuple[str, str, str]]:
        """``(issuer URL, state, problem)`` of every issuer (problem ``""``
        unless failing; it names no secret)."""
        return [(url, s.state, s.problem) for url, s in self.issuers.items()]

    def watch(self, watcher: Callable[[str, str], None]) -> None:
        """Call ``watcher(issuer URL, state)`` now for every issuer, and
        whenever an issuer's state changes."""
        self._watchers.append(watcher)
        for url, state in self.issuers.items():
            watcher(url, state.state)

    def _changed(self, url: str, before: str, state: IssuerKeys) -> None:
        if state.state != before:
            for watcher in self._watchers:
                watcher(url, state.state)

    # -- the keys, from the adapter ---------------------------------------------------

    def keys_arrived(self, url: str, keys: KeySet, announced: Sequence[str], now: float) -> None:
        """An issuer's JWKS (and the algorithms its discovery document announces) arrived."""
        state = self.issuers.get(url)
        if state is None:
            return
        before = state.state
        state.keys = keys
        state.algorithms = allowed_algorithms(keys, announced)
        state.fetched_at = now
        state.problem = ""
        self._changed(url, before, state)

    def keys_failed(self, url: str, problem: str) -> None:
        """Fetching an issuer's keys failed (``problem`` names no secret); old keys stay."""
        state = self.issuers.get(url)
        if state is not None:
            before = state.state
            state.problem = problem
            self._changed(url, before, state)

    def _ask(self, state: IssuerKeys, now: float) -> None:
        if now - state.asked_at >= REFETCH_INTERVAL:
            state.asked_at = now
            self.request_keys(state.issuer.url)

    # -- tokens ------------------------------------------------------------------------

    def identify(self, token: str, now: float) -> Identity | None:
        """The identity ``token`` proves; ``None`` when it is no JWT (another
        authenticator may know it); raises :class:`JwtError` when it is one
        and is refused."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()
        cache = self._cache
        known = cache.get(digest)
        if known is not None:
            if now < known.until:
                if known.identity is not None:
                    return known.identity
                raise JwtError(known.refusal)
            del cache[digest]
        if not looks_like_jwt(token):
            return None
        try:
            identity, until = self._judge(token, now)
        except _Transient as exc:
            raise JwtError(str(exc)) from None
        except JwtError as exc:
            self._remember(digest, _Judgement(None, str(exc), now + REFUSAL_TTL))
            raise
        self._remember(digest, _Judgement(identity, "", until))
        return identity

    def _remember(self, digest: bytes, judgement: _Judgement) -> None:
        cache = self._cache
        if len(cache) >= self._cache_size:
            del cache[next(iter(cache))]
        cache[digest] = judgement

    def _judge(self, token: str, now: float) -> tuple[Identity, float]:
        jwt = parse_jwt(token)
        state = self.issuers.get(jwt.issuer or "")
        if state is None:
            raise JwtError("issuer not accepted")
        keys = state.keys
        if keys is None:
            self._ask(state, now)
            raise _Transient("the issuer's signing keys are not available yet")
        alg = jwt.algorithm
        if alg not in state.algorithms:
            raise JwtError("signing algorithm not accepted")
        kid = jwt.key_id
        candidates = keys.find(kid, alg)
        if not candidates:
            if kid is not None and not keys.has_kid(kid):
                self._ask(state, now)  # rotated keys: fetch the new set
                raise _Transient("signing key not known")
            raise JwtError("no key of the issuer fits the token's algorithm")
        if not any(verify_signature(jwt, key) for key in candidates):
            raise JwtError("signature invalid")
        identity, exp = check_claims(state.issuer, jwt.claims, now)
        return identity, exp + CLOCK_SKEW


class _Transient(JwtError):
    """A refusal new keys may change: not remembered."""
