"""Gates judge intervals, not point estimates: on crafted numbers, each gate blesses and
vetoes where it should, and the slices' vetoes are Holm-corrected."""

from __future__ import annotations

from gyre.evaluate._gates import SliceResult, judge
from gyre.evaluate._intervals import Difference, Estimate
from gyre.learn._evalspec import EvaluateSpec


def _est(value: float, low: float, high: float) -> Estimate:
    return Estimate(value, low, high, "test")


def _diff(metric: str, delta: float, low: float, high: float, p: float = 0.5) -> Difference:
    return Difference(metric, 0.8 + delta, 0.8, delta, low, high, p, "test")


NONE: dict[str, dict[str, Difference]] = {}


def test_an_absolute_bound_is_judged_on_the_worse_end_of_the_interval() -> None:
    spec = EvaluateSpec(absolute={"roc_auc": 0.80, "log_loss": 0.5})
    lucky = {"roc_auc": _est(0.81, 0.79, 0.83), "log_loss": _est(0.45, 0.40, 0.49)}
    verdict = judge(spec, lucky, against=None, baselines=NONE, slices=[], cost=None)
    assert not verdict.blessed
    assert verdict.reasons == ["roc_auc at least 0.8: 0.81 (interval 0.79 to 0.83)"]
    sure = {"roc_auc": _est(0.83, 0.81, 0.85), "log_loss": _est(0.45, 0.40, 0.49)}
    assert judge(spec, sure, against=None, baselines=NONE, slices=[], cost=None).blessed
    loss = {"roc_auc": _est(0.83, 0.81, 0.85), "log_loss": _est(0.45, 0.40, 0.51)}
    assert not judge(spec, loss, against=None, baselines=NONE, slices=[], cost=None).blessed


def test_a_change_gate_needs_the_whole_interval_within_the_allowed_loss() -> None:
    spec = EvaluateSpec(change={"roc_auc": 0.005})
    metrics = {"roc_auc": _est(0.8, 0.79, 0.81)}
    noise = {"roc_auc": _diff("roc_auc", 0.001, -0.012, 0.014)}  # better by noise only
    verdict = judge(spec, metrics, against=noise, baselines=NONE, slices=[], cost=None)
    assert not verdict.blessed and "difference +0.001" in verdict.reasons[0]
    close = {"roc_auc": _diff("roc_auc", 0.001, -0.004, 0.006)}
    assert judge(spec, metrics, against=close, baselines=NONE, slices=[], cost=None).blessed
    first = judge(spec, metrics, against=None, baselines=NONE, slices=[], cost=None)
    assert first.blessed and first.gates[0].detail == "no champion to compare with"
    loss = EvaluateSpec(change={"log_loss": 0.01})
    worse = {"log_loss": _diff("log_loss", 0.002, -0.004, 0.012)}
    assert not judge(loss, metrics, against=worse, baselines=NONE, slices=[], cost=None).blessed


def test_a_model_that_does_not_beat_a_baseline_is_vetoed() -> None:
    spec = EvaluateSpec(baseline=("roc_auc",))
    metrics = {"roc_auc": _est(0.7, 0.68, 0.72)}
    baselines = {
        "majority": {"roc_auc": _diff("roc_auc", 0.2, 0.18, 0.22)},
        "linear": {"roc_auc": _diff("roc_auc", 0.01, -0.01, 0.03)},
    }
    verdict = judge(spec, metrics, against=None, baselines=baselines, slices=[], cost=None)
    assert not verdict.blessed
    assert [g.passed for g in verdict.gates] == [True, False]
    assert verdict.reasons[0].startswith("roc_auc better than the linear baseline")


def _slice(value: str, rows: int, auc: tuple[float, float, float], gated: bool) -> SliceResult:
    return SliceResult("country", value, rows, {"roc_auc": _est(*auc)}, gated)


def test_a_clearly_worse_slice_vetoes_and_a_small_one_is_only_reported() -> None:
    spec = EvaluateSpec(slice_absolute={"roc_auc": 0.7}, slice_min_rows=100)
    fine = _slice("FR", 5000, (0.8, 0.78, 0.82), True)
    small = _slice("LU", 20, (0.3, 0.1, 0.5), False)
    bad = _slice("DE", 4000, (0.6, 0.58, 0.62), True)
    verdict = judge(spec, {}, against=None, baselines=NONE, slices=[fine, small], cost=None)
    assert verdict.blessed and [g.gate for g in verdict.gates] == [
        "country=FR: roc_auc at least 0.7"
    ]
    verdict = judge(spec, {}, against=None, baselines=NONE, slices=[fine, small, bad], cost=None)
    assert not verdict.blessed and verdict.reasons[0].startswith("country=DE: roc_auc at least 0.7")


def test_holm_keeps_many_slices_a_little_below_the_bound_from_vetoing() -> None:
    """One slice just below the bound is a veto at 5%; among 20 slices, after Holm, not."""
    spec = EvaluateSpec(slice_absolute={"roc_auc": 0.7}, slice_min_rows=10)
    # value 0.68, interval half-width 0.0196: z = -2.0, one-sided p = 0.023
    edge = (0.68, 0.68 - 0.0196, 0.68 + 0.0196)
    alone = judge(
        spec, {}, against=None, baselines=NONE, slices=[_slice("A", 500, edge, True)], cost=None
    )
    assert not alone.blessed
    many = [_slice("A", 500, edge, True)] + [
        _slice(f"S{i}", 500, (0.8, 0.78, 0.82), True) for i in range(19)
    ]
    assert judge(spec, {}, against=None, baselines=NONE, slices=many, cost=None).blessed


def test_cost_gates_compare_measurements_and_refuse_what_was_not_measured() -> None:
    spec = EvaluateSpec(cost={"p99_ms": 5.0, "rows_per_s_batch32": 10_000, "file_bytes": 1e6})
    fast = {"p99_ms": 1.2, "rows_per_s_batch32": 50_000.0, "file_bytes": 20_000.0}
    assert judge(spec, {}, against=None, baselines=NONE, slices=[], cost=fast).blessed
    slow = {**fast, "p99_ms": 7.5}
    verdict = judge(spec, {}, against=None, baselines=NONE, slices=[], cost=slow)
    assert verdict.reasons == ["p99_ms at most 5: measured 7.5"]
    unmeasured = judge(spec, {}, against=None, baselines=NONE, slices=[], cost=None)
    assert not unmeasured.blessed and "publish" in unmeasured.reasons[0]
