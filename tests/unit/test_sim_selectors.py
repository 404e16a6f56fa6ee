"""Label and field selectors: kube's grammar, matching and error messages."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.selectors import (
    DOES_NOT_EXIST,
    DOUBLE_EQUALS,
    EQUALS,
    EXISTS,
    GREATER_THAN,
    IN,
    LESS_THAN,
    NOT_EQUALS,
    NOT_IN,
    LabelSelector,
    Requirement,
    SelectorError,
    check_field_selector,
    format_labels,
    label_selector_from_object,
    object_fields,
    parse_field_selector,
    parse_label_selector,
)


def matches(selector: str, labels: dict[str, str]) -> bool:
    return parse_label_selector(selector).matches(labels)


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("", {"a": "1"}, True),
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "web"}, True),
        ("app=web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("app in (web, db)", {"app": "db"}, True),
        ("app in (web,db)", {}, False),
        ("app notin (web,db)", {}, True),
        ("app notin (web,db)", {"app": "web"}, False),
        ("app", {"app": ""}, True),
        ("app", {}, False),
        ("!app", {}, True),
        ("!app", {"app": "x"}, False),
        ("tier=front,!legacy,env in (prod)", {"tier": "front", "env": "prod"}, True),
        ("size>5", {"size": "6"}, True),
        ("size>5", {"size": "5"}, False),
        ("size<5", {"size": "x"}, False),
        ("x=", {"x": ""}, True),
        ("x in ()", {"x": ""}, True),
        ("in in (in)", {"in": "in"}, True),
        ("  app  =  web  ", {"app": "web"}, True),
    ],
)
def test_label_selector_matching(selector, labels, expected):
    assert matches(selector, labels) is expected


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        (
            "env IN (a)",
            "unable to parse requirement: found 'IN', expected: in, notin, =, ==, !=, gt, lt",
        ),
        ("a,", "found '', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("a in b", "unable to parse requirement: found 'b' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
        (
            "x>a",
            'unable to parse requirement: values[0]: Invalid value: "a": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        (
            "-a=b",
            'unable to parse requirement: <nil>: Invalid value: "-a": name part must consist of '
            "alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
            "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
            "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
        (
            "a=b c!",
            "found 'c', expected: ',' or 'end of string'",
        ),
        (
            "a=-b",
            'unable to parse requirement: values[0][a]: Invalid value: "-b": a valid label must '
            "be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
            "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
        ),
    ],
)
def test_label_selector_errors_are_kubes(selector, message):
    with pytest.raises(SelectorError) as caught:
        parse_label_selector(selector)
    assert caught.value.message == message
    assert caught.value.code == 400
    assert caught.value.status()["reason"] == "BadRequest"


def test_label_selector_string_is_sorted_and_normalised():
    selector = parse_label_selector("z in (b,a), !y, x, w>3, v==1, u!=2")
    assert str(selector) == "u!=2,v==1,w>3,x,!y,z in (a,b)"


# --- property: printed selectors parse back and match as a reference evaluation --

_name = st.from_regex(r"\A[a-z0-9]([a-z0-9._-]{0,8}[a-z0-9])?\Z")
_key = st.one_of(
    _name, st.builds(lambda p, n: f"{p}/{n}", st.sampled_from(["example.com", "k8s.io"]), _name)
)
_value = st.one_of(st.just(""), _name)
_ints = st.integers(min_value=0, max_value=99).map(str)


@st.composite
def requirements(draw):
    key = draw(_key)
    op = draw(
        st.sampled_from(
            [
                EQUALS,
                DOUBLE_EQUALS,
                NOT_EQUALS,
                IN,
                NOT_IN,
                EXISTS,
                DOES_NOT_EXIST,
                GREATER_THAN,
                LESS_THAN,
            ]
        )
    )
    if op in (EXISTS, DOES_NOT_EXIST):
        values: tuple[str, ...] = ()
    elif op in (GREATER_THAN, LESS_THAN):
        values = (draw(_ints),)
    elif op in (IN, NOT_IN):
        values = tuple(sorted(draw(st.sets(_value, min_size=1, max_size=3))))
    else:
        values = (draw(_value),)
    return Requirement(key, op, values)


def reference_match(requirement: Requirement, labels: dict[str, str]) -> bool:
    """An independent statement of kube's matching rules."""
    key, op, values = requirement.key, requirement.operator, requirement.values
    present = key in labels
    if op in (EQUALS, DOUBLE_EQUALS, IN):
        return present and labels[key] in values
    if op in (NOT_EQUALS, NOT_IN):
        return not present or labels[key] not in values
    if op == EXISTS:
        return present
    if op == DOES_NOT_EXIST:
        return not present
    if not present or not labels[key].isdigit():
        return False
    return (
        int(labels[key]) > int(values[0])
        if op == GREATER_THAN
        else int(labels[key]) < int(values[0])
    )


@st.composite
def label_sets(draw, reqs):
    keys = [r.key for r in reqs] + draw(st.lists(_key, max_size=2))
    candidates = [v for r in reqs for v in r.values] + ["", "7", "x"]
    labels = {}
    for key in keys:
        if draw(st.booleans()):
            labels[key] = draw(st.sampled_from(candidates))
    return labels


@given(st.data())
def test_printed_selectors_parse_back_and_match_like_the_reference(data):
    reqs = data.draw(st.lists(requirements(), min_size=1, max_size=4))
    text = ",".join(str(r) for r in reqs)
    parsed = parse_label_selector(text)
    assert sorted(parsed.requirements, key=lambda r: r.key) == list(parsed.requirements)
    assert str(parse_label_selector(str(parsed))) == str(parsed)
    for _ in range(5):
        labels = data.draw(label_sets(reqs))
        assert parsed.matches(labels) == all(reference_match(r, labels) for r in reqs)


# --- LabelSelector objects and labels.FormatLabels ---------------------------------


def test_label_selector_from_object():
    selector = label_selector_from_object(
        {
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "legacy", "operator": "DoesNotExist"},
            ],
        }
    )
    assert str(selector) == "app=web,!legacy,tier in (a,b)"
    assert selector.matches({"app": "web", "tier": "a"})
    assert not selector.matches({"app": "web", "tier": "a", "legacy": "1"})
    assert label_selector_from_object({}) == LabelSelector()
    assert label_selector_from_object(None).matches({}) is False
    with pytest.raises(ValueError, match="is not a valid label selector operator"):
        label_selector_from_object({"matchExpressions": [{"key": "a", "operator": "Near"}]})


def test_format_labels():
    assert format_labels({"b": "2", "a": "1"}) == "a=1,b=2"
    assert format_labels({}) == "<none>"
    assert format_labels(None) == "<none>"


# --- field selectors ----------------------------------------------------------------


def test_field_selector_parsing_and_matching():
    selector = parse_field_selector("metadata.name=web,status.phase!=Running")
    fields = {"metadata.name": "web", "status.phase": "Pending"}
    assert selector.matches(fields)
    assert not selector.matches({**fields, "status.phase": "Running"})
    assert parse_field_selector("metadata.name==web").matches(fields)
    assert parse_field_selector("").empty
    assert str(parse_field_selector(r"metadata.name=a\,b")) == r"metadata.name=a\,b"
    assert parse_field_selector(r"metadata.name=a\,b").matches({"metadata.name": "a,b"})


@pytest.mark.parametrize(
    ("selector", "message"),
    [
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        (r"metadata.name=a\b", "invalid field selector: invalid escape sequence: \\b"),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: ="),
    ],
)
def test_field_selector_errors(selector, message):
    with pytest.raises(SelectorError) as caught:
        parse_field_selector(selector)
    assert caught.value.message == message


def test_field_labels_depend_on_the_kind():
    check_field_selector(parse_field_selector("spec.nodeName=n,status.phase=Running"), "", "Pod")
    check_field_selector(parse_field_selector("involvedObject.name=x"), "", "Event")
    with pytest.raises(SelectorError) as caught:
        check_field_selector(parse_field_selector("spec.nodeName=n"), "", "ConfigMap")
    assert caught.value.message == "field label not supported: spec.nodeName"


def test_object_fields():
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {"nodeName": "n", "hostNetwork": True},
    }
    fields = object_fields("", "Pod", pod)
    assert fields["metadata.name"] == "p"
    assert fields["spec.nodeName"] == "n"
    assert fields["spec.hostNetwork"] == "true"
    assert fields["status.phase"] == ""
    event = {
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Pod", "name": "p"},
        "reportingComponent": "kubelet",
    }
    fields = object_fields("", "Event", event)
    assert fields["involvedObject.name"] == "p"
    assert fields["source"] == "kubelet"
