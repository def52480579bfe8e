"""Signatures read off an ONNX graph."""

from __future__ import annotations

from typing import Any

from gyre.errors import InvalidModel
from gyre.types import Signature, TensorSpec

# onnx.TensorProto element types -> v2 datatypes.
_ONNX_TO_DATATYPE = {
    1: "FP32",
    2: "UINT8",
    3: "INT8",
    4: "UINT16",
    5: "INT16",
    6: "INT32",
    7: "INT64",
    8: "BYTES",
    9: "BOOL",
    10: "FP16",
    11: "FP64",
    12: "UINT32",
    13: "UINT64",
}


def _tensor_spec(value_info: Any) -> TensorSpec:
    kind = value_info.type.WhichOneof("value")
    if kind != "tensor_type":
        raise InvalidModel(
            f"graph value `{value_info.name}` is a {kind}, not a tensor; gyre serves tensor "
            "inputs and outputs only (export scikit-learn classifiers with zipmap=False)"
        )
    tensor = value_info.type.tensor_type
    datatype = _ONNX_TO_DATATYPE.get(tensor.elem_type)
    if datatype is None:
        raise InvalidModel(
            f"tensor `{value_info.name}` has ONNX element type {tensor.elem_type}, which gyre "
            f"does not serve; supported: {', '.join(sorted(set(_ONNX_TO_DATATYPE.values())))}"
        )
    shape = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor.shape.dim)
    return TensorSpec(name=value_info.name, datatype=datatype, shape=shape)


def signature_of(model: Any, feature_names: tuple[str, ...] | None = None) -> Signature:
    """The signature of an `onnx.ModelProto`; graph initializers are not inputs."""
    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(_tensor_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_tensor_spec(v) for v in model.graph.output)
    if not inputs or not outputs:
        raise InvalidModel("the ONNX graph has no inputs or no outputs")
    return Signature(inputs=inputs, outputs=outputs, feature_names=feature_names)


def make_canonical(model: Any) -> None:
    """Put what a converter writes in an arbitrary order into one order, so that one model
    exports to the same bytes every time (idempotent publishing compares them): skl2onnx
    lists the opset imports in the iteration order of a set, which the hash seed changes.
    Rewrites `model` in place."""
    imports = sorted(model.opset_import, key=lambda entry: (entry.domain, entry.version))
    copies = [type(entry)() for entry in imports]
    for copy, entry in zip(copies, imports, strict=True):
        copy.CopyFrom(entry)
    del model.opset_import[:]
    model.opset_import.extend(copies)


def make_outputs_batched(model: Any) -> None:
    """Mark every output's first dimension dynamic when the inputs' is.

    Row-wise models (scikit-learn, LightGBM) produce one output row per input row, but some
    converters write a fixed first dimension of 1 on an output; onnxruntime then warns on
    every call with more rows. Rewrites `model` in place.
    """
    first_dims = [v.type.tensor_type.shape.dim for v in model.graph.input]
    if not all(dims and not dims[0].HasField("dim_value") for dims in first_dims):
        return
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "N"
