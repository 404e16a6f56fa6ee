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
    parsed = parse_token_file("# tokens\nt,u,1\n", "tokens.csv")
    assert parsed.problems == (
        "tokens.csv: line 1: must have at least 3 columns (token, user name, user uid), found 1",
    )
    assert parsed.authenticator.identify("t") == Identity("u", (), "1")


def test_empty_token_skipped_and_duplicate_last_wins():
    parsed = parse_token_file(",ghost,0\nt,first,1\nt,second,2\n", "f.csv")
    assert parsed.authenticator.identify("t") == Identity("second", (), "2")
    assert parsed.warnings == (
        "f.csv: line 1: empty token, record skipped",
        "f.csv: line 3: duplicate token, the later record wins",
    )


def test_errors_name_file_and_line_and_never_the_token():
    text = f"{SECRET},alice\nok,bob,1\n{SECRET} x,carol,2\n{SECRET}2,,3\n"
    parsed = parse_token_file(text, "/etc/tokens.csv")
    problems = parsed.problems
    assert [p.split(": ")[1] for p in problems] == ["line 1", "line 3", "line 4"]
    assert all(p.startswith("/etc/tokens.csv: line ") for p in problems)
    assert all(SECRET not in p for p in problems)
    # the bad records are skipped, the good one applies
    assert len(parsed.authenticator) == 1
    assert parsed.authenticator.identify("ok") == Identity("bob", (), "1")
    for token in (SECRET, f"{SECRET} x", f"{SECRET}2"):
        assert parsed.authenticator.identify(token) is None


def test_malformed_quotes():
    parsed = parse_token_file(f'"{SECRET}"x,alice,1\nok,bob,1\n"unclosed,carol,2\n', "f")
    assert parsed.problems[0].startswith("f: line 1: malformed CSV")
    assert len(parsed.problems) == 2 and parsed.problems[1].startswith("f: line 3: malformed")
    assert all(SECRET not in p for p in parsed.problems)
    # the reader goes on after a malformed record
    assert parsed.authenticator.identify("ok") == Identity("bob", (), "1")
    assert len(parsed.authenticator) == 1


@given(
    st.lists(st.sampled_from(["good", "few", "baduser", "badchar", "quote", "blank"]), max_size=8)
)
def test_each_bad_record_is_skipped_and_reported_alone(kinds: list[str]) -> None:
    lines = {
        "good": "good{i},user{i},{i}",
        "few": "few{i},user{i}",
        "baduser": "baduser{i},,{i}",
        "badchar": "bad char{i},user{i},{i}",
        "quote": '"quote{i}"x,user{i},{i}',
        "blank": "",
    }
    text = "".join(lines[kind].format(i=i) + "\n" for i, kind in enumerate(kinds))
    parsed = parse_token_file(text, "t.csv")
    good = [i for i, kind in enumerate(kinds) if kind == "good"]
    assert len(parsed.authenticator) == len(good)
    for i in good:
        assert parsed.authenticator.identify(f"good{i}") == Identity(f"user{i}", (), str(i))
    bad = [i + 1 for i, kind in enumerate(kinds) if kind not in ("good", "blank")]
    assert [int(p.split(": ")[1].removeprefix("line ")) for p in parsed.problems] == bad


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
