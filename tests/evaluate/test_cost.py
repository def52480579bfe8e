"""Serving cost of a registry version, measured on the server's own runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from gyre.errors import InvalidModel, ModelNotFound
from gyre.evaluate import ServingCost, measure_serving_cost
from gyre.evaluate._cost import MIN_SINGLE_CALLS
from gyre.registry import Registry
from gyre.types import Signature, TensorSpec
from tests.serve.models import two_input_adder

PYMODELS = Path(__file__).parents[1] / "serve" / "pymodels"
RNG = np.random.default_rng(2)
X = RNG.normal(size=(100, 3))
Y = (X[:, 0] > 0).astype(int)


@pytest.fixture
def published(registry: Registry) -> Registry:
    registry.publish("churn", LogisticRegression().fit(X, Y), X, decision_threshold=0.8)
    return registry


def check_consistent(cost: ServingCost, file_bytes: int) -> None:
    assert 0 < cost.p50_ms <= cost.p99_ms
    assert cost.rows_per_s_batch32 > 0
    assert cost.runs >= MIN_SINGLE_CALLS
    assert cost.file_bytes == file_bytes


def test_a_version_is_measured_on_zeros_or_on_sample_rows(published: Registry) -> None:
    (mv,) = published.versions("churn")
    assert mv.artifact_bytes == len(published.artifact(mv))
    on_zeros = measure_serving_cost(published, "churn", 1, seconds=0.2)
    check_consistent(on_zeros, mv.artifact_bytes)
    on_rows = measure_serving_cost(published, "churn", 1, sample=X, seconds=0.2)
    check_consistent(on_rows, mv.artifact_bytes)
    assert on_rows.as_dict() == {
        "p50_ms": on_rows.p50_ms,
        "p99_ms": on_rows.p99_ms,
        "rows_per_s_batch32": on_rows.rows_per_s_batch32,
        "file_bytes": mv.artifact_bytes,
        "runs": on_rows.runs,
    }


def test_a_model_of_several_inputs_takes_rows_per_input(registry: Registry) -> None:
    mv = registry.publish_onnx("adder", two_input_adder())
    check_consistent(measure_serving_cost(registry, "adder", 1, seconds=0.1), mv.artifact_bytes)
    rows = {"a": RNG.normal(size=(40, 2)), "b": RNG.normal(size=(40, 2))}
    cost = measure_serving_cost(registry, "adder", 1, sample=rows, seconds=0.1)
    check_consistent(cost, mv.artifact_bytes)
    with pytest.raises(InvalidModel, match=r"takes 2 inputs \(a, b\): give `sample` as a mapping"):
        measure_serving_cost(registry, "adder", 1, sample=rows["a"], seconds=0.1)


def test_a_missing_or_deleted_version_is_not_found(published: Registry) -> None:
    with pytest.raises(ModelNotFound, match="model `churn` version 2 does not exist"):
        measure_serving_cost(published, "churn", 2, seconds=0.1)
    with pytest.raises(ModelNotFound, match="model `nope` version 1 does not exist"):
        measure_serving_cost(published, "nope", 1, seconds=0.1)
    published.publish("churn", LogisticRegression().fit(X, Y), X, force_new=True)
    published.delete_version("churn", 2)
    with pytest.raises(ModelNotFound, match="version 2 is deleted"):
        measure_serving_cost(published, "churn", 2, seconds=0.1)


def test_rows_the_version_refuses_are_an_invalid_model(published: Registry) -> None:
    with pytest.raises(InvalidModel, match=r"refuses the rows .*input `X` has shape \[1, 5\]"):
        measure_serving_cost(published, "churn", 1, sample=np.zeros((10, 5)), seconds=0.1)
    with pytest.raises(InvalidModel, match="seconds must be a positive number"):
        measure_serving_cost(published, "churn", 1, seconds=0)


def test_a_graph_onnxruntime_cannot_load_is_an_invalid_model(registry: Registry) -> None:
    # A version whose artifact is intact (its hash matches) but is no ONNX graph: what a
    # registry written by other code may hold. The server would not load it either.
    data = b"not an onnx graph"
    signature = Signature((TensorSpec("X", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1,)),))
    registry.metadata.add_version(
        "broken",
        flavor="onnx",
        artifact_sha256=registry.artifacts.put(data),
        artifact_bytes=len(data),
        native_sha256=None,
        native_bytes=None,
        signature=signature,
        parity={},
        lineage={},
        gyre_version="test",
    )
    with pytest.raises(InvalidModel, match="onnxruntime cannot load its ONNX graph"):
        measure_serving_cost(registry, "broken", 1, seconds=0.1)


def test_a_python_model_is_not_measured(registry: Registry) -> None:
    registry.publish_file("scorer", PYMODELS / "scorer.py")
    with pytest.raises(InvalidModel, match="is a Python model, served by worker processes"):
        measure_serving_cost(registry, "scorer", 1, seconds=0.1)


def test_importing_the_cost_module_loads_no_server_stack() -> None:
    code = (
        "import sys, gyre.evaluate._cost\n"
        "stacks = ('gyre.serve', 'uvicorn', 'grpc', 'starlette')\n"
        "print(sorted(m for m in stacks if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
