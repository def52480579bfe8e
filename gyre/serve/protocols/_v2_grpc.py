"""Open Inference Protocol v2 over gRPC: the messages of `grpc_predict_v2.proto` to and
from gyre's tensors.

The tensor rules are those of the REST protocol, called from `_tensors.py`: datatypes,
shapes (at most 64 dimensions), raw little-endian contents and the BYTES element framing
(`raw_input_contents` is the binary extension's framing, one entry per input).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gyre.errors import BadRequest
from gyre.serve._runtime import Runtime, Tensors
from gyre.serve.protocols import grpc_predict_v2_pb2 as pb
from gyre.serve.protocols._tensors import (
    array_from_json,
    array_from_raw,
    check_output,
    check_shape,
    dtype_named,
    raw_from_array,
    reshape,
)
from gyre.types import TensorSpec, datatype_of

# The field of InferTensorContents that holds each datatype's values (FP16 has none).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def parameter_values(parameters: Any) -> dict[str, Any]:
    """A map of InferParameter as plain values (None for one with no value set)."""
    values: dict[str, Any] = {}
    for key, parameter in parameters.items():
        choice = parameter.WhichOneof("parameter_choice")
        values[key] = None if choice is None else getattr(parameter, choice)
    return values


def decode_request(request: pb.ModelInferRequest, runtime: Runtime) -> Tensors:
    """The request's inputs as named arrays; BadRequest for anything that does not fit."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadRequest(
            f"the request has {len(raw)} raw_input_contents for {len(request.inputs)} inputs; "
            "send one per input, in the order of `inputs`, or none and each input's `contents`"
        )
    arrays: Tensors = {}
    for index, item in enumerate(request.inputs):
        where = f"input `{item.name}`"
        dtype_named(item.datatype, where)
        if item.name in arrays:
            raise BadRequest(f"{where} is given twice")
        has_contents = item.HasField("contents")
        if raw:
            if has_contents:
                raise BadRequest(
                    f"{where} has both `contents` and raw_input_contents; send one of them"
                )
            array = array_from_raw(raw[index], item.datatype, where)
        elif has_contents:
            check_shape(list(item.shape), where)  # before any value is read
            array = _from_contents(item.contents, item.datatype, list(item.shape), where)
        else:
            raise BadRequest(
                f"{where} has no `contents`, and the request has no raw_input_contents"
            )
        arrays[item.name] = reshape(array, list(item.shape), where)
    if not arrays:
        raise BadRequest(
            "the request has no inputs; send each of the model's inputs with its name, "
            "datatype, shape and contents (or raw_input_contents)"
        )
    for wanted in request.outputs:
        check_output(runtime, wanted.name)
    return arrays


def _from_contents(contents: Any, datatype: str, shape: list[int], where: str) -> np.ndarray:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadRequest(f"{where}: {datatype} values have no `contents` field; send them raw")
    others = [f.name for f, _ in contents.ListFields() if f.name != field]
    if others:
        raise BadRequest(
            f"{where}: the values of a {datatype} tensor go in `contents.{field}`, "
            f"not in {', '.join(f'`{name}`' for name in others)}"
        )
    values = list(getattr(contents, field))
    if datatype == "BYTES":
        # protobuf `bytes` elements, as raw contents give them; the runtime decodes UTF-8.
        return np.array(values, dtype=object)
    if datatype == "BOOL" and not values:
        return np.zeros(0, dtype=np.bool_)
    # Narrower integers (INT8 in int_contents) are checked against their range there.
    declared = TensorSpec(name="", datatype=datatype, shape=tuple(shape))
    return array_from_json(values, declared, where)


def encode_response(
    request: pb.ModelInferRequest,
    runtime: Runtime,
    outputs: Tensors,
    parameters: dict[str, bool | str],
) -> pb.ModelInferResponse:
    """The answer, every output's values in raw_output_contents (as Triton answers)."""
    response = pb.ModelInferResponse(
        model_name=runtime.model, model_version=str(runtime.version), id=request.id
    )
    names = [wanted.name for wanted in request.outputs] or [
        spec.name for spec in runtime.signature.outputs
    ]
    for name in names:
        array = outputs[name]
        response.outputs.add(name=name, datatype=datatype_of(array), shape=array.shape)
        response.raw_output_contents.append(raw_from_array(array))
    for key, value in parameters.items():
        if isinstance(value, bool):
            response.parameters[key].bool_param = value
        else:
            response.parameters[key].string_param = value
    return response


def model_metadata(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The message of the REST protocol's model metadata (`_v2.model_metadata`)."""
    return pb.ModelMetadataResponse(
        name=metadata["name"],
        versions=metadata["versions"],
        platform=metadata["platform"],
        inputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in metadata["inputs"]],
        outputs=[pb.ModelMetadataResponse.TensorMetadata(**spec) for spec in metadata["outputs"]],
    )
