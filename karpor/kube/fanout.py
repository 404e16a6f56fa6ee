"""One list out of many clusters' lists, written as their elements arrive (sans-IO).

A fan-out LIST asks every selected cluster at once; :class:`MergedList`
writes the one response the client reads, as each cluster's elements
arrive (read by :class:`karpor.kube.liststream.ListStream`):

- every item (and a Table row's ``object``) carries the annotation
  :data:`CLUSTER_ANNOTATION` naming its cluster;
- a Table gets a leading ``Cluster`` column (:data:`CLUSTER_COLUMN`), so
  ``kubectl --context all get pods -A`` prints it; the columns are those of
  the first cluster whose rows arrive, another cluster's rows are put in
  that order by column name (a column it lacks is empty);
- the array comes first and the list's fields after it (JSON objects are
  unordered; every Kubernetes client decodes them whole): ``kind``,
  ``apiVersion``, ``columnDefinitions`` and ``metadata`` are known only
  once the clusters answered, and ``metadata`` carries the composite
  ``resourceVersion`` and ``continue`` (:func:`encode_versions`,
  :func:`encode_continue`): one value holding each cluster's own, so a
  watch or the next page resumes every cluster where it was.

A composite value is ``karpor.`` followed by base64url JSON of a map of
cluster name to that cluster's value; :func:`decode_versions` and
:func:`decode_continue` read it back (a value not of that form is a 400
``Status``, as kube-apiserver answers a malformed one).

Discovery across clusters (:func:`union_discovery`) is the union of the
clusters' API versions, groups and resources, so a client finds what any of
them serves.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from karpor.kube.status import ApiError

#: the annotation naming an item's cluster
CLUSTER_ANNOTATION = "karpor.io/cluster"
#: the Table column a fan-out adds first
CLUSTER_COLUMN: dict[str, Any] = {
    "name": "Cluster",
    "type": "string",
    "format": "",
    "description": "The cluster the object is in (karpor fan-out).",
    "priority": 0,
}
#: the prefix of a composite resourceVersion or continue token
COMPOSITE_PREFIX = "karpor."
#: the longest composite value read
MAX_COMPOSITE = 64 * 1024

_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_DECODER = json.JSONDecoder()
_WS = "[ \t\n\r]*"
#: a plain key (no escape in it) and its colon; a separator after a value
_KEY = re.compile(f'{_WS}"([^"\\\\]*)"{_WS}:{_WS}')
_SEP = re.compile(f"{_WS}([,}}])")
#: the text from a ``"metadata"`` (or ``"annotations"``) key to its object's "{"
_METADATA = re.compile(f'"metadata"{_WS}:{_WS}{{')
_ANNOTATIONS = re.compile(f'"annotations"{_WS}:{_WS}{{')


def annotate(obj: Any, cluster: str) -> Any:
    """``obj`` (a decoded object) with :data:`CLUSTER_ANNOTATION` set to
    ``cluster``; anything but an object is returned as it is."""
    if not isinstance(obj, dict):
        return obj
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        metadata = obj["metadata"] = {}
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = metadata["annotations"] = {}
    annotations[CLUSTER_ANNOTATION] = cluster
    return obj


def _metadata_at(text: str, obj: dict[str, Any]) -> int:
    """Where the object of ``text``'s top-level ``metadata`` key begins (the
    index after its "{"), or -1 when it cannot be told cheaply and surely.

    ``obj`` is ``text`` decoded and has a ``metadata`` object.  When the
    text holds ``"metadata"`` only once and no ``\\u`` escape (which could
    spell a key another way; no other escape gives a letter), that one is the
    top-level key (a string containing it would have its quotes escaped);
    else the top-level keys are walked (values skipped by the C decoder), and
    a second ``metadata`` key (whose value a decoder keeps) or a key written
    with an escape is -1.
    """
    if text.count('"metadata"') == 1 and "\\u" not in text:
        found = _METADATA.search(text)
        return found.end() if found is not None else -1
    at = -1
    pos = 1
    try:
        while True:
            key = _KEY.match(text, pos)
            if key is None:
                return -1
            pos = key.end()
            if key.group(1) == "metadata":
                if at >= 0 or text[pos] != "{":
                    return -1
                at = pos + 1
            pos = _DECODER.raw_decode(text, pos)[1]
            sep = _SEP.match(text, pos)
            if sep is None:
                return -1
            if sep.group(1) == "}":
                return at
            pos = sep.end()
    except (ValueError, IndexError):
        return -1


def annotate_text(text: str, obj: Any, cluster: str, entry: str) -> str | None:
    """``text`` (an item's JSON text, ``obj`` it decoded) with
    :data:`CLUSTER_ANNOTATION` set to ``cluster`` (``entry``: that
    annotation's JSON text, ``"karpor.io/cluster":"NAME"``), the rest of the
    text as it came; ``None`` when the item's shape is unusual (not an
    object, no ``metadata`` object, ``annotations`` not an object, a key
    that cannot be located surely): then decode and encode it whole
    (:func:`annotate`).  Decoded, the result equals :func:`annotate`'s.

    Only ``metadata`` is touched: the entry is put first in its
    ``annotations`` (added when there is none) when the text holds
    ``"annotations"`` once; else ``metadata`` alone is encoded again.
    """
    if not isinstance(obj, dict):
        return None
    metadata = obj.get("metadata")
    if not isinstance(metadata, dict):
        return None
    annotations = metadata.get("annotations")
    if annotations is not None and not isinstance(annotations, dict):
        return None
    if annotations is None and "annotations" in metadata:  # null: annotate() replaces it
        return None
    at = _metadata_at(text, obj)
    if at < 0:
        return None
    if annotations is None:
        tail = "}," if metadata else "}"
        return f'{text[:at]}"annotations":{{{entry}{tail}{text[at:]}'
    if (
        CLUSTER_ANNOTATION not in annotations
        and text.count('"annotations"') == 1
        and "\\u" not in text
    ):
        found = _ANNOTATIONS.search(text, at)
        if found is not None:
            put = found.end()
            comma = "," if annotations else ""
            return f"{text[:put]}{entry}{comma}{text[put:]}"
    try:
        end = _DECODER.raw_decode(text, at - 1)[1]
    except ValueError:
        return None
    annotations[CLUSTER_ANNOTATION] = cluster
    return f"{text[: at - 1]}{_DUMPS(metadata)}{text[end:]}"


def _encode(kind: str, values: Mapping[str, str]) -> str:
    raw = json.dumps({kind: dict(sorted(values.items()))}, separators=(",", ":")).encode()
    return COMPOSITE_PREFIX + base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(kind: str, what: str, value: str) -> dict[str, str]:
    if not value.startswith(COMPOSITE_PREFIX) or len(value) > MAX_COMPOSITE:
        raise ApiError(
            400, f"invalid {what}: not one this gateway wrote for many clusters", "BadRequest"
        )
    body = value[len(COMPOSITE_PREFIX) :]
    try:
        doc = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    except (binascii.Error, ValueError):
        raise ApiError(400, f"invalid {what}: not readable", "BadRequest") from None
    values = doc.get(kind) if isinstance(doc, dict) else None
    if not isinstance(values, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in values.items()
    ):
        raise ApiError(400, f"invalid {what}: not readable", "BadRequest")
    return values


def encode_versions(versions: Mapping[str, str]) -> str:
    """The composite resourceVersion of ``versions`` (cluster → its resourceVersion)."""
    return _encode("rv", versions)


def decode_versions(value: str) -> dict[str, str]:
    """Each cluster's resourceVersion in a composite one (400 when malformed)."""
    return _decode("rv", "resourceVersion", value)


def encode_continue(tokens: Mapping[str, str]) -> str:
    """The composite continue token: each cluster still to page, with its
    own token ("" when it has more to give from the start; a cluster whose
    list is complete is left out).  Empty when no cluster has more."""
    return _encode("continue", tokens) if tokens else ""


def decode_continue(value: str) -> dict[str, str]:
    """Each cluster's continue token in a composite one (400 when malformed)."""
    return _decode("continue", "continue token", value)


class MergedList:
    """The merged response of one fan-out LIST (see the module docstring);
    ``table``: the clusters answer Tables (``rows``), else lists (``items``)."""

    def __init__(self, table: bool) -> None:
        self.table = table
        self._started = False
        self._first = True
        #: the reference columns (names, in order) and their definitions
        self._columns: list[str] | None = None
        self._definitions: list[Any] = []
        self._orders: dict[str, list[int | None] | None] = {}
        self._kind: str | None = None
        self._api_version: str | None = None

    def start(self) -> bytes:
        """The response's first bytes (written before any cluster answers)."""
        self._started = True
        return b'{"rows":[' if self.table else b'{"items":['

    def fields(self, cluster: str, fields: Mapping[str, Any]) -> None:
        """Note a cluster's list fields (``kind``, ``apiVersion``, a Table's
        ``columnDefinitions``) as its stream read them."""
        if self._kind is None and isinstance(fields.get("kind"), str):
            self._kind = fields["kind"]
        if self._api_version is None and isinstance(fields.get("apiVersion"), str):
            self._api_version = fields["apiVersion"]
        if self.table and cluster not in self._orders:
            definitions = fields.get("columnDefinitions")
            if isinstance(definitions, list):
                names = [d.get("name") if isinstance(d, dict) else None for d in definitions]
                if self._columns is None:
                    self._columns = [n if isinstance(n, str) else "" for n in names]
                    self._definitions = definitions
                    self._orders[cluster] = None  # the reference: as it is
                else:
                    self._orders[cluster] = [
                        names.index(name) if name in names else None for name in self._columns
                    ]

    def elements(
        self, cluster: str, elements: Sequence[Any], texts: Sequence[str] | None = None
    ) -> bytes:
        """The bytes of a cluster's elements (items or rows), annotated, to
        be written next (:meth:`encode` and :meth:`lead`)."""
        return self.lead(self.encode(cluster, elements, texts))

    def lead(self, data: bytes) -> bytes:
        """``data`` (of :meth:`encode`) as written next: the first elements
        written lose their leading comma."""
        if self._first and data:
            self._first = False
            return data[1:]
        return data

    def encode(
        self, cluster: str, elements: Sequence[Any], texts: Sequence[str] | None = None
    ) -> bytes:
        """The bytes of a cluster's elements (items or rows), annotated, each
        after a comma (written through :meth:`lead`, in any order);
        ``texts``: each element's JSON text as it came (the items are then
        passed on as they came, but for the annotation: :func:`annotate_text`)."""
        if not self.table and texts is not None:
            parts = self._items(cluster, elements, texts)
        else:
            order = self._orders.get(cluster) if self.table else None
            parts = []
            for element in elements:
                marked = (
                    self._row(cluster, element, order) if self.table else annotate(element, cluster)
                )
                parts += (",", _DUMPS(marked))
        out = "".join(parts)
        try:
            return out.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate (an escape) decoded: escape it again
            return out.encode("utf-8", "backslashreplace")

    @staticmethod
    def _items(cluster: str, items: Sequence[Any], texts: Sequence[str]) -> list[str]:
        """The pieces of text of ``items``, each after a comma."""
        entry = _DUMPS({CLUSTER_ANNOTATION: cluster})[1:-1]
        alone = f'"annotations":{{{entry}}}'  # in a metadata without anything else
        first = alone + ","
        parts: list[str] = []
        for item, text in zip(items, texts, strict=True):
            # most items, inline: "metadata" once, no escape, no annotations yet
            if text.count('"metadata"') == 1 and "\\u" not in text and type(item) is dict:
                metadata = item.get("metadata")
                if type(metadata) is dict and "annotations" not in metadata:
                    found = _METADATA.search(text)
                    if found is not None:
                        at = found.end()
                        parts += (",", text[:at], first if metadata else alone, text[at:])
                        continue
            marked = annotate_text(text, item, cluster, entry)
            parts += (",", marked if marked is not None else _DUMPS(annotate(item, cluster)))
        return parts

    @staticmethod
    def _row(cluster: str, row: Any, order: list[int | None] | None) -> Any:
        if not isinstance(row, dict):
            return row
        cells = row.get("cells")
        if isinstance(cells, list):
            if order is not None:
                cells = [cells[i] if i is not None and i < len(cells) else "" for i in order]
            row["cells"] = [cluster, *cells]
        if "object" in row:
            annotate(row["object"], cluster)
        return row

    def finish(
        self,
        versions: Mapping[str, str],
        continues: Mapping[str, str],
        fallback_kind: str = "List",
    ) -> bytes:
        """The response's last bytes: the list's fields, its composite
        resourceVersion of ``versions`` and continue token of ``continues``."""
        metadata: dict[str, Any] = {"resourceVersion": encode_versions(versions)}
        token = encode_continue(continues)
        if token:
            metadata["continue"] = token
        tail: dict[str, Any] = {}
        if self.table:
            tail["kind"] = "Table"
            tail["apiVersion"] = self._api_version or "meta.k8s.io/v1"
            tail["columnDefinitions"] = [CLUSTER_COLUMN, *self._definitions]
        else:
            tail["kind"] = self._kind or fallback_kind
            tail["apiVersion"] = self._api_version or "v1"
        tail["metadata"] = metadata
        return ("]," + _DUMPS(tail)[1:]).encode("utf-8")


def _union_by(items: list[Any], key: str) -> list[Any]:
    """``items`` (dicts) once per ``key`` value, the first seen kept, in order."""
    seen: dict[Any, Any] = {}
    for item in items:
        if isinstance(item, dict) and item.get(key) not in seen:
            seen[item.get(key)] = item
    return list(seen.values())


def union_discovery(docs: list[Any]) -> Any:
    """One discovery document out of many clusters' (in the clusters' order):
    the union of their API versions (``APIVersions``), groups and their
    versions (``APIGroupList``) or resources (``APIResourceList``), so a
    client resolves what any of the clusters serves; any other document
    (``/version``, OpenAPI) is the first cluster's."""
    first = docs[0]
    kind = first.get("kind") if isinstance(first, dict) else None
    same = [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]
    if kind == "APIVersions":
        versions: list[str] = []
        for doc in same:
            versions += [v for v in doc.get("versions") or [] if v not in versions]
        return {**first, "versions": versions}
    if kind == "APIResourceList":
        resources = [r for doc in same for r in doc.get("resources") or []]
        return {**first, "resources": _union_by(resources, "name")}
    if kind == "APIGroupList":
        groups: dict[str, dict[str, Any]] = {}
        for doc in same:
            for group in doc.get("groups") or []:
                if not isinstance(group, dict) or not isinstance(group.get("name"), str):
                    continue
                known = groups.get(group["name"])
                if known is None:
                    groups[group["name"]] = dict(group)
                else:
                    known["versions"] = _union_by(
                        [*(known.get("versions") or []), *(group.get("versions") or [])],
                        "groupVersion",
                    )
        return {**first, "groups": list(groups.values())}
    return first


def cluster_target(
    target: bytes,
    cluster: str,
    continues: Mapping[str, str] | None,
    versions: Mapping[str, str] | None,
) -> bytes:
    """The request target a fan-out sends ``cluster``: the client's, with a
    composite ``continue`` token or ``resourceVersion`` replaced by that
    cluster's own (:func:`decode_continue`, :func:`decode_versions`; a
    cluster without a resourceVersion in it is asked without one)."""
    if continues is None and versions is None:
        return target
    path, _, query = target.partition(b"?")
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    out: list[tuple[str, str]] = []
    for key, given in pairs:
        value = given
        if key == "continue" and continues is not None:
            value = continues.get(cluster, "")
        elif key == "resourceVersion" and versions is not None:
            value = versions.get(cluster, "")
        if value or not given:
            out.append((key, value))
    rebuilt = urlencode(out, safe=",=!()", quote_via=quote)
    return path + (b"?" + rebuilt.encode("latin-1") if rebuilt else b"")
