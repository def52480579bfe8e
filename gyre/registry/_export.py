"""Native models (scikit-learn, LightGBM, XGBoost; PyTorch and Keras through `_torch`) to
ONNX, and their native predictions for parity.

The heavy libraries are imported inside the functions: the registry's read side, which the
server uses, must not pull scikit-learn or LightGBM.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gyre.errors import ExportError, InvalidModel
from gyre.registry import _torch

# ai.onnx.ml opset 3 is what onnxmltools' LightGBM converter emits; the default domain
# opset matches what onnxruntime 1.31 runs.
TARGET_OPSET = {"": 21, "ai.onnx.ml": 3}


def flavor_of(model: Any) -> str:
    """`lightgbm`, `xgboost`, `sklearn`, or `torch` / `keras` (gyre's trainers and torch
    modules, see `_torch`); anything else is refused with what gyre accepts."""
    flavor = _torch.trainer_flavor(model)
    if flavor in _torch.TORCH_FLAVORS:
        return flavor
    module = type(model).__module__
    if module.startswith("xgboost"):
        import xgboost

        if not isinstance(model, xgboost.XGBModel):
            raise InvalidModel(
                f"{type(model).__name__} is a raw XGBoost object; publish the scikit-learn "
                "API model (xgboost.XGBClassifier / XGBRegressor) instead"
            )
        return "xgboost"
    if module.startswith("lightgbm"):
        import lightgbm

        if not isinstance(model, lightgbm.LGBMModel):
            raise InvalidModel(
                f"{type(model).__name__} is a raw LightGBM object; publish the scikit-learn "
                "API model (lightgbm.LGBMClassifier / LGBMRegressor) instead"
            )
        return "lightgbm"
    try:
        from sklearn.base import BaseEstimator
    except ImportError:  # pragma: no cover - scikit-learn is a core dependency
        raise
    if isinstance(model, BaseEstimator):
        return "sklearn"
    raise InvalidModel(
        f"cannot publish a {type(model).__module__}.{type(model).__name__}; gyre publishes "
        "scikit-learn estimators and Pipelines, LightGBM and XGBoost models, PyTorch "
        "modules, gyre's trainers, TensorFlow SavedModels and .onnx files"
    )


def is_classifier(model: Any) -> bool:
    return hasattr(model, "predict_proba") and hasattr(model, "classes_")


def _register_lightgbm_in_skl2onnx() -> None:
    """Let skl2onnx convert a Pipeline that ends in a LightGBM model."""
    import lightgbm
    from onnxmltools.convert.lightgbm.operator_converters.LightGbm import convert_lightgbm
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import (
        calculate_linear_classifier_output_shapes,
        calculate_linear_regressor_output_shapes,
    )

    update_registered_converter(
        lightgbm.LGBMClassifier,
        "LightGbmLGBMClassifier",
        calculate_linear_classifier_output_shapes,
        convert_lightgbm,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )
    update_registered_converter(
        lightgbm.LGBMRegressor,
        "LightGbmLGBMRegressor",
        calculate_linear_regressor_output_shapes,
        convert_lightgbm,
    )


def check_fitted(model: Any) -> None:
    """An unfitted model is refused before export, whose own errors would mislead ("no
    known ways to retrieve the number of classes")."""
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    if _torch.trainer_flavor(model) in _torch.TORCH_FLAVORS:
        _torch.check_fitted(model)
        return
    try:
        check_is_fitted(model)
    except NotFittedError:
        raise InvalidModel(
            f"{type(model).__name__} is not fitted; call fit(X, y) on it before publishing"
        ) from None


def to_onnx(model: Any, n_features: int) -> Any:
    """Export a fitted model with one FP32 input `X` of shape [N, n_features]."""
    from gyre.registry import _converters

    flavor = flavor_of(model)
    if flavor in _torch.TORCH_FLAVORS:
        return _torch.to_onnx(model, n_features)
    check_fitted(model)
    _converters.refuse_unconvertible(model)
    try:
        if flavor == "lightgbm":
            from onnxmltools import convert_lightgbm
            from onnxmltools.convert.common.data_types import FloatTensorType

            return convert_lightgbm(
                model,
                initial_types=[("X", FloatTensorType([None, n_features]))],
                zipmap=False,
            )
        from skl2onnx import to_onnx as skl_to_onnx
        from skl2onnx.common.data_types import FloatTensorType as SklFloatTensorType

        _register_lightgbm_in_skl2onnx()
        _converters.register()
        options = {"zipmap": False} if is_classifier(model) else None
        return skl_to_onnx(
            model,
            initial_types=[("X", SklFloatTensorType([None, n_features]))],
            options=options,
            target_opset=TARGET_OPSET,
        )
    except ExportError:
        raise
    except Exception as exc:  # converters fail with any type; the user gets one short line
        raise _converters.export_error(model, exc) from exc


def native_outputs(model: Any, rows: Any) -> list[np.ndarray]:
    """Native predictions in the order of the exported ONNX outputs; a model that cannot
    predict on the sample (NaN it was not fitted to take, other columns) is InvalidModel."""
    try:
        if _torch.trainer_flavor(model) in _torch.TORCH_FLAVORS:
            return _torch.native_outputs(model, rows)
        if is_classifier(model):
            return [np.asarray(model.predict(rows)), np.asarray(model.predict_proba(rows))]
        return [np.asarray(model.predict(rows))]
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else repr(exc)
        raise InvalidModel(
            f"{type(model).__name__} could not predict on the sample rows ({reason}); the "
            "parity check needs rows it can predict on, like its training data"
        ) from None


def feature_count(model: Any) -> int | None:
    count = getattr(model, "n_features_in_", None)
    return int(count) if count is not None else None


def feature_names(model: Any) -> tuple[str, ...] | None:
    names = getattr(model, "feature_names_in_", None)
    if names is None:
        names = getattr(model, "feature_name_", None)  # LightGBM
        if names is not None and all(str(n).startswith("Column_") for n in names):
            names = None
    return tuple(str(n) for n in names) if names is not None else None


def dumped(model: Any) -> bytes:
    """The native model as joblib bytes, stored beside its ONNX export."""
    import io

    import joblib

    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()
