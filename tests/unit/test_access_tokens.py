"""The token auth file (kube-apiserver's --token-auth-file format)."""

from __future__ import annotations

import csv
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.auth.identity import Identity
from karpor.auth.tokens import TokenFileError, load_token_file, parse_token_file

SECRET = "s3cr3t-token-value"


def test_records_quoted_groups_and_blank_lines():
    text = (
        f'{SECRET},alice,u-1,"dev,ops"\n'
        "\n"
        "tok2,bob,u-2\n"
        '"tok,3","carol ""c""",u-3,admins,ignored-extra\n'
    )
    auth = parse_token_file(text, "tokens.csv").authenticator
    assert auth.identify(SECRET) == Identity("alice", ("dev", "ops"), "u-1")
    assert auth.identify("tok2") == Identity("bob", (), "u-2")
    assert auth.identify("tok,3") == Identity('carol "c"', ("admins",), "u-3")
    assert auth.identify("unknown") is None
    assert auth.identify("") is None
    assert auth.identify(SECRET[:-1]) is None
    assert len(auth) == 3


def test_crlf_and_empty_groups_are_dropped():
    auth = parse_token_file('t1,u,1,"a,,b"\r\nt2,v,2,\r\n', "f").authenticator
    assert auth.identify("t1") == Identity("u", ("a", "b"), "1")
    assert auth.identify("t2") == Identity("v", (), "2")


def test_hash_line_is_a_record_not_a_comment():
    # kube's reader has no comment character: "#..." is data
    with pytest.raises(TokenFileError) as info:
        parse_token_file("# tokens\nt,u,1\n", "tokens.csv")
    assert info.value.problems == (
        "tokens.csv: line 1: must have at least 3 columns (token, user name, user uid), found 1",
    )


def test_empty_token_skipped_and_duplicate_last_wins():
    parsed = parse_token_file(",ghost,0\nt,first,1\nt,second,2\n", "f.csv")
    assert parsed.authenticator.identify("t") == Identity("second", (), "2")
    assert parsed.warnings == (
        "f.csv: line 1: empty token, record skipped",
        "f.csv: line 3: duplicate token, the later record wins",
    )


def test_errors_name_file_and_line_and_never_the_token():
    text = f"{SECRET},alice\nok,bob,1\n{SECRET} x,carol,2\n{SECRET}2,,3\n"
    with pytest.raises(TokenFileError) as info:
        parse_token_file(text, "/etc/tokens.csv")
    problems = info.value.problems
    assert [p.split(": ")[1] for p in problems] == ["line 1", "line 3", "line 4"]
    assert all(p.startswith("/etc/tokens.csv: line ") for p in problems)
    assert all(SECRET not in p for p in problems)
    assert SECRET not in str(info.value)


def test_malformed_quotes():
    with pytest.raises(TokenFileError) as info:
        parse_token_file(f'"{SECRET}"x,alice,1\n', "f")
    assert info.value.problems[0].startswith("f: line 1: malformed CSV")
    assert SECRET not in str(info.value)


def test_repr_holds_no_token():
    auth = parse_token_file(f"{SECRET},alice,1\n", "f").authenticator
    assert SECRET not in repr(auth)
    assert repr(auth) == "<TokenAuthenticator 1 tokens>"


def test_load_from_file(tmp_path):
    path = tmp_path / "tokens.csv"
    path.write_text(f"\ufeff{SECRET},alice,1,g\n")
    assert load_token_file(str(path)).authenticator.identify(SECRET) == Identity(
        "alice", ("g",), "1"
    )
    with pytest.raises(TokenFileError, match="cannot read"):
        load_token_file(str(tmp_path / "missing.csv"))


_field = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=12
)
_token = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1)


@given(
    st.dictionaries(
        _token,
        st.tuples(_field, _field, st.lists(_field.filter(lambda g: "," not in g), max_size=3)),
        max_size=5,
    )
)
def test_round_trip_through_csv_quoting(entries):
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for token, (user, uid, groups) in entries.items():
        writer.writerow([token, user, uid, ",".join(groups)])
    auth = parse_token_file(out.getvalue(), "f").authenticator
    for token, (user, uid, groups) in entries.items():
        assert auth.identify(token) == Identity(user, tuple(groups), uid)
