"""Front-proxy (requestheader) authentication, as kube-apiserver reads the headers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.identity import Identity
from karpor.auth.requestheader import (
    RequestHeaderConfig,
    allowed_common_name,
    authenticate_headers,
    unescape_extra_key,
)

CONFIG = RequestHeaderConfig(allowed_names=("front-proxy-client",))


def test_user_groups_and_extra():
    headers = [
        (b"x-remote-user", b"alice"),
        (b"X-Remote-Group", b"dev"),
        (b"X-REMOTE-GROUP", b"a,b"),
        (b"X-Remote-Group", b""),
        (b"X-Remote-Extra-Scopes", b"view"),
        (b"x-remote-extra-scopes", b"edit"),
        (b"X-Remote-Extra-Example.com%2fTeam", b"blue"),
        (b"Accept", b"application/json"),
    ]
    identity = authenticate_headers(CONFIG, "front-proxy-client", headers)
    assert identity == Identity(
        "alice",
        ("dev", "a,b"),
        extra={"scopes": ("view", "edit"), "example.com/team": ("blue",)},
    )


def test_untrusted_certificate_names_are_ignored():
    headers = [("X-Remote-User", "alice")]
    assert authenticate_headers(CONFIG, "someone-else", headers) is None
    assert authenticate_headers(CONFIG, None, headers) is None
    assert authenticate_headers(RequestHeaderConfig(), "any-cn", headers) == Identity("alice")
    assert not allowed_common_name(RequestHeaderConfig(), None)


def test_first_non_empty_username_header():
    config = RequestHeaderConfig(username_headers=("X-User", "X-Remote-User"))
    # X-User's first value is empty: go on with the next header (Go's Header.Get)
    headers = [
        ("X-User", ""),
        ("X-User", "ignored"),
        ("X-Remote-User", "bob"),
        ("X-Remote-User", "x"),
    ]
    identity = authenticate_headers(config, "cn", headers)
    assert identity is not None and identity.user == "bob"
    assert authenticate_headers(config, "cn", [("X-User", "")]) is None
    assert authenticate_headers(config, "cn", [("X-Remote-Group", "g")]) is None


def test_uid_headers_and_several_prefixes():
    config = RequestHeaderConfig(
        uid_headers=("X-Remote-Uid",), extra_headers_prefix=("X-Remote-Extra-", "X-Extra-")
    )
    headers = [
        ("X-Remote-User", "u"),
        ("X-Remote-Uid", "1234"),
        ("X-Extra-K", "second"),
        ("X-Remote-Extra-K", "first"),
    ]
    identity = authenticate_headers(config, "cn", headers)
    assert identity == Identity("u", (), "1234", {"k": ("first", "second")})


def test_header_names_to_strip():
    config = RequestHeaderConfig(username_headers=("X-Foo-User",), extra_headers_prefix=("X-Foo-",))
    assert config.header_names() == (("x-foo-user", "x-remote-group"), ("x-foo-",))


def test_unescape_extra_key_like_go_path_unescape():
    assert unescape_extra_key("a%2fb") == "a/b"
    assert unescape_extra_key("100%") == "100%"  # malformed: kept as is
    assert unescape_extra_key("a%zz") == "a%zz"
    assert unescape_extra_key("plain") == "plain"
    assert unescape_extra_key("a+b") == "a+b"  # path unescaping keeps '+'


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["X-Remote-Group", "x-remote-group", "Other"]), st.text(max_size=5)
        )
    )
)
def test_groups_are_every_non_empty_value_in_order(pairs):
    headers = [("X-Remote-User", "u"), *pairs]
    identity = authenticate_headers(RequestHeaderConfig(), "cn", headers)
    assert identity is not None
    assert identity.groups == tuple(v for n, v in pairs if n.lower() == "x-remote-group" and v)
