"""karpor.sim.protobuf: the protobuf bodies kubectl's typed clients send."""

from __future__ import annotations

import pytest

from karpor.api.status import ApiError
from karpor.sim.protobuf import MAGIC, decode_object


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _vi(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _entry(key: str, value: bytes) -> bytes:
    return _ld(1, key.encode()) + _ld(2, value)


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _ld(1, api_version.encode()) + _ld(2, kind.encode())
    return MAGIC + _ld(1, type_meta) + _ld(2, raw) + _ld(3, b"") + _ld(4, b"")


def test_configmap_with_metadata() -> None:
    meta = (
        _ld(1, b"settings")
        + _ld(2, b"")
        + _ld(3, b"team")
        + _vi(7, 0)
        + _ld(8, b"")
        + _ld(11, _entry("app", b"web"))
        + _ld(14, b"example.com/keep")
    )
    raw = _ld(1, meta) + _ld(2, _entry("color", b"blue")) + _ld(3, _entry("bin", b"\x00\x01"))
    obj = decode_object(_envelope("v1", "ConfigMap", raw))
    assert obj == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {
            "name": "settings",
            "namespace": "team",
            "labels": {"app": "web"},
            "finalizers": ["example.com/keep"],
        },
        "data": {"color": "blue"},
        "binaryData": {"bin": "AAE="},
    }


def test_secret_bytes_are_base64_and_namespace_spec() -> None:
    raw = _ld(1, _ld(1, b"s")) + _ld(2, _entry("x", b"y")) + _ld(3, b"Opaque") + _vi(5, 1)
    secret = decode_object(_envelope("v1", "Secret", raw))
    assert secret["data"] == {"x": "eQ=="}
    assert secret["type"] == "Opaque"
    assert secret["immutable"] is True
    ns = decode_object(_envelope("v1", "Namespace", _ld(1, _ld(1, b"n")) + _ld(2, b"")))
    assert ns == {"kind": "Namespace", "apiVersion": "v1", "metadata": {"name": "n"}, "spec": {}}


def test_unknown_kind_is_415_and_garbage_is_400() -> None:
    with pytest.raises(ApiError) as unsupported:
        decode_object(_envelope("apps/v1", "Deployment", b""))
    assert unsupported.value.code == 415
    with pytest.raises(ApiError) as garbage:
        decode_object(b"{}")
    assert garbage.value.code == 400
    with pytest.raises(ApiError) as truncated:
        decode_object(MAGIC + b"\x0a\xff")
    assert truncated.value.code == 400
