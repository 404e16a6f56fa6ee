"""Workload 1c: what an OpenID ID token costs the gateway's authenticator, in-process.

:func:`token_costs` times :class:`karpor.auth.oidc.OidcAuthenticator` with
the bench provider's keys (:meth:`bench.fixture.Workspace.oidc_files`):
``first_us``, tokens never seen before (RS256 signature check, claim rules,
one cache entry each); ``cached_us``, one known token asked again (a
SHA-256 and a dictionary lookup).  The figures through a gateway, beside a
client certificate, are table 1b's.
"""

from __future__ import annotations

import base64
import json
import time

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bench.fixture import Workspace
from bench.results import Results, Row
from karpor.auth.jwt import ClaimMapping, JwtIssuer, parse_jwks
from karpor.auth.oidc import OidcAuthenticator

OIDC = "oidc"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def token_costs(results: Results, ws: Workspace, tokens: int = 300, asks: int = 20000) -> None:
    """Time first sights of ``tokens`` fresh tokens and ``asks`` cached ones."""
    issuer_file = ws.root / "oidc-issuer"
    if not issuer_file.exists():
        results.add(Row(OIDC, "karpor", "karpor", "in-process", note="not measured: no provider"))
        return
    issuer = issuer_file.read_text()
    key = serialization.load_pem_private_key((ws.root / "oidc.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    keys = parse_jwks((ws.root / "www" / "jwks.json").read_bytes())
    auth = OidcAuthenticator(
        [JwtIssuer(issuer, ("karpor",), ClaimMapping("sub", ""), ClaimMapping("groups", "oidc:"))],
        cache_size=tokens + 1,
    )
    now = time.time()
    auth.keys_arrived(issuer, keys, ["RS256"], now)
    head = _b64(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode())
    minted = []
    for i in range(tokens):
        claims = {"iss": issuer, "aud": "karpor", "sub": f"user-{i}", "exp": int(now) + 3600}
        body = _b64(json.dumps(claims).encode())
        signature = key.sign(f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
        minted.append(f"{head}.{body}.{_b64(signature)}")
    started = time.perf_counter()
    for token in minted:
        auth.identify(token, now)
    first = (time.perf_counter() - started) / tokens * 1e6
    known = minted[0]
    started = time.perf_counter()
    for _ in range(asks):
        auth.identify(known, now)
    cached = (time.perf_counter() - started) / asks * 1e6
    results.add(
        Row(OIDC, "karpor", "karpor's OIDC authenticator", "in-process", {
            "first_us": first, "cached_us": cached,
        })
    )  # fmt: skip
    print(f"  OIDC ID token: first sight {first:,.1f} µs, cached {cached:,.2f} µs", flush=True)
