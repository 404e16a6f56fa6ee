"""Validating the YAML files the gateway reads: one idiom, one problem format (sans-IO).

Every YAML file karpor reads — cluster files (:mod:`karpor.config.clusters`,
:mod:`karpor.config.kubeconfig`), the settings file
(:mod:`karpor.app.settings`, :mod:`karpor.auth.sections`) and the policy
file (:mod:`karpor.auth.policy`) — is checked the same way: a
:class:`Checker` reads the parsed YAML with typed reads (a mapping with known
keys, a string, a list of strings, a boolean, an integer, seconds, one of a
few words, a regular expression, a label selector, the items of a list),
records every problem with the path of its field, and goes on, so that one
run reports everything wrong in a file, not just the first thing.

**Problem lines.**  Each problem is one line (:func:`problem_line`)::

    FILE: document N: FIELD: MESSAGE

``FILE``
    the file's path as given.
``document N``
    the 1-based number of the YAML document, in files that may hold several
    (cluster files, split at ``---``).  The settings and the policy file are
    one document each, so their lines leave it out, as do problems of a
    whole file (unreadable, not UTF-8).
``FIELD``
    the path of the field from the document's root: keys joined by ``.``,
    list items as ``[i]`` (``spec.access.endpoint``, ``rules[2].verbs[0]``,
    ``healthProbe.interval``); ``yaml`` for a syntax error
    (:func:`load_yaml`); left out when the problem is the document itself
    (not a mapping).  A command-line flag's problem names the flag
    (``--port``) and no file.
``MESSAGE``
    what is wrong, in words; never the value of a credential.  An unknown
    key says which known key it resembles (``did you mean interval?``) or
    lists the known keys.

A typed read returns the value, or ``None`` (absent, or wrong: the problem
is recorded).  Reads that take ``(obj, key, path)`` read ``obj[key]`` and
name the problem ``path.key``; a parser of that shape
(:data:`FieldParser`) is also how settings keys declare how their value is
read (:class:`karpor.app.settings.Key`).  Whether a read added problems
is ``len(checker.errors)`` before and after.

A mapping of known keys whose values become a dataclass's fields (the
settings file and its sections) is a table of :class:`Key` read by
:func:`parse_section`, or, nested, by the parser :func:`section_parser`
makes.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple, TypeVar

import yaml

# The C loader (libyaml) is an order of magnitude faster than the pure one.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_TYPE_NAMES = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "a mapping",
}

#: label selector operators (``metav1.LabelSelectorOperator``)
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
_SELECTOR_KEYS = ("matchLabels", "matchExpressions")
_EXPRESSION_KEYS = ("key", "operator", "values")


def problem_line(source: str, document: int, field: str, message: str) -> str:
    """The line a problem is shown as: ``source: document N: field: message``
    (each part left out when empty, ``document`` when 0)."""
    parts = [source] if source else []
    if document:
        parts.append(f"document {document}")
    if field:
        parts.append(field)
    parts.append(message)
    return ": ".join(parts)


def describe(value: object) -> str:
    """What kind of YAML value ``value`` is, for a message (never the value)."""
    if value is None:
        return "null"
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def quote(text: str, limit: int = 64) -> str:
    """A value that is no secret, quoted and cut short for a message."""
    if len(text) > limit:
        text = text[:limit] + "…"
    return '"' + text.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


def join(path: str, key: str) -> str:
    """The field path of ``key`` in the mapping at ``path``."""
    return f"{path}.{key}" if path else key


def item(path: str, index: int) -> str:
    """The field path of item ``index`` of the list at ``path``."""
    return f"{path}[{index}]"


class YamlError(ValueError):
    """A YAML syntax error; ``str()`` is the message (``problem (line N)``)."""


def yaml_message(exc: yaml.YAMLError, first_line: int = 1) -> str:
    """What a YAML error says, with the line in the file (a document starts at ``first_line``)."""
    if isinstance(exc, yaml.MarkedYAMLError):
        problem = exc.problem or exc.context or "syntax error"
        mark = exc.problem_mark or exc.context_mark
        if mark is not None:
            return f"{problem} (line {first_line + mark.line})"
        return problem
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def load_yaml(text: str, first_line: int = 1) -> Any:
    """One YAML document (the safe, C-accelerated loader); :class:`YamlError` if broken."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a safe loader)
    except yaml.YAMLError as exc:
        raise YamlError(yaml_message(exc, first_line)) from None


class FileProblems(ValueError):
    """A file that cannot be used; ``problems`` holds its problem lines."""

    def __init__(self, problems: Collection[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = tuple(problems)


class Expression(NamedTuple):
    """One ``matchExpressions`` entry of a label selector, as read."""

    key: str
    operator: str
    values: tuple[str, ...]


class Selector(NamedTuple):
    """A label selector (``matchLabels``, ``matchExpressions``), as read."""

    match_labels: Mapping[str, str]
    match_expressions: tuple[Expression, ...]


class Checker:
    """Typed reads of parsed YAML values, collecting every problem.

    :attr:`errors` holds ``(field, message)`` pairs in the order found;
    :meth:`lines` renders them.  ``base_dir`` resolves the relative paths
    the file names (:meth:`path`).
    """

    def __init__(self, base_dir: str = "") -> None:
        self.base_dir = base_dir
        self.errors: list[tuple[str, str]] = []

    def error(self, field: str, message: str) -> None:
        """Record a problem with ``field``."""
        self.errors.append((field, message))

    def lines(self, source: str, document: int = 0) -> list[str]:
        """The problems as lines of the file ``source`` (:func:`problem_line`)."""
        return [problem_line(source, document, f, m) for f, m in self.errors]

    # -- shapes ------------------------------------------------------------

    def mapping(
        self, value: Any, field: str, known: Collection[str] | None = None
    ) -> Mapping[str, Any] | None:
        """``value`` if it is a mapping (with only ``known`` keys, when given)."""
        if not isinstance(value, dict | Mapping):  # dict first: the fast, common case
            self.error(field, f"must be a mapping, not {describe(value)}")
            return None
        if known is not None:
            self.unknown(value, known, field)
        return value

    def unknown(self, obj: Mapping[Any, Any], known: Collection[str], path: str) -> None:
        """Record a problem for each key of ``obj`` not in ``known``."""
        for key in obj:
            if key not in known:
                self.unknown_key(key, known, path)

    def unknown_key(self, key: object, known: Collection[str], path: str) -> None:
        """Record that ``key`` of the mapping at ``path`` is none of ``known``."""
        name = quote(key)[1:-1] if isinstance(key, str) else repr(key)
        close = difflib.get_close_matches(name, list(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(known)}"
        self.error(join(path, name), f"unknown key ({hint})")

    def section(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        known: Collection[str] | None = None,
        *,
        required: bool = False,
    ) -> Mapping[str, Any] | None:
        """The mapping at ``obj[key]`` (``None`` when absent; a problem if ``required``)."""
        value = obj.get(key)
        if value is None:
            if required:
                self.error(join(path, key), "required")
            return None
        return self.mapping(value, join(path, key), known)

    def items(
        self, obj: Mapping[str, Any], key: str, path: str, *, required: bool = False
    ) -> list[tuple[str, Any]]:
        """The items of the list at ``obj[key]`` with their field paths."""
        field = join(path, key)
        value = obj.get(key)
        if value is None:
            if required:
                self.error(field, "required")
            return []
        if not isinstance(value, list):
            self.error(field, f"must be a list, not {describe(value)}")
            return []
        return [(item(field, i), v) for i, v in enumerate(value)]

    # -- scalars -----------------------------------------------------------

    def string(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        required: bool = False,
        empty: bool = True,
    ) -> str | None:
        """The string at ``obj[key]``; an empty one is a problem when
        ``required`` or not ``empty``."""
        field = join(path, key)
        value = obj.get(key)
        if value is None:
            if required:
                self.error(field, "required")
            return None
        if not isinstance(value, str):
            self.error(field, f"must be a string, not {describe(value)}")
            return None
        if not value and (required or not empty):
            self.error(field, "must not be empty")
            return None
        return value

    def strings(
        self,
        obj: Mapping[str, Any],
        key: str,
        path: str,
        *,
        empty: bool = True,
        empty_items: bool = True,
    ) -> tuple[str, ...] | None:
        """The list of strings at ``obj[key]`` (``None`` when absent); an
        empty list is a problem unless ``empty``, an empty string unless
        ``empty_items``.  The strings that are right, when some are not."""
        field = join(path, key)
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, list):
            self.error(field, f"must be a list of strings, not {describe(value)}")
            return None
        out: list[str] = []
        for i, entry in enumerate(value):
            if isinstance(entry, str) and (entry or empty_items):
                out.append(entry)
            elif empty_items:
                self.error(item(field, i), f"must be a string, not {describe(entry)}")
            else:
                self.error(item(field, i), f"must be a non-empty string, not {describe(entry)}")
        if not value and not empty:
            self.error(field, "must not be empty (leave the key out instead)")
            return None
        return tuple(out)

    def boolean(self, obj: Mapping[str, Any], key: str, path: str, *, words: bool = False) -> bool:
        """The boolean at ``obj[key]`` (``False`` when absent or wrong); with
        ``words`` also the strings ``true`` and ``false`` (as flags give them)."""
        value = obj.get(key)
        if value is None:
            return False
        if words and isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            self.error(join(path, key), f"must be true or false, not {describe(value)}")
            return False
        return value

    def integer(self, obj: Mapping[str, Any], key: str, path: str) -> int | None:
        """The integer at ``obj[key]`` (digits in a string too, as flags give them)."""
        value = obj.get(key)
        if value is None:
            return None
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.error(join(path, key), f"must be an integer, not {describe(value)}")
            return None
        return value

    def seconds(self, obj: Mapping[str, Any], key: str, path: str) -> float | None:
        """The positive number of seconds at ``obj[key]`` (a number in a string too)."""
        value = obj.get(key)
        if value is None:
            return None
        try:
            number = float(value) if isinstance(value, str) else value
        except ValueError:
            number = None
        if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
            self.error(
                join(path, key), f"must be a positive number of seconds, not {describe(value)}"
            )
            return None
        return float(number)

    def choice(
        self, obj: Mapping[str, Any], key: str, path: str, choices: Collection[str]
    ) -> str | None:
        """The string at ``obj[key]`` if it is one of ``choices``."""
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or value not in choices:
            self.error(join(path, key), f"must be one of {', '.join(choices)}")
            return None
        return value

    def pattern(self, obj: Mapping[str, Any], key: str, path: str) -> re.Pattern[str] | None:
        """The regular expression at ``obj[key]``."""
        text = self.string(obj, key, path, empty=False)
        if text is None:
            return None
        try:
            return re.compile(text)
        except re.error as exc:
            self.error(join(path, key), f"invalid regular expression: {exc}")
            return None

    def path(self, obj: Mapping[str, Any], key: str, path: str) -> str | None:
        """The file path at ``obj[key]``, resolved against :attr:`base_dir`."""
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.error(join(path, key), f"must be a path, not {describe(value)}")
            return None
        return os.path.join(self.base_dir, value)

    # -- label selectors ----------------------------------------------------

    def label_selector(self, obj: Mapping[str, Any], key: str, path: str) -> Selector | None:
        """The label selector at ``obj[key]`` (``matchLabels``, ``matchExpressions``)."""
        field = join(path, key)
        value = obj.get(key)
        if value is None:
            return None
        selector = self.mapping(value, field, _SELECTOR_KEYS)
        if selector is None:
            return None
        labels: dict[str, str] = {}
        raw_labels = self.section(selector, "matchLabels", field)
        for k, v in (raw_labels or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                self.error(join(field, "matchLabels"), "keys and values must be strings")
            else:
                labels[k] = v
        expressions: list[Expression] = []
        for where, entry in self.items(selector, "matchExpressions", field):
            expression = self._expression(entry, where)
            if expression is not None:
                expressions.append(expression)
        return Selector(labels, tuple(expressions))

    def _expression(self, value: Any, path: str) -> Expression | None:
        obj = self.mapping(value, path, _EXPRESSION_KEYS)
        if obj is None:
            return None
        key = self.string(obj, "key", path, required=True)
        operator = self.string(obj, "operator", path, required=True)
        if operator is not None and operator not in OPERATORS:
            self.error(join(path, "operator"), f"must be one of {', '.join(OPERATORS)}")
            operator = None
        values = self.strings(obj, "values", path, empty_items=False) or ()
        if operator in ("In", "NotIn") and not values:
            self.error(join(path, "values"), f"must not be empty with operator {operator}")
            return None
        if operator in ("Exists", "DoesNotExist") and values:
            self.error(join(path, "values"), f"must be empty with operator {operator}")
            return None
        if key is None or operator is None:
            return None
        return Expression(key, operator, values)


#: how a field is read: ``parse(checker, obj, key, path)`` returns the typed
#: value of ``obj[key]``, recording problems as ``path.key`` (the
#: :class:`Checker` methods of this shape are such parsers)
FieldParser = Callable[[Checker, Mapping[str, Any], str, str], Any]
_T = TypeVar("_T")


class Key(NamedTuple):
    """One known key of a mapping read with :func:`parse_section`: its name
    in the file, the attribute it sets, its :data:`FieldParser`, and the
    command-line flag that sets it too (settings keys; "" for none)."""

    name: str
    attribute: str
    parse: FieldParser
    flag: str = ""


def parse_section(
    checker: Checker, obj: Mapping[str, Any], keys: Collection[Key], path: str
) -> dict[str, Any]:
    """The attributes the mapping ``obj`` (at ``path``) sets, by attribute
    name: each known key read by its parser, in the file's order; an
    unknown key is a problem; a null value is as if the key were absent."""
    by_name = {k.name: k for k in keys}
    out: dict[str, Any] = {}
    for name, value in obj.items():
        key = by_name.get(name) if isinstance(name, str) else None
        if key is None:
            checker.unknown_key(name, by_name, path)
            continue
        if value is None:
            continue
        before = len(checker.errors)
        parsed = key.parse(checker, obj, name, path)
        if len(checker.errors) == before:
            out[key.attribute] = parsed
    return out


def section_parser(cls: Callable[..., _T], keys: Collection[Key]) -> FieldParser:
    """The :data:`FieldParser` of a nested mapping of ``keys`` built as
    ``cls(**attributes)``; a :class:`ValueError` of ``cls`` (fields that
    disagree) is a problem of the mapping's field."""

    def parse(checker: Checker, obj: Mapping[str, Any], key: str, path: str) -> _T | None:
        section = checker.section(obj, key, path)
        if section is None:
            return None
        field = join(path, key)
        before = len(checker.errors)
        values = parse_section(checker, section, keys, field)
        if len(checker.errors) > before:
            return None
        try:
            return cls(**values)
        except ValueError as exc:
            checker.error(field, str(exc))
            return None

    return parse


def parse_value(parse: FieldParser, value: Any, field: str, base_dir: str = "") -> Any:
    """``value`` read by ``parse`` as if it were the field ``field`` of a
    document (a flag's value, a value in a test); :class:`FileProblems`
    with ``field: message`` lines if it is wrong."""
    checker = Checker(base_dir)
    parsed = parse(checker, {field: value}, field, "")
    if checker.errors:
        raise FileProblems(checker.lines(""))
    return parsed
