import numpy as np
import pytest
from sklearn.pipeline import Pipeline

from gyre.errors import BadRequest
from gyre.registry import Registry
from gyre.serve import ModelRuntime
from tests.serve.models import identity


@pytest.fixture
def runtime(registry: Registry, iris_classifier: Pipeline, iris: tuple) -> ModelRuntime:
    mv = registry.publish("iris", iris_classifier, iris[0])
    return ModelRuntime("iris", 1, registry.artifact(mv), mv.signature)


def test_run_matches_the_native_model(
    runtime: ModelRuntime, iris_classifier: Pipeline, iris: tuple
) -> None:
    feeds, rows = runtime.validate({"X": iris[0][:10].astype(np.float32)})
    assert rows == 10
    outputs = runtime.run(feeds)
    np.testing.assert_array_equal(outputs["label"], iris_classifier.predict(iris[0][:10]))
    assert runtime.batchable


def test_fp64_and_int_inputs_are_cast_to_the_model_dtype(runtime: ModelRuntime) -> None:
    feeds, _ = runtime.validate({"X": np.ones((2, 4), dtype=np.float64)})
    assert feeds["X"].dtype == np.float32
    feeds, _ = runtime.validate({"X": np.ones((2, 4), dtype=np.int32)})
    assert feeds["X"].dtype == np.float32


def test_values_that_cannot_be_cast_are_refused(runtime: ModelRuntime) -> None:
    with pytest.raises(BadRequest, match="datatype BYTES; model `iris` version 1 expects FP32"):
        runtime.validate({"X": np.array([["a"] * 4], dtype=object)})
    with pytest.raises(BadRequest, match="datatype BOOL"):
        runtime.validate({"X": np.ones((1, 4), dtype=bool)})


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, r"needs input `X`; it expects `X` FP32 \[-1, 4\]"),
        ({"X": np.ones((1, 4), np.float32), "Y": np.ones(1)}, "has no input `Y`"),
        ({"X": np.ones((1, 3), np.float32)}, r"shape \[1, 3\]; .* expects FP32 \[-1, 4\]"),
        ({"X": np.ones((4,), np.float32)}, r"shape \[4\]"),
    ],
)
def test_names_and_shapes_are_checked(runtime: ModelRuntime, inputs: dict, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        runtime.validate(inputs)


def test_mean_call_time_is_measured(runtime: ModelRuntime) -> None:
    runtime.warm_up()
    assert runtime.mean_call_us > 0


def test_values_beyond_the_model_dtype_range_are_refused(runtime: ModelRuntime) -> None:
    with pytest.raises(BadRequest, match="beyond the range of FP32"):
        runtime.validate({"X": np.full((1, 4), 1e300)})


@pytest.mark.parametrize(
    ("model", "array"),
    [
        # UINT64 max was answered as INT64 -1: numpy's same-kind cast wraps around.
        ("INT64", np.array([[2**64 - 1, 1]], dtype=np.uint64)),
        ("INT32", np.array([[2**31, 1]], dtype=np.int64)),
        ("UINT8", np.array([[256, 1]], dtype=np.uint64)),
    ],
)
def test_integers_that_do_not_fit_the_model_dtype_are_refused_not_wrapped(
    registry: Registry, model: str, array: np.ndarray
) -> None:
    mv = registry.publish_onnx(f"id-{model.lower()}", identity(model))
    runtime = ModelRuntime(mv.model, 1, registry.artifact(mv), mv.signature)
    with pytest.raises(BadRequest, match=f"beyond the range of {model}"):
        runtime.validate({"x": array})
    fits, _ = runtime.validate({"x": np.array([[7, 1]], dtype=array.dtype)})
    assert fits["x"].tolist() == [[7, 1]]
