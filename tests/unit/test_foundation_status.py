"""Status objects are shaped as a kube-apiserver sends them."""

import json

from hypothesis import given
from hypothesis import strategies as st

from karpor.kube.status import REASONS, ApiError, status, status_bytes, success


def test_status_shape_matches_kube_apiserver():
    obj = status(404, 'pods "x" not found', details={"name": "x", "kind": "pods"})
    assert obj == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "x" not found',
        "reason": "NotFound",
        "details": {"name": "x", "kind": "pods"},
        "code": 404,
    }


def test_api_error_body_is_json_status():
    err = ApiError(409, "conflict!", reason="AlreadyExists")
    body = json.loads(err.body())
    assert body["reason"] == "AlreadyExists"
    assert body["code"] == 409
    assert str(err) == "conflict!"


def test_success_status():
    assert success()["status"] == "Success"


@given(st.sampled_from(sorted(REASONS)), st.text())
def test_status_bytes_round_trip(code: int, message: str):
    obj = json.loads(status_bytes(code, message))
    assert obj["code"] == code
    assert obj["message"] == message
    assert obj["reason"] == REASONS[code]
