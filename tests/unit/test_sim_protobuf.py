"""karpor.sim.protobuf: the protobuf bodies kubectl's typed clients send.

Two sources of bytes: bodies captured from real ``kubectl`` 1.33 requests to
the simulator (compared with the JSON ``kubectl --dry-run=client -o json``
prints for the same command), and messages built by the tiny encoder below.
"""

from __future__ import annotations

import pytest

from karpor.kube.status import ApiError
from karpor.sim.protobuf import MAGIC, SCHEMAS, decode_object, parse_schema


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
            "creationTimestamp": None,
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
        decode_object(_envelope("apps/v1", "StatefulSet", b""))
    assert unsupported.value.code == 415
    with pytest.raises(ApiError) as garbage:
        decode_object(b"{}")
    assert garbage.value.code == 400
    with pytest.raises(ApiError) as truncated:
        decode_object(MAGIC + b"\x0a\xff")
    assert truncated.value.code == 400


def _hex(*lines: str) -> bytes:
    return bytes.fromhex("".join(lines))


#: kubectl 1.33 ``create deployment web --image=nginx:1.27 --port=80 --replicas=0``
KUBECTL_DEPLOYMENT = _hex(
    "6b3873000a150a07617070732f7631120a4465706c6f796d656e7412bd010a1f0a0377656212001a",
    "0022002a003200380042005a0a0a036170701203776562128b010800120c0a0a0a03617070120377",
    "65621a710a1c0a0012001a0022002a003200380042005a0a0a036170701203776562125112330a05",
    "6e67696e78120a6e67696e783a312e32372a00320a0a001000185022002a0042006a007200800100",
    "880100900100a201001a00320042004a0052005800600068008201008a01009a0100c2010022020a",
    "00280038001a0c0800100018002000280038001a002200",
)
#: kubectl 1.33 ``create service clusterip web --tcp=80:8080 --tcp=443:web``
KUBECTL_SERVICE = _hex(
    "6b3873000a0d0a0276311207536572766963651289010a1f0a0377656212001a0022002a00320038",
    "0042005a0a0a03617070120377656212620a1b0a0738302d38303830120354435018502207080010",
    "903f1a0028000a1e0a073434332d776562120354435018bb032209080110001a037765622800120a",
    "0a0361707012037765621a002209436c757374657249503a00420052005a00600068001a020a001a",
    "002200",
)
#: kubectl 1.33 ``create service externalname ext --external-name=example.com``
KUBECTL_EXTERNAL_NAME = _hex(
    "6b3873000a0d0a027631120753657276696365125a0a1f0a0365787412001a0022002a0032003800",
    "42005a0a0a0361707012036578741233120a0a0361707012036578741a00220c45787465726e616c",
    "4e616d653a004200520b6578616d706c652e636f6d5a00600068001a020a001a002200",
)


def test_kubectl_create_deployment_decodes_as_its_json() -> None:
    # what `kubectl create deployment ... --dry-run=client -o json` prints
    assert decode_object(KUBECTL_DEPLOYMENT) == {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": "web", "creationTimestamp": None, "labels": {"app": "web"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80}],
                            "resources": {},
                        }
                    ]
                },
            },
            "strategy": {},
        },
        "status": {},
    }


def test_kubectl_create_service_decodes_as_its_json() -> None:
    assert decode_object(KUBECTL_SERVICE) == {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": "web", "creationTimestamp": None, "labels": {"app": "web"}},
        "spec": {
            "ports": [
                {"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080},
                {"name": "443-web", "protocol": "TCP", "port": 443, "targetPort": "web"},
            ],
            "selector": {"app": "web"},
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    }
    external = decode_object(KUBECTL_EXTERNAL_NAME)
    assert external["spec"] == {
        "selector": {"app": "ext"},
        "type": "ExternalName",
        "externalName": "example.com",
    }


def _signed_varint(number: int, value: int) -> bytes:
    return _vi(number, value & (1 << 64) - 1)


def _quantities(number: int, **values: str) -> bytes:
    return b"".join(
        _ld(number, _ld(1, k.encode()) + _ld(2, _ld(1, v.encode()))) for k, v in values.items()
    )


def test_pod_spec_structures() -> None:
    probe = (
        _ld(1, _ld(2, _ld(1, b"/healthz") + _ld(2, _vi(1, 1) + _ld(3, b"http"))))  # httpGet
        + _vi(2, 5)  # initialDelaySeconds
        + _vi(4, 0)  # periodSeconds 0: omitted
    )
    env = _ld(1, b"A") + _ld(2, b"1")
    env_from = _ld(1, b"B") + _ld(3, _ld(1, _ld(1, b"v1") + _ld(2, b"metadata.name")))
    security = _signed_varint(4, 0) + _vi(5, 1) + _ld(1, _ld(1, b"NET_ADMIN"))
    container = (
        _ld(1, b"main")
        + _ld(2, b"busybox:1.36")
        + _ld(3, b"sleep")
        + _ld(4, b"3600")
        + _ld(6, _ld(1, b"http") + _vi(3, 8080) + _ld(4, b"TCP"))
        + _ld(7, env)
        + _ld(7, env_from)
        + _ld(8, _quantities(1, cpu="500m") + _quantities(2, memory="64Mi"))
        + _ld(9, _ld(1, b"data") + _ld(3, b"/data") + _vi(2, 0))
        + _ld(10, probe)
        + _ld(15, security)
        + _vi(16, 0)  # stdin false: omitted
    )
    volume = _ld(1, b"data") + _ld(2, _ld(2, _ld(1, b"Memory")))  # VolumeSource inline
    spec = (
        _ld(1, volume)
        + _ld(2, container)
        + _ld(3, b"Never")
        + _signed_varint(4, -1)  # terminationGracePeriodSeconds: a pointer, kept
        + _ld(7, _entry("disk", b"ssd"))
        + _vi(11, 0)  # hostNetwork false: omitted
        + _ld(14, _ld(4, b"\x01\x02"))  # PodSecurityContext.supplementalGroups, packed
    )
    pod = decode_object(_envelope("v1", "Pod", _ld(1, _ld(1, b"p")) + _ld(2, spec) + _ld(3, b"")))
    assert pod == {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {"name": "p"},
        "spec": {
            "volumes": [{"name": "data", "emptyDir": {"medium": "Memory"}}],
            "containers": [
                {
                    "name": "main",
                    "image": "busybox:1.36",
                    "command": ["sleep"],
                    "args": ["3600"],
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "env": [
                        {"name": "A", "value": "1"},
                        {
                            "name": "B",
                            "valueFrom": {
                                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}
                            },
                        },
                    ],
                    "resources": {"limits": {"cpu": "500m"}, "requests": {"memory": "64Mi"}},
                    "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                    "livenessProbe": {
                        "httpGet": {"path": "/healthz", "port": "http"},
                        "initialDelaySeconds": 5,
                    },
                    "securityContext": {
                        "capabilities": {"add": ["NET_ADMIN"]},
                        "runAsUser": 0,
                        "runAsNonRoot": True,
                    },
                }
            ],
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": -1,
            "nodeSelector": {"disk": "ssd"},
            "securityContext": {"supplementalGroups": [1, 2]},
        },
        "status": {},
    }


def test_deployment_strategy_and_selector_expressions() -> None:
    selector = _ld(1, _entry("app", b"web")) + _ld(
        2, _ld(1, b"tier") + _ld(2, b"In") + _ld(3, b"a") + _ld(3, b"b")
    )
    rolling = _ld(1, _vi(1, 1) + _ld(3, b"50%")) + _ld(2, _vi(1, 0) + _vi(2, 2))
    spec = (
        _vi(1, 3)
        + _ld(2, selector)
        + _ld(4, _ld(1, b"RollingUpdate") + _ld(2, rolling))
        + _vi(5, 0)
        + _vi(7, 1)
        + _vi(9, 120)
    )
    deployment = decode_object(_envelope("apps/v1", "Deployment", _ld(2, spec)))
    assert deployment["spec"] == {
        "replicas": 3,
        "selector": {
            "matchLabels": {"app": "web"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
        },
        "strategy": {
            "type": "RollingUpdate",
            "rollingUpdate": {"maxUnavailable": "50%", "maxSurge": 2},
        },
        "paused": True,
        "progressDeadlineSeconds": 120,
    }


def test_schema_is_closed_and_parses() -> None:
    known = {"string", "bytes", "int", "bool", "time", "microtime", "quantity", "intorstr", "raw"}
    for message, fields in SCHEMAS.items():
        for field in fields.values():
            assert field.type in known or field.type in SCHEMAS, (message, field)
    parsed = parse_schema("M\n  1 a string?\n  2 (inline) N\n  3 b {quantity}\n  4 c int[]\n")
    assert parsed["M"][1].keep_zero and parsed["M"][2].inline
    assert parsed["M"][3].map and parsed["M"][4].repeated
    with pytest.raises(ValueError):
        parse_schema("  1 orphan string\n")
