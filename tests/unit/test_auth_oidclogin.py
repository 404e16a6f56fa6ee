"""``karpor login``'s sans-IO logic (karpor.auth.oidclogin): PKCE, the
authorization request, the callback, the device flow's polling, the token
answers, the cache and what to do with it, the ExecCredential."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.oidclogin import (
    REFRESH,
    SIGN_IN,
    USE,
    CachedTokens,
    LoginError,
    Provider,
    TokenError,
    authorization_url,
    cache_file_name,
    check_nonce,
    exec_credential,
    next_step,
    parse_callback,
    parse_device_authorization,
    parse_discovery,
    parse_listen_address,
    parse_token_response,
    pkce_challenge,
    pkce_verifier,
    poll_decision,
    redirect_uri,
    scopes,
)
from karpor.cli import build_parser, main

ISSUER = "https://issuer.example.com"
PROVIDER = Provider(ISSUER, f"{ISSUER}/auth", f"{ISSUER}/token", f"{ISSUER}/device")
NOW = 1_800_000_000.0


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def id_token(**claims: object) -> str:
    body = {"iss": ISSUER, "sub": "ada", "aud": "cli", "exp": NOW + 60, **claims}
    return f"{b64(b'{}')}.{b64(json.dumps(body).encode())}.{b64(b'sig')}"


# -- PKCE and the authorization request -------------------------------------------------


def test_pkce_rfc7636_appendix_b():
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert pkce_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@given(st.binary(min_size=32, max_size=200))
def test_pkce_verifier_is_unreserved_43_to_128(random):
    verifier = pkce_verifier(random)
    assert 43 <= len(verifier) <= 128
    assert set(verifier) <= set(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )
    digest = hashlib.sha256(verifier.encode()).digest()
    assert pkce_challenge(verifier) == b64(digest)


def test_pkce_verifier_needs_32_bytes():
    with pytest.raises(ValueError):
        pkce_verifier(b"x" * 31)


def test_authorization_url():
    url = authorization_url(
        PROVIDER, "cli", "http://127.0.0.1:8000/callback", scopes(["groups"]), "st", "no", "v" * 43
    )
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{ISSUER}/auth"
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    assert query == {
        "response_type": "code",
        "client_id": "cli",
        "redirect_uri": "http://127.0.0.1:8000/callback",
        "scope": "openid offline_access groups",
        "state": "st",
        "nonce": "no",
        "code_challenge": pkce_challenge("v" * 43),
        "code_challenge_method": "S256",
        "prompt": "consent",
    }
    # an endpoint with a query keeps it
    other = Provider(ISSUER, f"{ISSUER}/auth?tenant=1", f"{ISSUER}/token")
    assert "/auth?tenant=1&response_type=code" in authorization_url(
        other, "cli", "http://127.0.0.1:1/callback", ["openid"], "s", "n", "v" * 43
    )


def test_scopes_once_each():
    assert scopes(["groups email", "openid", "groups"]) == (
        "openid", "offline_access", "groups", "email",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:8000", ("127.0.0.1", 8000)),
        ("localhost:18000", ("localhost", 18000)),
        ("[::1]:8000", ("::1", 8000)),
        ("127.0.0.1:0", ("127.0.0.1", 0)),
    ],
)
def test_listen_address(address, expected):
    assert parse_listen_address(address) == expected


@pytest.mark.parametrize("address", ["0.0.0.0:8000", "10.0.0.1:8000", "example.com:80", "8000",
                                     "127.0.0.1:x", "127.0.0.1:70000"])  # fmt: skip
def test_listen_address_loopback_only(address):
    with pytest.raises(LoginError):
        parse_listen_address(address)


def test_redirect_uri():
    assert redirect_uri("127.0.0.1", 8000) == "http://127.0.0.1:8000/callback"
    assert redirect_uri("::1", 8000) == "http://[::1]:8000/callback"


def test_callback():
    assert parse_callback("/callback?code=abc&state=st", "st") == "abc"
    assert parse_callback("/favicon.ico", "st") is None
    with pytest.raises(LoginError, match="state mismatch"):
        parse_callback("/callback?code=abc&state=other", "st")
    with pytest.raises(LoginError, match="state mismatch"):
        parse_callback("/callback?code=abc", "st")
    with pytest.raises(LoginError, match="access_denied: no"):
        parse_callback("/callback?error=access_denied&error_description=no&state=st", "st")
    with pytest.raises(LoginError, match="no authorization code"):
        parse_callback("/callback?state=st", "st")


@given(st.text(), st.text(min_size=1))
def test_callback_never_accepts_another_state(received, expected):
    if received == expected:
        return
    with pytest.raises(LoginError):
        parse_callback("/callback?" + urlencode({"code": "c", "state": received}), expected)


# -- discovery, device flow, tokens ----------------------------------------------------


def test_discovery():
    doc = {
        "issuer": ISSUER,
        "authorization_endpoint": f"{ISSUER}/auth",
        "token_endpoint": f"{ISSUER}/token",
    }
    assert parse_discovery(ISSUER, doc) == Provider(ISSUER, f"{ISSUER}/auth", f"{ISSUER}/token")
    with pytest.raises(LoginError, match="another issuer"):
        parse_discovery(ISSUER + "/", doc)
    with pytest.raises(LoginError, match="https token_endpoint"):
        parse_discovery(ISSUER, {**doc, "token_endpoint": "http://issuer.example.com/token"})
    with pytest.raises(LoginError, match="device_authorization_endpoint"):
        parse_discovery(ISSUER, {**doc, "device_authorization_endpoint": 3})


def test_device_authorization():
    device = parse_device_authorization(
        {
            "device_code": "d",
            "user_code": "U",
            "verification_uri": "https://x/device",
            "expires_in": 600,
            "interval": 2,
        }
    )
    assert (device.interval, device.expires_in, device.verification_uri_complete) == (2, 600, None)
    # an absurd interval is the default one
    assert (
        parse_device_authorization(
            {"device_code": "d", "user_code": "U", "verification_uri": "https://x", "interval": 0}
        ).interval
        == 5
    )
    with pytest.raises(LoginError):
        parse_device_authorization({"user_code": "U", "verification_uri": "https://x"})


def test_poll_decision():
    assert poll_decision("authorization_pending", 5) == 5
    assert poll_decision("slow_down", 5) == 10
    for error in ("access_denied", "expired_token", "invalid_grant"):
        with pytest.raises(LoginError):
            poll_decision(error, 5)


def test_token_response():
    token = id_token()
    assert parse_token_response(200, {"id_token": token, "refresh_token": "r"}) == CachedTokens(
        token, "r"
    )
    # a refresh without a new refresh token keeps the old one
    assert parse_token_response(200, {"id_token": token}, "old").refresh_token == "old"
    with pytest.raises(TokenError) as caught:
        parse_token_response(400, {"error": "invalid_grant", "error_description": "gone"})
    assert caught.value.error == "invalid_grant"
    with pytest.raises(LoginError, match="no ID token"):
        parse_token_response(200, {"access_token": "a"})
    with pytest.raises(LoginError, match="no exp"):
        parse_token_response(200, {"id_token": id_token(exp=None)})


def test_errors_never_carry_a_token():
    token = id_token()
    for bad in (token[:-1] + "!", "a.b", token.replace(".", "..", 1)):
        try:
            parse_token_response(200, {"id_token": bad})
        except LoginError as exc:
            assert bad not in str(exc)


def test_nonce():
    check_nonce(id_token(nonce="n1"), "n1")
    with pytest.raises(LoginError, match="nonce"):
        check_nonce(id_token(nonce="n2"), "n1")
    with pytest.raises(LoginError, match="nonce"):
        check_nonce(id_token(), "n1")


# -- the cache ------------------------------------------------------------------------


def test_cache_round_trip():
    tokens = CachedTokens(id_token(), "refresh")
    assert CachedTokens.from_json(tokens.to_json(ISSUER, "cli")) == tokens
    assert CachedTokens.from_json(CachedTokens(id_token()).to_json(ISSUER, "cli")) == CachedTokens(
        id_token()
    )
    assert CachedTokens.from_json(b"not json") is None
    assert CachedTokens.from_json(b"[]") is None


def test_cache_file_names():
    a = cache_file_name(ISSUER, "cli")
    assert a == cache_file_name(ISSUER, "cli")
    assert a != cache_file_name(ISSUER, "cli2")
    assert a != cache_file_name(ISSUER + "/x", "cli")
    assert "/" not in cache_file_name("https://a/../..", "../../etc/passwd")


@given(st.floats(min_value=-1000, max_value=1000), st.booleans())
def test_next_step(offset, has_refresh):
    cached = CachedTokens(id_token(exp=NOW + offset), "r" if has_refresh else None)
    step = next_step(cached, NOW)
    if offset > 5:
        assert step == USE
    else:
        assert step == (REFRESH if has_refresh else SIGN_IN)


def test_next_step_without_a_cache_or_with_junk():
    assert next_step(None, NOW) == SIGN_IN
    assert next_step(CachedTokens("junk", "r"), NOW) == REFRESH


def test_exec_credential():
    token = id_token(exp=1_800_000_061)
    assert exec_credential(token) == {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "spec": {},
        "status": {"token": token, "expirationTimestamp": "2027-01-15T08:01:01Z"},
    }


# -- the command, offline: a cached token needs no network ------------------------------


def test_login_hands_out_a_cached_token(tmp_path: Path, capsys):
    token = id_token(exp=NOW * 2)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / cache_file_name(ISSUER, "cli")).write_bytes(CachedTokens(token).to_json(ISSUER, "cli"))
    assert main(["login", "--issuer", ISSUER, "--client-id", "cli", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["status"]["token"] == token


def test_login_reports_an_unreachable_provider(tmp_path: Path):
    args = build_parser().parse_args(
        [
            "login",
            "--issuer",
            "https://127.0.0.1:1",
            "--client-id",
            "cli",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    out, err = io.StringIO(), io.StringIO()
    assert args.handler(args, out=out, err=err) == 1
    assert "cannot reach the provider" in err.getvalue()
    assert out.getvalue() == ""
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o700


def test_login_refuses_plain_http(tmp_path: Path):
    args = build_parser().parse_args(
        [
            "login",
            "--issuer",
            "http://127.0.0.1:1",
            "--client-id",
            "cli",
            "--cache-dir",
            str(tmp_path / "c"),
        ]
    )
    err = io.StringIO()
    assert args.handler(args, out=io.StringIO(), err=err) == 1
    assert "over https" in err.getvalue()


def test_the_kubeconfig_names_the_listen_address(tmp_path: Path) -> None:
    args = build_parser().parse_args(
        [
            "kubeconfig", "--state-dir", str(tmp_path), "--server", "https://127.0.0.1:8443",
            "--oidc-issuer", "https://idp.example.com", "--oidc-client-id", "karpor",
            "--oidc-listen-address", "127.0.0.1:18000",
        ]
    )  # fmt: skip
    from karpor.cli.kubeconfig import oidc_exec  # noqa: PLC0415

    plugin = oidc_exec(args)
    assert plugin["args"][-2:] == ["--listen-address", "127.0.0.1:18000"]
