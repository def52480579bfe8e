"""Intervals and paired comparisons, judged by what they promise: over many simulated
evaluation sets drawn from a population whose metrics are known, a 95% interval covers the
true value about 95% of the time; a challenger that is no better is not called better."""

import math
from statistics import NormalDist

import numpy as np
import pytest

from gyre.errors import EvaluationError
from gyre.evaluate import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    Difference,
    Estimate,
    classification_metrics,
    holm,
    metric_intervals,
    paired_differences,
    regression_metrics,
)
from gyre.evaluate._delong import auc_difference_variance, auc_variance, placements
from gyre.evaluate._metrics import rank

SIMULATIONS = 500
ROWS = 600
# Expectations under a standard normal, by Gauss-Hermite quadrature.
_NODES, _WEIGHTS = np.polynomial.hermite_e.hermegauss(80)
_WEIGHTS = _WEIGHTS / math.sqrt(2 * math.pi)


def sigmoid(v: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-v))


def binormal_truth(d: float) -> dict[str, float]:
    """A model whose score is N(+d/2, 1) on positives and N(-d/2, 1) on negatives (half
    the rows positive), p = sigmoid(score), labelled at p >= 0.5: its population metrics."""
    phi = NormalDist().cdf
    score = d / 2 + _NODES  # a positive's score; a negative's mirrors it
    hit = phi(d / 2)  # = recall = the share of negatives below 0 = precision = f1
    return {
        "roc_auc": phi(d / math.sqrt(2)),
        "accuracy": hit,
        "precision": hit,
        "recall": hit,
        "f1": hit,
        "log_loss": float(_WEIGHTS @ np.logaddexp(0.0, -score)),
        "brier": float(_WEIGHTS @ (1.0 - sigmoid(score)) ** 2),
    }


def binormal_rows(
    rng: np.random.Generator, n: int, separations: tuple[float, ...], rho: float
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Labels and each model's probabilities; the models' noises correlate by `rho`."""
    y = rng.integers(0, 2, n)
    common = rng.normal(size=n)
    models = []
    for d in separations:
        noise = math.sqrt(rho) * common + math.sqrt(1 - rho) * rng.normal(size=n)
        models.append(sigmoid(d * (y - 0.5) + noise))
    return y, models


CHALLENGER, CHAMPION = 1.3, 1.0


@pytest.fixture(scope="module")
def classification_coverage() -> tuple[dict[str, float], dict[str, float]]:
    """The share of simulations whose interval covers the truth: one model, and paired."""
    truth_a, truth_b = binormal_truth(CHALLENGER), binormal_truth(CHAMPION)
    single = dict.fromkeys(truth_a, 0)
    paired = dict.fromkeys(truth_a, 0)
    for seed in range(SIMULATIONS):
        y, (a, b) = binormal_rows(np.random.default_rng(seed), ROWS, (CHALLENGER, CHAMPION), 0.6)
        # 1000 resamples: at 200 the percentile interval's own noise costs about a point of
        # coverage at this size (the bootstrapped ones measured 0.935-0.94 over 3000
        # simulations; 0.94-0.95 with 1000; the analytic ones 0.944-0.958 either way).
        estimates = metric_intervals("classification", y, a, resamples=1000, seed=seed)
        differences = paired_differences("classification", y, a, b, resamples=1000, seed=seed)
        for name in truth_a:
            single[name] += estimates[name].low <= truth_a[name] <= estimates[name].high
            d = differences[name]
            paired[name] += d.low <= truth_a[name] - truth_b[name] <= d.high
    return (
        {k: v / SIMULATIONS for k, v in single.items()},
        {k: v / SIMULATIONS for k, v in paired.items()},
    )


@pytest.mark.parametrize(
    "metric", ["roc_auc", "accuracy", "precision", "recall", "f1", "log_loss", "brier"]
)
def test_a_single_models_interval_covers_the_true_value_95_percent_of_the_time(
    classification_coverage: tuple[dict[str, float], dict[str, float]], metric: str
) -> None:
    assert 0.92 <= classification_coverage[0][metric] <= 0.98


@pytest.mark.parametrize("metric", ["roc_auc", "accuracy", "f1", "log_loss", "brier"])
def test_the_paired_interval_covers_the_true_difference_95_percent_of_the_time(
    classification_coverage: tuple[dict[str, float], dict[str, float]], metric: str
) -> None:
    assert 0.92 <= classification_coverage[1][metric] <= 0.98


def test_regression_intervals_cover_the_true_values() -> None:
    # y ~ N(10, 2); each model's error is normal, the two correlated by 0.5. Measured over
    # 2000 simulations: every coverage between 0.945 and 0.957.
    sd_a, sd_b, sd_y, rows, runs = 1.0, 1.2, 2.0, 1000, 400
    inverse_y = float(_WEIGHTS @ (1.0 / (10.0 + sd_y * _NODES)))  # E[1/y]
    mae = [sd * math.sqrt(2 / math.pi) for sd in (sd_a, sd_b)]
    truth = {"mae": mae[0], "rmse": sd_a, "r2": 1 - sd_a**2 / sd_y**2, "mape": mae[0] * inverse_y}
    delta = {
        "mae": mae[0] - mae[1],
        "rmse": sd_a - sd_b,
        "r2": (sd_b**2 - sd_a**2) / sd_y**2,
        "mape": (mae[0] - mae[1]) * inverse_y,
    }
    single = dict.fromkeys(truth, 0)
    paired = dict.fromkeys(delta, 0)
    for seed in range(runs):
        rng = np.random.default_rng(seed)
        y = 10.0 + sd_y * rng.normal(size=rows)
        common = rng.normal(size=rows)
        noise = [math.sqrt(0.5) * (common + rng.normal(size=rows)) for _ in range(2)]
        a, b = y + sd_a * noise[0], y + sd_b * noise[1]
        estimates = metric_intervals("regression", y, a, resamples=500, seed=seed)
        differences = paired_differences("regression", y, a, b, resamples=500, seed=seed)
        for name, value in truth.items():
            single[name] += estimates[name].low <= value <= estimates[name].high
        for name, value in delta.items():
            paired[name] += differences[name].low <= value <= differences[name].high
    for name, covered in (single | {f"delta {k}": v for k, v in paired.items()}).items():
        assert 0.92 <= covered / runs <= 0.98, name


def test_the_methods_are_the_analytic_ones_where_they_exist() -> None:
    y, (a, b) = binormal_rows(np.random.default_rng(0), 300, (1.0, 1.0), 0.5)
    single = {k: e.method for k, e in metric_intervals("classification", y, a).items()}
    assert single == {
        "roc_auc": "delong",
        "pr_auc": "poisson_bootstrap",
        "log_loss": "normal",
        "accuracy": "wilson",
        "precision": "wilson",
        "recall": "wilson",
        "f1": "poisson_bootstrap",
        "brier": "normal",
        "ece": "poisson_bootstrap",
    }
    paired = {k: d.method for k, d in paired_differences("classification", y, a, b).items()}
    assert paired["roc_auc"] == "delong_paired" and paired["accuracy"] == "mcnemar_exact"
    assert paired["log_loss"] == paired["brier"] == "paired_normal"
    assert paired["precision"] == paired["ece"] == "paired_poisson_bootstrap"
    regression = metric_intervals("regression", y + 1.0, a)
    assert {k: e.method for k, e in regression.items()} == {
        "mae": "normal",
        "rmse": "delta",
        "r2": "poisson_bootstrap",
        "mape": "poisson_bootstrap",
    }


def test_the_values_are_the_point_estimates() -> None:
    y, (a, b) = binormal_rows(np.random.default_rng(7), 400, (1.0, 0.8), 0.5)
    point_a = classification_metrics(y, a, 0.4)
    point_b = classification_metrics(y, b, 0.6)
    estimates = metric_intervals("classification", y, a, threshold=0.4)
    differences = paired_differences("classification", y, a, b, thresholds=(0.4, 0.6))
    for name in CLASSIFICATION_METRICS:
        assert estimates[name].value == pytest.approx(point_a[name], rel=1e-12), name
        d = differences[name]
        assert (d.challenger, d.champion) == pytest.approx((point_a[name], point_b[name])), name
    assert metric_intervals("regression", y + 1.0, a)["rmse"].value == pytest.approx(
        regression_metrics(y + 1.0, a)["rmse"]
    )


def test_a_challenger_that_is_the_champion_plus_noise_is_not_found_better() -> None:
    seeds = 60
    not_significant = dict.fromkeys(CLASSIFICATION_METRICS, 0)
    contains_zero = dict.fromkeys(CLASSIFICATION_METRICS, 0)
    found_better = dict.fromkeys(CLASSIFICATION_METRICS, 0)
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        y, (champion,) = binormal_rows(rng, 3000, (1.0,), 0.0)
        logit = np.log(champion / (1 - champion))
        challenger = sigmoid(logit + rng.normal(0.0, 0.02, len(y)))
        for name, d in paired_differences("classification", y, challenger, champion).items():
            not_significant[name] += d.p_value > 0.05
            contains_zero[name] += d.low <= 0.0 <= d.high
            better = d.low > 0 if HIGHER_IS_BETTER[name] else d.high < 0
            found_better[name] += better and d.p_value <= 0.05
    for name in CLASSIFICATION_METRICS:
        assert not_significant[name] >= 0.85 * seeds, name
        assert contains_zero[name] >= 0.85 * seeds, name
        assert found_better[name] <= 0.1 * seeds, name


def test_a_clearly_better_challenger_is_found_better() -> None:
    y, (challenger, champion) = binormal_rows(np.random.default_rng(1), 3000, (1.6, 0.8), 0.5)
    found = paired_differences("classification", y, challenger, champion)
    for name in ("roc_auc", "pr_auc", "accuracy", "precision", "recall", "f1"):
        assert found[name].low > 0 and found[name].p_value < 0.01, name
    for name in ("log_loss", "brier"):
        assert found[name].high < 0 and found[name].p_value < 0.01, name
    rng = np.random.default_rng(2)
    y = 10 + rng.normal(size=2000)
    better = paired_differences(
        "regression", y, y + rng.normal(size=2000), y + 2 * rng.normal(size=2000)
    )
    assert better["mae"].high < 0 and better["rmse"].high < 0 and better["r2"].low > 0


def test_a_model_compared_with_itself_differs_by_nothing() -> None:
    y, (a,) = binormal_rows(np.random.default_rng(3), 400, (1.0,), 0.0)
    for name, d in paired_differences("classification", y, a, a.copy()).items():
        assert (d.delta, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0), name
        assert d.challenger == d.champion


def brute_force_placements(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    pos, neg = p[y == 1], p[y == 0]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    values = np.empty(len(p))
    values[y == 1] = psi.mean(axis=1)
    values[y == 0] = psi.mean(axis=0)
    return values


def test_delongs_variances_follow_the_definition_with_ties() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    a = np.round(rng.random(300) * 0.6 + 0.3 * y, 1)
    b = np.round(rng.random(300) * 0.8 + 0.2 * y, 2)
    va, vb = brute_force_placements(y, a), brute_force_placements(y, b)
    positive = y == 1
    np.testing.assert_allclose(placements(positive, rank(a)), va, rtol=1e-12)
    m, n = positive.sum(), (~positive).sum()
    s10 = np.cov(va[positive], vb[positive])
    s01 = np.cov(va[~positive], vb[~positive])
    cov = s10 / m + s01 / n
    auc, variance = auc_variance(positive, va)
    assert auc == pytest.approx(va[positive].mean()) and variance == pytest.approx(cov[0, 0])
    expected = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    assert auc_difference_variance(positive, va, vb) == pytest.approx(expected, rel=1e-10)


def test_accuracy_uses_mcnemars_exact_test_on_the_discordant_rows() -> None:
    y = np.ones(20)
    champion = np.full(20, 0.9)
    champion[:9] = 0.1  # wrong on 9 rows
    challenger = np.full(20, 0.9)
    challenger[8] = 0.1  # wrong on 1, which the champion also gets wrong: b = 8, c = 0
    d = paired_differences("classification", y, challenger, champion)["accuracy"]
    assert d.delta == pytest.approx(8 / 20) and d.p_value == pytest.approx(2 / 256)


def test_the_same_seed_gives_the_same_answer_and_another_seed_other_bounds() -> None:
    y, (a, b) = binormal_rows(np.random.default_rng(5), 500, (1.0, 0.9), 0.5)
    first = paired_differences("classification", y, a, b, seed=1)
    assert paired_differences("classification", y, a, b, seed=1) == first
    other = paired_differences("classification", y, a, b, seed=2)
    assert other["f1"].low != first["f1"].low and other["roc_auc"] == first["roc_auc"]


def test_estimates_and_differences_are_plain_records() -> None:
    y, (a, b) = binormal_rows(np.random.default_rng(6), 200, (1.0, 0.9), 0.5)
    estimate = metric_intervals("classification", y, a)["roc_auc"]
    assert isinstance(estimate, Estimate)
    assert estimate.as_dict() == {
        "value": estimate.value,
        "low": estimate.low,
        "high": estimate.high,
        "method": "delong",
    }
    difference = paired_differences("classification", y, a, b)["f1"]
    assert isinstance(difference, Difference)
    assert difference.as_dict()["metric"] == "f1"
    assert difference.delta == pytest.approx(difference.challenger - difference.champion)
    assert all(type(v) in (float, str) for v in difference.as_dict().values())


def test_undefined_metrics_have_nan_intervals() -> None:
    found = metric_intervals("classification", np.array([0, 0, 0]), np.array([0.1, 0.6, 0.7]))
    roc = found["roc_auc"]
    assert all(math.isnan(v) for v in (roc.value, roc.low, roc.high))
    assert math.isnan(found["pr_auc"].high) and math.isnan(found["recall"].low)
    differences = paired_differences(
        "classification", np.array([0, 0, 0]), np.array([0.1, 0.6, 0.7]), np.array([0.2] * 3)
    )
    assert math.isnan(differences["roc_auc"].p_value)
    assert math.isnan(differences["precision"].delta)


def test_one_row_gives_values_but_no_normal_interval() -> None:
    y, p = np.array([1]), np.array([0.7])
    found = metric_intervals("classification", y, p)
    assert found["accuracy"].value == 1.0 and math.isnan(found["log_loss"].low)
    regression = metric_intervals("regression", p + 1.0, p)
    assert regression["mae"].value == 1.0 and math.isnan(regression["mae"].high)
    paired = paired_differences("regression", p + 1.0, p, p + 0.5)
    assert paired["mae"].delta == pytest.approx(0.5) and math.isnan(paired["mae"].p_value)


def test_holm_rejects_step_down_in_the_order_given() -> None:
    # Sorted: 0.005 <= 0.05/4, 0.01 <= 0.05/3, then 0.03 > 0.05/2 stops the rest.
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.01, 0.02, 0.03], alpha=0.1) == [True, True, True]
    assert holm([0.2, math.nan, 0.001]) == [False, False, True]
    assert holm([]) == []


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: metric_intervals("ranking", [0, 1], [0.1, 0.9]), "unknown task 'ranking'"),
        (lambda: metric_intervals("classification", [0, 1], [0.1, 0.9], confidence=95), "0.95"),
        (lambda: metric_intervals("regression", [0.0], [1.0], resamples=0), "positive integer"),
        (lambda: paired_differences("classification", [0, 1], [0.1, 0.9], [0.5]), "champion"),
        (lambda: holm([0.01], alpha=5), "alpha"),
    ],
)
def test_bad_arguments_are_refused(call: object, match: str) -> None:
    with pytest.raises(EvaluationError, match=match):
        call()  # type: ignore[operator]
