"""The four patch types kube-apiserver accepts, applied to plain JSON values.

* ``application/merge-patch+json``: RFC 7386 (:func:`merge_patch`);
* ``application/json-patch+json``: RFC 6902 (:func:`json_patch`);
* ``application/strategic-merge-patch+json``: kube's strategic merge patch
  (:func:`strategic_merge_patch`), with the merge keys of the well-known list
  fields of the core types and the ``$patch``, ``$setElementOrder/``,
  ``$retainKeys`` and ``$deleteFromPrimitiveList/`` directives;
* ``application/apply-patch+yaml``: server-side apply, approximated as a
  merge of the YAML document into the object (:func:`apply_patch`).

:func:`apply` dispatches on the ``Content-Type``.  Errors are
:class:`~karpor.kube.status.ApiError`: 415 for an unknown patch type, 400 for a
body that does not parse, 422 for a JSON patch that cannot be applied.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

import yaml

from karpor.kube.status import ApiError

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"

#: The patch types kube-apiserver lists in its 415 answer, in its order.
PATCH_TYPES: tuple[str, ...] = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH, APPLY_PATCH)

#: The ``patchMergeKey`` of the list fields that strategic merge patch merges
#: (``patchStrategy: merge`` in the Go types), by field name.  ``ports`` is
#: keyed by ``containerPort`` in containers and by ``port`` in services.
MERGE_KEYS: dict[str, str] = {
    "containers": "name",
    "initContainers": "name",
    "ephemeralContainers": "name",
    "volumes": "name",
    "env": "name",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "conditions": "type",
    "ownerReferences": "uid",
    "topologySpreadConstraints": "topologyKey",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "secrets": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
    "resizePolicy": "resourceName",
}

#: List fields of scalars merged as sets (``patchStrategy: merge`` without a key).
PRIMITIVE_MERGE_LISTS: frozenset[str] = frozenset({"finalizers"})

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_SET_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def apply(content_type: str, original: dict[str, Any], body: bytes) -> dict[str, Any]:
    """Apply a patch body of ``content_type`` to a copy of ``original``.

    Raises :class:`ApiError` 415 for a patch type kube does not accept.
    """
    media_type = _media_type(content_type)
    if media_type == MERGE_PATCH:
        return _as_object(merge_patch(original, _decode_json(body)))
    if media_type == JSON_PATCH:
        return _as_object(json_patch(original, _decode_json_patch(body)))
    if media_type == STRATEGIC_MERGE_PATCH:
        patch = _decode_json(body)
        if not isinstance(patch, dict):
            raise ApiError(
                400, "unable to find api field in struct for the patch: not a JSON object"
            )
        return strategic_merge_patch(original, patch)
    if media_type == APPLY_PATCH:
        return apply_patch(original, _decode_yaml(body))
    raise unsupported_media_type()


def unsupported_media_type() -> ApiError:
    """kube-apiserver's 415 answer to a patch of a type it does not accept."""
    return ApiError(
        415,
        "the body of the request was in an unknown format - accepted media types include: "
        + ", ".join(PATCH_TYPES),
        "UnsupportedMediaType",
    )


def _as_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(422, "the patch did not produce an object", "Invalid")
    return value


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise ApiError(400, f"error decoding patch: {e}") from None


def _decode_json_patch(body: bytes) -> list[dict[str, Any]]:
    operations = _decode_json(body)
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise ApiError(
            400,
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch",
        )
    return operations


def _decode_yaml(body: bytes) -> dict[str, Any]:
    try:
        document = yaml.safe_load(body)
    except yaml.YAMLError as e:
        raise ApiError(400, f"error decoding YAML: {e}") from None
    if not isinstance(document, dict):
        raise ApiError(400, "error decoding YAML: the apply patch must be an object")
    return document


# --- RFC 7386 --------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: the result of applying ``patch`` to ``target``.

    Neither argument is modified.
    """
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def merge_patch_diff(source: Any, target: Any) -> Any:
    """The RFC 7386 merge patch that turns ``source`` into ``target``.

    ``merge_patch(source, merge_patch_diff(source, target)) == target`` holds
    whenever ``target`` holds no ``null`` inside an object (merge patch cannot
    express those).
    """
    if not isinstance(source, dict) or not isinstance(target, dict):
        return copy.deepcopy(target)
    patch: dict[str, Any] = {}
    for key in source:
        if key not in target:
            patch[key] = None
    for key, value in target.items():
        if key not in source:
            patch[key] = copy.deepcopy(value)
        elif source[key] != value or type(source[key]) is not type(value):
            if isinstance(source[key], dict) and isinstance(value, dict):
                patch[key] = merge_patch_diff(source[key], value)
            else:
                patch[key] = copy.deepcopy(value)
    return patch


# --- RFC 6902 --------------------------------------------------------------------


class _PatchFailed(Exception):
    """A JSON patch operation that cannot be applied."""


def _parse_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise _PatchFailed(f"invalid JSON pointer: {pointer!r}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise _PatchFailed(f'JSON pointer must start with "/": {pointer}')
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def _array_index(container: list[Any], token: str, *, allow_end: bool) -> int:
    if allow_end and token == "-":  # noqa: S105 - the RFC 6901 end-of-array token
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _PatchFailed(f"invalid array index: {token}")
    index = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if index > limit:
        raise _PatchFailed(f"array index out of bounds: {index}")
    return index


def _resolve_parent(doc: Any, tokens: list[str], path: str) -> tuple[Any, str]:
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict):
            if token not in node:
                raise _PatchFailed(f"missing value at path: {path}")
            node = node[token]
        elif isinstance(node, list):
            node = node[_array_index(node, token, allow_end=False)]
        else:
            raise _PatchFailed(f"missing value at path: {path}")
    return node, tokens[-1]


def _get(doc: Any, path: Any) -> Any:
    tokens = _parse_pointer(path)
    if not tokens:
        return doc
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchFailed(f"missing value at path: {path}")
        return parent[last]
    if isinstance(parent, list):
        return parent[_array_index(parent, last, allow_end=False)]
    raise _PatchFailed(f"missing value at path: {path}")


def _add(doc: Any, path: Any, value: Any) -> Any:
    tokens = _parse_pointer(path)
    if not tokens:
        return value
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_array_index(parent, last, allow_end=True), value)
    else:
        raise _PatchFailed(f"missing value at path: {path}")
    return doc


def _remove(doc: Any, path: Any) -> tuple[Any, Any]:
    tokens = _parse_pointer(path)
    if not tokens:
        raise _PatchFailed("cannot remove the whole document")
    parent, last = _resolve_parent(doc, tokens, path)
    if isinstance(parent, dict):
        if last not in parent:
            raise _PatchFailed(f"Unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_array_index(parent, last, allow_end=False))
    raise _PatchFailed(f"missing value at path: {path}")


def _operation_value(operation: Mapping[str, Any]) -> Any:
    if "value" not in operation:
        raise _PatchFailed(f"missing value for operation {operation.get('op')}")
    return copy.deepcopy(operation["value"])


def json_patch(document: Any, operations: list[dict[str, Any]]) -> Any:
    """RFC 6902 JSON patch: apply ``operations`` to a copy of ``document``.

    Raises :class:`ApiError` 422 ``Invalid`` when an operation fails (a
    ``test`` that does not hold, a missing path), as kube-apiserver does.
    """
    doc = copy.deepcopy(document)
    try:
        for operation in operations:
            op = operation.get("op")
            path = operation.get("path")
            if op == "add":
                doc = _add(doc, path, _operation_value(operation))
            elif op == "remove":
                doc, _ = _remove(doc, path)
            elif op == "replace":
                _get(doc, path)
                tokens = _parse_pointer(path)
                if not tokens:
                    doc = _operation_value(operation)
                else:
                    parent, last = _resolve_parent(doc, tokens, str(path))
                    if isinstance(parent, list):
                        parent[_array_index(parent, last, allow_end=False)] = _operation_value(
                            operation
                        )
                    else:
                        parent[last] = _operation_value(operation)
            elif op == "move":
                source = operation.get("from")
                if (
                    isinstance(source, str)
                    and isinstance(path, str)
                    and path.startswith(source + "/")
                ):
                    raise _PatchFailed("a location cannot be moved into one of its children")
                doc, value = _remove(doc, source)
                doc = _add(doc, path, value)
            elif op == "copy":
                doc = _add(doc, path, copy.deepcopy(_get(doc, operation.get("from"))))
            elif op == "test":
                have = _get(doc, path)
                want = operation.get("value")
                if have != want or type(have) is not type(want):
                    raise _PatchFailed(f"testing value {path} failed: test failed")
            else:
                raise _PatchFailed(f"Unexpected kind: {op}")
    except _PatchFailed as e:
        message = str(e)
        raise ApiError(422, message, "Invalid", {"causes": [{"message": message}]}) from None
    return doc


# --- strategic merge patch ---------------------------------------------------------


def _merge_key(field: str, items: list[Any]) -> str | None:
    if field == "ports":
        sample = next((i for i in items if isinstance(i, dict) and _DIRECTIVE not in i), None)
        if sample is not None and "containerPort" in sample:
            return "containerPort"
        return "port"
    return MERGE_KEYS.get(field)


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a strategic merge patch to a copy of ``original``.

    Lists in :data:`MERGE_KEYS` are merged element by element by their merge
    key, lists in :data:`PRIMITIVE_MERGE_LISTS` as sets; other lists are
    replaced, and maps are merged as in a JSON merge patch.  The directives
    ``$patch: replace|delete|merge``, ``$retainKeys``,
    ``$setElementOrder/<field>`` and ``$deleteFromPrimitiveList/<field>`` are
    honoured and never left in the result.
    """
    merged = _merge_map(copy.deepcopy(original), patch)
    return merged if merged is not None else {}


def _strip_directives(value: Any) -> Any:
    """A patch value as plain data: directives removed, ``null`` keys dropped."""
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [
            _strip_directives(v)
            for v in value
            if not (isinstance(v, dict) and v.get(_DIRECTIVE) in ("delete", "replace"))
        ]
    return value


def _merge_map(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any] | None:
    directive = patch.get(_DIRECTIVE)
    if directive == "replace":
        return {k: _strip_directives(v) for k, v in patch.items() if k != _DIRECTIVE}
    if directive == "delete":
        return None
    if directive not in (None, "merge"):
        raise ApiError(400, f"Unknown patch type: {directive} in map: {patch}")
    result = original
    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS):
            continue
        if key.startswith(_SET_ORDER):
            orders[key[len(_SET_ORDER) :]] = value if isinstance(value, list) else []
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            drop = value if isinstance(value, list) else []
            if isinstance(result.get(field), list):
                result[field] = [v for v in result[field] if v not in drop]
            continue
        if value is None:
            result.pop(key, None)
            continue
        current = result.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(key, current if isinstance(current, list) else [], value)
        else:
            result[key] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            result[field] = _apply_order(field, result[field], order)
    retain = patch.get(_RETAIN_KEYS)
    if isinstance(retain, list):
        for key in list(result):
            if key not in retain:
                del result[key]
    return result


def _merge_list(field: str, original: list[Any], patch: list[Any]) -> list[Any]:
    if any(isinstance(v, dict) and v.get(_DIRECTIVE) == "replace" for v in patch):
        replaced: list[Any] = _strip_directives(
            [v for v in patch if not isinstance(v, dict) or _DIRECTIVE not in v]
        )
        return replaced
    if field in PRIMITIVE_MERGE_LISTS:
        result = list(original)
        for value in patch:
            if value not in result:
                result.append(value)
        return result
    key = _merge_key(field, patch + original)
    if key is None or not all(isinstance(v, dict) for v in patch + original):
        plain: list[Any] = _strip_directives(patch)
        return plain
    result = list(original)
    for item in patch:
        if item.get(_DIRECTIVE) == "delete":
            result = [o for o in result if o.get(key) != item.get(key)]
            continue
        for index, existing in enumerate(result):
            if existing.get(key) == item.get(key):
                merged = _merge_map(existing, item)
                if merged is None:
                    del result[index]
                else:
                    result[index] = merged
                break
        else:
            result.append(_strip_directives(item))
    return result


def _apply_order(field: str, items: list[Any], order: list[Any]) -> list[Any]:
    """Reorder ``items`` as ``$setElementOrder`` asks; unlisted items keep their place after."""
    if not order:
        return items
    if all(isinstance(o, dict) for o in order) and all(isinstance(i, dict) for i in items):
        key = _merge_key(field, order + items)
        if key is None:
            return items
        wanted = [o.get(key) for o in order]
        ranked = [i for w in wanted for i in items if i.get(key) == w]
        rest = [i for i in items if i.get(key) not in wanted]
        return ranked + rest
    ranked = [o for o in order if o in items]
    return ranked + [i for i in items if i not in order]


def apply_patch(original: dict[str, Any], document: dict[str, Any]) -> dict[str, Any]:
    """Server-side apply, approximated: the applied document merged into the object.

    Maps merge, lists with a known merge key merge by key, other values are
    replaced by the applied configuration (no field ownership is tracked).
    """
    return strategic_merge_patch(original, _strip_directives(document))
