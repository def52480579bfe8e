"""Input invariants inferred from training rows, and the numerical health of outputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gyre.errors import MonitorError, http_status
from gyre.monitor import (
    FeatureSchema,
    InvariantTolerance,
    check_invariants,
    check_outputs,
    infer_schema,
)

NAMES = ["distance_km", "items", "weekday"]


def _training(rng: np.random.Generator, rows: int = 5_000) -> np.ndarray:
    distance = rng.gamma(2.0, 2.0, rows)
    distance[rng.random(rows) < 0.02] = np.nan  # 2% missing in training
    return np.column_stack([distance, rng.integers(1, 9, rows), rng.integers(0, 7, rows)])


def test_a_window_like_training_breaks_no_invariant() -> None:
    rng = np.random.default_rng(0)
    schema = infer_schema(NAMES, _training(rng))
    assert schema[1].integral and schema[1].values == tuple(float(v) for v in range(1, 9))
    assert schema[0].values is None and 0.01 < schema[0].missing < 0.03
    assert check_invariants(schema, _training(rng, 2_000)) == []


def test_each_broken_invariant_is_named_with_its_rows() -> None:
    rng = np.random.default_rng(1)
    schema = infer_schema(NAMES, _training(rng))
    window = _training(rng, 1_000)
    window[:200, 0] = np.nan  # 20% missing against 2%
    window[200:250, 0] = 1e6  # out of range, 5% of the rows
    window[:3, 1] = np.inf
    window[10:20, 1] = 2.5  # a fraction of an item count
    window[:30, 2] = 9  # a day training never had
    found = {(v.feature, v.rule): v for v in check_invariants(schema, window)}
    assert set(found) == {("distance_km", "missing"), ("distance_km", "out_of_range"),
                          ("items", "non_finite"), ("items", "not_integral"),
                          ("items", "unseen_value"), ("weekday", "unseen_value"),
                          ("weekday", "out_of_range")}  # fmt: skip
    assert found[("distance_km", "missing")].rows >= 200
    assert found[("distance_km", "out_of_range")].rows == 50
    assert found[("items", "non_finite")].rows == 3
    assert found[("weekday", "unseen_value")].share == 0.03


def test_the_tolerances_decide_what_counts() -> None:
    rng = np.random.default_rng(2)
    schema = infer_schema(NAMES, _training(rng))
    window = _training(rng, 1_000)
    window[:5, 0] = 1e6  # 0.5% out of range: within the default 1%
    assert check_invariants(schema, window) == []
    strict = InvariantTolerance(out_of_range_share=0.001)
    assert [v.rule for v in check_invariants(schema, window, strict)] == ["out_of_range"]


def test_a_feature_never_missing_in_training_may_not_start_missing() -> None:
    rng = np.random.default_rng(3)
    schema = infer_schema(NAMES, _training(rng))
    window = _training(rng, 1_000)
    window[0, 2] = np.nan
    (violation,) = check_invariants(schema, window)
    assert (violation.feature, violation.rule, violation.rows) == ("weekday", "missing", 1)


def test_a_schema_survives_its_json_record() -> None:
    rng = np.random.default_rng(4)
    rows = _training(rng)
    rows[:, 1] = np.nan  # a column with no finite value keeps an empty range
    schema = infer_schema(NAMES, rows)
    again = tuple(FeatureSchema.from_record(json.loads(json.dumps(s.as_record()))) for s in schema)
    assert [s.as_record() for s in again] == [s.as_record() for s in schema]
    assert math.isnan(again[1].low) and again[1].missing == 1.0


def test_outputs_that_are_not_finite_are_counted() -> None:
    assert check_outputs([0.1, 0.9, 0.5]) == 0
    assert check_outputs(np.array([[0.1, np.nan], [np.inf, 0.2]])) == 2


def test_what_cannot_be_checked_is_refused_with_a_typed_400() -> None:
    schema = infer_schema(NAMES, np.ones((3, 3)))
    cases = [
        (lambda: infer_schema(NAMES, np.ones((0, 3))), "no training rows"),
        (lambda: infer_schema(NAMES, np.ones((3, 2))), "3 feature columns"),
        (lambda: check_invariants(schema, [["a", "b", "c"]]), "must be numbers"),
        (lambda: check_outputs(["x"]), "must be numbers"),
        (lambda: FeatureSchema.from_record({"feature": "x"}), "not a feature schema"),
        (lambda: InvariantTolerance(missing_margin=1.5), "missing_margin"),
    ]
    for make, message in cases:
        with pytest.raises(MonitorError, match=message) as caught:
            make()
        assert http_status(caught.value) == 400
    assert check_invariants(schema, np.ones((0, 3))) == []


def test_the_profile_sorts_once_and_takes_what_each_column_alone_gives() -> None:
    """`input_profile` sorts each column once for its reference and its schema; both must
    equal those taken from the column alone (missing values, integers, a constant, a
    column with no value at all)."""
    from gyre.monitor import drift_reference, input_profile

    rng = np.random.default_rng(3)
    table = np.column_stack(
        [
            rng.normal(size=3_000),
            np.where(rng.random(3_000) < 0.2, np.nan, rng.integers(0, 5, 3_000)),
            np.full(3_000, 7.0),
            np.full(3_000, np.nan),
        ]
    )
    names = ["x", "small", "constant", "empty"]
    profile = input_profile(names, table)
    assert repr(profile.schema) == repr(infer_schema(names, table))  # NaN bounds: by repr
    for feature, column in zip(profile.schema[:3], table.T, strict=False):  # by numpy
        distinct = np.unique(column[~np.isnan(column)])
        assert (feature.low, feature.high) == (distinct.min(), distinct.max())
        assert feature.missing == np.isnan(column).mean()
        assert feature.values == (None if len(distinct) > 20 else tuple(distinct))
    assert profile.schema[1].integral and not profile.schema[0].integral
    alone = [drift_reference(n, table[:, j]) for j, n in enumerate(names[:3])]
    assert [r.as_record() for r in profile.references] == [r.as_record() for r in alone]
