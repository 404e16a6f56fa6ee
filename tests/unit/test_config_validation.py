"""The validation idiom every YAML file shares: typed reads, field paths, problem lines."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from karpor.config.validation import (
    Checker,
    Expression,
    FileProblems,
    Key,
    Selector,
    YamlError,
    item,
    join,
    load_yaml,
    parse_section,
    parse_value,
    problem_line,
    section_parser,
)

# -- the problem line ---------------------------------------------------------------


def test_the_problem_line_leaves_out_what_is_empty() -> None:
    assert problem_line("c.yaml", 2, "spec.access", "required") == (
        "c.yaml: document 2: spec.access: required"
    )
    assert problem_line("karpor.yaml", 0, "port", "bad") == "karpor.yaml: port: bad"
    assert problem_line("p.yaml", 0, "", "must be a mapping") == "p.yaml: must be a mapping"
    assert problem_line("", 0, "--port", "bad") == "--port: bad"


def test_paths_join_keys_and_items() -> None:
    assert join("", "rules") == "rules"
    assert item(join("", "rules"), 2) == "rules[2]"
    assert join(item("rules", 2), "verbs") == "rules[2].verbs"


def test_yaml_errors_name_the_line_in_the_file() -> None:
    with pytest.raises(YamlError, match=r"^did not find expected node content \(line 2\)$"):
        load_yaml("port: [\n")
    with pytest.raises(YamlError, match=r"\(line 12\)$"):
        load_yaml("port: [\n", first_line=11)
    assert load_yaml("") is None


# -- typed reads -----------------------------------------------------------------


def test_typed_reads_and_their_messages() -> None:
    c = Checker("/etc/karpor")
    obj = {
        "name": 3,
        "empty": "",
        "list": ["a", 1, ""],
        "flag": "yes",
        "word": "true",
        "count": "12",
        "bad": 1.5,
        "wait": "2.5",
        "never": 0,
        "mode": "loud",
        "regex": "(",
        "file": "tokens.csv",
    }
    assert c.string(obj, "name", "") is None
    assert c.string(obj, "empty", "s", empty=False) is None
    assert c.string(obj, "absent", "s", required=True) is None
    assert c.strings(obj, "list", "s") == ("a", "")
    assert c.strings(obj, "list", "t", empty_items=False) == ("a",)
    assert c.boolean(obj, "flag", "") is False
    assert c.boolean(obj, "word", "", words=True) is True
    assert c.integer(obj, "count", "") == 12
    assert c.integer(obj, "bad", "") is None
    assert c.seconds(obj, "wait", "") == 2.5
    assert c.seconds(obj, "never", "") is None
    assert c.choice(obj, "mode", "", ("quiet", "normal")) is None
    assert c.pattern(obj, "regex", "") is None
    assert c.path(obj, "file", "") == "/etc/karpor/tokens.csv"
    assert c.errors == [
        ("name", "must be a string, not a number"),
        ("s.empty", "must not be empty"),
        ("s.absent", "required"),
        ("s.list[1]", "must be a string, not a number"),
        ("t.list[1]", "must be a non-empty string, not a number"),
        ("t.list[2]", "must be a non-empty string, not a string"),
        ("flag", "must be true or false, not a string"),
        ("bad", "must be an integer, not a number"),
        ("never", "must be a positive number of seconds, not a number"),
        ("mode", "must be one of quiet, normal"),
        ("regex", "invalid regular expression: missing ), unterminated subpattern at position 0"),
    ]


def test_unknown_keys_suggest_the_closest_known_key_or_list_them() -> None:
    c = Checker()
    c.mapping({"intervall": 1, "colour": 2, 3: 4}, "healthProbe", ("interval", "timeout"))
    assert c.lines("k.yaml") == [
        "k.yaml: healthProbe.intervall: unknown key (did you mean interval?)",
        "k.yaml: healthProbe.colour: unknown key (known: interval, timeout)",
        "k.yaml: healthProbe.3: unknown key (known: interval, timeout)",
    ]


def test_a_label_selector() -> None:
    c = Checker()
    obj = {
        "s": {
            "matchLabels": {"env": "prod"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web"]},
                {"key": None, "operator": "Exists"},
                {"key": "a", "operator": "Exists", "values": ["x"]},
                {"key": "b", "operator": "Has"},
                "x",
            ],
        }
    }
    assert c.label_selector(obj, "s", "rules[0]") == Selector(
        {"env": "prod"}, (Expression("tier", "In", ("web",)),)
    )
    assert c.errors == [
        ("rules[0].s.matchExpressions[1].key", "required"),
        ("rules[0].s.matchExpressions[2].values", "must be empty with operator Exists"),
        (
            "rules[0].s.matchExpressions[3].operator",
            "must be one of In, NotIn, Exists, DoesNotExist",
        ),
        ("rules[0].s.matchExpressions[4]", "must be a mapping, not a string"),
    ]


# -- key tables ------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    interval: float = 10.0
    timeout: float = 4.0

    def __post_init__(self) -> None:
        if not self.timeout < self.interval:
            raise ValueError("timeout must be less than interval")


PROBE = section_parser(
    Probe,
    (
        Key("interval", "interval", Checker.seconds, "--interval"),
        Key("timeout", "timeout", Checker.seconds),
    ),
)
TOP = (Key("probe", "probe", PROBE), Key("port", "port", Checker.integer, "--port"))


def test_a_key_table_reads_nested_sections_with_full_paths() -> None:
    c = Checker()
    assert parse_section(c, {"probe": {"interval": 30}, "port": None}, TOP, "") == {
        "probe": Probe(30.0, 4.0)
    }
    parse_section(c, {"probe": {"interval": 2, "timeout": 3}, "prot": 1}, TOP, "")
    parse_section(c, {"probe": {"interval": "soon"}, "port": "x"}, TOP, "")
    assert c.lines("k.yaml") == [
        "k.yaml: probe: timeout must be less than interval",
        "k.yaml: prot: unknown key (did you mean port?)",
        "k.yaml: probe.interval: must be a positive number of seconds, not a string",
        "k.yaml: port: must be an integer, not a string",
    ]


def test_one_value_read_as_a_flag() -> None:
    assert parse_value(Checker.integer, "8443", "--port") == 8443
    with pytest.raises(FileProblems) as info:
        parse_value(Checker.integer, "http", "--port")
    assert info.value.problems == ("--port: must be an integer, not a string",)


# -- properties ----------------------------------------------------------------------

#: leaf kinds, named after the Checker method that reads them
LEAVES = ("string", "strings", "boolean", "integer", "seconds")
_keys = st.sampled_from(["name", "spec", "items", "verbs", "port", "mode", "a", "b", "c"])

#: a schema: a leaf kind, a mapping of keys to schemas, or ("list", mapping)
_schemas = st.recursive(
    st.sampled_from(LEAVES),
    lambda children: st.one_of(
        st.dictionaries(_keys, children, min_size=1, max_size=3),
        st.dictionaries(_keys, children, min_size=1, max_size=3).map(lambda m: ("list", m)),
    ),
    max_leaves=8,
)
_roots = st.dictionaries(_keys, _schemas, min_size=1, max_size=4)

_good: dict[str, st.SearchStrategy[Any]] = {
    "string": st.sampled_from(["", "x", "ab c"]),
    "strings": st.lists(st.sampled_from(["", "x"]), max_size=2),
    "boolean": st.booleans(),
    "integer": st.integers(0, 10**9),
    "seconds": st.one_of(st.integers(1, 10**6), st.floats(0.001, 1e6)),
}


def _not_positive(text: str) -> bool:
    try:
        return not float(text) > 0
    except ValueError:
        return True


_other = st.one_of(
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=2), st.integers())
)
_bad: dict[str, st.SearchStrategy[Any]] = {
    "string": st.one_of(st.integers(), st.booleans(), st.floats(allow_nan=False), _other),
    "strings": st.one_of(
        st.text(max_size=4),
        st.integers(),
        st.booleans(),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    ),
    "boolean": st.one_of(st.text(max_size=4), st.integers(), st.floats(allow_nan=False), _other),
    "integer": st.one_of(
        st.booleans(),
        st.floats(allow_nan=False).filter(lambda f: not math.isinf(f)),
        st.text(max_size=4).filter(lambda s: not s.strip().isdigit()),
        _other,
    ),
    "seconds": st.one_of(
        st.booleans(),
        st.integers(max_value=0),
        st.text(max_size=4).filter(_not_positive),
        _other,
    ),
}


def read(c: Checker, schema: dict[str, Any], obj: Any, path: str) -> None:
    """Read ``obj`` (at ``path``) as ``schema`` says, with the Checker's reads."""
    mapping = c.mapping(obj, path, list(schema))
    if mapping is None:
        return
    for key, sub in schema.items():
        if isinstance(sub, str):
            getattr(c, sub)(mapping, key, path)
        elif isinstance(sub, tuple):
            for where, entry in c.items(mapping, key, path):
                read(c, sub[1], entry, where)
        elif mapping.get(key) is not None:
            read(c, sub, mapping[key], join(path, key))


#: a leaf of a generated document: its container, key, path and kind
Leaf = tuple[dict[str, Any], str, str, str]


def build(
    draw: st.DrawFn, schema: dict[str, Any], path: str, leaves: list[Leaf], maps: list[Any]
) -> dict[str, Any]:
    """A valid document for ``schema``, noting its leaves and mappings."""
    out: dict[str, Any] = {}
    maps.append((out, path))
    for key, sub in schema.items():
        field = join(path, key)
        if isinstance(sub, str):
            out[key] = draw(_good[sub])
            leaves.append((out, key, field, sub))
        elif isinstance(sub, tuple):
            count = draw(st.integers(1, 2))
            out[key] = [build(draw, sub[1], item(field, i), leaves, maps) for i in range(count)]
        else:
            out[key] = build(draw, sub, field, leaves, maps)
    return out


@st.composite
def documents(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, Any], list[Leaf], list[Any]]:
    schema = draw(_roots)
    leaves: list[Leaf] = []
    maps: list[Any] = []
    return schema, build(draw, schema, "", leaves, maps), leaves, maps


@settings(max_examples=50)
@given(documents())
def test_a_valid_document_has_no_problem(doc: Any) -> None:
    schema, obj, _, _ = doc
    c = Checker()
    read(c, schema, obj, "")
    assert c.errors == []


@settings(max_examples=50)
@given(documents(), st.data())
def test_one_wrong_leaf_is_exactly_one_problem_naming_its_path(doc: Any, data: Any) -> None:
    schema, obj, leaves, _ = doc
    container, key, field, kind = data.draw(st.sampled_from(leaves))
    container[key] = data.draw(_bad[kind])
    c = Checker()
    read(c, schema, obj, "")
    assert [f for f, _ in c.errors] == [field]


@settings(max_examples=50)
@given(documents(), st.data())
def test_one_unknown_key_is_exactly_one_problem_naming_its_path(doc: Any, data: Any) -> None:
    schema, obj, _, maps = doc
    container, path = data.draw(st.sampled_from(maps))
    extra = data.draw(
        st.sampled_from(["nmae", "prot", "zz", "x y"]).filter(lambda k: k not in container)
    )
    container[extra] = data.draw(_good["string"])
    c = Checker()
    read(c, schema, obj, "")
    assert len(c.errors) == 1
    field, message = c.errors[0]
    assert field == join(path, extra)
    assert message.startswith("unknown key (")
