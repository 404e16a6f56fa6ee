"""JSON Web Tokens from an OpenID provider, checked sans-IO (no socket, no clock).

:func:`parse_jwt` splits a compact JWS (``header.payload.signature``) and
decodes its header and claims; :func:`verify_signature` checks the
signature with one of the issuer's keys (:class:`JsonWebKey`, read from
its JWKS by :func:`parse_jwks`); :func:`check_claims` applies an issuer's
rules (:class:`JwtIssuer`: ``iss``, ``aud``, ``exp``/``nbf``/``iat`` with
:data:`CLOCK_SKEW` of leeway, the claim validation rules) and maps the
claims to an :class:`~karpor.auth.identity.Identity` (username and groups
claims with their prefixes, as kube-apiserver's structured
``AuthenticationConfiguration`` does).

What is never accepted, whatever a token or a JWKS says:

* ``alg: none`` and the HMAC algorithms (``HS*``): a public key is no
  shared secret (the classic confusion where the JWKS's public key is used
  as an HMAC key);
* an algorithm the key does not fit (an RSA key for ``ES256``), or other
  than the key's own ``alg`` when the JWKS states one;
* a token over :data:`MAX_TOKEN_BYTES`, a JWKS over :data:`MAX_KEYS` keys;
* a user or group name beginning ``system:`` (kube-apiserver refuses them
  too: they name the cluster's components, and karpor's agents).

Every refusal is a :class:`JwtError` whose message says why in general
terms ("token expired", "audience not accepted") and never carries the
token or a claim's value.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from karpor.auth.identity import Identity, IssuedBy

#: seconds of leeway on ``exp``, ``nbf`` and ``iat`` (clocks differ)
CLOCK_SKEW = 60.0
#: the longest token read (bytes of the compact form)
MAX_TOKEN_BYTES = 16 * 1024
#: the most keys read from one JWKS
MAX_KEYS = 64

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
#: the curve each ECDSA algorithm requires (RFC 7518 3.4) and its coordinate size
_CURVES: dict[str, tuple[str, int]] = {
    "ES256": ("P-256", 32),
    "ES384": ("P-384", 48),
    "ES512": ("P-521", 66),
}
_EC_CURVES: dict[str, ec.EllipticCurve] = {
    "P-256": ec.SECP256R1(),
    "P-384": ec.SECP384R1(),
    "P-521": ec.SECP521R1(),
}
#: the signature algorithms checked (asymmetric only)
SUPPORTED_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
#: accepted from every issuer (OpenID Connect's mandatory RS256, and ES256)
DEFAULT_ALGORITHMS = frozenset({"RS256", "ES256"})


class JwtError(ValueError):
    """A token refused; ``str()`` says why, in general terms (never the token)."""


def _b64decode(part: str) -> bytes:
    if not part or len(part) % 4 == 1 or "=" in part:
        raise JwtError("malformed token")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise JwtError("malformed token") from None


def _b64_int(value: object) -> int:
    if not isinstance(value, str):
        raise ValueError("not a base64url string")
    try:
        raw = _b64decode(value)
    except JwtError:
        raise ValueError("not a base64url string") from None
    return int.from_bytes(raw, "big")


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise JwtError("malformed token") from None
    if not isinstance(value, dict):
        raise JwtError("malformed token")
    return value


@dataclass(frozen=True)
class Jwt:
    """A compact JWS, decoded (its signature not yet checked)."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]
    #: ``header.payload`` as sent: what the signature covers
    signed: bytes
    signature: bytes

    @property
    def algorithm(self) -> str:
        """The header's ``alg``."""
        alg = self.header.get("alg")
        return alg if isinstance(alg, str) else ""

    @property
    def key_id(self) -> str | None:
        """The header's ``kid`` (``None`` when absent)."""
        kid = self.header.get("kid")
        return kid if isinstance(kid, str) else None

    @property
    def issuer(self) -> str | None:
        """The ``iss`` claim, unchecked (to pick the issuer whose keys check it)."""
        iss = self.claims.get("iss")
        return iss if isinstance(iss, str) else None


def looks_like_jwt(token: str) -> bool:
    """Whether a bearer token has a JWS's shape (two dots), cheaply."""
    return token.count(".") == 2


def parse_jwt(token: str) -> Jwt:
    """Decode a compact JWS; raises :class:`JwtError` for anything else
    (a JWE, a token over :data:`MAX_TOKEN_BYTES`, bad base64url or JSON)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise JwtError("token too long")
    parts = token.split(".")
    if len(parts) != 3:
        raise JwtError("malformed token")
    header = _json_object(_b64decode(parts[0]))
    claims = _json_object(_b64decode(parts[1]))
    signature = _b64decode(parts[2])
    if "crit" in header:
        raise JwtError("unsupported token header (crit)")
    return Jwt(header, claims, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


# -- keys ---------------------------------------------------------------------------


PublicKey = (
    rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey
)


@dataclass(frozen=True)
class JsonWebKey:
    """One signature-checking key of an issuer's JWKS."""

    kid: str | None
    #: the key's own ``alg`` (``None`` when the JWKS states none)
    alg: str | None
    key: PublicKey
    #: for an EC key, its curve name (``P-256``…); for OKP, ``Ed25519``/``Ed448``
    curve: str = ""

    def fits(self, alg: str) -> bool:
        """Whether this key may check a signature made with ``alg``."""
        if alg not in SUPPORTED_ALGORITHMS or (self.alg is not None and self.alg != alg):
            return False
        if alg.startswith(("RS", "PS")):
            return isinstance(self.key, rsa.RSAPublicKey) and self.key.key_size >= 2048
        if alg.startswith("ES"):
            return isinstance(self.key, ec.EllipticCurvePublicKey) and _CURVES[alg][0] == self.curve
        return isinstance(self.key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey)


def _parse_jwk(jwk: Mapping[str, Any]) -> JsonWebKey:
    kty = jwk.get("kty")
    kid = jwk.get("kid")
    alg = jwk.get("alg")
    if kid is not None and not isinstance(kid, str):
        raise ValueError("kid is not a string")
    if alg is not None and (not isinstance(alg, str) or alg not in SUPPORTED_ALGORITHMS):
        raise ValueError("alg is not a supported signature algorithm")
    if kty == "RSA":
        key: PublicKey = rsa.RSAPublicNumbers(
            _b64_int(jwk.get("e")), _b64_int(jwk.get("n"))
        ).public_key()
        return JsonWebKey(kid, alg, key)
    if kty == "EC":
        crv = jwk.get("crv")
        curve = _EC_CURVES.get(crv) if isinstance(crv, str) else None
        if curve is None:
            raise ValueError("unsupported curve")
        numbers = ec.EllipticCurvePublicNumbers(
            _b64_int(jwk.get("x")), _b64_int(jwk.get("y")), curve
        )
        assert isinstance(crv, str)
        return JsonWebKey(kid, alg, numbers.public_key(), crv)
    if kty == "OKP":
        crv = jwk.get("crv")
        x = jwk.get("x")
        if not isinstance(x, str):
            raise ValueError("x is not a string")
        raw = _b64decode(x)
        if crv == "Ed25519":
            return JsonWebKey(kid, alg, ed25519.Ed25519PublicKey.from_public_bytes(raw), crv)
        if crv == "Ed448":
            return JsonWebKey(kid, alg, ed448.Ed448PublicKey.from_public_bytes(raw), crv)
        raise ValueError("unsupported curve")
    raise ValueError("unsupported key type")


@dataclass(frozen=True)
class KeySet:
    """An issuer's signature keys (its JWKS), and what was skipped in it."""

    keys: tuple[JsonWebKey, ...] = ()
    #: one line per key that could not be used (no key material in it)
    skipped: tuple[str, ...] = ()

    def find(self, kid: str | None, alg: str) -> list[JsonWebKey]:
        """The keys that may check a signature by ``kid`` (any, when the
        token names none) made with ``alg``."""
        return [k for k in self.keys if (kid is None or k.kid == kid) and k.fits(alg)]

    def has_kid(self, kid: str) -> bool:
        """Whether a key of the set is named ``kid``."""
        return any(k.kid == kid for k in self.keys)

    @property
    def algorithms(self) -> frozenset[str]:
        """The algorithms the set's keys announce (their ``alg``)."""
        return frozenset(k.alg for k in self.keys if k.alg is not None)


def parse_jwks(raw: bytes) -> KeySet:
    """Read a JWKS document (``{"keys": [...]}``): keys for signatures
    (``use`` absent or ``sig``) of a supported type; a key that cannot be
    read is skipped and named in :attr:`KeySet.skipped`.  Raises
    :class:`ValueError` when the document is not a JWKS or holds more than
    :data:`MAX_KEYS` keys."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("the JWKS is not JSON") from None
    keys = doc.get("keys") if isinstance(doc, dict) else None
    if not isinstance(keys, list):
        raise ValueError('the JWKS has no "keys" list')
    if len(keys) > MAX_KEYS:
        raise ValueError(f"the JWKS holds {len(keys)} keys (at most {MAX_KEYS} are read)")
    found: list[JsonWebKey] = []
    skipped: list[str] = []
    for i, jwk in enumerate(keys):
        if not isinstance(jwk, dict):
            skipped.append(f"key {i}: not an object")
            continue
        if jwk.get("use", "sig") != "sig":
            continue
        try:
            found.append(_parse_jwk(jwk))
        except (ValueError, TypeError) as exc:
            kid = jwk.get("kid")
            name = f"key {i}" + (f" ({kid[:64]})" if isinstance(kid, str) else "")
            skipped.append(f"{name}: {exc}")
    return KeySet(tuple(found), tuple(skipped))


def verify_signature(jwt: Jwt, key: JsonWebKey) -> bool:
    """Whether ``key`` checks ``jwt``'s signature (``False`` when the key
    does not fit the token's algorithm)."""
    alg = jwt.algorithm
    if not key.fits(alg):
        return False
    k = key.key
    try:
        if isinstance(k, rsa.RSAPublicKey):
            digest = _HASHES[alg[2:]]()
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                else padding.PSS(padding.MGF1(digest), digest.digest_size)
            )
            k.verify(jwt.signature, jwt.signed, pad, digest)
        elif isinstance(k, ec.EllipticCurvePublicKey):
            size = _CURVES[alg][1]
            sig = jwt.signature
            if len(sig) != 2 * size:
                return False
            der = encode_dss_signature(
                int.from_bytes(sig[:size], "big"), int.from_bytes(sig[size:], "big")
            )
            k.verify(der, jwt.signed, ec.ECDSA(_HASHES[alg[2:]]()))
        else:
            k.verify(jwt.signature, jwt.signed)
    except InvalidSignature:
        return False
    return True


# -- claims ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimMapping:
    """``claimMappings.username`` or ``.groups``: the claim and its prefix."""

    claim: str
    prefix: str = ""


@dataclass(frozen=True)
class ClaimRule:
    """``claimValidationRules[]``: the claim must be present and equal ``required_value``."""

    claim: str
    required_value: str


@dataclass(frozen=True)
class JwtIssuer:
    """One ``authentication.jwt[]`` entry: an issuer and how its tokens map to identities."""

    url: str
    audiences: tuple[str, ...]
    username: ClaimMapping = field(default_factory=lambda: ClaimMapping("sub", ""))
    groups: ClaimMapping | None = None
    rules: tuple[ClaimRule, ...] = ()
    #: PEM of the CA for the issuer's TLS (``None``: the system's)
    certificate_authority: str | None = None
    #: the discovery document's URL (``None``: ``url`` + ``/.well-known/openid-configuration``)
    discovery_url: str | None = None


def _number(claims: Mapping[str, Any], name: str, required: bool) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise JwtError(f"token has no {name} claim")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JwtError(f"token {name} claim is not a number")
    return float(value)


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise JwtError(f"token has no {name} claim (a non-empty string)")
    return value


def check_claims(
    issuer: JwtIssuer, claims: Mapping[str, Any], now: float
) -> tuple[Identity, float]:
    """The identity ``claims`` (of a token whose signature checked) prove
    for ``issuer`` at ``now``, and until when (the ``exp`` claim); raises
    :class:`JwtError`."""
    if claims.get("iss") != issuer.url:
        raise JwtError("issuer not accepted")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(a, str) and a in issuer.audiences for a in audiences):
        raise JwtError("audience not accepted")
    exp = _number(claims, "exp", required=True)
    assert exp is not None
    if now > exp + CLOCK_SKEW:
        raise JwtError("token expired")
    nbf = _number(claims, "nbf", required=False)
    if nbf is not None and now < nbf - CLOCK_SKEW:
        raise JwtError("token not valid yet")
    iat = _number(claims, "iat", required=False)
    if iat is not None and now < iat - CLOCK_SKEW:
        raise JwtError("token issued in the future")
    for rule in issuer.rules:
        if claims.get(rule.claim) != rule.required_value:
            raise JwtError(f"token claim {rule.claim} does not have the required value")
    mapping = issuer.username
    user = _string_claim(claims, mapping.claim)
    if (
        mapping.claim == "email"
        and "email_verified" in claims
        and claims["email_verified"] is not True
    ):
        # as kube-apiserver: an email that says it is unverified names no one
        raise JwtError("token email is not verified")
    groups: tuple[str, ...] = ()
    if issuer.groups is not None:
        value = claims.get(issuer.groups.claim)
        names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        if value is not None and not all(isinstance(g, str) for g in names):
            raise JwtError(f"token {issuer.groups.claim} claim is not a string or list of strings")
        groups = tuple(issuer.groups.prefix + g for g in names)
    username = mapping.prefix + user
    # as kube-apiserver: a token never names a system: user or group (those
    # are the cluster's own, and karpor's agents')
    if username.startswith("system:") or any(g.startswith("system:") for g in groups):
        raise JwtError("token maps to a reserved system: name")
    subject = claims.get("sub")
    issued_by = IssuedBy(issuer.url, subject if isinstance(subject, str) else "")
    return Identity(username, groups, issued_by=issued_by), exp


def allowed_algorithms(keys: KeySet, announced: Sequence[str] = ()) -> frozenset[str]:
    """The algorithms an issuer's tokens may use: :data:`DEFAULT_ALGORITHMS`,
    those its keys state and those its discovery document announces
    (``id_token_signing_alg_values_supported``), all of them asymmetric."""
    return (DEFAULT_ALGORITHMS | keys.algorithms | frozenset(announced)) & SUPPORTED_ALGORITHMS
