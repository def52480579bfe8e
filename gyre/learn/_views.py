"""Training on a feature view: a point-in-time correct training set from the fact log at a
fixed watermark, the view's own matrix conversion, a time-ordered holdout, and the lineage
that makes the run reproducible (view hash, watermark, rows, parameters)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gyre.collect import FactLog
from gyre.errors import InvalidFeatureInput
from gyre.features import FeatureView, training_set


@dataclass(frozen=True)
class TrainedOnView:
    model: Any
    view: FeatureView
    sample: np.ndarray
    lineage: dict[str, Any]


def train_on_view(
    log: FactLog,
    view: FeatureView,
    queries: Sequence[dict[str, Any]],
    *,
    label: str = "label",
    estimator: Any = None,
    test_fraction: float = 0.25,
) -> TrainedOnView:
    """Fit `estimator` (default: gradient-boosted trees after a median imputer, since a
    window with no facts has no mean) on `view`'s features of the query rows (entity, `ts`,
    request values, `label`). The latest `test_fraction` of rows by `ts` is held out: the
    model is scored on times after those it learned from."""
    from sklearn.base import clone
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline

    if not queries:
        raise InvalidFeatureInput("no training rows: give (entity, ts, label) rows")
    missing = [i for i, row in enumerate(queries) if label not in row]
    if missing:
        raise InvalidFeatureInput(f"rows {missing[:5]} have no `{label}` column")
    watermark = log.watermark()
    rows = sorted(training_set(log, view, queries, watermark=watermark), key=lambda r: r["ts"])
    table = view.matrix(rows)
    labels = np.array([row[label] for row in rows])
    cut = int(len(rows) * (1 - test_fraction))
    if estimator is None:
        estimator = make_pipeline(
            SimpleImputer(strategy="median", keep_empty_features=True),
            GradientBoostingClassifier(n_estimators=50, max_depth=3, random_state=0),
        )
    model = clone(estimator).fit(table[:cut], labels[:cut])
    metrics: dict[str, Any] = {"train_rows": cut, "test_rows": len(rows) - cut}
    if len(rows) > cut:
        metrics["test_score"] = round(float(model.score(table[cut:], labels[cut:])), 4)
    return TrainedOnView(
        model=model,
        view=view,
        sample=table[:cut],
        lineage={
            "feature_view": view.name,
            "feature_definition_hash": view.definition_hash,
            "fact_log_watermark": watermark,
            "estimator": " + ".join(type(step).__name__ for step in _steps(model)),
            "params": {k: v for k, v in model.get_params().items() if _plain(v)},
            "metrics": metrics,
        },
    )


def _steps(model: Any) -> list[Any]:
    return [step for _, step in model.steps] if hasattr(model, "steps") else [model]


def _plain(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
