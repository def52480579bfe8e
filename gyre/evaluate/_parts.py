"""The baselines a model must beat and the slices of the rows it is judged on, for
`gyre.evaluate._evaluate`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gyre.errors import EvaluationError
from gyre.evaluate._gates import SliceResult
from gyre.evaluate._intervals import metric_intervals
from gyre.evaluate._threshold import learn_threshold

MAX_SLICES_PER_COLUMN = 50  # values of one slice column evaluated, the largest first


@dataclass(frozen=True)
class Options:
    confidence: float
    seed: int


def baselines(
    task: str, data: Any, y_all: np.ndarray, y_tuning: np.ndarray, rule: Any
) -> list[tuple[str, np.ndarray, float]]:
    """The majority (mean) predictor and a linear model, fitted on the training rows:
    (name, holdout scores, threshold)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, holdout = data.train, data.holdout
    tuning = data.validation if len(data.validation) else data.train
    x, y_train = data.x, y_all[train]
    found = []
    constant = float(np.mean(y_train))
    if task == "classification":  # its cut by the spec's rule too (all positive, say)
        cut = learn_threshold(y_tuning, np.full(len(tuning), constant), rule)
        found.append(("majority", np.full(len(holdout), constant), cut))
    else:
        found.append(("mean", np.full(len(holdout), constant), 0.0))
    estimator = LogisticRegression(max_iter=1000) if task == "classification" else Ridge(alpha=1.0)
    model = make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(), estimator)
    if task == "classification" and len(np.unique(y_train)) < 2:
        return found
    model.fit(x[train], y_train)
    if task == "classification":
        scores = model.predict_proba(x[holdout])[:, 1]
        cut = learn_threshold(y_tuning, model.predict_proba(x[tuning])[:, 1], rule)
    else:
        scores, cut = model.predict(x[holdout]), 0.0
    found.append(("linear", np.asarray(scores, dtype=np.float64), cut))
    return found


def slices(
    task: str,
    table: Any,
    columns: Sequence[str],
    y: np.ndarray,
    scores: np.ndarray,
    cut: float,
    judged: Any,
    options: Options,
) -> list[SliceResult]:
    """`table`: the evaluated rows' own columns (an Arrow table, the rows' order)."""
    if not columns:
        return []
    known = [] if table is None else table.column_names
    missing = [c for c in columns if c not in known]
    if missing:
        raise EvaluationError(
            f"slice column(s) {', '.join(missing)} are not columns of the rows; the rows "
            f"have: {', '.join(c for c in known if not c.startswith('_'))}"
        )
    parts = []
    for column in columns:
        values = np.asarray([str(v) for v in table.column(column).to_pylist()])
        keys, which, counts = np.unique(values, return_inverse=True, return_counts=True)
        for index in np.argsort(-counts, kind="stable")[:MAX_SLICES_PER_COLUMN]:
            key, mask = keys[index], which == index
            rows = int(counts[index])
            estimates = metric_intervals(
                task,
                y[mask],
                scores[mask],
                threshold=cut,
                confidence=options.confidence,
                seed=options.seed,
            )
            parts.append(
                SliceResult(column, str(key), rows, estimates, rows >= judged.slice_min_rows)
            )
    return parts
