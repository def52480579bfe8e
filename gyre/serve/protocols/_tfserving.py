"""TensorFlow Serving REST: `:predict` with `instances` (rows) or `inputs` (columns).

`TfRoutes` answers the routes under `/v1/models/NAME[/versions/N|/labels/L]`: the version
status, `/metadata`, and `:predict`."""

from __future__ import annotations

from typing import Any

from gyre._json import decode_object
from gyre.errors import BadRequest, NotFound
from gyre.serve._answers import answer_headers, default_fields
from gyre.serve._core import Call, Core
from gyre.serve._http import Receive, Response, Scope, deadline_ms, json_response, version_number
from gyre.serve._runtime import Runtime, Tensors
from gyre.serve.protocols._tensors import (
    columns,
    prediction_rows,
    stack_rows,
    to_json_value,
)
from gyre.types import Signature

EXPECTED_BODY = '{"instances": [row, ...]} or {"inputs": tensor | {"name": tensor}}'

# TF Serving names dtypes after TensorFlow's DataType enum.
_TF_DTYPES = {
    "BOOL": "DT_BOOL",
    "UINT8": "DT_UINT8",
    "UINT16": "DT_UINT16",
    "UINT32": "DT_UINT32",
    "UINT64": "DT_UINT64",
    "INT8": "DT_INT8",
    "INT16": "DT_INT16",
    "INT32": "DT_INT32",
    "INT64": "DT_INT64",
    "FP16": "DT_HALF",
    "FP32": "DT_FLOAT",
    "FP64": "DT_DOUBLE",
    "BYTES": "DT_STRING",
}


def decode_request(body: bytes, runtime: Runtime) -> tuple[Tensors, bool]:
    """Named input arrays, and whether the request used the row (`instances`) format."""
    request = decode_object(body, EXPECTED_BODY)
    if ("instances" in request) == ("inputs" in request):
        raise BadRequest(f"send exactly one of `instances` and `inputs`; expected {EXPECTED_BODY}")
    if "instances" in request:
        return stack_rows(request["instances"], runtime, "`instances`"), True
    return columns(request["inputs"], runtime, "`inputs`"), False


def encode_response(outputs: Tensors, rows: bool) -> dict[str, Any]:
    if rows:
        return {"predictions": prediction_rows(outputs)}
    if len(outputs) == 1:
        (only,) = outputs.values()
        return {"outputs": to_json_value(only)}
    return {"outputs": {name: to_json_value(array) for name, array in outputs.items()}}


def version_status(versions: list[int]) -> dict[str, Any]:
    return {
        "model_version_status": [
            {
                "version": str(v),
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
            for v in versions
        ]
    }


def _tensor_info(spec: Any) -> dict[str, Any]:
    return {
        "dtype": _TF_DTYPES[spec.datatype],
        "tensor_shape": {"dim": [{"size": str(d), "name": ""} for d in spec.shape]},
        "name": spec.name,
    }


def metadata(name: str, version: int, signature: Signature) -> dict[str, Any]:
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {
            "signature_def": {
                "signature_def": {
                    "serving_default": {
                        "inputs": {s.name: _tensor_info(s) for s in signature.inputs},
                        "outputs": {s.name: _tensor_info(s) for s in signature.outputs},
                        "method_name": "tensorflow/serving/predict",
                    }
                }
            }
        },
    }


class TfRoutes:
    """The TensorFlow Serving REST routes of one server process."""

    def __init__(self, core: Core) -> None:
        self.core = core

    async def route(
        self, call: Call, method: str, parts: list[str], scope: Scope, receive: Receive
    ) -> Response:
        """`method /v1/models/{parts}` (at least a model name) for an admitted caller."""
        core = self.core
        verb = None
        if ":" in parts[-1]:
            parts[-1], verb = parts[-1].split(":", 1)
        model = parts[0]
        core.authorize(call, model)
        rest = parts[1:]
        version: int | None = None
        label: str | None = None
        if len(rest) >= 2 and rest[0] == "versions":
            version = version_number(rest[1])
            rest = rest[2:]
        elif len(rest) >= 2 and rest[0] == "labels":
            label = rest[1]
            rest = rest[2:]
        if verb == "predict" and method == "POST" and not rest:
            decision = core.decide(call, model, version, label, inference=True)
            body = await core.body(scope, receive)
            inputs, rows = decode_request(body, decision.loaded.runtime)
            prediction = await core.infer(call, decision, inputs, deadline_ms(scope))
            answer = encode_response(prediction.outputs, rows)
            return json_response(
                {**answer, **default_fields(prediction)}, headers=answer_headers(prediction)
            )
        if verb is None and method == "GET" and rest in ([], ["metadata"]):
            loaded = core.decide(call, model, version, label).loaded
            if rest == ["metadata"]:
                return json_response(metadata(model, loaded.version, loaded.runtime.signature))
            everything = version is None and label is None
            listed = sorted(call.snapshot.model_versions(model)) if everything else [loaded.version]
            return json_response(version_status(listed))
        raise NotFound(
            f"no TF Serving route {method} /v1/models/{'/'.join(parts)}"
            + (f":{verb}" if verb else "")
            + "; use GET /v1/models/NAME[/versions/N|/labels/L][/metadata] or POST …:predict"
        )
