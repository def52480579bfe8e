import math

import numpy as np
import pytest

from gyre.evaluate import _bootstrap as boot
from gyre.evaluate import classification_metrics, regression_metrics
from gyre.evaluate._metrics import rank


def test_poisson_weights_have_the_poisson_one_distribution() -> None:
    w = boot.poisson_weights(np.random.default_rng(0), 40, 100_000)
    assert w.dtype == np.uint8
    assert w.mean() == pytest.approx(1.0, abs=0.002)
    assert w.var() == pytest.approx(1.0, abs=0.004)
    counts = np.bincount(w.ravel(), minlength=8)[:8] / w.size
    pmf = np.array([math.exp(-1) / math.factorial(k) for k in range(8)])
    # Within 4 standard errors of each probability, down to k = 7 (p = 7e-5), which only
    # the exact redraw of the straddling 16-bit cells can produce at the right rate.
    se = np.sqrt(pmf * (1 - pmf) / w.size)
    assert np.all(np.abs(counts - pmf) < 4 * se + 1e-12), (counts, pmf)


def tied_classification(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    a = np.round(np.clip(rng.random(n) * 0.7 + 0.3 * y, 0, 1), 2)
    b = np.round(np.clip(rng.random(n) * 0.8 + 0.2 * y, 0, 1), 1)
    return y, a, b


def test_each_replicate_is_the_weighted_metric_of_its_weights_for_both_models() -> None:
    y, a, b = tied_classification(1)
    positive = y == 1
    models = [boot.layout(positive, p, rank(p), t) for p, t in ((a, 0.5), (b, 0.4))]
    w = boot.poisson_weights(np.random.default_rng(2), 5, len(y))
    found = boot.classification_replicates(models)(w)
    for r in range(len(w)):
        row_weights = np.empty(len(y))
        row_weights[models[0].columns] = w[r]  # the weights belong to rows, not columns
        for column, (p, t) in enumerate(((a, 0.5), (b, 0.4))):
            expected = classification_metrics(y, p, t, row_weights)
            for name, values in found.items():
                assert values[r, column] == pytest.approx(expected[name], rel=1e-9), name


def test_each_regression_replicate_is_the_weighted_metric_of_its_weights() -> None:
    rng = np.random.default_rng(3)
    y = rng.normal(5.0, 1.0, 200)
    preds = [y + rng.normal(0, 1, 200), y + rng.normal(0.5, 2, 200)]
    w = boot.poisson_weights(rng, 4, 200)
    found = boot.regression_replicates(y, [y - pred for pred in preds])(w)
    for r in range(len(w)):
        for column, pred in enumerate(preds):
            expected = regression_metrics(y, pred, w[r].astype(np.float64))
            for name in ("rmse", "r2", "mape"):
                assert found[name][r, column] == pytest.approx(expected[name], rel=1e-9), name


def test_resampling_depends_on_the_seed_only_not_on_the_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    y, a, _ = tied_classification(4, 5000)
    replicate = boot.classification_replicates([boot.layout(y == 1, a, rank(a), 0.5)])
    monkeypatch.setattr(boot, "BLOCK_CELLS", 20_000)  # several blocks of 4 resamples
    monkeypatch.setattr(boot, "WORKERS", 1)
    alone = boot.resample(len(y), 30, 7, replicate)
    monkeypatch.setattr(boot, "WORKERS", 4)
    threaded = boot.resample(len(y), 30, 7, replicate)
    other_seed = boot.resample(len(y), 30, 8, replicate)
    assert alone["f1"].shape == (30, 1)
    for name in alone:
        np.testing.assert_array_equal(alone[name], threaded[name])
    assert not np.array_equal(alone["f1"], other_seed["f1"])


def test_the_percentile_interval_needs_most_replicates_defined() -> None:
    values = np.arange(101, dtype=np.float64)
    assert boot.percentile_interval(values, 0.9) == pytest.approx((5.0, 95.0))
    half_undefined = np.r_[values[:50], np.full(50, math.nan)]
    assert all(math.isnan(v) for v in boot.percentile_interval(half_undefined, 0.9))


def test_the_bootstrap_p_value_doubles_the_share_on_the_other_side_with_a_floor() -> None:
    deltas = np.r_[np.full(95, 0.1), np.full(5, -0.1)]
    assert boot.bootstrap_p(deltas, 0.1) == pytest.approx(0.1)
    assert boot.bootstrap_p(deltas, -0.1) == 1.0
    assert boot.bootstrap_p(np.full(99, 0.2), 0.2) == pytest.approx(1 / 100)
    assert boot.bootstrap_p(np.r_[np.zeros(10), np.full(90, 0.1)], 0.1) == pytest.approx(0.2)
