import math

import numpy as np
import pytest
from sklearn import metrics

from gyre.errors import EvaluationError
from gyre.evaluate import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    classification_metrics,
    regression_metrics,
)


def scored_rows(seed: int, n: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities with many ties (two decimals), inside (0, 1)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(np.round(rng.beta(2, 2, n) * 0.6 + 0.3 * y, 2), 0.01, 0.99)
    return y, p


def weights_for(kind: str, n: int, seed: int) -> np.ndarray | None:
    rng = np.random.default_rng(seed + 1000)
    if kind == "none":
        return None
    if kind == "poisson":
        return rng.poisson(1.0, n).astype(np.float64)
    return rng.random(n) * 3.0


@pytest.mark.parametrize("kind", ["none", "poisson", "real"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_sklearns_on_tied_weighted_rows(kind: str, seed: int) -> None:
    y, p = scored_rows(seed)
    w = weights_for(kind, len(y), seed)
    found = classification_metrics(y, p, 0.5, w)
    label = p >= 0.5
    expected = {
        "roc_auc": metrics.roc_auc_score(y, p, sample_weight=w),
        "pr_auc": metrics.average_precision_score(y, p, sample_weight=w),
        "log_loss": metrics.log_loss(y, p, sample_weight=w),
        "accuracy": metrics.accuracy_score(y, label, sample_weight=w),
        "precision": metrics.precision_score(y, label, sample_weight=w),
        "recall": metrics.recall_score(y, label, sample_weight=w),
        "f1": metrics.f1_score(y, label, sample_weight=w),
        "brier": metrics.brier_score_loss(y, p, sample_weight=w),
    }
    assert list(found) == list(CLASSIFICATION_METRICS)
    for name, value in expected.items():
        assert found[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name


def test_the_threshold_decides_the_label_with_p_at_least_it() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.7, 0.7, 0.3, 0.1])
    at = classification_metrics(y, p, 0.7)
    above = classification_metrics(y, p, 0.71)
    assert (at["precision"], at["recall"]) == (0.5, 0.5)
    assert math.isnan(above["precision"]) and above["recall"] == 0.0


def test_ece_is_the_weighted_mean_gap_over_ten_equal_bins() -> None:
    y, p = scored_rows(3)
    w = weights_for("real", len(y), 3)
    assert w is not None
    gaps = 0.0
    for b in range(10):
        upper = (b + 1) / 10 if b < 9 else 1.01
        inside = (p >= b / 10) & (p < upper)
        if w[inside].sum() > 0:
            gap = np.average(p[inside], weights=w[inside]) - np.average(
                y[inside], weights=w[inside]
            )
            gaps += w[inside].sum() / w.sum() * abs(gap)
    assert classification_metrics(y, p, 0.5, w)["ece"] == pytest.approx(gaps, rel=1e-12)


def test_a_probability_of_exactly_one_falls_in_the_last_calibration_bin() -> None:
    found = classification_metrics(np.array([1, 0]), np.array([1.0, 0.95]), 0.5)
    assert found["ece"] == pytest.approx(abs(1.95 / 2 - 0.5))


def test_integer_weights_count_a_row_that_many_times() -> None:
    y, p = scored_rows(4, 200)
    w = np.random.default_rng(4).integers(0, 4, len(y))
    repeated = classification_metrics(np.repeat(y, w), np.repeat(p, w), 0.5)
    weighted = classification_metrics(y, p, 0.5, w.astype(np.float64))
    for name in CLASSIFICATION_METRICS:
        assert weighted[name] == pytest.approx(repeated[name], rel=1e-12), name


def test_log_loss_clips_probabilities_at_1e_15() -> None:
    missed = classification_metrics(np.array([1]), np.array([0.0]), 0.5)
    assert missed["log_loss"] == -math.log(1e-15)
    false_alarm = classification_metrics(np.array([0]), np.array([1.0]), 0.5)
    assert false_alarm["log_loss"] == -math.log(1.0 - (1.0 - 1e-15))


def test_metrics_undefined_on_the_rows_are_nan() -> None:
    only_negatives = classification_metrics(np.zeros(4), np.array([0.1, 0.2, 0.3, 0.4]), 0.9)
    for name in ("roc_auc", "pr_auc", "precision", "recall", "f1"):
        assert math.isnan(only_negatives[name]), name
    assert only_negatives["accuracy"] == 1.0
    only_positives = classification_metrics(np.ones(3), np.array([0.2, 0.6, 0.9]), 0.5)
    assert math.isnan(only_positives["roc_auc"])
    assert only_positives["pr_auc"] == 1.0
    nothing_called = classification_metrics(np.array([1, 0]), np.array([0.2, 0.1]), 0.5)
    assert math.isnan(nothing_called["precision"])
    assert nothing_called["f1"] == 0.0


@pytest.mark.parametrize("kind", ["none", "real"])
def test_regression_metrics_equal_sklearns(kind: str) -> None:
    rng = np.random.default_rng(5)
    y = rng.normal(3.0, 2.0, 400)
    pred = y + rng.normal(0.0, 1.0, 400)
    w = weights_for(kind, 400, 5)
    found = regression_metrics(y, pred, w)
    assert list(found) == list(REGRESSION_METRICS)
    assert found["mae"] == pytest.approx(metrics.mean_absolute_error(y, pred, sample_weight=w))
    assert found["rmse"] == pytest.approx(metrics.root_mean_squared_error(y, pred, sample_weight=w))
    assert found["r2"] == pytest.approx(metrics.r2_score(y, pred, sample_weight=w))
    assert found["mape"] == pytest.approx(
        metrics.mean_absolute_percentage_error(y, pred, sample_weight=w)
    )


def test_mape_is_absent_when_a_target_is_zero_and_r2_nan_for_a_constant_target() -> None:
    found = regression_metrics(np.array([0.0, 1.0, 2.0]), np.array([0.5, 1.0, 2.5]))
    assert "mape" not in found and found["mae"] == pytest.approx(1 / 3)
    constant = regression_metrics(np.full(3, 0.1), np.array([0.1, 0.2, 0.3]))
    assert math.isnan(constant["r2"])


def test_every_metric_says_which_direction_is_better() -> None:
    assert set(HIGHER_IS_BETTER) == set(CLASSIFICATION_METRICS) | set(REGRESSION_METRICS)
    assert not HIGHER_IS_BETTER["log_loss"] and HIGHER_IS_BETTER["roc_auc"]


@pytest.mark.parametrize(
    ("y", "p", "weights", "match"),
    [
        ([0, 2], [0.1, 0.2], None, r"must be 0 or 1; found \[2\]"),
        ([0, 1], [0.1, 1.2], None, r"in \[0, 1\]"),
        ([0, 1], [0.1, math.nan], None, "1 are not, the first nan"),
        ([0, 1], [0.1], None, "one length"),
        ([], [], None, "no rows"),
        ([0, 1], [0.1, 0.2], [1.0, -1.0], "non-negative"),
        ([0, 1], [0.1, 0.2], [0.0, 0.0], "not all zero"),
        ([0, 1], [0.1, 0.2], [1.0], "one per row"),
    ],
)
def test_inputs_it_cannot_evaluate_are_refused(
    y: list[float], p: list[float], weights: list[float] | None, match: str
) -> None:
    w = None if weights is None else np.array(weights)
    with pytest.raises(EvaluationError, match=match):
        classification_metrics(np.array(y), np.array(p), 0.5, w)


@pytest.mark.parametrize(("threshold", "match"), [(math.nan, "finite"), ("0.5", "a number")])
def test_a_threshold_must_be_a_finite_number(threshold: object, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        classification_metrics(np.array([0, 1]), np.array([0.1, 0.9]), threshold)  # type: ignore[arg-type]
    assert classification_metrics(np.array([0, 1]), np.array([0.1, 0.9]), np.float32(0.5))


def test_regression_refuses_non_finite_values() -> None:
    with pytest.raises(EvaluationError, match="finite"):
        regression_metrics(np.array([1.0, 2.0]), np.array([1.0, math.inf]))
    with pytest.raises(EvaluationError, match="pred must be numbers; got array"):
        regression_metrics(np.array([1.0, 2.0]), np.array(["a", "b"]))
