"""Confidence intervals for each metric, and paired comparisons of two models on one set.

One model (`metric_intervals`): an analytic interval wherever a standard one exists,
else the Poisson bootstrap's percentile interval (`_bootstrap`):

| metric                       | interval                                                |
|------------------------------|---------------------------------------------------------|
| roc_auc                      | DeLong's variance, normal, clipped to [0, 1] ("delong") |
| accuracy, precision, recall  | Wilson's score interval on the rows counted ("wilson")  |
| log_loss, brier, mae         | normal, the mean of the per-row losses ("normal")       |
| rmse                         | the delta method from the per-row squared errors        |
| pr_auc, f1, ece, r2, mape    | Poisson bootstrap, percentile ("poisson_bootstrap")     |

Two models scored on the same rows (`paired_differences`): every comparison pairs the rows,
so what the two models share (hard rows, label noise) cancels out of the difference:

| metric                       | difference (challenger - champion)                      |
|------------------------------|---------------------------------------------------------|
| roc_auc                      | DeLong's paired test: the covariance of the two AUCs    |
| accuracy                     | McNemar's exact test on the discordant rows for p; a    |
|                              | normal interval of the per-row differences in correctness |
| log_loss, brier, mae         | the mean of the per-row loss differences, normal; p     |
|                              | from its z statistic ("paired_normal")                  |
| every other metric           | the paired Poisson bootstrap: both models see the same   |
|                              | weights in each resample; percentile interval, p from    |
|                              | the share of resamples on the other side of 0           |

Interval bounds of losses are at least 0. A metric undefined on the rows (see `_metrics`)
has NaN for its value, bounds and p-value. `holm` corrects several p-values at once (a
gate that looks at many metrics must, or one of them is "significant" by chance).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from gyre.errors import EvaluationError
from gyre.evaluate import _bootstrap as boot
from gyre.evaluate._delong import auc_difference_variance, auc_variance, placements
from gyre.evaluate._distributions import mcnemar_p, two_sided_p, wilson, z_value
from gyre.evaluate._metrics import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    check_binary,
    check_regression,
    check_threshold,
    log_losses,
    rank,
    regression_metrics,
    weighted_classification,
)

TASKS = ("classification", "regression")


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the rows and its confidence interval; `method` names how the
    interval was computed."""

    value: float
    low: float
    high: float
    method: str

    def as_dict(self) -> dict[str, float | str]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Difference:
    """challenger - champion for one metric on the same rows (`delta`), its confidence
    interval, and the two-sided p-value of "no difference"."""

    metric: str
    challenger: float
    champion: float
    delta: float
    low: float
    high: float
    p_value: float
    method: str

    def as_dict(self) -> dict[str, float | str]:
        return dataclasses.asdict(self)


def _check_options(task: str, confidence: float, resamples: int) -> None:
    if task not in TASKS:
        raise EvaluationError(f"unknown task {task!r}: expected one of {', '.join(TASKS)}")
    if not 0.0 < confidence < 1.0:
        raise EvaluationError(f"confidence must be between 0 and 1 (0.95); got {confidence}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise EvaluationError(f"resamples must be a positive integer (200); got {resamples!r}")


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    """The mean and its standard error (NaN for one row)."""
    n = len(values)
    se = float(values.std(ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return float(values.mean()), se


def _normal(
    value: float, se: float, z: float, method: str, floor: float = -math.inf, top: float = math.inf
) -> Estimate:
    """value ± z·se, kept within [floor, top] (where the metric itself lives)."""
    if math.isnan(value) or math.isnan(se):
        return Estimate(value, math.nan, math.nan, method)
    return Estimate(value, max(floor, value - z * se), min(top, value + z * se), method)


def metric_intervals(
    task: str,
    y: np.ndarray,
    score: np.ndarray,
    *,
    threshold: float = 0.5,
    confidence: float = 0.95,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, Estimate]:
    """Each metric of the task with its `confidence` interval. `score` is the probability
    of class 1 (classification, labelled `p >= threshold`) or the prediction (regression).
    The bootstrap's `resamples` are drawn from `seed`: the same call gives the same answer."""
    _check_options(task, confidence, resamples)
    z = z_value(confidence)
    if task == "regression":
        return _regression_intervals(y, score, z, confidence, resamples, seed)
    positive, p = check_binary(y, score)
    threshold = check_threshold(threshold)
    n = len(p)
    ranking = rank(p)
    point = weighted_classification(positive, p, threshold, np.ones(n), ranking)
    auc, variance = auc_variance(positive, placements(positive, ranking))
    auc_se = math.sqrt(variance) if variance >= 0 else math.nan
    called = p >= threshold
    tp = int(np.count_nonzero(called & positive))
    fp = int(np.count_nonzero(called)) - tp
    pos = int(np.count_nonzero(positive))
    found = {
        "roc_auc": _normal(auc, auc_se, z, "delong", 0.0, 1.0),
        "accuracy": Estimate(point["accuracy"], *wilson(n - fp - (pos - tp), n, z), "wilson"),
        "precision": Estimate(point["precision"], *wilson(tp, tp + fp, z), "wilson"),
        "recall": Estimate(point["recall"], *wilson(tp, pos, z), "wilson"),
        "log_loss": _normal(*_mean_se(log_losses(positive, p)), z, "normal", 0.0),
        "brier": _normal(*_mean_se((p - positive) ** 2), z, "normal", 0.0),
    }
    model = boot.layout(positive, p, ranking, threshold)
    replicates = boot.resample(n, resamples, seed, boot.classification_replicates([model]))
    for name in ("pr_auc", "f1", "ece"):
        found[name] = _bootstrapped(point[name], replicates[name][:, 0], confidence)
    return {name: found[name] for name in CLASSIFICATION_METRICS}


def _bootstrapped(value: float, replicates: np.ndarray, confidence: float) -> Estimate:
    if math.isnan(value):
        return Estimate(value, math.nan, math.nan, "poisson_bootstrap")
    return Estimate(value, *boot.percentile_interval(replicates, confidence), "poisson_bootstrap")


def _regression_intervals(
    y: np.ndarray, pred: np.ndarray, z: float, confidence: float, resamples: int, seed: int
) -> dict[str, Estimate]:
    y = check_regression(y, pred)
    error = y - np.asarray(pred, dtype=np.float64)
    point = regression_metrics(y, pred)
    mse, mse_se = _mean_se(error**2)
    rmse = math.sqrt(mse)
    # Delta method: d√m/dm = 1/(2√m); a model without error has a zero-width interval.
    rmse_se = mse_se / (2.0 * rmse) if rmse > 0 else 0.0
    found = {
        "mae": _normal(*_mean_se(np.abs(error)), z, "normal", 0.0),
        "rmse": _normal(rmse, rmse_se, z, "delta", 0.0),
    }
    replicates = boot.resample(
        len(y), resamples, seed, boot.regression_replicates(y, [error]), boot.REGRESSION_BLOCK_CELLS
    )
    for name in ("r2", "mape"):
        if name in point:
            found[name] = _bootstrapped(point[name], replicates[name][:, 0], confidence)
    return {name: found[name] for name in REGRESSION_METRICS if name in found}


def _z_test(
    metric: str, a: float, b: float, delta: float, se: float, z: float, method: str
) -> Difference:
    if math.isnan(delta) or math.isnan(se):
        return Difference(metric, a, b, delta, math.nan, math.nan, math.nan, method)
    p = two_sided_p(delta / se) if se > 0 else float(delta == 0)
    return Difference(metric, a, b, delta, delta - z * se, delta + z * se, p, method)


def _paired_mean(metric: str, loss_a: np.ndarray, loss_b: np.ndarray, z: float) -> Difference:
    delta, se = _mean_se(loss_a - loss_b)
    return _z_test(
        metric, float(loss_a.mean()), float(loss_b.mean()), delta, se, z, "paired_normal"
    )


def _paired_bootstrap(
    metric: str, a: float, b: float, replicates: np.ndarray, confidence: float
) -> Difference:
    method = "paired_poisson_bootstrap"
    delta = a - b
    if math.isnan(delta):
        return Difference(metric, a, b, delta, math.nan, math.nan, math.nan, method)
    deltas = replicates[:, 0] - replicates[:, 1]
    low, high = boot.percentile_interval(deltas, confidence)
    return Difference(metric, a, b, delta, low, high, boot.bootstrap_p(deltas, delta), method)


def paired_differences(
    task: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    *,
    thresholds: tuple[float, float] = (0.5, 0.5),
    confidence: float = 0.95,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, Difference]:
    """challenger - champion for each metric of the task, both scored on the same rows
    `y` (probabilities of class 1, or predictions); `thresholds` are the challenger's and
    the champion's. Deterministic for a given `seed`."""
    _check_options(task, confidence, resamples)
    z = z_value(confidence)
    if task == "regression":
        return _paired_regression(y, challenger, champion, z, confidence, resamples, seed)
    positive, pa = check_binary(y, challenger, "challenger")
    _, pb = check_binary(y, champion, "champion")
    if len(thresholds) != 2:
        raise EvaluationError(
            f"thresholds are (challenger's, champion's): two numbers; got {len(thresholds)}"
        )
    thresholds = (check_threshold(thresholds[0]), check_threshold(thresholds[1]))
    n = len(pa)
    ranks = rank(pa), rank(pb)
    point = [
        weighted_classification(positive, p, t, np.ones(n), r)
        for p, t, r in zip((pa, pb), thresholds, ranks, strict=True)
    ]
    va, vb = placements(positive, ranks[0]), placements(positive, ranks[1])
    auc_a, auc_b = point[0]["roc_auc"], point[1]["roc_auc"]
    auc_se = math.sqrt(max(auc_difference_variance(positive, va, vb), 0.0))
    right_a = (pa >= thresholds[0]) == positive
    right_b = (pb >= thresholds[1]) == positive
    p_value, exact = mcnemar_p(
        int(np.count_nonzero(right_a & ~right_b)), int(np.count_nonzero(~right_a & right_b))
    )
    acc = _paired_mean("accuracy", right_a.astype(np.float64), right_b.astype(np.float64), z)
    found = {
        "roc_auc": _z_test("roc_auc", auc_a, auc_b, auc_a - auc_b, auc_se, z, "delong_paired"),
        "accuracy": dataclasses.replace(
            acc, p_value=p_value, method="mcnemar_exact" if exact else "mcnemar_normal"
        ),
        "log_loss": _paired_mean("log_loss", log_losses(positive, pa), log_losses(positive, pb), z),
        "brier": _paired_mean("brier", (pa - positive) ** 2, (pb - positive) ** 2, z),
    }
    models = [
        boot.layout(positive, p, r, t) for p, r, t in zip((pa, pb), ranks, thresholds, strict=True)
    ]
    replicates = boot.resample(n, resamples, seed, boot.classification_replicates(models))
    for name in ("precision", "recall", "f1", "pr_auc", "ece"):
        found[name] = _paired_bootstrap(
            name, point[0][name], point[1][name], replicates[name], confidence
        )
    return {name: found[name] for name in CLASSIFICATION_METRICS}


def _paired_regression(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    z: float,
    confidence: float,
    resamples: int,
    seed: int,
) -> dict[str, Difference]:
    y = check_regression(y, challenger, "challenger")
    check_regression(y, champion, "champion")
    ea = y - np.asarray(challenger, dtype=np.float64)
    eb = y - np.asarray(champion, dtype=np.float64)
    point = regression_metrics(y, challenger), regression_metrics(y, champion)
    found = {"mae": _paired_mean("mae", np.abs(ea), np.abs(eb), z)}
    replicates = boot.resample(
        len(y),
        resamples,
        seed,
        boot.regression_replicates(y, [ea, eb]),
        boot.REGRESSION_BLOCK_CELLS,
    )
    for name in ("rmse", "r2", "mape"):
        if name in point[0]:
            found[name] = _paired_bootstrap(
                name, point[0][name], point[1][name], replicates[name], confidence
            )
    return {name: found[name] for name in REGRESSION_METRICS if name in found}


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Holm-Bonferroni step-down at family-wise error `alpha`: True where the hypothesis is
    rejected, in the order given. The i-th smallest p (from 0) is rejected while every
    smaller one was and p ≤ alpha/(m - i); a NaN p-value is never rejected and still counts
    in m."""
    if not 0.0 < alpha < 1.0:
        raise EvaluationError(f"alpha must be between 0 and 1 (0.05); got {alpha}")
    values = [math.inf if math.isnan(p) else float(p) for p in p_values]
    m = len(values)
    rejected = [False] * m
    for i, index in enumerate(sorted(range(m), key=lambda j: values[j])):
        if values[index] > alpha / (m - i):
            break
        rejected[index] = True
    return rejected
