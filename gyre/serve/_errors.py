"""Errors become HTTP responses here, and only here."""

from __future__ import annotations

from typing import Any

from gyre.errors import (
    BadRequest,
    GyreError,
    InvalidModel,
    NotFound,
    PayloadTooLarge,
    Unavailable,
)

_STATUS: tuple[tuple[type[GyreError], int], ...] = (
    (BadRequest, 400),
    (InvalidModel, 400),
    (NotFound, 404),
    (PayloadTooLarge, 413),
    (Unavailable, 503),
)

# MLflow's scoring server names its errors with these codes.
_MLFLOW_CODES = {
    400: "BAD_REQUEST",
    404: "RESOURCE_DOES_NOT_EXIST",
    413: "BAD_REQUEST",
    503: "TEMPORARILY_UNAVAILABLE",
    500: "INTERNAL_ERROR",
}


def status_of(exc: GyreError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(protocol: str, status: int, message: str) -> dict[str, Any]:
    """The protocol's own error shape: `{"error": …}` for v2 and TF Serving, MLflow's
    `{"error_code": …, "message": …}` for `/invocations`."""
    if protocol == "mlflow":
        return {"error_code": _MLFLOW_CODES.get(status, "INTERNAL_ERROR"), "message": message}
    return {"error": message}
