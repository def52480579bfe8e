"""TensorFlow Serving REST: `:predict` with `instances` (rows) or `inputs` (columns)."""

from __future__ import annotations

from typing import Any

from gyre._json import decode_object
from gyre.errors import BadRequest
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
