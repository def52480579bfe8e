"""The models gyre converts beyond skl2onnx's own: HistGradientBoosting, TransformedTarget-
Regressor and XGBoost, each parity-checked; the rest refused in one short line."""

from typing import Any

import numpy as np
import pytest
import xgboost
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import TransformedTargetRegressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, QuantileTransformer, StandardScaler

from gyre.errors import ExportError
from gyre.registry import Registry
from gyre.registry._converters import REASON_CHARS, export_error


@pytest.fixture(scope="module")
def rows() -> np.ndarray:
    """Rows with one value in ten missing: HGB and XGBoost route NaN down a learned branch."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(400, 5))
    x[rng.random(x.shape) < 0.1] = np.nan
    return x


def _targets(x: np.ndarray) -> dict[str, np.ndarray]:
    filled = np.nan_to_num(x)
    return {
        "binary": (filled[:, 0] + filled[:, 3] > 0).astype(int),
        # Class boundaries close to split thresholds: a threshold rounded up to float32
        # would send rows equal to it down the wrong branch.
        "multiclass": np.digitize(filled[:, 1], [-0.5, 0.5]),
        "regression": 3 * filled[:, 0] + filled[:, 2] ** 2,
    }


@pytest.mark.parametrize("target", ["binary", "multiclass", "regression"])
def test_hist_gradient_boosting_publishes_with_parity_on_rows_with_missing_values(
    registry: Registry, rows: np.ndarray, target: str
) -> None:
    y = _targets(rows)[target]
    cls = (
        HistGradientBoostingRegressor if target == "regression" else HistGradientBoostingClassifier
    )
    model = cls(max_iter=40, random_state=0).fit(rows, y)
    mv = registry.publish("hgb", model, rows)
    assert mv.flavor == "sklearn"
    assert mv.parity["passed"] is True
    assert mv.parity["label_mismatches"] == 0
    assert mv.parity["max_abs_diff"] < 1e-5


def test_hist_gradient_boosting_in_a_pipeline_publishes(
    registry: Registry, rows: np.ndarray
) -> None:
    y = _targets(rows)["binary"]
    model = make_pipeline(SimpleImputer(strategy="constant", fill_value=0.0),
                          HistGradientBoostingClassifier(max_iter=20)).fit(rows, y)  # fmt: skip
    assert registry.publish("hgb", model, rows).parity["passed"] is True


def test_hist_gradient_boosting_categorical_and_log_link_are_refused_by_name(
    registry: Registry, rows: np.ndarray
) -> None:
    codes = np.column_stack([np.nan_to_num(rows[:, :4]), np.arange(400) % 3])
    y = _targets(rows)["binary"]
    categorical = HistGradientBoostingClassifier(categorical_features=[4], max_iter=5)
    with pytest.raises(ExportError, match=r"HistGradientBoostingClassifier with categorical_"):
        registry.publish("hgb", categorical.fit(codes, y), codes)
    poisson = HistGradientBoostingRegressor(loss="poisson", max_iter=5)
    with pytest.raises(ExportError, match=r"loss='poisson'.*use loss='squared_error'"):
        registry.publish("hgb", poisson.fit(rows, np.abs(_targets(rows)["regression"])), rows)
    assert registry.versions() == []


@pytest.mark.parametrize(
    "model",
    [
        TransformedTargetRegressor(Ridge(), func=np.log, inverse_func=np.exp),
        TransformedTargetRegressor(
            make_pipeline(StandardScaler(), Ridge()), func=np.log1p, inverse_func=np.expm1
        ),
        TransformedTargetRegressor(LinearRegression(), transformer=StandardScaler()),
        TransformedTargetRegressor(LinearRegression()),
    ],
    ids=["exp", "expm1-pipeline", "standard-scaler", "identity"],
)
def test_transformed_target_regressor_publishes_with_its_inverse(
    registry: Registry, rows: np.ndarray, model: TransformedTargetRegressor
) -> None:
    x = np.nan_to_num(rows)
    y = np.exp(0.5 * x[:, 0] + 0.2 * x[:, 1]) + 1.0
    mv = registry.publish("ttr", model.fit(x, y), x)
    assert [s.name for s in mv.signature.outputs] == ["variable"]
    # Relative to targets of a few units: float32 arithmetic, not a missing inverse.
    assert mv.parity["max_abs_diff"] < 1e-4


@pytest.mark.parametrize(
    ("transformer", "named"),
    [
        (
            FunctionTransformer(np.sqrt, inverse_func=np.square),
            r"FunctionTransformer\(inverse_func=square\)",
        ),
        (QuantileTransformer(n_quantiles=50), "QuantileTransformer"),
    ],
)
def test_transformed_target_regressor_without_a_known_inverse_is_refused(
    registry: Registry, rows: np.ndarray, transformer: Any, named: str
) -> None:
    x = np.nan_to_num(rows)
    model = TransformedTargetRegressor(Ridge(), transformer=transformer, check_inverse=False)
    model.fit(x, np.abs(x[:, 0]) + 1)
    with pytest.raises(ExportError, match=rf"TransformedTargetRegressor.*not {named}.*\.onnx"):
        registry.publish("ttr", model, x)


@pytest.mark.parametrize("target", ["binary", "multiclass", "regression"])
@pytest.mark.parametrize("wrap", [False, True], ids=["model", "in-pipeline"])
def test_xgboost_publishes_with_parity(
    registry: Registry, rows: np.ndarray, target: str, wrap: bool
) -> None:
    y = _targets(rows)[target]
    model: Any = (xgboost.XGBRegressor if target == "regression" else xgboost.XGBClassifier)(
        n_estimators=20, max_depth=4
    )
    if wrap:
        model = make_pipeline(SimpleImputer(strategy="constant", fill_value=0.0), model)
    mv = registry.publish("xgb", model.fit(rows, y), rows)
    assert mv.flavor == ("sklearn" if wrap else "xgboost")
    assert mv.parity["passed"] is True
    assert mv.parity["label_mismatches"] == 0


class _Handmade(RegressorMixin, BaseEstimator):
    def fit(self, x: np.ndarray, y: np.ndarray) -> "_Handmade":
        self.n_features_in_ = x.shape[1]
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.full(len(x), self.mean_)


def test_an_estimator_without_a_converter_is_refused_in_one_short_line(
    registry: Registry, rows: np.ndarray
) -> None:
    x = np.nan_to_num(rows)
    model = make_pipeline(StandardScaler(), _Handmade()).fit(x, x[:, 0])
    with pytest.raises(ExportError) as caught:
        registry.publish("mine", model, x)
    message = str(caught.value)
    assert message == (
        "could not export _Handmade (inside Pipeline): skl2onnx has no converter for it; "
        "export it yourself and publish the .onnx file"
    )


def test_a_converters_long_reason_is_cut_to_its_first_line() -> None:
    dump = "Unable to create node with attributes=" + "{'nodes': [0, 1, 2]} " * 10_000
    error = export_error(Ridge(), ValueError(dump + "\nmore lines\n" * 100))
    text = str(error)
    assert text.startswith("could not export Ridge to ONNX: Unable to create node")
    assert text.endswith(" …; export it yourself and publish the .onnx file")
    assert len(text) < REASON_CHARS + 100
