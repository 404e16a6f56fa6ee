"""Decoding Kubernetes protobuf request bodies into JSON objects, sans-IO.

kubectl's typed clients (``kubectl create namespace``, ``create configmap``,
``create secret``, ``create serviceaccount``...) send
``Content-Type: application/vnd.kubernetes.protobuf``: the magic ``k8s\\0``
followed by a ``runtime.Unknown`` envelope (``typeMeta``, ``raw``) whose
``raw`` is the object in the protobuf encoding of ``k8s.io/api``.

This module decodes the kinds whose schema is small enough to carry here
(:data:`SCHEMAS`): Namespace, ConfigMap, Secret, ServiceAccount and
SelfSubjectReview, with the full ``ObjectMeta``.  Other kinds raise
:class:`~karpor.api.status.ApiError` 415 with a message naming the kind, so
the caller knows to send JSON (``kubectl create -f`` and ``kubectl apply``
do).
"""

from __future__ import annotations

import base64
import datetime
from typing import Any

from karpor.api.status import ApiError

PROTOBUF = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

# A field: (json name, type, repeated).  Types: "string", "bytes", "int",
# "bool", "time", "map<string,string>", "map<string,bytes>", or a message name.
Field = tuple[str, str, bool]

_META: dict[int, Field] = {
    1: ("name", "string", False),
    2: ("generateName", "string", False),
    3: ("namespace", "string", False),
    4: ("selfLink", "string", False),
    5: ("uid", "string", False),
    6: ("resourceVersion", "string", False),
    7: ("generation", "int", False),
    8: ("creationTimestamp", "time", False),
    9: ("deletionTimestamp", "time", False),
    10: ("deletionGracePeriodSeconds", "int", False),
    11: ("labels", "map<string,string>", False),
    12: ("annotations", "map<string,string>", False),
    13: ("ownerReferences", "OwnerReference", True),
    14: ("finalizers", "string", True),
}

#: the messages this module can decode, by name
SCHEMAS: dict[str, dict[int, Field]] = {
    "ObjectMeta": _META,
    "OwnerReference": {
        1: ("kind", "string", False),
        3: ("name", "string", False),
        4: ("uid", "string", False),
        5: ("apiVersion", "string", False),
        6: ("controller", "bool", False),
        7: ("blockOwnerDeletion", "bool", False),
    },
    "ObjectReference": {
        1: ("kind", "string", False),
        2: ("namespace", "string", False),
        3: ("name", "string", False),
        4: ("uid", "string", False),
        5: ("apiVersion", "string", False),
        6: ("resourceVersion", "string", False),
        7: ("fieldPath", "string", False),
    },
    "LocalObjectReference": {1: ("name", "string", False)},
    "NamespaceSpec": {1: ("finalizers", "string", True)},
    "Namespace": {1: ("metadata", "ObjectMeta", False), 2: ("spec", "NamespaceSpec", False)},
    "ConfigMap": {
        1: ("metadata", "ObjectMeta", False),
        2: ("data", "map<string,string>", False),
        3: ("binaryData", "map<string,bytes>", False),
        4: ("immutable", "bool", False),
    },
    "Secret": {
        1: ("metadata", "ObjectMeta", False),
        2: ("data", "map<string,bytes>", False),
        3: ("type", "string", False),
        4: ("stringData", "map<string,string>", False),
        5: ("immutable", "bool", False),
    },
    "ServiceAccount": {
        1: ("metadata", "ObjectMeta", False),
        2: ("secrets", "ObjectReference", True),
        3: ("imagePullSecrets", "LocalObjectReference", True),
        4: ("automountServiceAccountToken", "bool", False),
    },
    "SelfSubjectReview": {1: ("metadata", "ObjectMeta", False)},
}


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def done(self) -> bool:
        return self.pos >= len(self.data)

    def varint(self) -> int:
        result = shift = 0
        while True:
            if self.pos >= len(self.data):
                raise ValueError("truncated varint")
            byte = self.data[self.pos]
            self.pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return result
            shift += 7
            if shift > 63:
                raise ValueError("varint too long")

    def field(self) -> tuple[int, int, int | bytes]:
        key = self.varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            return number, wire, self.varint()
        if wire == 2:
            length = self.varint()
            end = self.pos + length
            if end > len(self.data):
                raise ValueError("truncated field")
            chunk = self.data[self.pos : end]
            self.pos = end
            return number, wire, chunk
        if wire in (1, 5):
            size = 8 if wire == 1 else 4
            chunk = self.data[self.pos : self.pos + size]
            self.pos += size
            return number, wire, chunk
        raise ValueError(f"unsupported wire type {wire}")


def _fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    reader = _Reader(data)
    out = []
    while not reader.done():
        out.append(reader.field())
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _time(data: bytes) -> str | None:
    seconds = 0
    for number, _, value in _fields(data):
        if number == 1 and isinstance(value, int):
            seconds = _signed(value)
    if seconds == 0:  # the zero time.Time: JSON null
        return None
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(data: bytes) -> tuple[str, bytes]:
    key, value = "", b""
    for number, _, raw in _fields(data):
        if isinstance(raw, bytes):
            if number == 1:
                key = raw.decode()
            elif number == 2:
                value = raw
    return key, value


def decode_message(data: bytes, message: str) -> dict[str, Any]:
    """Decode ``data`` as the message ``message`` of :data:`SCHEMAS` into JSON form."""
    schema = SCHEMAS[message]
    out: dict[str, Any] = {}
    for number, _, raw in _fields(data):
        spec = schema.get(number)
        if spec is None:
            continue
        name, kind, repeated = spec
        value: Any
        if kind.startswith("map<"):
            if not isinstance(raw, bytes):
                raise ValueError(f"{message}.{name}: not a map entry")
            key, entry = _map_entry(raw)
            as_bytes = kind.endswith("bytes>")
            out.setdefault(name, {})[key] = (
                base64.b64encode(entry).decode() if as_bytes else entry.decode()
            )
            continue
        if kind in ("int", "bool"):
            if not isinstance(raw, int):
                raise ValueError(f"{message}.{name}: not a varint")
            value = bool(raw) if kind == "bool" else _signed(raw)
        elif not isinstance(raw, bytes):
            raise ValueError(f"{message}.{name}: not length-delimited")
        elif kind == "string":
            value = raw.decode()
        elif kind == "bytes":
            value = base64.b64encode(raw).decode()
        elif kind == "time":
            value = _time(raw)
        else:
            value = decode_message(raw, kind)
        if repeated:
            out.setdefault(name, []).append(value)
        elif value not in ("", 0, False, None) or isinstance(value, dict):
            # gogo-protobuf writes every non-pointer scalar; JSON omits the empty ones
            out[name] = value
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """A ``k8s\\0``-prefixed protobuf object as the JSON object it stands for.

    Raises :class:`ApiError` 400 for a malformed body and 415 for a kind not
    in :data:`SCHEMAS`.
    """
    if not body.startswith(MAGIC):
        raise ApiError(400, "provided object is not a Kubernetes protobuf message")
    try:
        api_version = kind = ""
        raw = b""
        for number, _, value in _fields(body[len(MAGIC) :]):
            if number == 1 and isinstance(value, bytes):
                for sub, _, text in _fields(value):
                    if isinstance(text, bytes):
                        if sub == 1:
                            api_version = text.decode()
                        elif sub == 2:
                            kind = text.decode()
            elif number == 2 and isinstance(value, bytes):
                raw = value
        if kind not in SCHEMAS or kind == "ObjectMeta":
            raise ApiError(
                415,
                f"the karpor simulator cannot decode {kind or 'this object'} from protobuf: "
                "send it as application/json",
            )
        obj: dict[str, Any] = {"kind": kind, "apiVersion": api_version}
        obj.update(decode_message(raw, kind))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"unable to decode protobuf body: {exc}") from None
    return obj
