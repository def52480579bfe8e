"""Point estimates of the evaluation metrics, weighted, in O(n log n) at most.

Classification is binary: `y` holds 0 and 1, `p` the probability of class 1. The scores
are sorted once, highest first (`rank`), and every curve metric is read from the weighted
cumulative counts of positives (`tp`) and negatives (`fp`) at the end of each group of
tied scores, so ties are handled as one step of the curve:

- roc_auc: the probability that a positive scores above a negative, a tie counting one
  half (the trapezoid under the ROC curve: midranks), Σ_g neg_g·(pos above g + pos_g/2)
  / (P·N).
- pr_auc: average precision as scikit-learn defines it, Σ_g (tp_g - tp_{g-1})/P ·
  tp_g/(tp_g + fp_g): no interpolation, the precision at each group's end.
- accuracy, precision, recall, f1: on the label `p >= threshold`; f1 = 2tp/(2tp+fp+fn).
- log_loss: the mean of -log p(y), p clipped to [1e-15, 1 - 1e-15]; brier: mean (p - y)².
- ece: 10 equal-width bins of p ([0, 0.1), …, [0.9, 1]); Σ_b (W_b/W)·|mean p - mean y|
  in bin b, which is Σ_b |Σ_{i∈b} w_i (p_i - y_i)| / W.

Regression: mae, rmse, r2 = 1 - SSE/SST (SST around the weighted mean of y), and mape =
mean |y - pred|/|y|, present only when no y is 0.

Weights are non-negative per-row frequency weights: a row of weight 2 counts as two rows
in every metric (the bootstrap draws them from Poisson(1)). A metric that is undefined on
the rows given is NaN, never an error: roc_auc with no positive or no negative weight,
pr_auc and recall with no positive weight, precision with no predicted positive, f1 when
there is neither a positive nor a predicted positive, r2 when y is constant.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from gyre.errors import EvaluationError, shown

CLASSIFICATION_METRICS = (
    "roc_auc",
    "pr_auc",
    "log_loss",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "brier",
    "ece",
)
REGRESSION_METRICS = ("mae", "rmse", "r2", "mape")
HIGHER_IS_BETTER: dict[str, bool] = {
    "roc_auc": True,
    "pr_auc": True,
    "log_loss": False,
    "accuracy": True,
    "precision": True,
    "recall": True,
    "f1": True,
    "brier": False,
    "ece": False,
    "mae": False,
    "rmse": False,
    "r2": True,
    "mape": False,
}

LOG_LOSS_EPS = 1e-15
ECE_BINS = 10


def _floats(values: np.ndarray, name: str) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise EvaluationError(f"{name} must be numbers; got {shown(values)}") from None


def check_binary(y: np.ndarray, p: np.ndarray, name: str = "p") -> tuple[np.ndarray, np.ndarray]:
    """`y` as a boolean array (True = class 1) and `p` as float64, or EvaluationError."""
    p = _floats(p, name)
    y = np.asarray(y)
    if y.ndim != 1 or p.shape != y.shape:
        raise EvaluationError(
            f"labels and {name} must be 1-d arrays of one length; got shapes {y.shape} "
            f"and {p.shape}"
        )
    if len(y) == 0:
        raise EvaluationError("no rows to evaluate: pass at least one labelled row")
    positive = y == 1
    if not np.all(positive | (y == 0)):
        found = np.unique(y[~(positive | (y == 0))])[:5].tolist()
        raise EvaluationError(
            f"binary labels must be 0 or 1; found {found}: encode the positive class as 1"
        )
    outside = ~((p >= 0.0) & (p <= 1.0))  # NaN compares False: outside too
    if np.any(outside):
        raise EvaluationError(
            f"{name} must be probabilities of class 1 in [0, 1]; {np.count_nonzero(outside)} "
            f"are not, the first {shown(float(p[outside][0]))}: pass predict_proba(x)[:, 1]"
        )
    return positive, p


def check_threshold(threshold: float) -> float:
    """The threshold as a float; EvaluationError unless it is a finite number."""
    if isinstance(threshold, bool) or not isinstance(threshold, numbers.Real):
        raise EvaluationError(f"a threshold must be a number; got {shown(threshold)}")
    if not math.isfinite(threshold):
        raise EvaluationError(f"a threshold must be finite; got {threshold}")
    return float(threshold)


def check_regression(y: np.ndarray, pred: np.ndarray, name: str = "pred") -> np.ndarray:
    """`y` as float64 (checked like `pred`, which must be finite and of the same shape)."""
    y = _floats(y, "targets")
    pred = _floats(pred, name)
    if y.ndim != 1 or pred.shape != y.shape:
        raise EvaluationError(
            f"targets and {name} must be 1-d arrays of one length; got shapes {y.shape} "
            f"and {pred.shape}"
        )
    if len(y) == 0:
        raise EvaluationError("no rows to evaluate: pass at least one labelled row")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(pred))):
        raise EvaluationError(f"targets and {name} must be finite (no NaN or infinity)")
    return y


def check_weights(weights: np.ndarray | None, n: int) -> np.ndarray:
    """The weights as float64 (ones when None); EvaluationError unless they are n finite
    non-negative numbers with a positive sum."""
    if weights is None:
        return np.ones(n)
    w = _floats(weights, "weights")
    if w.shape != (n,):
        raise EvaluationError(f"weights must be one per row ({n}); got shape {w.shape}")
    if not np.all(np.isfinite(w)) or w.min() < 0.0 or w.sum() <= 0.0:
        raise EvaluationError("weights must be finite, non-negative, and not all zero")
    return w


@dataclass(frozen=True)
class Ranking:
    """The rows sorted by score, highest first (stable), and the tie groups: `last[g]` is
    the position in `order` of the last row of group g."""

    order: np.ndarray
    last: np.ndarray


def rank(score: np.ndarray) -> Ranking:
    """Sort once; every curve metric, DeLong's placements and the bootstrap reuse it."""
    order = np.argsort(-score, kind="stable")
    ranked = score[order]
    last = np.flatnonzero(ranked[1:] != ranked[:-1])
    return Ranking(order, np.append(last, len(score) - 1))


def ece_bins(p: np.ndarray) -> np.ndarray:
    """The calibration bin of each probability: floor(10p), with p = 1 in the last bin."""
    return np.minimum((p * ECE_BINS).astype(np.intp), ECE_BINS - 1)


def log_losses(positive: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Each row's -log p(y), p clipped to [1e-15, 1 - 1e-15]."""
    clipped = np.clip(p, LOG_LOSS_EPS, 1.0 - LOG_LOSS_EPS)
    losses: np.ndarray = -np.log(np.where(positive, clipped, 1.0 - clipped))
    return losses


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else math.nan


def curve_auc(tp: np.ndarray, fp: np.ndarray) -> tuple[float, float]:
    """ROC AUC and average precision from the cumulative weights at each group's end."""
    pos, neg = float(tp[-1]), float(fp[-1])
    dtp = np.diff(tp, prepend=0.0)
    dfp = np.diff(fp, prepend=0.0)
    auc = _ratio(float(np.dot(dfp, tp - dtp / 2.0)), pos * neg) if neg > 0 else math.nan
    called = tp + fp
    precision = np.divide(tp, called, out=np.zeros_like(tp), where=called > 0)
    ap = _ratio(float(np.dot(dtp, precision)), pos)
    return auc, ap


def classification_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float, weights: np.ndarray | None = None
) -> dict[str, float]:
    """Every metric of `CLASSIFICATION_METRICS` for binary labels `y` and probabilities
    `p` of class 1, weighted by `weights` (None: each row once). Undefined metrics are
    NaN (the module docstring lists when)."""
    positive, p = check_binary(y, p)
    w = check_weights(weights, len(p))
    return weighted_classification(positive, p, check_threshold(threshold), w, rank(p))


def weighted_classification(
    positive: np.ndarray, p: np.ndarray, threshold: float, w: np.ndarray, ranking: Ranking
) -> dict[str, float]:
    """`classification_metrics` on checked inputs with the scores already ranked."""
    wpos = np.where(positive, w, 0.0)
    total = float(w.sum())
    tp_curve = np.cumsum(wpos[ranking.order])[ranking.last]
    fp_curve = np.cumsum((w - wpos)[ranking.order])[ranking.last]
    auc, ap = curve_auc(tp_curve, fp_curve)
    pos, neg = float(tp_curve[-1]), float(fp_curve[-1])
    called = p >= threshold
    tp = float(wpos[called].sum())
    fp = float(w[called].sum()) - tp
    fn = pos - tp
    gaps = np.bincount(ece_bins(p), weights=w * (p - positive), minlength=ECE_BINS)
    return {
        "roc_auc": auc,
        "pr_auc": ap,
        "log_loss": float(np.dot(w, log_losses(positive, p))) / total,
        "accuracy": (tp + neg - fp) / total,
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, pos),
        "f1": _ratio(2.0 * tp, 2.0 * tp + fp + fn),
        "brier": float(np.dot(w, (p - positive) ** 2)) / total,
        "ece": float(np.abs(gaps).sum()) / total,
    }


def regression_metrics(
    y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None = None
) -> dict[str, float]:
    """mae, rmse, r2 (NaN when y is constant) and, when no y is 0, mape (a fraction, not
    a percentage), weighted by `weights` (None: each row once)."""
    y = check_regression(y, pred)
    pred = np.asarray(pred, dtype=np.float64)
    w = check_weights(weights, len(y))
    total = float(w.sum())
    error = y - pred
    centred = y - float(np.dot(w, y)) / total
    sse = float(np.dot(w, error**2))
    # A constant y has no variance to explain (the centring may leave rounding noise).
    sst = 0.0 if y.min() == y.max() else float(np.dot(w, centred**2))
    found = {
        "mae": float(np.dot(w, np.abs(error))) / total,
        "rmse": math.sqrt(sse / total),
        "r2": 1.0 - _ratio(sse, sst),
    }
    if np.all(y != 0):
        found["mape"] = float(np.dot(w, np.abs(error) / np.abs(y))) / total
    return found
