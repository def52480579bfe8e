"""The metrics a run records for each part of its split: the task's usual ones, computed
by scikit-learn's functions on the model's own predictions. Confidence intervals, slices
and gates are the evaluator's (`gyre.evaluate`)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def score(task: str, model: Any, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """classification: accuracy, log_loss, auc (binary; one-vs-rest macro for more
    classes, when every class is present); regression: mae, rmse, r2. Empty: none."""
    from sklearn import metrics

    if len(y) == 0:
        return {}
    if task == "regression":
        predicted = np.asarray(model.predict(x), dtype=np.float64)
        found = {
            "mae": metrics.mean_absolute_error(y, predicted),
            "rmse": math.sqrt(metrics.mean_squared_error(y, predicted)),
        }
        if len(y) > 1 and np.var(y) > 0:
            found["r2"] = metrics.r2_score(y, predicted)
        return {k: float(v) for k, v in found.items()}
    proba = np.clip(np.asarray(model.predict_proba(x), dtype=np.float64), 1e-15, 1.0)
    proba /= proba.sum(axis=1, keepdims=True)  # float32 outputs sum to 1 within 1e-7 only
    classes = list(model.classes_)
    predicted = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    found = {
        "accuracy": float(np.mean(predicted == np.asarray(y, dtype=object))),
        "log_loss": float(metrics.log_loss(y, proba, labels=classes)),
    }
    present = set(np.unique(y).tolist())
    if len(classes) == 2 and len(present) == 2:
        found["auc"] = float(metrics.roc_auc_score(y == classes[1], proba[:, 1]))
    elif len(classes) > 2 and present == set(classes):
        found["auc"] = float(metrics.roc_auc_score(y, proba, multi_class="ovr", labels=classes))
    return found
