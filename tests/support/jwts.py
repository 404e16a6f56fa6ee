"""Signed test tokens and JWKS for the OpenID tests: real keys, real signatures."""

from __future__ import annotations

import base64
import json
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from karpor.auth.jwt import ClaimMapping, JwtIssuer, KeySet, parse_jwks
from karpor.auth.oidc import OidcAuthenticator

ISSUER = "https://issuer.example.com"
NOW = 1_800_000_000.0
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64_int(n: int, size: int | None = None) -> str:
    return b64(n.to_bytes(size or (n.bit_length() + 7) // 8, "big"))


def jwk(key: Any, kid: str, alg: str | None = None) -> dict[str, Any]:
    public = key.public_key()
    out: dict[str, Any]
    if isinstance(public, rsa.RSAPublicKey):
        numbers = public.public_numbers()
        out = {"kty": "RSA", "n": b64_int(numbers.n), "e": b64_int(numbers.e)}
    elif isinstance(public, ec.EllipticCurvePublicKey):
        point = public.public_numbers()
        out = {
            "kty": "EC",
            "crv": "P-256",
            "x": b64_int(point.x, 32),
            "y": b64_int(point.y, 32),
        }
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        out = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    out["kid"] = kid
    if alg:
        out["alg"] = alg
    return out


def keyset(*entries: dict[str, Any]) -> KeySet:
    return parse_jwks(json.dumps({"keys": list(entries)}).encode())


def sign(
    claims: dict[str, Any], key: Any = RSA_KEY, alg: str = "RS256", kid: str | None = "k1"
) -> str:
    header: dict[str, Any] = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    signed = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    data = signed.encode()
    if alg == "none":
        signature = b""
    elif alg.startswith("RS"):
        signature = key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    elif alg.startswith("PS"):
        signature = key.sign(data, padding.PSS(padding.MGF1(hashes.SHA256()), 32), hashes.SHA256())
    elif alg.startswith("ES"):
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg.startswith("HS"):
        mac = hmac.HMAC(key, hashes.SHA256())
        mac.update(data)
        signature = mac.finalize()
    else:
        signature = key.sign(data)
    return f"{signed}.{b64(signature)}"


def claims(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": "karpor",
        "sub": "1234",
        "email": "ada@example.com",
        "groups": ["dev", "ops"],
        "exp": NOW + 300,
        "iat": NOW - 10,
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


ISSUER_CONFIG = JwtIssuer(
    url=ISSUER,
    audiences=("karpor",),
    username=ClaimMapping("email", ""),
    groups=ClaimMapping("groups", "oidc:"),
)


def authenticator(keys: KeySet | None = None, **kwargs: Any) -> tuple[OidcAuthenticator, list[str]]:
    asked: list[str] = []
    auth = OidcAuthenticator([ISSUER_CONFIG], asked.append, **kwargs)
    if keys is not None:
        auth.keys_arrived(ISSUER, keys, [], NOW)
    return auth, asked


RSA_SET = keyset(jwk(RSA_KEY, "k1"))
