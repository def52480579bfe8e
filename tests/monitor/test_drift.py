"""Data drift per feature: Evidently's default methods on known distributions, the
reference as a compact record, and every refusal."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import spatial, stats

from gyre.errors import MonitorError, http_status
from gyre.monitor import (
    DriftReference,
    DriftThresholds,
    check_drift,
    check_feature,
    drift_reference,
)
from gyre.monitor._drift import QUANTILES, SMALL_REFERENCE


def test_a_small_numeric_reference_alarms_at_about_its_nominal_rate_when_nothing_changed() -> None:
    alarms = 0
    seeds = 300
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        reference = drift_reference("x", rng.normal(size=500))
        found = check_feature(reference, rng.normal(size=3_000))
        assert found.method == "ks"
        alarms += found.drifted
    # 5% nominal: 15 expected of 300; a binomial's 3 sigma above it is about 26.
    assert alarms <= 26


def test_a_shifted_feature_drifts_by_every_numeric_method() -> None:
    rng = np.random.default_rng(0)
    for size in (400, 20_000):  # KS on a small reference, Wasserstein on a large one
        reference = drift_reference("x", rng.normal(size=size))
        same = check_feature(reference, rng.normal(size=5_000))
        shifted = check_feature(reference, rng.normal(0.5, 1.0, size=5_000))
        assert not same.drifted and shifted.drifted, (size, same, shifted)
        assert shifted.method == ("ks" if size <= SMALL_REFERENCE else "wasserstein")
        assert shifted.psi > same.psi


def test_the_quantile_wasserstein_distance_is_scipys_exact_one_within_a_percent() -> None:
    rng = np.random.default_rng(1)
    for make in (lambda n, s: rng.normal(s, 1.0, n), lambda n, s: rng.exponential(1 + s, n)):
        base = make(50_000, 0.0)
        reference = drift_reference("x", base)
        for shift in (0.05, 0.3, 1.0):
            current = make(30_000, shift)
            exact = stats.wasserstein_distance(base, current) / np.std(base)
            found = check_feature(reference, current).statistic
            assert math.isclose(found, exact, rel_tol=0.01, abs_tol=2 / QUANTILES), (shift, found)


def test_a_binary_feature_is_a_z_test_whose_p_value_is_the_2x2_chi_square() -> None:
    rng = np.random.default_rng(2)
    ref_values = (rng.random(800) < 0.3).astype(float)
    cur_values = (rng.random(5_000) < 0.36).astype(float)
    found = check_feature(drift_reference("flag", ref_values), cur_values)
    table = [
        [np.sum(ref_values == 0), np.sum(ref_values == 1)],
        [np.sum(cur_values == 0), np.sum(cur_values == 1)],
    ]
    chi2 = stats.chi2_contingency(table, correction=False).pvalue
    assert found.method == "z" and math.isclose(found.statistic, chi2, rel_tol=1e-9)


def test_a_few_valued_feature_with_a_value_the_reference_never_had_still_has_a_p_value() -> None:
    rng = np.random.default_rng(3)
    reference = drift_reference("hour", rng.choice([1.0, 2.0, 3.0], size=600))
    current = np.concatenate([rng.choice([1.0, 2.0, 3.0], size=900), np.full(100, 4.0)])
    found = check_feature(reference, current)
    assert found.method == "chi2" and 0 <= found.statistic < 0.05 and found.drifted
    calm = check_feature(reference, rng.choice([1.0, 2.0, 3.0], size=900))
    assert not calm.drifted and math.isfinite(calm.psi)


def test_a_large_few_valued_reference_is_scipys_jensen_shannon_distance() -> None:
    rng = np.random.default_rng(4)
    ref_values = rng.choice([0.0, 1.0, 2.0], p=[0.5, 0.3, 0.2], size=10_000)
    cur_values = rng.choice([0.0, 1.0, 2.0], p=[0.2, 0.3, 0.5], size=10_000)
    found = check_feature(drift_reference("c", ref_values), cur_values)
    shares = (
        [np.mean(ref_values == v) for v in (0, 1, 2)],
        [np.mean(cur_values == v) for v in (0, 1, 2)],
    )
    assert found.method == "jensen_shannon" and found.drifted
    assert math.isclose(found.statistic, spatial.distance.jensenshannon(*shares), rel_tol=1e-9)


def test_the_dataset_drifts_when_half_of_its_features_do() -> None:
    rng = np.random.default_rng(5)
    columns = {f"f{i}": rng.normal(size=5_000) for i in range(4)}
    references = [drift_reference(name, values) for name, values in columns.items()]
    current = {name: rng.normal(size=5_000) for name in columns}
    current["f0"] = current["f0"] + 1.0
    one = check_drift(references, current)
    assert one.drifted == ["f0"] and one.share == 0.25 and not one.dataset_drift
    current["f1"] = current["f1"] * 3.0
    two = check_drift(references, current)
    assert two.drifted == ["f0", "f1"] and two.dataset_drift
    assert not check_drift(references, current, DriftThresholds(dataset_share=0.75)).dataset_drift


def test_missing_values_are_left_out_and_their_share_reported() -> None:
    rng = np.random.default_rng(6)
    values = rng.normal(size=2_000)
    values[::4] = np.nan
    reference = drift_reference("x", values)
    assert reference.rows == 1_500 and reference.missing == 0.25
    found = check_feature(
        reference, np.where(rng.random(2_000) < 0.5, np.nan, rng.normal(size=2_000))
    )
    assert found.missing[0] == 0.25 and 0.4 < found.missing[1] < 0.6 and not found.drifted


def test_a_reference_survives_its_json_record_and_gives_the_same_verdict() -> None:
    rng = np.random.default_rng(7)
    current = rng.normal(0.2, 1.0, size=4_000)
    for values in (
        rng.normal(size=300),
        rng.normal(size=30_000),
        rng.choice([0.0, 1.0], size=5_000),
    ):
        reference = drift_reference("x", values)
        again = DriftReference.from_record(json.loads(json.dumps(reference.as_record())))
        assert check_feature(again, current) == check_feature(reference, current)
    large = drift_reference("x", rng.normal(size=1_000_000)).as_record()
    assert large["values"] is None and len(json.dumps(large)) < 40_000  # 1M rows, ~20 KB


def test_what_cannot_be_checked_is_refused_with_a_typed_400() -> None:
    reference = drift_reference("x", np.arange(100.0))
    cases = [
        (lambda: drift_reference("x", [np.nan, np.nan]), "all missing"),
        (lambda: drift_reference("x", ["a", "b"]), "must be numbers"),
        (lambda: drift_reference("x", np.ones((3, 2))), "one column"),
        (lambda: check_feature(reference, [1.0, math.inf]), "infinite"),
        (lambda: check_feature(reference, [math.nan]), "all missing"),
        (lambda: check_drift([reference], {"y": [1.0]}), "no column for features x"),
        (lambda: check_drift([], {}), "reference is empty"),
        (lambda: DriftThresholds(p_value=0), "p_value"),
        (lambda: DriftThresholds(distance=2), "distance"),
        (lambda: DriftThresholds(false_alarm=0.0), "false_alarm"),
        (lambda: DriftThresholds(draws=5), "draws"),
        (lambda: DriftReference.from_record({"feature": "x"}), "not a drift reference"),
        (lambda: DriftReference.from_record({**reference.as_record(), "values": None}),
         "holds no values"),
    ]  # fmt: skip
    for make, message in cases:
        with pytest.raises(MonitorError, match=message) as caught:
            make()
        assert http_status(caught.value) == 400


def _draw(rng: np.random.Generator, rows: int, few: bool) -> np.ndarray:
    if few:
        return rng.choice([0.0, 1.0, 2.0], p=[0.6, 0.3, 0.1], size=rows)
    return rng.gamma(2.0, 1.0, size=rows)


def _alarm_rate(thresholds: DriftThresholds, window: int, few: bool, seeds: int = 60) -> float:
    alarms = 0
    for seed in range(seeds):
        rng = np.random.default_rng(1_000 + seed)
        reference = drift_reference("x", _draw(rng, 5_000, few))
        alarms += check_feature(reference, _draw(rng, window, few), thresholds).drifted
    return alarms / seeds


def test_a_fixed_distance_fires_on_small_windows_by_chance_and_a_calibrated_one_does_not() -> None:
    """A window of 30 rows from the reference's own distribution is often 0.1 away from it:
    the fixed threshold alarms on noise, the calibrated one at about the rate asked for
    (5%; at most 12% of 60 seeds allows for the binomial spread)."""
    calibrated = DriftThresholds(false_alarm=0.05, draws=100)
    for few in (False, True):
        assert _alarm_rate(DriftThresholds(), 30, few) > 0.2
        assert _alarm_rate(calibrated, 30, few) <= 0.12
        assert _alarm_rate(calibrated, 5_000, few) <= 0.12


def test_a_calibrated_threshold_still_finds_a_real_shift_in_a_large_window() -> None:
    rng = np.random.default_rng(9)
    reference = drift_reference("x", rng.normal(size=50_000))
    moved = check_feature(
        reference, rng.normal(0.05, 1.0, 200_000), DriftThresholds(false_alarm=0.01)
    )
    fixed = check_feature(reference, rng.normal(0.05, 1.0, 200_000))
    assert moved.drifted and moved.threshold < 0.05 and not fixed.drifted


def test_a_constant_feature_that_stays_constant_is_not_drift_when_calibrated() -> None:
    reference = drift_reference("x", np.zeros(5_000))
    found = check_feature(reference, np.zeros(300), DriftThresholds(false_alarm=0.05))
    assert found.threshold == 0.0 and not found.drifted
