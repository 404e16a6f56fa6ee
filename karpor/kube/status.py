"""Kubernetes ``Status`` objects, the body of every error karpor answers.

They are shaped exactly as a kube-apiserver sends them (``kind``,
``apiVersion``, ``metadata``, ``status``, ``message``, ``reason``,
``details``, ``code``), so kubectl prints ``Error from server (Reason): ...``
as against a real cluster.
"""

from __future__ import annotations

import json
from typing import Any

#: The ``reason`` a kube-apiserver gives for each status code when no more
#: specific one applies (``metav1.StatusReason``).
REASONS: dict[int, str] = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class ApiError(Exception):
    """An error that becomes a ``Status`` response.

    Raise it anywhere on a request path; the adapter turns it into the
    response with :meth:`body`.
    """

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        details: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        headers: tuple[tuple[bytes, bytes], ...] = (),
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details
        #: the ``Status``'s ``metadata`` (``ListMeta``: a 410's ``continue``)
        self.metadata = metadata
        #: extra response headers (e.g. a ``Warning``), written with the ``Status``
        self.headers = headers

    def status(self) -> dict[str, Any]:
        """The ``Status`` object as a dict."""
        obj = status(self.code, self.message, self.reason, self.details)
        if self.metadata:
            obj["metadata"] = dict(self.metadata)
        return obj

    def body(self) -> bytes:
        """The ``Status`` object as JSON bytes."""
        return json.dumps(self.status()).encode()


def status(
    code: int,
    message: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a failure ``Status`` object."""
    obj: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, "Unknown"),
    }
    if details:
        obj["details"] = details
    obj["code"] = code
    return obj


def status_bytes(
    code: int,
    message: str,
    reason: str | None = None,
    details: dict[str, Any] | None = None,
) -> bytes:
    """Build a failure ``Status`` object as JSON bytes."""
    return json.dumps(status(code, message, reason, details)).encode()


def success(details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A ``Status`` with ``status: Success`` (e.g. the answer to a delete)."""
    obj: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
    }
    if details:
        obj["details"] = details
    return obj
