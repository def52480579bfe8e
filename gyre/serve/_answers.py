"""What every answer carries besides its payload: its metric labels, the headers naming
the version and request id, the default-answer fields, and the access log line."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any

from gyre.serve._http import Headers, Response, Scope, encode_json
from gyre.serve._inference import Prediction
from gyre.serve._metrics import ServerMetrics

access = logging.getLogger("gyre.access")


class Labels:
    """Metric labels of one request, filled in as routing learns them."""

    __slots__ = ("consumer", "inference", "model", "protocol", "version")

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.model = ""
        self.version = ""
        self.consumer = ""
        # The version an inference request was given to, once resolved: its answer counts
        # in that version's inference statistics (success or fail).
        self.inference: int | None = None


def label_model(labels: Labels, model: str, served: Collection[str]) -> None:
    """Name the request's model in its labels, only if it is `served`: a client's made-up
    model names must not each become a metric series."""
    if model in served:
        labels.model = model


def count_answer(metrics: ServerMetrics, labels: Labels, status: int, seconds: float) -> None:
    """Count one answered request, of any protocol, in the metrics: by its labels, and for
    an inference request also in its version's inference statistics (success or fail)."""
    if not labels.model:
        return
    metrics.observe_request(
        labels.model, labels.version, labels.protocol, status, seconds, labels.consumer
    )
    if labels.inference is not None:
        metrics.version_tally(labels.model, labels.inference).request(status < 400, seconds)


def answer_headers(prediction: Prediction) -> Headers:
    headers = [
        (b"gyre-model-version", str(prediction.loaded.version).encode()),
        (b"gyre-request-id", prediction.request_id.encode()),
    ]
    if prediction.default_reason is not None:
        headers.append((b"gyre-default", prediction.default_reason.encode()))
    return headers


def default_fields(prediction: Prediction) -> dict[str, Any]:
    if prediction.default_reason is None:
        return {}
    return {"default": True, "default_reason": prediction.default_reason}


def log_access(scope: Scope, response: Response, labels: Labels, start: float) -> None:
    """One JSON line per request (serve.access_log)."""
    request_id = next(
        (bytes(v).decode() for k, v in response.headers if k == b"gyre-request-id"), None
    )
    access.info(
        encode_json(
            {
                "method": scope["method"],
                "path": scope["path"],
                "status": response.status,
                "ms": round((time.perf_counter() - start) * 1000, 3),
                "model": labels.model or None,
                "version": labels.version or None,
                "consumer": labels.consumer or None,
                "request_id": request_id,
            }
        ).decode()
    )
