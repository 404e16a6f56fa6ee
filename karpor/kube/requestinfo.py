"""What a Kubernetes API request asks for: kube-apiserver's ``RequestInfo``, sans-IO.

:func:`parse_request_info` reads a request's method, path and query exactly
as ``k8s.io/apiserver/pkg/endpoints/request/requestinfo.go``
(``RequestInfoFactory.NewRequestInfo``) does, so authorization rules written
for a kube-apiserver (verbs, resources, subresources, names) mean the same
thing here.  The simulator dispatches on it and the gateway's authorization
reuses it.

Paths look like::

    /api/{version}/{resource}
    /api/{version}/namespaces/{namespace}/{resource}/{name}/{subresource}
    /apis/{group}/{version}/...
    /api/{version}/watch/...          (legacy: the verb is "watch")

Anything else (``/version``, ``/healthz``, ``/api``, ``/apis/{group}``...) is
a non-resource request whose verb is the lower-cased HTTP method.

:func:`long_running` classifies a request as kube-apiserver's
``BasicLongRunningRequestCheck`` does (verbs ``watch`` and ``proxy``;
subresources ``attach``, ``exec``, ``proxy``, ``log``, ``portforward``):
those get no request timeout.  :func:`long_running_target` is the same
decision on a raw request target, cheap for the common request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote

#: path prefixes under which resources live (``RequestInfoFactory.APIPrefixes``)
API_PREFIXES = frozenset({"api", "apis"})
#: prefixes without an API group in the path (``GrouplessAPIPrefixes``)
GROUPLESS_API_PREFIXES = frozenset({"api"})

_SPECIAL_VERBS = frozenset({"proxy", "watch"})
_SPECIAL_VERBS_NO_SUBRESOURCES = frozenset({"proxy"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})

_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}

#: verbs kube-apiserver runs without a request timeout
LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
#: subresources kube-apiserver runs without a request timeout
LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})
#: a raw target holding none of these cannot be long-running (``%``: an
#: escaped path is decoded first)
_LONG_RUNNING_HINT = re.compile(rb"watch|proxy|attach|exec|log|portforward|%", re.IGNORECASE)

#: list options that must parse as integers (``metainternalversion.ListOptions``)
_INT_OPTIONS = ("timeoutSeconds", "limit")


@dataclass(frozen=True)
class RequestInfo:
    """The attributes of one request, as ``k8s.io/apiserver`` names them."""

    is_resource_request: bool
    #: the URL path, percent-decoded (Go's ``URL.Path``)
    path: str
    #: get, list, watch, create, update, patch, delete, deletecollection, proxy,
    #: or the lower-cased HTTP method of a non-resource request
    verb: str
    api_prefix: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    #: the path segments from the resource on (``resource/name/subresource/...``)
    parts: tuple[str, ...] = ()


class RequestInfoError(ValueError):
    """The path is a resource path with too few parts to interpret (kube: an error)."""


def split_path(path: str) -> list[str]:
    """The ``/``-separated segments of ``path`` without empty ends (Go's ``splitPath``)."""
    trimmed = path.strip("/")
    if not trimmed:
        return []
    return trimmed.split("/")


def parse_query(query: str) -> dict[str, list[str]]:
    """A raw query string as Go's ``url.ParseQuery`` reads it (blank values kept)."""
    return parse_qs(query, keep_blank_values=True)


def parse_request_info(
    method: str, path: str, query: str | Mapping[str, Sequence[str]] = ""
) -> RequestInfo:
    """The :class:`RequestInfo` of a request.

    ``path`` is the URL path (percent-encoded or not: it is decoded once, as
    Go's ``URL.Path`` is); ``query`` the raw query string or an already
    parsed mapping of lists.  Raises :class:`RequestInfoError` where kube's
    ``NewRequestInfo`` returns an error (``/api/v1/watch`` alone).
    """
    path = unquote(path)
    params = parse_query(query) if isinstance(query, str) else query
    verb = method.lower()
    parts = split_path(path)
    plain = RequestInfo(is_resource_request=False, path=path, verb=verb)
    if len(parts) < 3 or parts[0] not in API_PREFIXES:
        return plain
    api_prefix, parts = parts[0], parts[1:]
    api_group = ""
    if api_prefix not in GROUPLESS_API_PREFIXES:
        if len(parts) < 3:
            return plain
        api_group, parts = parts[0], parts[1:]
    api_version, parts = parts[0], parts[1:]

    if parts[0] in _SPECIAL_VERBS:
        if len(parts) < 2:
            raise RequestInfoError(f"unable to determine kind and namespace from url, {path}")
        verb, parts = parts[0], parts[1:]
    else:
        verb = _METHOD_VERBS.get(method.upper(), "")

    namespace = ""
    if parts[0] == "namespaces" and len(parts) > 1:
        namespace = parts[1]
        if len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
            parts = parts[2:]

    resource = name = subresource = ""
    if len(parts) >= 3 and verb not in _SPECIAL_VERBS_NO_SUBRESOURCES:
        subresource = parts[2]
    if len(parts) >= 2:
        name = parts[1]
    if len(parts) >= 1:
        resource = parts[0]

    if not name and verb == "get":
        watch, field_selector = _list_options(params)
        verb = "watch" if watch else "list"
        if field_selector is not None:
            selected = exact_match(field_selector, "metadata.name")
            if selected is not None and is_valid_path_segment_name(selected):
                name = selected

    if not name and verb == "delete":
        verb = "deletecollection"

    return RequestInfo(
        is_resource_request=True,
        path=path,
        verb=verb,
        api_prefix=api_prefix,
        api_group=api_group,
        api_version=api_version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        parts=tuple(parts),
    )


def long_running(info: RequestInfo) -> bool:
    """Whether kube-apiserver treats the request as long-running (no request
    timeout): a ``watch`` or ``proxy`` verb, or a resource request for the
    ``attach``, ``exec``, ``proxy``, ``log`` or ``portforward`` subresource."""
    if info.verb in LONG_RUNNING_VERBS:
        return True
    return info.is_resource_request and info.subresource in LONG_RUNNING_SUBRESOURCES


def long_running_target(method: bytes, target: bytes) -> bool:
    """:func:`long_running` for a raw request ``target`` (path and query as
    sent); a target that names none of the long-running verbs or
    subresources is decided without parsing it.  A target
    :func:`parse_request_info` refuses is not long-running."""
    if _LONG_RUNNING_HINT.search(target) is None:
        return False
    path, _, query = target.partition(b"?")
    try:
        info = parse_request_info(
            method.decode("latin-1"), path.decode("latin-1"), query.decode("latin-1")
        )
    except RequestInfoError:
        return False
    return long_running(info)


def query_bool(values: Sequence[str] | None) -> bool:
    """A boolean query parameter as apimachinery converts one: absent, ``0``
    or ``false`` (any case) is false, anything else (even empty) is true."""
    if not values:
        return False
    first = values[0]
    return not (first == "0" or first.lower() == "false")


def _list_options(
    params: Mapping[str, Sequence[str]],
) -> tuple[bool, list[tuple[str, str, str]] | None]:
    """``watch`` and the parsed field selector of the list options.

    When any option fails to decode, kube drops every option but ``watch``
    (and so never takes a name from the field selector).
    """
    watch = query_bool(params.get("watch"))
    try:
        for key in _INT_OPTIONS:
            values = params.get(key)
            if values:
                int(values[0])
        raw = params.get("fieldSelector")
        selector = parse_field_selector(raw[0]) if raw else None
    except ValueError:
        return watch, None
    return watch, selector


def parse_field_selector(selector: str) -> list[tuple[str, str, str]]:
    """The terms ``(field, operator, value)`` of a field selector, sorted as
    ``fields.ParseSelector`` sorts them; the operator is ``=`` (for ``=`` and
    ``==``) or ``!=``, the value unescaped.  Raises ``ValueError`` when invalid."""
    terms: list[tuple[str, str, str]] = []
    for part in sorted(_split_terms(selector)):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise ValueError(f"invalid selector: '{selector}'; can't understand '{part}'")
        field, op, value = split
        terms.append((field, "!=" if op == "!=" else "=", unescape_value(value)))
    return terms


def exact_match(terms: Sequence[tuple[str, str, str]], field: str) -> str | None:
    """The value a selector requires ``field`` to equal, if it does
    (``Selector.RequiresExactMatch``)."""
    for name, op, value in terms:
        if name == field and op == "=":
            return value
    return None


def is_valid_path_segment_name(name: str) -> bool:
    """Whether ``name`` may be a path segment (``path.IsValidPathSegmentName``)."""
    return name not in (".", "..") and "/" not in name and "%" not in name


def _split_terms(selector: str) -> list[str]:
    """Split on commas not escaped by a backslash (Go's ``splitTerms``)."""
    if not selector:
        return []
    terms: list[str] = []
    start = 0
    in_slash = False
    for i, ch in enumerate(selector):
        if in_slash:
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch == ",":
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    """Split at the first operator (Go's ``splitTerm``: ``!=``, ``==``, ``=``)."""
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def unescape_value(value: str) -> str:
    """A field selector value with its ``\\``-escapes resolved
    (``fields.UnescapeValue``); ``ValueError`` on a bad or missing escape."""
    out: list[str] = []
    in_slash = False
    for ch in value:
        if in_slash:
            if ch not in "\\,=":
                raise ValueError(f"invalid escape sequence: \\{ch}")
            out.append(ch)
            in_slash = False
        elif ch == "\\":
            in_slash = True
        elif ch in ",=":
            raise ValueError(f"unescaped character: {ch}")
        else:
            out.append(ch)
    if in_slash:
        raise ValueError("invalid escape sequence: \\")
    return "".join(out)
