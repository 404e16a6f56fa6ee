"""Bearer tokens from a kube-apiserver ``--token-auth-file`` (sans-IO parsing).

The file is CSV, one token per record, as kube-apiserver's ``tokenfile``
authenticator reads it (``k8s.io/apiserver/.../token/tokenfile``)::

    token,user,uid,"group1,group2"

- at least three fields (token, user name, uid); the fourth, optional, is a
  comma-separated list of groups (quoted when it holds a comma); further
  fields are ignored;
- fields may be quoted (``"..."``, a quote inside doubled: ``""``) and a
  quoted field may span lines, as Go's ``encoding/csv`` reads them;
- empty lines are skipped.  Go's reader is used without a comment
  character, so kube has *no* comment lines: a line starting with ``#`` is
  an ordinary record (and an error when it has fewer than three fields);
- a record with an empty token is skipped (kube warns); a token given twice
  takes the later record (kube warns; so do we, through :attr:`TokenFile.warnings`).

Unlike kube, empty group names (``"a,,b"``, or an empty fourth field) are
dropped, and a token holding characters that cannot appear in an
``Authorization`` header is an error (such a token could never match).

A bad record (too few fields, an empty user name, a token with characters
an ``Authorization`` header cannot hold, malformed CSV) is skipped, not
fatal: the good records are used and each bad one is a problem,
``file: line N: message``, that never includes a token
(:attr:`TokenFile.problems`; the gateway logs them at each load).  So an
edit of the token file always takes effect: a token removed in the same
edit as a typo elsewhere stops working at the next reload, and a token on
a bad line does not work (rejecting the whole edit would keep every
removed token alive).  Only a file that cannot be read at all raises
:class:`TokenFileError`.  Lookup
is by the SHA-256 of the presented token, then confirmed with
:func:`hmac.compare_digest`: no timing difference tells an attacker how
much of a token was right.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from karpor.auth.identity import Identity
from karpor.config.textfile import TextFileError, read_text

#: characters a bearer token may hold (visible ASCII, as in an HTTP header)
_MIN_TOKEN_CHAR, _MAX_TOKEN_CHAR = 0x21, 0x7E


class TokenFileError(ValueError):
    """A token file that cannot be read; ``problems`` holds the ``file: message`` lines."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


@dataclass(frozen=True)
class _Entry:
    token: bytes = field(repr=False)
    identity: Identity


def _digest(token: bytes) -> bytes:
    return hashlib.sha256(token).digest()


class TokenAuthenticator:
    """Maps a bearer token to the identity the token file gives it."""

    def __init__(self, entries: Mapping[str, Identity] | None = None) -> None:
        self._by_digest: dict[bytes, _Entry] = {}
        for token, identity in (entries or {}).items():
            raw = token.encode("utf-8")
            self._by_digest[_digest(raw)] = _Entry(raw, identity)

    def __len__(self) -> int:
        return len(self._by_digest)

    def __repr__(self) -> str:
        return f"<TokenAuthenticator {len(self)} tokens>"

    def identify(self, bearer: str) -> Identity | None:
        """The identity of the token ``bearer`` (the ``Authorization:
        Bearer`` value, already stripped), or ``None`` when unknown."""
        if not bearer:
            return None
        raw = bearer.encode("utf-8", "surrogateescape")
        entry = self._by_digest.get(_digest(raw))
        if entry is None or not hmac.compare_digest(entry.token, raw):
            return None
        return entry.identity


@dataclass(frozen=True)
class TokenFile:
    """A parsed token file: the authenticator, warnings, and the bad
    records skipped (``file: line N: message``; no tokens in either)."""

    authenticator: TokenAuthenticator
    warnings: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def _valid_token(token: str) -> bool:
    return all(_MIN_TOKEN_CHAR <= ord(c) <= _MAX_TOKEN_CHAR for c in token)


def parse_token_file(text: str, source: str) -> TokenFile:
    """Parse the CSV ``text`` of the token file named ``source``.

    Bad records are skipped, each listed in :attr:`TokenFile.problems` as
    ``source: line N: message`` (``N`` is the line a record ends on).
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    entries: dict[str, Identity] = {}
    errors: list[str] = []
    warnings: list[str] = []
    record_number = 0
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            # csv's message names the problem, never the field's content; the
            # reader goes on after the record (which may span several lines)
            errors.append(
                f"{source}: line {reader.line_num}: malformed CSV: {exc} "
                "(the record ending here is skipped)"
            )
            continue
        line = reader.line_num
        if not record or record == [""]:
            continue  # an empty line (Go's reader skips them)
        if len(record) < 3:
            errors.append(
                f"{source}: line {line}: must have at least 3 columns "
                f"(token, user name, user uid), found {len(record)}"
            )
            continue
        record_number += 1
        token, user, uid = record[0], record[1], record[2]
        if not token:
            warnings.append(f"{source}: line {line}: empty token, record skipped")
            continue
        if not _valid_token(token):
            errors.append(
                f"{source}: line {line}: the token holds characters not allowed "
                "in an Authorization header"
            )
            continue
        if not user:
            errors.append(f"{source}: line {line}: the user name is empty")
            continue
        groups: tuple[str, ...] = ()
        if len(record) >= 4:
            groups = tuple(g for g in record[3].split(",") if g)
        if token in entries:
            warnings.append(f"{source}: line {line}: duplicate token, the later record wins")
        entries[token] = Identity(user=user, groups=groups, uid=uid)
    return TokenFile(TokenAuthenticator(entries), tuple(warnings), tuple(errors))


def load_token_file(path: str) -> TokenFile:
    """Read and parse the token file at ``path`` (blocking: call it off the
    reactor thread, or at start-up).  Raises :class:`TokenFileError` when
    it cannot be read."""
    try:
        text = read_text(path)
    except TextFileError as exc:
        raise TokenFileError([str(exc)]) from None
    return parse_token_file(text, path)
