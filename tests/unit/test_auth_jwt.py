"""OpenID providers' tokens: the JWS checks, the claim rules, the keys, the cache."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.jwts import (
    EC_KEY,
    ED_KEY,
    ISSUER,
    ISSUER_CONFIG,
    NOW,
    OTHER_RSA_KEY,
    RSA_KEY,
    RSA_SET,
    authenticator,
    b64,
    claims,
    jwk,
    keyset,
    sign,
)

import karpor.auth.oidc as oidc_module
from karpor.auth.identity import Identity, IssuedBy
from karpor.auth.jwt import (
    CLOCK_SKEW,
    MAX_KEYS,
    MAX_TOKEN_BYTES,
    ClaimMapping,
    ClaimRule,
    JwtError,
    JwtIssuer,
    check_claims,
    parse_jwks,
    parse_jwt,
    verify_signature,
)
from karpor.auth.oidc import REFETCH_INTERVAL, REFUSAL_TTL

# -- signatures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg", "announced"),
    [
        (RSA_KEY, "RS256", None),
        (RSA_KEY, "PS256", "PS256"),
        (EC_KEY, "ES256", None),
        (ED_KEY, "EdDSA", "EdDSA"),
    ],
)
def test_a_signature_by_the_issuers_key_is_accepted(
    key: Any, alg: str, announced: str | None
) -> None:
    auth, _ = authenticator(keyset(jwk(key, "k1", announced)))
    identity = auth.identify(sign(claims(), key, alg), NOW)
    assert identity == Identity("ada@example.com", ("oidc:dev", "oidc:ops"))


def test_an_algorithm_the_issuer_does_not_announce_is_refused() -> None:
    auth, _ = authenticator(keyset(jwk(RSA_KEY, "k1")))  # no alg: RS256/ES256 only
    with pytest.raises(JwtError, match="algorithm not accepted"):
        auth.identify(sign(claims(), RSA_KEY, "PS256"), NOW)


def test_none_and_hmac_with_the_public_key_are_never_accepted() -> None:
    auth, _ = authenticator(RSA_SET)
    with pytest.raises(JwtError):
        auth.identify(sign(claims(), alg="none"), NOW)
    # the classic confusion: the public key's bytes as an HMAC secret
    n = RSA_KEY.public_key().public_numbers().n
    with pytest.raises(JwtError):
        auth.identify(sign(claims(), n.to_bytes(256, "big"), "HS256"), NOW)
    # even when a JWKS entry claims HS256
    assert keyset({**jwk(RSA_KEY, "k1"), "alg": "HS256"}).keys == ()


def test_a_key_of_the_wrong_type_checks_nothing() -> None:
    rsa_set = keyset(jwk(RSA_KEY, "k1"))
    token = parse_jwt(sign(claims(), EC_KEY, "ES256"))
    assert not verify_signature(token, rsa_set.keys[0])
    ec_set = keyset(jwk(EC_KEY, "k1", "ES256"))
    assert not verify_signature(parse_jwt(sign(claims())), ec_set.keys[0])


def test_a_tampered_payload_or_another_key_is_a_bad_signature() -> None:
    auth, _ = authenticator(RSA_SET)
    header, _payload, signature = sign(claims()).split(".")
    forged = b64(json.dumps(claims(email="eve@example.com")).encode())
    with pytest.raises(JwtError, match="signature invalid"):
        auth.identify(f"{header}.{forged}.{signature}", NOW)
    with pytest.raises(JwtError, match="signature invalid"):
        auth.identify(sign(claims(), OTHER_RSA_KEY), NOW)


@given(st.text(max_size=300))
def test_any_text_is_judged_or_refused_never_crashes(text: str) -> None:
    auth, _ = authenticator(RSA_SET)
    try:
        assert auth.identify(text, NOW) is None
    except JwtError as exc:
        assert text not in str(exc) or len(text) < 4


def test_a_token_over_the_bound_is_refused_unread() -> None:
    with pytest.raises(JwtError, match="too long"):
        parse_jwt("a." + "b" * MAX_TOKEN_BYTES + ".c")


def test_a_jwks_is_bounded_and_bad_keys_are_skipped_by_name() -> None:
    with pytest.raises(ValueError, match="at most"):
        parse_jwks(
            json.dumps({"keys": [jwk(RSA_KEY, str(i)) for i in range(MAX_KEYS + 1)]}).encode()
        )
    keys = keyset(
        jwk(RSA_KEY, "good"), {"kty": "RSA", "kid": "bad", "n": 5}, {"kty": "oct", "k": "c2VjcmV0"}
    )
    assert [k.kid for k in keys.keys] == ["good"]
    assert len(keys.skipped) == 2 and "c2VjcmV0" not in " ".join(keys.skipped)


# -- claims -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("over", "why"),
    [
        ({"iss": "https://evil.example.com"}, "issuer not accepted"),
        ({"aud": "other"}, "audience not accepted"),
        ({"aud": ["a", "b"]}, "audience not accepted"),
        ({"exp": None}, "no exp claim"),
        ({"exp": "soon"}, "not a number"),
        ({"email": None}, "no email claim"),
        ({"email_verified": False}, "not verified"),
        ({"groups": [1, 2]}, "groups claim"),
        ({"email": "system:karpor:agent:c1"}, "reserved system: name"),
    ],
)
def test_each_claim_rule_refuses_in_general_terms(over: dict[str, Any], why: str) -> None:
    with pytest.raises(JwtError, match=why):
        check_claims(ISSUER_CONFIG, claims(**over), NOW)


def test_no_token_names_a_system_group() -> None:
    bare = JwtIssuer(ISSUER, ("karpor",), ClaimMapping("email", ""), ClaimMapping("groups", ""))
    with pytest.raises(JwtError, match="reserved system: name"):
        check_claims(bare, claims(groups=["dev", "system:masters"]), NOW)
    prefixed = check_claims(ISSUER_CONFIG, claims(groups=["system:masters"]), NOW)[0]
    assert prefixed.groups == ("oidc:system:masters",)


def test_audience_lists_groups_strings_and_rules() -> None:
    identity, exp = check_claims(ISSUER_CONFIG, claims(aud=["x", "karpor"], groups="solo"), NOW)
    assert identity.groups == ("oidc:solo",) and exp == NOW + 300
    # for the audit log: who vouched for the identity (not part of its equality)
    assert identity.issued_by == IssuedBy(ISSUER, "1234")
    assert identity.with_authenticated().issued_by == identity.issued_by
    ruled = JwtIssuer(
        ISSUER, ("karpor",), ClaimMapping("sub", "oidc:"), None, (ClaimRule("hd", "example.com"),)
    )
    assert check_claims(ruled, claims(hd="example.com"), NOW)[0] == Identity("oidc:1234")
    with pytest.raises(JwtError, match="hd does not have the required value"):
        check_claims(ruled, claims(hd="evil.com"), NOW)


@given(
    exp=st.floats(-1000, 1000),
    nbf=st.none() | st.floats(-1000, 1000),
    iat=st.none() | st.floats(-1000, 1000),
)
def test_times_are_checked_with_the_clock_skew(
    exp: float, nbf: float | None, iat: float | None
) -> None:
    c = claims(
        exp=NOW + exp,
        nbf=None if nbf is None else NOW + nbf,
        iat=None if iat is None else NOW + iat,
    )
    valid = (
        exp >= -CLOCK_SKEW
        and (nbf is None or nbf <= CLOCK_SKEW)
        and (iat is None or iat <= CLOCK_SKEW)
    )
    try:
        check_claims(ISSUER_CONFIG, c, NOW)
    except JwtError:
        assert not valid
    else:
        assert valid


# -- the authenticator: keys and cache ------------------------------------------------------------


def test_no_keys_yet_asks_for_them_and_refuses_without_remembering() -> None:
    auth, asked = authenticator()
    token = sign(claims())
    with pytest.raises(JwtError, match="not available yet"):
        auth.identify(token, NOW)
    with pytest.raises(JwtError):
        auth.identify(token, NOW + 1)
    assert asked == [ISSUER]  # once per REFETCH_INTERVAL
    auth.keys_arrived(ISSUER, RSA_SET, [], NOW + 2)
    assert auth.identify(token, NOW + 2) is not None


def test_a_rotated_key_is_fetched_at_most_every_ten_seconds_and_old_keys_serve_meanwhile() -> None:
    auth, asked = authenticator(RSA_SET)
    old = sign(claims())
    new = sign(claims(sub="2"), OTHER_RSA_KEY, kid="k2")
    for t in (0.0, 1.0, REFETCH_INTERVAL - 1):
        with pytest.raises(JwtError, match="signing key not known"):
            auth.identify(new, NOW + t)
    assert asked == [ISSUER]
    assert auth.identify(old, NOW + 1) is not None  # the old keys still serve
    with pytest.raises(JwtError):
        auth.identify(new, NOW + REFETCH_INTERVAL)
    assert asked == [ISSUER, ISSUER]
    auth.keys_arrived(ISSUER, keyset(jwk(RSA_KEY, "k1"), jwk(OTHER_RSA_KEY, "k2")), [], NOW + 11)
    assert auth.identify(new, NOW + 11) is not None


def test_issuer_states_and_their_watchers() -> None:
    auth, _ = authenticator()
    seen: list[tuple[str, str]] = []
    auth.watch(lambda url, state: seen.append((url, state)))
    assert seen == [(ISSUER, "pending")]
    assert auth.states() == [(ISSUER, "pending", "")]
    auth.keys_failed(ISSUER, "the discovery document answered HTTP 503")
    assert auth.states() == [(ISSUER, "failing", "the discovery document answered HTTP 503")]
    auth.keys_failed(ISSUER, "again")  # no change of state: no call
    auth.keys_arrived(ISSUER, RSA_SET, [], NOW)
    auth.keys_arrived(ISSUER, RSA_SET, [], NOW + 1)
    assert auth.states() == [(ISSUER, "ready", "")]
    assert seen == [(ISSUER, "pending"), (ISSUER, "failing"), (ISSUER, "ready")]
    auth.keys_failed(ISSUER, "gone")  # keys in hand still serve, but it is failing
    assert seen[-1] == (ISSUER, "failing")
    assert auth.identify(sign(claims()), NOW) is not None


def test_a_known_token_costs_no_signature_check(monkeypatch: pytest.MonkeyPatch) -> None:
    auth, _ = authenticator(RSA_SET)
    token = sign(claims())
    first = auth.identify(token, NOW)

    def fail(*args: object) -> bool:
        raise AssertionError("checked again")

    monkeypatch.setattr(oidc_module, "verify_signature", fail)
    assert auth.identify(token, NOW + 60) is first


def test_a_cached_identity_ends_with_the_token() -> None:
    auth, _ = authenticator(RSA_SET)
    token = sign(claims(exp=NOW + 100))
    assert auth.identify(token, NOW) is not None
    assert auth.identify(token, NOW + 100 + CLOCK_SKEW - 1) is not None
    with pytest.raises(JwtError, match="expired"):
        auth.identify(token, NOW + 100 + CLOCK_SKEW + 1)


def test_a_refusal_is_remembered_briefly() -> None:
    auth, _ = authenticator(RSA_SET)
    token = sign(claims(aud="other"))
    with pytest.raises(JwtError, match="audience"):
        auth.identify(token, NOW)
    with pytest.raises(JwtError, match="audience"):
        auth.identify(token, NOW + REFUSAL_TTL - 1)


def test_the_cache_is_bounded() -> None:
    auth, _ = authenticator(RSA_SET, cache_size=3)
    tokens = [sign(claims(sub=str(i))) for i in range(5)]
    for token in tokens:
        auth.identify(token, NOW)
    assert len(auth._cache) == 3


def test_a_plain_token_is_left_to_other_authenticators() -> None:
    auth, asked = authenticator(RSA_SET)
    assert auth.identify("a-static-token", NOW) is None and asked == []
