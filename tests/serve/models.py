"""Small ONNX graphs built by hand, for signatures the exporters do not produce."""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper


def two_input_adder() -> bytes:
    """sum = a + b, with a and b FP32 [N, 2]."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "adder",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 2]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()


ONNX_TYPES = {
    "BOOL": TensorProto.BOOL,
    "UINT8": TensorProto.UINT8,
    "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64,
    "FP32": TensorProto.FLOAT,
    "FP64": TensorProto.DOUBLE,
    "BYTES": TensorProto.STRING,
}


def identity(datatype: str) -> bytes:
    """out = Identity(x), both of `datatype` and shape [N, 2]."""
    kind = ONNX_TYPES[datatype]
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out"])],
        "identity",
        [helper.make_tensor_value_info("x", kind, ["N", 2])],
        [helper.make_tensor_value_info("out", kind, ["N", 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    return model.SerializeToString()


def mixed_inputs() -> bytes:
    """Three inputs of three types, each [N, 1] (city STRING, age INT64, income FP32), and
    two outputs: total = income + age (FP32) and city (the STRING input, echoed)."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["age"], ["age_float"], to=TensorProto.FLOAT),
            helper.make_node("Add", ["income", "age_float"], ["total"]),
            helper.make_node("Identity", ["city"], ["city_out"]),
        ],
        "mixed",
        [
            helper.make_tensor_value_info("city", TensorProto.STRING, ["N", 1]),
            helper.make_tensor_value_info("age", TensorProto.INT64, ["N", 1]),
            helper.make_tensor_value_info("income", TensorProto.FLOAT, ["N", 1]),
        ],
        [
            helper.make_tensor_value_info("total", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("city_out", TensorProto.STRING, ["N", 1]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()


def vector_adder() -> bytes:
    """sum = a + b, with a and b FP32 [N]: one scalar per row each."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "vector_adder",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N"]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N"]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N"])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model.SerializeToString()
