"""Curve summaries for the evaluation report, bounded in size whatever the number of rows.

Each function takes an evaluation's arrays (labels and scores, or targets and predictions)
and returns a JSON-serializable dict of floats and ints whose lists hold at most a few
hundred entries, so the summary of 1M rows is as small as that of 1k: the report embeds
these summaries' plots, never rows.

Classification: labels `y` in {0, 1} (or bool), scores `p`, higher meaning more likely
positive; a row is predicted positive when `p >= threshold` (scikit-learn's convention for
the thresholds of its curves).

- One descending sort of the scores gives, at each distinct score `t`, the true and false
  positives among the rows with `p >= t`: the full ROC and precision-recall curves, one
  point per distinct score, ties forming one point (scikit-learn's `roc_curve` with
  `drop_intermediate=False`, and `precision_recall_curve`). The ROC curve starts at (0, 0)
  and the PR curve at recall 0, precision 1, as scikit-learn's do. The area under the ROC
  curve (trapezoids, so ties count half) and the average precision (Σ ΔRecall · Precision)
  are computed on the full curve, before thinning.
- A curve longer than `points` is thinned to at most `points` points spaced evenly along
  its length in the unit square: every kept point is a point of the full curve, both end
  points are always kept, and every point of the full curve lies within
  `length / (points - 1)` of the thinned polyline (a kept point is the first one at or past
  each of `points - 1` evenly spaced arc lengths, so between two kept points the curve
  travels at most one spacing before its last, straight, step).
- Calibration uses `bins` equal-width bins on [0, 1], a score on an edge falling in the
  lower bin (scikit-learn's `calibration_curve(strategy="uniform")`); empty bins are left
  out.

Regression: the residual is `y - pred` (observed minus predicted). The histogram spans the
0.1st to 99.9th percentiles of the residuals, so one wild row does not squash the rest into
a single bar; the rows outside are counted in `below` and `above`. Residuals against the
predictions are averaged over bins of (nearly) equal row counts, in order of the
prediction, with the 10th and 90th percentiles of each bin: `points` bins, fewer where
that would leave a bin under `min_rows` rows (a mean of 50 rows is mostly noise), at least
one.

Everything is numpy: one O(n log n) sort per curve family, the rest O(n).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from gyre.errors import EvaluationError

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

CURVE_POINTS = 200
_TAIL = 0.001  # the share of residuals left out of the histogram's range on each side


def roc_curve_points(
    y: npt.ArrayLike, p: npt.ArrayLike, points: int = CURVE_POINTS
) -> dict[str, Any]:
    """The ROC curve, thinned to at most `points` points: `fpr`, `tpr` and the exact `auc`."""
    return _roc(*_ranked(*_labels_and_scores(y, p)), points)


def pr_curve_points(
    y: npt.ArrayLike, p: npt.ArrayLike, points: int = CURVE_POINTS
) -> dict[str, Any]:
    """The precision-recall curve, thinned to at most `points` points: `recall`, `precision`
    (recall increasing), the exact `average_precision` and the `prevalence` of positives."""
    return _pr(*_ranked(*_labels_and_scores(y, p)), points)


def calibration_bins(y: npt.ArrayLike, p: npt.ArrayLike, bins: int = 10) -> dict[str, Any]:
    """Per non-empty bin of the score: `mean_predicted`, `observed_rate` and `count`, with
    the `expected_calibration_error` (the count-weighted mean gap between the two)."""
    return _calibration(*_labels_and_scores(y, p), bins)


def confusion(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> dict[str, Any]:
    """The confusion counts at `threshold` (positive when `p >= threshold`)."""
    return _confusion(*_labels_and_scores(y, p), threshold)


def classification_curves(
    y: npt.ArrayLike, p: npt.ArrayLike, threshold: float, points: int = CURVE_POINTS
) -> dict[str, Any]:
    """All four classification summaries, as the report's `curves` entry for one model,
    from one sort of the scores."""
    labels, scores = _labels_and_scores(y, p)
    tps, fps = _ranked(labels, scores)
    return {
        "roc": _roc(tps, fps, points),
        "pr": _pr(tps, fps, points),
        "calibration": _calibration(labels, scores, 10),
        "confusion": _confusion(labels, scores, threshold),
    }


def residual_histogram(y: npt.ArrayLike, pred: npt.ArrayLike, bins: int = 40) -> dict[str, Any]:
    """A histogram of `y - pred`: `edges` (`bins` + 1), `counts`, the rows `below` and
    `above` the range shown, and the residuals' `mean` and `std`."""
    residual = _residuals(y, pred)[0]
    if bins < 1:
        raise EvaluationError(f"a residual histogram needs at least 1 bin, not {bins}")
    low, high = (float(v) for v in np.quantile(residual, [_TAIL, 1.0 - _TAIL]))
    if low == high:  # (nearly) all residuals equal: widen to the full range, or to ±0.5
        low, high = float(residual.min()), float(residual.max())
        if low == high:
            low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(residual, bins=bins, range=(low, high))
    return {
        "edges": _floats(edges),
        "counts": _ints(counts),
        "below": int(np.count_nonzero(residual < low)),
        "above": int(np.count_nonzero(residual > high)),
        "mean": float(residual.mean()),
        "std": float(residual.std()),
    }


def residual_vs_predicted(
    y: npt.ArrayLike, pred: npt.ArrayLike, points: int = CURVE_POINTS, min_rows: int = 200
) -> dict[str, Any]:
    """The residuals `y - pred` averaged over at most `points` bins of equal row counts
    (each of `min_rows` rows or more, where there are that many) in order of the
    prediction: `mean_predicted`, `mean_residual`, `residual_p10`, `residual_p90` and
    `count` per bin."""
    residual, predicted = _residuals(y, pred)
    if points < 1 or min_rows < 1:
        raise EvaluationError(
            f"residuals against predictions need at least 1 bin of at least 1 row, not "
            f"{points} bins of {min_rows} rows"
        )
    order = np.argsort(predicted, kind="stable")
    predicted, residual = predicted[order], residual[order]
    n = len(predicted)
    bins = max(1, min(points, n // min_rows))
    starts = np.linspace(0, n, bins + 1).astype(np.intp)[:-1]
    counts = np.diff(np.append(starts, n))
    p10, p90 = [], []
    for start, count in zip(starts, counts, strict=True):
        low, high = np.percentile(residual[start : start + count], [10.0, 90.0])
        p10.append(float(low))
        p90.append(float(high))
    return {
        "mean_predicted": _floats(np.add.reduceat(predicted, starts) / counts),
        "mean_residual": _floats(np.add.reduceat(residual, starts) / counts),
        "residual_p10": p10,
        "residual_p90": p90,
        "count": _ints(counts),
    }


def regression_curves(
    y: npt.ArrayLike, pred: npt.ArrayLike, bins: int = 40, points: int = CURVE_POINTS
) -> dict[str, Any]:
    """Both regression summaries, as the report's `curves` entry for one model."""
    return {
        "residuals": residual_histogram(y, pred, bins),
        "residual_vs_predicted": residual_vs_predicted(y, pred, points),
    }


def thin(x: FloatArray, y: FloatArray, points: int) -> IntArray:
    """The indices of at most `points` points of the polyline (x, y), spaced evenly along
    its length, the first and last always among them (see the module docstring)."""
    n = len(x)
    if points < 2:
        raise EvaluationError(f"a curve needs at least 2 points, not {points}")
    if n <= points:
        return np.arange(n, dtype=np.intp)
    length = np.concatenate(([0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))))
    targets = np.linspace(0.0, length[-1], points)[:-1]
    kept = np.minimum(np.searchsorted(length, targets, side="left"), n - 1)
    return np.unique(np.append(kept, n - 1)).astype(np.intp)


def _labels_and_scores(y: npt.ArrayLike, p: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    labels = np.asarray(y)
    scores = np.asarray(p, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1 or len(labels) != len(scores):
        raise EvaluationError(
            f"labels and scores must be two 1-D arrays of one length, not shapes "
            f"{labels.shape} and {scores.shape}"
        )
    if len(labels) == 0:
        raise EvaluationError("no rows to evaluate: the labels and scores are empty")
    if labels.dtype != np.bool_ and not np.isin(labels, (0, 1)).all():
        bad = labels[~np.isin(labels, (0, 1))][:3].tolist()
        raise EvaluationError(f"labels must be 0 or 1 (or bool); found {bad}")
    if not np.isfinite(scores).all():
        raise EvaluationError(
            "scores must be finite: found NaN or infinity; fix the model's output"
        )
    return labels.astype(np.float64), scores


def _residuals(y: npt.ArrayLike, pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    target = np.asarray(y, dtype=np.float64)
    predicted = np.asarray(pred, dtype=np.float64)
    if target.ndim != 1 or predicted.ndim != 1 or len(target) != len(predicted):
        raise EvaluationError(
            f"targets and predictions must be two 1-D arrays of one length, not shapes "
            f"{target.shape} and {predicted.shape}"
        )
    if len(target) == 0:
        raise EvaluationError("no rows to evaluate: the targets and predictions are empty")
    if not (np.isfinite(target).all() and np.isfinite(predicted).all()):
        raise EvaluationError("targets and predictions must be finite: found NaN or infinity")
    return target - predicted, predicted


def _ranked(labels: FloatArray, scores: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Cumulative true and false positives at each distinct score, highest score first."""
    order = np.argsort(scores, kind="stable")[::-1]
    ranked = scores[order]
    last = np.append(np.flatnonzero(ranked[1:] != ranked[:-1]), len(ranked) - 1)
    tps = np.cumsum(labels[order])[last]
    return tps, (last + 1) - tps


def _roc(tps: FloatArray, fps: FloatArray, points: int) -> dict[str, Any]:
    positives, negatives = tps[-1], fps[-1]
    if positives == 0 or negatives == 0:
        only = "negatives" if positives == 0 else "positives"
        raise EvaluationError(
            f"a ROC curve needs both classes; the {int(positives + negatives)} labels are all "
            f"{only}"
        )
    fpr = np.concatenate(([0.0], fps / negatives))
    tpr = np.concatenate(([0.0], tps / positives))
    kept = thin(fpr, tpr, points)
    return {
        "fpr": _floats(fpr[kept]),
        "tpr": _floats(tpr[kept]),
        "auc": float(np.trapezoid(tpr, fpr)),
    }


def _pr(tps: FloatArray, fps: FloatArray, points: int) -> dict[str, Any]:
    positives = tps[-1]
    if positives == 0:
        raise EvaluationError(
            f"a precision-recall curve needs positives; the {int(fps[-1])} labels are all negatives"
        )
    recall = np.concatenate(([0.0], tps / positives))
    precision = np.concatenate(([1.0], tps / (tps + fps)))
    kept = thin(recall, precision, points)
    return {
        "recall": _floats(recall[kept]),
        "precision": _floats(precision[kept]),
        "average_precision": float(np.sum(np.diff(recall) * precision[1:])),
        "prevalence": float(positives / (tps[-1] + fps[-1])),
    }


def _calibration(labels: FloatArray, scores: FloatArray, bins: int) -> dict[str, Any]:
    if bins < 1:
        raise EvaluationError(f"calibration needs at least 1 bin, not {bins}")
    if scores.min() < 0.0 or scores.max() > 1.0:
        raise EvaluationError(
            f"calibration needs probabilities in [0, 1]; the scores span "
            f"[{scores.min():g}, {scores.max():g}]"
        )
    # floor(bins * p), p = 1 in the last bin: the bins of the `ece` metric
    # (`_metrics.ece_bins`), so that the report's calibration error is the metric's.
    ids = np.minimum((scores * bins).astype(np.intp), bins - 1)
    total = np.bincount(ids, minlength=bins)
    predicted = np.bincount(ids, weights=scores, minlength=bins)
    observed = np.bincount(ids, weights=labels, minlength=bins)
    kept = total > 0
    mean_predicted = predicted[kept] / total[kept]
    observed_rate = observed[kept] / total[kept]
    gap = np.abs(observed_rate - mean_predicted) @ total[kept] / len(scores)
    return {
        "bins": bins,
        "mean_predicted": _floats(mean_predicted),
        "observed_rate": _floats(observed_rate),
        "count": _ints(total[kept]),
        "expected_calibration_error": float(gap),
    }


def _confusion(labels: FloatArray, scores: FloatArray, threshold: float) -> dict[str, Any]:
    if not np.isfinite(threshold):
        raise EvaluationError(f"the decision threshold must be finite, not {threshold}")
    predicted = scores >= threshold
    actual = labels == 1.0
    tp = int(np.count_nonzero(predicted & actual))
    fp = int(np.count_nonzero(predicted)) - tp
    fn = int(np.count_nonzero(actual)) - tp
    tn = len(labels) - tp - fp - fn
    return {"threshold": float(threshold), "tn": tn, "fp": fp, "fn": fn, "tp": tp}


def _floats(values: npt.NDArray[Any]) -> list[float]:
    return [float(v) for v in values.astype(np.float64).tolist()]


def _ints(values: npt.NDArray[Any]) -> list[int]:
    return [int(v) for v in values.astype(np.int64).tolist()]
