"""Chunked lists (``limit`` / ``continue``) as a kube-apiserver pages them, sans-IO.

A list asked with ``limit=N`` answers at most N items and, when more
remain, a ``metadata.continue`` token and ``metadata.remainingItemCount``;
the next request sends the token back as ``continue`` and gets the next
page, of the list *as it was* when the first page was served (the token
holds that resourceVersion), as kube does.

The token is opaque to clients: the URL-safe base64 of a small JSON
object ``{"v": ..., "rv": N, "start": NAME}`` (the resourceVersion of the
first page and the name the next page starts after; ``rv`` -1 continues
on the current state, the token a 410 offers) followed by ``.`` and a
digest of it, so a token that was cut, edited or made up by hand is a 400
rather than a page of something else.  The digest has no key (every
worker and replica must read every other's tokens): it shows accidents,
not forgery; a forged token can only choose a start name and a
resourceVersion, which any caller may ask for anyway, and the page is
filtered by what the caller may see like any other list.

:func:`parse_limit` and :func:`decode_continue` raise the 400
:class:`~karpor.kube.status.ApiError` kube answers; :func:`expired`
builds the 410 for a token older than the history kept.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from karpor.kube.status import ApiError

T = TypeVar("T")

#: the longest ``continue`` value read (a token for a 253-character name is
#: well under 500 characters)
MAX_TOKEN = 1024
#: the version tag inside every token
CONTINUE_FORMAT = "karpor/v1"
#: ``rv`` of a token that continues on the current state (offered by a 410)
CURRENT = -1
_DIGEST_BYTES = 8

#: kube's words for a continue token older than the history
INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. "
    "You can start a new list without the continue parameter, or use the continue token "
    "in this response to retrieve the remainder of the results. Continuing with the "
    "provided token results in an inconsistent list - objects that were created, modified, "
    "or deleted between the time the first chunk was returned and now may show up in the list."
)


@dataclass(frozen=True)
class Continue:
    """What a continue token says: the list's resourceVersion and where it stopped."""

    resource_version: int
    #: the name of the last item served; the next page starts after it
    start: str


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(payload: bytes) -> str:
    return _b64(hashlib.sha256(payload).digest()[:_DIGEST_BYTES])


def encode_continue(token: Continue) -> str:
    """The opaque ``continue`` value of ``token``."""
    payload = json.dumps(
        {"v": CONTINUE_FORMAT, "rv": token.resource_version, "start": token.start},
        separators=(",", ":"),
    ).encode()
    return f"{_b64(payload)}.{_digest(payload)}"


def _invalid(why: str) -> ApiError:
    return ApiError(400, f"invalid continue token: continue key is not valid: {why}", "BadRequest")


def decode_continue(value: str) -> Continue:
    """The token of a ``continue`` value; a 400 when it is not one this
    gateway wrote (wrong shape, digest, version or field)."""
    if len(value) > MAX_TOKEN:
        raise _invalid(f"longer than {MAX_TOKEN} characters")
    body, sep, digest = value.partition(".")
    try:
        payload = _unb64(body)
    except (binascii.Error, ValueError):
        raise _invalid("not base64") from None
    if not sep or digest != _digest(payload):
        raise _invalid("it was not written by this server or was changed")
    try:
        doc = json.loads(payload)
    except ValueError:
        raise _invalid("not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != CONTINUE_FORMAT:
        raise _invalid("unknown version")
    rv, start = doc.get("rv"), doc.get("start")
    if type(rv) is not int or rv < CURRENT or not isinstance(start, str):
        raise _invalid("incorrect encoded start resourceVersion or key")
    return Continue(rv, start)


def parse_limit(value: str) -> int:
    """``?limit=``: 0 (no limit) when absent or not positive, as kube reads it;
    a 400 when not a number."""
    if not value:
        return 0
    try:
        limit = int(value)
    except ValueError:
        raise ApiError(400, f'limit: Invalid value: "{value}"', "BadRequest") from None
    return max(limit, 0)


def expired(start: str) -> ApiError:
    """kube's 410 for a continue token older than the history kept; its
    ``metadata.continue`` continues on the current state (inconsistently)."""
    return ApiError(
        410,
        INCONSISTENT_CONTINUE,
        "Expired",
        metadata={"continue": encode_continue(Continue(CURRENT, start))},
    )


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a list."""

    items: list[T]
    #: the token of the next page ("" on the last page)
    continue_token: str
    #: how many items follow this page (``None`` on the last page)
    remaining: int | None


def page(
    items: Sequence[T],
    name: Callable[[T], str],
    limit: int,
    start: str,
    resource_version: int,
) -> Page[T]:
    """The page of ``items`` (sorted by ``name``) after ``start`` ("" for
    the first), at most ``limit`` long (0: all)."""
    rest = [item for item in items if name(item) > start] if start else list(items)
    if limit <= 0 or len(rest) <= limit:
        return Page(rest, "", None)
    shown = rest[:limit]
    token = encode_continue(Continue(resource_version, name(shown[-1])))
    return Page(shown, token, len(rest) - limit)
