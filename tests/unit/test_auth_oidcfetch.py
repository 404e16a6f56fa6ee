"""The OpenID providers' key fetcher (karpor.auth.oidcfetch) against an
in-memory issuer (treq.testing.StubTreq): keys arrive, failures keep the
keys in hand, and an issuer that never finishes a document frees the fetch
after FETCH_TIMEOUT."""

from __future__ import annotations

import json
from typing import Any

from support.jwts import ISSUER, ISSUER_CONFIG, RSA_KEY, jwk
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from karpor.auth.jwt import JwtIssuer
from karpor.auth.oidc import OidcAuthenticator
from karpor.auth.oidcfetch import FETCH_TIMEOUT, KeyFetcher

JWKS = json.dumps({"keys": [jwk(RSA_KEY, "k1")]}).encode()


class Issuer(Resource):
    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.stall_jwks = False
        self.discovery: dict[str, Any] = {"issuer": ISSUER, "jwks_uri": f"{ISSUER}/jwks"}

    def render_GET(self, request: Request) -> bytes | int:
        if request.path == b"/.well-known/openid-configuration":
            return json.dumps(self.discovery).encode()
        if request.path == b"/jwks":
            if self.stall_jwks:
                request.write(JWKS[:10])  # a trickle, then nothing
                return NOT_DONE_YET
            return JWKS
        request.setResponseCode(404)
        return b"{}"


def fetcher() -> tuple[KeyFetcher, OidcAuthenticator, Issuer, StubTreq, Clock]:
    issuer = Issuer()
    stub = StubTreq(issuer)
    clock = Clock()
    auth = OidcAuthenticator([ISSUER_CONFIG])

    def client(config: JwtIssuer, reactor: Any) -> Any:
        return stub

    return KeyFetcher(auth, clock, clock.seconds, client=client), auth, issuer, stub, clock


def test_keys_arrive() -> None:
    keys, auth, _, stub, _ = fetcher()
    keys.request(ISSUER)
    stub.flush()
    assert auth.states() == [(ISSUER, "ready", "")]


def test_a_discovery_document_of_another_issuer_is_refused() -> None:
    keys, auth, issuer, stub, _ = fetcher()
    issuer.discovery["issuer"] = ISSUER + "/"
    keys.request(ISSUER)
    stub.flush()
    [(_, state, problem)] = auth.states()
    assert state == "failing" and "names another issuer" in problem


def test_a_document_that_never_ends_frees_the_fetch() -> None:
    keys, auth, issuer, stub, clock = fetcher()
    issuer.stall_jwks = True
    done = keys.request(ISSUER)
    stub.flush()
    assert not done.called
    assert keys.request(ISSUER) is done  # one fetch at a time
    clock.advance(FETCH_TIMEOUT)
    stub.flush()
    assert done.called
    assert auth.states() == [
        (ISSUER, "failing", f"the JWKS did not arrive within {FETCH_TIMEOUT:g} s")
    ]
    # the next fetch may go
    issuer.stall_jwks = False
    keys.request(ISSUER)
    stub.flush()
    assert auth.states() == [(ISSUER, "ready", "")]
