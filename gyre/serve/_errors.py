"""Errors become the protocols' error bodies, and gRPC statuses, here and only here (the
HTTP status of each error class is `gyre.errors.http_status`, shared with the control
plane)."""

from __future__ import annotations

from typing import Any

# MLflow's scoring server names its errors with these codes.
_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "INVALID_STATE",
    413: "BAD_REQUEST",
    429: "REQUEST_LIMIT_EXCEEDED",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    500: "INTERNAL_ERROR",
}

# The gRPC status of each HTTP status (names of `grpc.StatusCode`): the same errors, the
# same messages. A shed request (503) may be retried elsewhere at once; a consumer over
# its rate (429) or a body over the limit (413) has spent a resource.
_GRPC_CODES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "FAILED_PRECONDITION",
    413: "RESOURCE_EXHAUSTED",
    429: "RESOURCE_EXHAUSTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
    500: "INTERNAL",
}


def grpc_code_of(status: int) -> str:
    """The name of the `grpc.StatusCode` that stands for HTTP `status`."""
    return _GRPC_CODES.get(status, "INTERNAL")


def error_body(protocol: str, status: int, message: str) -> dict[str, Any]:
    """The protocol's own error shape: `{"error": …}` for v2 and TF Serving, MLflow's
    `{"error_code": …, "message": …}` for `/invocations`."""
    if protocol == "mlflow":
        return {"error_code": _MLFLOW_CODES.get(status, "INTERNAL_ERROR"), "message": message}
    return {"error": message}
