"""Chunked lists: continue tokens and pages (karpor.kube.paging)."""

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.paging import (
    CURRENT,
    INCONSISTENT_CONTINUE,
    MAX_TOKEN,
    Continue,
    decode_continue,
    encode_continue,
    expired,
    page,
    parse_limit,
)
from karpor.kube.status import ApiError

NAMES = st.lists(st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True), unique=True)


@given(st.integers(min_value=CURRENT, max_value=2**63), st.text(max_size=253))
def test_a_token_reads_back(rv, start):
    token = encode_continue(Continue(rv, start))
    assert decode_continue(token) == Continue(rv, start)


def test_a_token_for_the_longest_name_is_read():
    token = encode_continue(Continue(2**62, "a" * 253))
    assert len(token) <= MAX_TOKEN
    assert decode_continue(token).start == "a" * 253


@given(NAMES, st.integers(min_value=0, max_value=30))
def test_any_limit_pages_through_every_item_exactly_once_in_order(names, limit):
    items = sorted(names)
    seen, start, pages = [], "", 0
    while True:
        found = page(items, str, limit, start, 7)
        pages += 1
        seen += found.items
        if not found.continue_token:
            assert found.remaining is None
            break
        assert 0 < len(found.items) == limit
        assert found.remaining == len(items) - len(seen)
        token = decode_continue(found.continue_token)
        assert token.resource_version == 7
        start = token.start
        assert pages <= len(items)
    assert seen == items


def test_limit_zero_or_negative_is_everything():
    assert page(["a", "b"], str, 0, "", 1).items == ["a", "b"]
    assert parse_limit("") == 0 and parse_limit("-3") == 0 and parse_limit("5") == 5
    with pytest.raises(ApiError) as raised:
        parse_limit("five")
    assert raised.value.code == 400


def _tampered() -> list[str]:
    good = encode_continue(Continue(5, "sim-1"))
    body, _, digest = good.partition(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    payload["start"] = "zzz"
    edited = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return [
        "",
        "abc",
        "!!!.???",
        body,  # no digest
        f"{edited}.{digest}",  # edited payload
        good[:-2],  # cut
        "x" * (MAX_TOKEN + 1),
        # kube's own token shape is not ours
        base64.b64encode(b'{"v":"meta.k8s.io/v1","rv":5,"start":"a\\u0000"}').decode(),
    ]


@pytest.mark.parametrize("value", _tampered())
def test_a_bad_token_is_400(value):
    with pytest.raises(ApiError) as raised:
        decode_continue(value)
    error = raised.value
    assert (error.code, error.reason) == (400, "BadRequest")
    assert error.message.startswith("invalid continue token: ")


def test_expired_offers_a_token_on_the_current_state():
    error = expired("sim-1")
    status = error.status()
    assert (status["code"], status["reason"], status["message"]) == (
        410,
        "Expired",
        INCONSISTENT_CONTINUE,
    )
    assert decode_continue(status["metadata"]["continue"]) == Continue(CURRENT, "sim-1")
