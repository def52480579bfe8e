"""Converters gyre adds to skl2onnx, the refusals for what none converts, and the one short
message every export failure becomes.

- HistGradientBoosting: skl2onnx 1.20's own converter passes Python `False` as the
  missing-value flag of every leaf, inside a list of integers; protobuf 7 refuses a bool in a
  repeated int field ("Expected an int, got a boolean"), so every fitted HGB model failed.
  gyre calls that same converter with the flags turned into 0/1 before the node is built,
  and with each threshold rounded down to float32 rather than to the nearest float32: under
  protobuf 6, where the stock converter does run, nearest rounding made class
  probabilities differ by up to 0.9996 on rows that sit on a threshold.
  Categorical splits (a bitset per node) and log-link losses (poisson, gamma) are not in
  that converter: they are refused by name, never exported wrong.
- TransformedTargetRegressor: the inner regressor's graph, then the transformer's inverse,
  for the inverses written here (StandardScaler; FunctionTransformer with inverse_func
  None, numpy.exp or numpy.expm1). Any other is refused by name.
- XGBoost: onnxmltools' converter registered into skl2onnx, so an XGBClassifier or
  XGBRegressor converts alone and as the last step of a Pipeline.

Every heavy import is inside a function: the server imports none of this.
"""

from __future__ import annotations

import functools
import re
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from gyre.errors import ExportError, InvalidModel

#: What to do when gyre cannot convert a model.
YOURSELF = "export it yourself and publish the .onnx file"
#: A library's reason is cut to this many characters: some put whole node attribute dumps
#: (hundreds of kilobytes) in their messages.
REASON_CHARS = 200


def register() -> None:
    """Register gyre's converters into skl2onnx, once per process; XGBoost's once it is
    imported (loading an XGBoost model imports it), so other exports never pay for it."""
    _register_scikit_learn()
    if "xgboost" in sys.modules:
        _register_xgboost()


@functools.cache
def _register_scikit_learn() -> None:
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )
    from skl2onnx.operator_converters.random_forest import (
        convert_sklearn_random_forest_classifier,
        convert_sklearn_random_forest_regressor_converter,
    )
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    update_registered_converter(
        HistGradientBoostingClassifier,
        "SklearnHistGradientBoostingClassifier",
        calculate_linear_classifier_output_shapes,
        _hist_gradient_boosting(convert_sklearn_random_forest_classifier),
        options={
            "zipmap": [True, False, "columns"],
            "raw_scores": [True, False],
            "output_class_labels": [False, True],
            "nocl": [True, False],
        },
    )
    update_registered_converter(
        HistGradientBoostingRegressor,
        "SklearnHistGradientBoostingRegressor",
        calculate_linear_regressor_output_shapes,
        _hist_gradient_boosting(convert_sklearn_random_forest_regressor_converter),
        options={"raw_scores": [True, False]},
    )
    update_registered_converter(
        TransformedTargetRegressor,
        "GyreTransformedTargetRegressor",
        calculate_linear_regressor_output_shapes,
        _convert_transformed_target,
    )


@functools.cache
def _register_xgboost() -> None:
    import xgboost
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        xgboost.XGBClassifier,
        "XGBoostXGBClassifier",
        calculate_linear_classifier_output_shapes,
        convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        xgboost.XGBRegressor,
        "XGBoostXGBRegressor",
        calculate_linear_regressor_output_shapes,
        convert_xgboost,
    )


class _TreeAttributes:
    """A skl2onnx container whose tree nodes get integer missing-value flags and float32
    thresholds rounded down (see `_thresholds_below`)."""

    def __init__(self, container: Any, thresholds: np.ndarray) -> None:
        self._container = container
        self._thresholds = thresholds

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)

    def add_node(self, op_type: str, *args: Any, **attrs: Any) -> Any:
        if op_type.startswith("TreeEnsemble"):
            flags = attrs["nodes_missing_value_tracks_true"]
            attrs["nodes_missing_value_tracks_true"] = [int(flag) for flag in flags]
            if len(attrs["nodes_values"]) != len(self._thresholds):
                raise ExportError(
                    f"could not export the HistGradientBoosting model: the converter wrote "
                    f"{len(attrs['nodes_values'])} nodes for {len(self._thresholds)}; {YOURSELF}"
                )
            attrs["nodes_values"] = self._thresholds
        return self._container.add_node(op_type, *args, **attrs)


def _thresholds_below(model: Any) -> np.ndarray:
    """Every node's threshold in the converter's order (iteration, then class, then node),
    as the largest float32 not above the float64 one: for a float32 input x, `x <= t` then
    holds in ONNX exactly where scikit-learn's float64 comparison holds. Nearest rounding
    would send an x equal to the rounded-up threshold the wrong way."""
    values = [
        0.0 if node["is_leaf"] else float(node["num_threshold"])
        for iteration in model._predictors
        for tree in iteration
        for node in tree.nodes
    ]
    exact = np.asarray(values, dtype=np.float64)
    below = exact.astype(np.float32)
    up = below.astype(np.float64) > exact
    below[up] = np.nextafter(below[up], np.float32(-np.inf))
    return below


def _hist_gradient_boosting(convert: Any) -> Any:
    def converter(scope: Any, operator: Any, container: Any) -> Any:
        thresholds = _thresholds_below(operator.raw_operator)
        return convert(scope, operator, _TreeAttributes(container, thresholds))

    return converter


def _convert_transformed_target(scope: Any, operator: Any, container: Any) -> None:
    from skl2onnx.algebra.onnx_operator import OnnxSubEstimator
    from skl2onnx.algebra.onnx_ops import OnnxAdd, OnnxExp, OnnxIdentity, OnnxMul, OnnxSub

    model = operator.raw_operator
    opset = container.target_opset
    prediction: Any = OnnxSubEstimator(model.regressor_, operator.inputs[0], op_version=opset)
    kind, params = _inverse_of(model)
    if kind == "scale":
        scale, mean = params
        if scale is not None:
            prediction = OnnxMul(prediction, scale, op_version=opset)
        if mean is not None:
            prediction = OnnxAdd(prediction, mean, op_version=opset)
    elif kind == "exp":
        prediction = OnnxExp(prediction, op_version=opset)
    elif kind == "expm1":
        one = np.array([1.0], dtype=np.float32)
        prediction = OnnxSub(OnnxExp(prediction, op_version=opset), one, op_version=opset)
    OnnxIdentity(prediction, op_version=opset, output_names=[operator.outputs[0]]).add_to(
        scope, container
    )


def _inverse_of(model: Any) -> tuple[str, Any]:
    """The inverse of a fitted TransformedTargetRegressor's transformer, as gyre writes it
    in ONNX; ExportError naming the transformer when gyre has no such inverse."""
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    transformer = model.transformer_
    if type(transformer) is StandardScaler:

        def as_f32(values: Any) -> Any:
            return None if values is None else np.asarray(values, dtype=np.float32)

        return "scale", (as_f32(transformer.scale_), as_f32(transformer.mean_))
    if type(transformer) is FunctionTransformer:
        inverse = transformer.inverse_func
        if inverse is None:
            return "identity", None
        if inverse is np.exp:
            return "exp", None
        if inverse is np.expm1:
            return "expm1", None
        what = f"FunctionTransformer(inverse_func={getattr(inverse, '__name__', inverse)!s})"
    else:
        what = type(transformer).__name__
    raise ExportError(
        f"could not export TransformedTargetRegressor: gyre converts the inverse of a "
        f"StandardScaler or of inverse_func None, numpy.exp or numpy.expm1, not {what}; "
        f"{YOURSELF}"
    )


def _parts(model: Any) -> Iterator[Any]:
    """The model and every fitted estimator inside it (Pipeline steps, ColumnTransformer
    and FeatureUnion members, a TransformedTargetRegressor's regressor)."""
    yield model
    inner: list[Any] = []
    for attribute in ("steps", "transformer_list", "transformers_"):
        inner += [part[1] for part in getattr(model, attribute, None) or ()]
    if type(model).__name__ == "TransformedTargetRegressor":
        inner.append(getattr(model, "regressor_", None))
    for part in inner:
        if part is not None and not isinstance(part, str):
            yield from _parts(part)


def refuse_unconvertible(model: Any) -> None:
    """ExportError naming the part of `model` that no converter exports faithfully."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    for part in _parts(model):
        name = type(part).__name__
        if isinstance(part, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
            categorical = getattr(part, "is_categorical_", None)
            if categorical is not None and np.any(categorical):
                raise ExportError(
                    f"could not export {name} with categorical_features: the ONNX converter "
                    f"has no categorical splits; one-hot or ordinal-encode those columns in a "
                    f"Pipeline before {name}(categorical_features=None), or {YOURSELF}"
                )
            link = type(getattr(getattr(part, "_loss", None), "link", None)).__name__
            if isinstance(part, HistGradientBoostingRegressor) and link != "IdentityLink":
                raise ExportError(
                    f"could not export {name}(loss={part.loss!r}): the ONNX converter has no "
                    f"log link; use loss='squared_error', 'absolute_error' or 'quantile', "
                    f"or {YOURSELF}"
                )
        if isinstance(part, TransformedTargetRegressor):
            _inverse_of(part)


_CLASS_IN_MESSAGE = re.compile(r"<class '(?:[\w.]+\.)?(\w+)'>")


def export_error(model: Any, exc: BaseException) -> ExportError:
    """One short ExportError for a converter's failure: the estimator, the library's reason
    (its first line, cut short) and what to do instead."""
    name = type(model).__name__
    text = str(exc)
    if type(exc).__name__ in ("MissingShapeCalculator", "MissingConverter"):
        found = _CLASS_IN_MESSAGE.search(text)
        inner = found.group(1) if found else "a step"
        where = "" if inner == name else f" (inside {name})"
        return ExportError(
            f"could not export {inner}{where}: skl2onnx has no converter for it; {YOURSELF}"
        )
    reason = (text.strip().splitlines() or [type(exc).__name__])[0]
    if len(reason) > REASON_CHARS:
        reason = reason[:REASON_CHARS] + " …"
    return ExportError(f"could not export {name} to ONNX: {reason}; {YOURSELF}")


#: The extra that brings each optional library a pickled model may need.
_EXTRAS = {
    "xgboost": "xgboost",
    "torch": "torch",
    "tensorflow": "tensorflow",
    "keras": "tensorflow",
}


def missing_module(path: Any, exc: ModuleNotFoundError) -> InvalidModel:
    """The refusal for a pickle whose library is not installed, with the install line."""
    module = (exc.name or "").split(".")[0]
    extra = _EXTRAS.get(module)
    how = f"pip install 'gyre[{extra}]'" if extra else f"install {module or 'it'}"
    return InvalidModel(
        f"could not load {path}: it needs {exc.name or module}, which is not installed; {how}"
    )
