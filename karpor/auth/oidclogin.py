"""``karpor login``'s logic, sans-IO: the OpenID Connect client side.

What the command (:mod:`karpor.cli.login`) decides without touching a
socket, a file or the clock:

* the provider's endpoints from its discovery document
  (:func:`parse_discovery`; its ``issuer`` must be the one asked for);
* PKCE (RFC 7636, ``S256``): :func:`pkce_challenge` of a verifier made by
  :func:`pkce_verifier`;
* the authorization request URL of the authorization-code flow
  (:func:`authorization_url`; ``prompt=consent`` when a refresh token is
  asked for, as OpenID Connect wants for ``offline_access``), the loopback
  redirect URI (:func:`redirect_uri`, loopback addresses only) and the
  answer the browser brings back to it (:func:`parse_callback`: the
  ``state`` must match);
* the token endpoint's answers (:func:`parse_token_response`) and the
  device-code flow's polling (:func:`parse_device_authorization`,
  :func:`poll_decision`);
* the token cache (:class:`CachedTokens`; one file per issuer and client
  id, :func:`cache_file_name`) and what to do with it
  (:func:`next_step`: use the ID token, refresh it, or sign in);
* the ``ExecCredential`` printed for kubectl (:func:`exec_credential`).

The ID token's claims are read without checking its signature: it came
straight from the token endpoint over TLS, and the gateway checks it on
every use; only ``exp`` (and ``nonce`` after the authorization-code flow)
are looked at.  No function here puts a token in an error message.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

#: the apiVersion of the ExecCredential printed
EXEC_API_VERSION = "client.authentication.k8s.io/v1"
#: the scopes always asked for (an ID token, and a refresh token)
BASE_SCOPES = ("openid", "offline_access")
#: seconds an ID token must still be valid to be handed out from the cache
MIN_VALIDITY = 5.0
#: the redirect path on the loopback listener
CALLBACK_PATH = "/callback"
#: the device-code grant type (RFC 8628)
DEVICE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"
#: seconds between two polls when the provider names none (RFC 8628 3.2)
DEFAULT_POLL_INTERVAL = 5.0
#: seconds ``slow_down`` adds to the interval (RFC 8628 3.5)
SLOW_DOWN_STEP = 5.0

#: what :func:`next_step` returns
USE, REFRESH, SIGN_IN = "use", "refresh", "sign-in"


class LoginError(Exception):
    """A sign-in failed; ``str()`` says why (never a token)."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def scopes(extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The scopes asked for: :data:`BASE_SCOPES` then ``extra``, each once."""
    out: list[str] = []
    for scope in (*BASE_SCOPES, *extra):
        for word in scope.split():
            if word not in out:
                out.append(word)
    return tuple(out)


# -- discovery -------------------------------------------------------------------------


@dataclass(frozen=True)
class Provider:
    """The endpoints of an OpenID provider (its discovery document)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    #: ``None`` when the provider offers no device-code flow
    device_authorization_endpoint: str | None = None


def discovery_url(issuer: str) -> str:
    """Where ``issuer``'s discovery document is."""
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _https(url: object, what: str) -> str:
    if not isinstance(url, str) or urlsplit(url).scheme != "https":
        raise LoginError(f"the provider's discovery document has no https {what}")
    return url


def parse_discovery(issuer: str, document: Mapping[str, Any]) -> Provider:
    """The endpoints of the provider ``issuer`` from its discovery document."""
    if document.get("issuer") != issuer:
        raise LoginError(
            "the provider's discovery document names another issuer "
            "(--issuer must be the provider's issuer URL exactly)"
        )
    device = document.get("device_authorization_endpoint")
    return Provider(
        issuer=issuer,
        authorization_endpoint=_https(
            document.get("authorization_endpoint"), "authorization_endpoint"
        ),
        token_endpoint=_https(document.get("token_endpoint"), "token_endpoint"),
        device_authorization_endpoint=_https(device, "device_authorization_endpoint")
        if device is not None
        else None,
    )


# -- PKCE and the authorization-code flow ------------------------------------------------


def pkce_verifier(random: bytes) -> str:
    """A PKCE code verifier from 32 or more random bytes (43+ characters)."""
    if len(random) < 32:
        raise ValueError("a PKCE verifier needs at least 32 random bytes")
    return _b64url(random)[:128]


def pkce_challenge(verifier: str) -> str:
    """The ``S256`` code challenge of ``verifier`` (RFC 7636 4.2)."""
    return _b64url(hashlib.sha256(verifier.encode("ascii")).digest())


def parse_listen_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` of the loopback listener; only loopback addresses
    (and ``localhost``) are accepted: the redirect carries the code."""
    host, sep, port_text = address.rpartition(":")
    host = host.strip("[]")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise LoginError(f"--listen-address {address!r}: expected HOST:PORT")
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise LoginError(
                f"--listen-address {address!r}: the redirect listener binds loopback only "
                "(127.0.0.1, ::1 or localhost)"
            )
    return host, int(port_text)


def redirect_uri(host: str, port: int) -> str:
    """The loopback redirect URI for a listener on ``host:port``."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}{CALLBACK_PATH}"


def authorization_url(
    provider: Provider,
    client_id: str,
    redirect: str,
    scope: Iterable[str],
    state: str,
    nonce: str,
    verifier: str,
) -> str:
    """The URL the browser opens to sign in (authorization-code flow with PKCE)."""
    words = list(scope)
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect,
        "scope": " ".join(words),
        "state": state,
        "nonce": nonce,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    if "offline_access" in words:
        params["prompt"] = "consent"  # OpenID Connect Core 11: offline_access needs it
    endpoint = provider.authorization_endpoint
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)


def parse_callback(target: str, state: str) -> str | None:
    """The authorization code the redirect to ``target`` (path and query)
    brings; ``None`` when ``target`` is not the callback (a favicon…);
    raises :class:`LoginError` for an error answer or a wrong ``state``."""
    parts = urlsplit(target)
    if parts.path != CALLBACK_PATH:
        return None
    query = parse_qs(parts.query)
    if query.get("state", [""])[0] != state:
        raise LoginError("the sign-in answer does not belong to this login (state mismatch)")
    error = query.get("error", [""])[0]
    if error:
        description = query.get("error_description", [""])[0]
        raise LoginError(f"the provider refused the sign-in: {error}: {description}"[:300])
    code = query.get("code", [""])[0]
    if not code:
        raise LoginError("the sign-in answer holds no authorization code")
    return code


def code_request(client_id: str, code: str, redirect: str, verifier: str) -> dict[str, str]:
    """The token request's form for an authorization code."""
    return {
        "grant_type": "authorization_code",
        "client_id": client_id,
        "code": code,
        "redirect_uri": redirect,
        "code_verifier": verifier,
    }


def refresh_request(client_id: str, refresh_token: str) -> dict[str, str]:
    """The token request's form for a refresh."""
    return {"grant_type": "refresh_token", "client_id": client_id, "refresh_token": refresh_token}


# -- the device-code flow -------------------------------------------------------------


@dataclass(frozen=True)
class DeviceAuthorization:
    """The device authorization response (RFC 8628 3.2)."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str | None
    expires_in: float
    interval: float


def parse_device_authorization(document: Mapping[str, Any]) -> DeviceAuthorization:
    """Read the device authorization response."""
    device_code = document.get("device_code")
    user_code = document.get("user_code")
    uri = document.get("verification_uri") or document.get("verification_url")
    if not isinstance(device_code, str) or not isinstance(user_code, str):
        raise LoginError("the device authorization answer has no device_code or user_code")
    if not isinstance(uri, str):
        raise LoginError("the device authorization answer has no verification_uri")
    complete = document.get("verification_uri_complete")
    expires = document.get("expires_in")
    interval = document.get("interval")
    return DeviceAuthorization(
        device_code,
        user_code,
        uri,
        complete if isinstance(complete, str) else None,
        float(expires) if isinstance(expires, int | float) and expires > 0 else 600.0,
        float(interval)
        if isinstance(interval, int | float) and 0 < interval <= 60
        else DEFAULT_POLL_INTERVAL,
    )


def device_request(client_id: str, device_code: str) -> dict[str, str]:
    """The token request's form while polling the device-code flow."""
    return {"grant_type": DEVICE_GRANT, "client_id": client_id, "device_code": device_code}


def poll_decision(error: str, interval: float) -> float:
    """The next polling interval after the token endpoint answered
    ``error``; raises :class:`LoginError` when polling must stop."""
    if error == "authorization_pending":
        return interval
    if error == "slow_down":
        return interval + SLOW_DOWN_STEP
    if error == "access_denied":
        raise LoginError("the sign-in was denied")
    if error == "expired_token":
        raise LoginError("the code expired before the sign-in completed; try again")
    raise LoginError(f"the provider refused the device sign-in: {error}"[:300])


# -- tokens --------------------------------------------------------------------------


class TokenError(LoginError):
    """The token endpoint answered an OAuth error (``error`` is its code)."""

    def __init__(self, error: str, description: str = "") -> None:
        super().__init__(
            f"the provider answered {error}" + (f": {description}" if description else "")
        )
        self.error = error


def claims_of(id_token: str) -> dict[str, Any]:
    """The claims of ``id_token``, unchecked (see the module docstring)."""
    parts = id_token.split(".")
    if len(parts) != 3:
        raise LoginError("the provider's ID token is not a JWT")
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        claims = json.loads(payload)
    except ValueError:
        raise LoginError("the provider's ID token cannot be read") from None
    if not isinstance(claims, dict):
        raise LoginError("the provider's ID token cannot be read")
    return claims


def expiry_of(id_token: str) -> float:
    """The ``exp`` of ``id_token`` (seconds since the epoch)."""
    exp = claims_of(id_token).get("exp")
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        raise LoginError("the provider's ID token has no exp claim")
    return float(exp)


def check_nonce(id_token: str, nonce: str) -> None:
    """Raise :class:`LoginError` unless ``id_token`` carries ``nonce``."""
    if claims_of(id_token).get("nonce") != nonce:
        raise LoginError("the provider's ID token does not carry this login's nonce")


@dataclass(frozen=True)
class CachedTokens:
    """What the cache keeps for one issuer and client id."""

    id_token: str
    refresh_token: str | None = None

    def to_json(self, issuer: str, client_id: str) -> bytes:
        """The cache file's content."""
        doc: dict[str, Any] = {"issuer": issuer, "clientID": client_id, "idToken": self.id_token}
        if self.refresh_token:
            doc["refreshToken"] = self.refresh_token
        return json.dumps(doc, indent=1).encode() + b"\n"

    @classmethod
    def from_json(cls, raw: bytes) -> CachedTokens | None:
        """The cached tokens; ``None`` for a file that is not a cache file."""
        try:
            doc = json.loads(raw)
        except ValueError:
            return None
        if not isinstance(doc, dict) or not isinstance(doc.get("idToken"), str):
            return None
        refresh = doc.get("refreshToken")
        return cls(doc["idToken"], refresh if isinstance(refresh, str) and refresh else None)


def parse_token_response(
    status: int, document: Mapping[str, Any], previous_refresh: str | None = None
) -> CachedTokens:
    """The tokens a token-endpoint answer holds; an OAuth error is a
    :class:`TokenError`.  A refresh that returns no new refresh token keeps
    ``previous_refresh``."""
    error = document.get("error")
    if status != 200 or error is not None:
        description = document.get("error_description")
        raise TokenError(
            error if isinstance(error, str) else f"HTTP {status}",
            description[:200] if isinstance(description, str) else "",
        )
    id_token = document.get("id_token")
    if not isinstance(id_token, str) or not id_token:
        raise LoginError("the provider returned no ID token (is the openid scope allowed?)")
    expiry_of(id_token)
    refresh = document.get("refresh_token")
    return CachedTokens(
        id_token, refresh if isinstance(refresh, str) and refresh else previous_refresh
    )


def cache_file_name(issuer: str, client_id: str) -> str:
    """The cache file of ``issuer`` and ``client_id`` (a digest: no
    separator of either can escape the cache directory)."""
    digest = hashlib.sha256(f"{issuer}\n{client_id}".encode()).hexdigest()
    return f"{digest[:32]}.json"


def next_step(cached: CachedTokens | None, now: float) -> str:
    """:data:`USE` the cached ID token, :data:`REFRESH` it, or :data:`SIGN_IN`."""
    if cached is None:
        return SIGN_IN
    try:
        expiry = expiry_of(cached.id_token)
    except LoginError:
        expiry = 0.0
    if now + MIN_VALIDITY < expiry:
        return USE
    return REFRESH if cached.refresh_token else SIGN_IN


def _rfc3339(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(seconds), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def exec_credential(id_token: str) -> dict[str, Any]:
    """The ``ExecCredential`` kubectl reads from the plugin: the ID token,
    until its expiry."""
    return {
        "apiVersion": EXEC_API_VERSION,
        "kind": "ExecCredential",
        "spec": {},
        "status": {"token": id_token, "expirationTimestamp": _rfc3339(expiry_of(id_token))},
    }
