"""``authentication.jwt``: the settings of OpenID providers, and their tokens at the front."""

from __future__ import annotations

import pytest
from support.jwts import ISSUER, NOW, RSA_SET, claims, sign

from karpor.app.settings import SettingsError, parse_settings
from karpor.auth.access import Access, Peer
from karpor.auth.identity import Identity
from karpor.auth.jwt import ClaimMapping, ClaimRule, JwtIssuer
from karpor.auth.oidc import OidcAuthenticator
from karpor.kube.status import ApiError

GOOD = """
authentication:
  jwt:
  - issuer:
      url: https://issuer.example.com
      audiences: [karpor]
    claimMappings:
      username: {claim: email}
      groups: {claim: groups, prefix: "oidc:"}
    claimValidationRules: [{claim: hd, requiredValue: example.com}]
"""


def test_an_issuer_entry_as_kube_apiserver_writes_it() -> None:
    settings = parse_settings(GOOD, "/k.yaml")
    assert settings.authentication.jwt == (
        JwtIssuer(
            url="https://issuer.example.com",
            audiences=("karpor",),
            username=ClaimMapping("email", ""),
            groups=ClaimMapping("groups", "oidc:"),
            rules=(ClaimRule("hd", "example.com"),),
        ),
    )


def test_the_issuer_url_is_kept_exactly_as_written() -> None:
    # a token's iss is compared character for character: a trailing slash
    # (Auth0 writes one) is part of the issuer
    text = GOOD.replace("url: https://issuer.example.com", "url: https://tenant.auth0.com/")
    [issuer] = parse_settings(text, "/k.yaml").authentication.jwt
    assert issuer.url == "https://tenant.auth0.com/"
    oidc = OidcAuthenticator([issuer])
    oidc.keys_arrived(issuer.url, RSA_SET, [], NOW)
    token = sign(claims(iss="https://tenant.auth0.com/", hd="example.com"))
    assert oidc.identify(token, NOW) == Identity("ada@example.com", ("oidc:dev", "oidc:ops"))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "  - issuer: {url: http://i.example.com, audiences: [k]}\n"
            "    claimMappings: {username: {claim: email}}\n",
            "authentication.jwt[0].issuer.url: must be an https:// URL",
        ),
        (
            "  - issuer: {url: 'https://i.example.com/?tenant=1', audiences: [k]}\n"
            "    claimMappings: {username: {claim: email}}\n",
            "authentication.jwt[0].issuer.url: must have no query, fragment or user information",
        ),
        (
            "  - issuer: {url: https://i.example.com}\n"
            "    claimMappings: {username: {claim: email}}\n",
            "authentication.jwt[0].issuer.audiences: required",
        ),
        (
            "  - issuer: {url: https://i.example.com, audiences: [k]}\n"
            "    claimMappings: {username: {claim: sub}}\n",
            "authentication.jwt[0].claimMappings.username.prefix: required",
        ),
        (
            "  - issuer: {url: https://i.example.com, audiences: [k]}\n"
            "    claimMappings: {username: {claim: email}, groups: {claim: g}}\n",
            "authentication.jwt[0].claimMappings.groups.prefix: required",
        ),
        (
            "  - issuer: {url: https://i.example.com, audiences: [k], certificateAuthority: nope}\n"
            "    claimMappings: {username: {claim: email}}\n",
            "authentication.jwt[0].issuer.certificateAuthority: not a PEM certificate",
        ),
        (
            "  - issuer: {url: https://i.example.com, audiences: [k]}\n"
            "    claimMappings: {username: {claim: email}}\n"
            "  - issuer: {url: https://i.example.com, audiences: [k]}\n"
            "    claimMappings: {username: {claim: email}}\n",
            "authentication.jwt[1].issuer.url: names an issuer already configured",
        ),
    ],
)
def test_a_bad_issuer_entry_names_its_field(text: str, problem: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings("authentication:\n  jwt:\n" + text, "/k.yaml")
    assert f"/k.yaml: {problem}" in str(caught.value)


def _access() -> Access:
    issuer = JwtIssuer(
        ISSUER, ("karpor",), ClaimMapping("email", ""), ClaimMapping("groups", "oidc:")
    )
    oidc = OidcAuthenticator([issuer])
    oidc.keys_arrived(ISSUER, RSA_SET, [], NOW)
    return Access(oidc=oidc, clock=lambda: NOW)


def test_the_front_accepts_a_token_of_the_issuer() -> None:
    token = sign(claims())
    identity = _access().authenticate(Peer(), [(b"Authorization", b"Bearer " + token.encode())])
    assert identity == Identity("ada@example.com", ("oidc:dev", "oidc:ops"))


def test_a_refused_token_is_a_401_that_says_why_and_not_the_token() -> None:
    token = sign(claims(exp=NOW - 3600))
    with pytest.raises(ApiError) as caught:
        _access().authenticate(Peer(), [(b"Authorization", b"Bearer " + token.encode())])
    assert caught.value.code == 401
    body = caught.value.body().decode()
    assert "token expired" in body and token not in body and token[-20:] not in body
