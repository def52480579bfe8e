import json

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from gyre.errors import EvaluationError
from gyre.evaluate._curves import (
    calibration_bins,
    classification_curves,
    confusion,
    pr_curve_points,
    regression_curves,
    residual_histogram,
    residual_vs_predicted,
    roc_curve_points,
    thin,
)


def scored(n: int, seed: int = 0, decimals: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.3
    p = np.clip(rng.normal(0.3 + 0.3 * y, 0.2), 0.0, 1.0)
    return y, (p if decimals is None else np.round(p, decimals))


def assert_on_and_close_to(full: np.ndarray, kept: np.ndarray, points: int) -> None:
    """Every kept point is a point of the full curve, in the same order, both ends kept;
    every point of the full curve lies within length / (points - 1) of the kept polyline."""
    assert len(kept) <= points
    assert np.array_equal(kept[0], full[0]) and np.array_equal(kept[-1], full[-1])
    where = {tuple(point): i for i, point in enumerate(full.tolist())}
    at = np.array([where[tuple(point)] for point in kept.tolist()])
    assert np.all(np.diff(at) > 0)
    segment = np.clip(np.searchsorted(at, np.arange(len(full)), side="right") - 1, 0, len(at) - 2)
    a, b = kept[segment], kept[segment + 1]
    squared = np.maximum(np.sum((b - a) ** 2, axis=1), 1e-300)
    along = np.clip(np.sum((full - a) * (b - a), axis=1) / squared, 0.0, 1.0)
    distance = np.hypot(*(full - (a + along[:, None] * (b - a))).T)
    length = np.sum(np.hypot(*np.diff(full, axis=0).T))
    assert distance.max() <= length / (points - 1) + 1e-12


@pytest.mark.parametrize("decimals", [None, 2])
def test_roc_points_lie_on_sklearns_curve_and_the_thinned_curve_stays_close(
    decimals: int | None,
) -> None:
    y, p = scored(50_000, decimals=decimals)
    roc = roc_curve_points(y, p)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    assert_on_and_close_to(
        np.column_stack([fpr, tpr]), np.column_stack([roc["fpr"], roc["tpr"]]), 200
    )
    assert roc["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)


@pytest.mark.parametrize("decimals", [None, 2])
def test_pr_points_lie_on_sklearns_curve_and_the_thinned_curve_stays_close(
    decimals: int | None,
) -> None:
    y, p = scored(50_000, seed=1, decimals=decimals)
    pr = pr_curve_points(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    full = np.column_stack([recall[::-1], precision[::-1]])
    assert_on_and_close_to(full, np.column_stack([pr["recall"], pr["precision"]]), 200)
    assert pr["average_precision"] == pytest.approx(average_precision_score(y, p), abs=1e-12)
    assert pr["prevalence"] == pytest.approx(y.mean())


def test_a_short_curve_is_kept_whole() -> None:
    y, p = scored(60, seed=2)
    roc = roc_curve_points(y, p)
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    assert roc["fpr"] == pytest.approx(fpr.tolist()) and roc["tpr"] == pytest.approx(tpr.tolist())


def test_curves_of_a_million_rows_stay_bounded_and_exact() -> None:
    y, p = scored(1_000_000, seed=3)
    curves = classification_curves(y, p, threshold=0.5, points=200)
    assert len(curves["roc"]["fpr"]) <= 200 and len(curves["pr"]["recall"]) <= 200
    assert curves["roc"]["auc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    assert curves["pr"]["average_precision"] == pytest.approx(
        average_precision_score(y, p), abs=1e-9
    )
    text = json.dumps(curves, allow_nan=False)
    assert json.loads(text) == curves
    assert len(text) < 40_000


def test_calibration_bins_are_the_ece_metrics_with_scores_on_the_bin_edges() -> None:
    """floor(10 p), p = 1 in the last bin: the report's calibration error is the `ece`
    metric's, also where scikit-learn's calibration_curve bins an edge the other way."""
    from gyre.evaluate import classification_metrics

    y, p = scored(20_000, seed=4, decimals=1)  # every score sits on an edge
    cal = calibration_bins(y, p, bins=10)
    ids = np.minimum((p * 10).astype(int), 9)
    kept = [b for b in range(10) if (ids == b).any()]
    assert cal["observed_rate"] == pytest.approx([y[ids == b].mean() for b in kept])
    assert cal["mean_predicted"] == pytest.approx([p[ids == b].mean() for b in kept])
    assert sum(cal["count"]) == len(y)
    ece = classification_metrics(y, p, 0.5)["ece"]
    assert cal["expected_calibration_error"] == pytest.approx(ece)


def test_confusion_counts_a_score_at_the_threshold_as_positive() -> None:
    y, p = scored(10_000, seed=5, decimals=2)
    counts = confusion(y, p, 0.5)
    tn, fp, fn, tp = confusion_matrix(y, p >= 0.5).ravel().tolist()
    assert counts == {"threshold": 0.5, "tn": tn, "fp": fp, "fn": fn, "tp": tp}
    assert np.any(p == 0.5)


def test_a_wild_residual_does_not_squash_the_histogram() -> None:
    rng = np.random.default_rng(6)
    y = rng.normal(size=10_000)
    pred = np.zeros_like(y)
    y[0] = 1e9
    hist = residual_histogram(y, pred, bins=40)
    assert len(hist["edges"]) == 41 and len(hist["counts"]) == 40
    assert hist["edges"][-1] < 10.0 and hist["above"] >= 1
    assert sum(hist["counts"]) + hist["below"] + hist["above"] == len(y)
    assert hist["mean"] == pytest.approx(float(np.mean(y)))


def test_equal_residuals_give_a_histogram_around_them() -> None:
    hist = residual_histogram([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], bins=4)
    assert hist["edges"][0] == 0.5 and hist["edges"][-1] == 1.5
    assert sum(hist["counts"]) == 3


def test_residuals_against_predictions_average_equal_count_bins() -> None:
    rng = np.random.default_rng(7)
    pred = rng.normal(size=100_003)
    y = pred + rng.normal(size=pred.size) * (1 + np.abs(pred))
    binned = residual_vs_predicted(y, pred, points=200)
    counts = np.array(binned["count"])
    assert len(counts) == 200 and counts.sum() == pred.size and counts.max() - counts.min() <= 1
    order = np.argsort(pred, kind="stable")
    chunks = np.split(order, np.cumsum(counts)[:-1])
    residual = y - pred
    assert binned["mean_predicted"] == pytest.approx([pred[c].mean() for c in chunks])
    assert binned["mean_residual"] == pytest.approx([residual[c].mean() for c in chunks])
    assert binned["residual_p90"] == pytest.approx([np.percentile(residual[c], 90) for c in chunks])
    assert np.all(np.diff(binned["mean_predicted"]) >= 0)


def test_fewer_rows_than_bins_gives_one_row_per_bin() -> None:
    binned = residual_vs_predicted([1.0, 2.0, 3.0], [3.0, 1.0, 2.0], points=200, min_rows=1)
    assert binned["count"] == [1, 1, 1]
    assert binned["mean_predicted"] == [1.0, 2.0, 3.0]
    assert binned["mean_residual"] == [1.0, 1.0, -2.0]


def test_bins_keep_their_minimum_rows() -> None:
    rng = np.random.default_rng(9)
    pred = rng.normal(size=10_000)
    assert residual_vs_predicted(pred, pred, points=200, min_rows=200)["count"] == [200] * 50
    assert residual_vs_predicted(pred[:150], pred[:150], min_rows=200)["count"] == [150]


def test_regression_curves_are_json() -> None:
    rng = np.random.default_rng(8)
    y = rng.normal(size=1000)
    curves = regression_curves(y, y * 0.9)
    assert json.loads(json.dumps(curves, allow_nan=False)) == curves


def test_thinning_a_curve_that_does_not_move_keeps_its_ends() -> None:
    x = np.zeros(500)
    assert thin(x, x, 10).tolist() == [0, 499]


@pytest.mark.parametrize(
    ("y", "p", "match"),
    [
        ([0, 0, 0], [0.1, 0.2, 0.3], "both classes.*all negatives"),
        ([1, 1], [0.1, 0.2], "both classes.*all positives"),
        ([0, 1], [0.1, float("nan")], "finite"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1, 1], [0.1, 0.2], "one length"),
        ([], [], "no rows"),
    ],
)
def test_curves_refuse_arrays_they_cannot_summarize(y: list, p: list, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        roc_curve_points(y, p)


def test_calibration_refuses_scores_outside_zero_and_one() -> None:
    with pytest.raises(EvaluationError, match=r"probabilities in \[0, 1\]"):
        calibration_bins([0, 1], [0.5, 1.5])
