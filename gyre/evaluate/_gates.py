"""Gates: from a model's metrics, its differences against the champion and the baselines,
its slices and its serving cost to a verdict, blessed or vetoed, with every reason.

Every gate is judged on the interval, never on the point estimate alone, so a lucky
holdout does not bless a worse model:

- absolute `m = b`: the interval's worse end must reach b (the lower end at least b for a
  metric where higher is better, the upper end at most b for a loss);
- change `m = a`: the difference against the champion may be worse by at most a at the
  interval's worse end (passed, and said so, when there is no champion yet);
- baseline `m`: the model must beat each baseline (a majority or mean predictor, and a
  linear model fitted on the same training rows): the whole interval of the difference
  on the better side of 0;
- slices: a slice with at least `min_rows` rows is vetoed when it is clearly below a
  bound: the one-sided test "the slice reaches the bound" is rejected, Holm-corrected over
  every (slice, metric) tested, at 1 - confidence. Smaller slices are reported, not gated;
- cost: measured values against limits (p99 single-row latency and file size at most,
  rows/s at batch 32 at least), no interval: they are measurements, not samples.

Pure: the numbers come in, the verdict goes out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

from gyre.evaluate._intervals import Difference, Estimate, holm
from gyre.evaluate._metrics import HIGHER_IS_BETTER
from gyre.learn._evalspec import COST_LIMITS, EvaluateSpec


@dataclass(frozen=True)
class GateResult:
    gate: str  # what was asked, e.g. "roc_auc at least 0.8"
    passed: bool
    detail: str  # what was found

    def as_dict(self) -> dict[str, Any]:
        return {"gate": self.gate, "passed": self.passed, "detail": self.detail}


@dataclass(frozen=True)
class SliceResult:
    column: str
    value: Any
    rows: int
    estimates: Mapping[str, Estimate]
    gated: bool  # large enough to be gated

    @property
    def name(self) -> str:
        return f"{self.column}={self.value}"


@dataclass(frozen=True)
class Verdict:
    blessed: bool
    gates: tuple[GateResult, ...] = field(default_factory=tuple)

    @property
    def reasons(self) -> list[str]:
        failed = [f"{g.gate}: {g.detail}" for g in self.gates if not g.passed]
        if failed:
            return failed
        return ["every gate passed"] if self.gates else ["no gates configured"]


def judge(
    spec: EvaluateSpec,
    metrics: Mapping[str, Estimate],
    *,
    against: Mapping[str, Difference] | None,
    baselines: Mapping[str, Mapping[str, Difference]],
    slices: Sequence[SliceResult],
    cost: Mapping[str, float] | None,
    doubts: Sequence[str] = (),
) -> Verdict:
    """`doubts`: why the rows may not be unseen by the model (each fails the verdict: a
    model scored on rows it learned from looks better than it is)."""
    gates: list[GateResult] = [GateResult("rows the model did not learn from", False, d)
                               for d in doubts]  # fmt: skip
    for metric, bound in spec.absolute.items():
        gates.append(_absolute(metric, bound, metrics.get(metric)))
    for metric, allowed in spec.change.items():
        gates.append(_change(metric, allowed, None if against is None else against.get(metric)))
    for metric in spec.baseline:
        for name, differences in baselines.items():
            gates.append(_beats(metric, name, differences.get(metric)))
    gates += _slice_gates(spec, slices)
    for name, limit in spec.cost.items():
        gates.append(_cost(name, limit, None if cost is None else cost.get(name)))
    return Verdict(all(g.passed for g in gates), tuple(gates))


def _higher(metric: str) -> bool:
    return HIGHER_IS_BETTER[metric]


def _shown(estimate: Estimate) -> str:
    return f"{estimate.value:.4g} (interval {estimate.low:.4g} to {estimate.high:.4g})"


def _absolute(metric: str, bound: float, estimate: Estimate | None) -> GateResult:
    higher = _higher(metric)
    gate = f"{metric} {'at least' if higher else 'at most'} {bound:g}"
    if estimate is None or math.isnan(estimate.value):
        return GateResult(gate, False, "undefined on these rows")
    end = estimate.low if higher else estimate.high
    passed = end >= bound if higher else end <= bound
    return GateResult(gate, passed, _shown(estimate))


def _change(metric: str, allowed: float, difference: Difference | None) -> GateResult:
    higher = _higher(metric)
    gate = f"{metric} not worse than the champion by more than {allowed:g}"
    if difference is None:
        return GateResult(gate, True, "no champion to compare with")
    if math.isnan(difference.delta):
        return GateResult(gate, False, "the difference is undefined on these rows")
    passed = difference.low >= -allowed if higher else difference.high <= allowed
    detail = (
        f"difference {difference.delta:+.4g} (interval {difference.low:+.4g} to "
        f"{difference.high:+.4g}, p {difference.p_value:.3g}, {difference.method})"
    )
    return GateResult(gate, passed, detail)


def _beats(metric: str, baseline: str, difference: Difference | None) -> GateResult:
    gate = f"{metric} better than the {baseline} baseline"
    if difference is None or math.isnan(difference.delta):
        return GateResult(gate, False, "the difference is undefined on these rows")
    passed = difference.low > 0 if _higher(metric) else difference.high < 0
    detail = (
        f"{difference.challenger:.4g} against {difference.champion:.4g}, difference "
        f"interval {difference.low:+.4g} to {difference.high:+.4g}"
    )
    return GateResult(gate, passed, detail)


def _slice_gates(spec: EvaluateSpec, slices: Sequence[SliceResult]) -> list[GateResult]:
    tests: list[tuple[SliceResult, str, float, float]] = []  # slice, metric, bound, p
    for part in slices:
        if not part.gated:
            continue
        for metric, bound in spec.slice_absolute.items():
            estimate = part.estimates.get(metric)
            if estimate is None or math.isnan(estimate.value):
                continue
            tests.append((part, metric, bound, _below_p(metric, bound, estimate, spec)))
    if not tests:
        return []
    rejected = holm([p for *_, p in tests], alpha=1 - spec.confidence)
    gates = []
    for (part, metric, bound, p), below in zip(tests, rejected, strict=True):
        word = "at least" if _higher(metric) else "at most"
        detail = f"{_shown(part.estimates[metric])} on {part.rows} rows, p {p:.3g} (Holm)"
        gates.append(GateResult(f"{part.name}: {metric} {word} {bound:g}", not below, detail))
    return gates


def _below_p(metric: str, bound: float, estimate: Estimate, spec: EvaluateSpec) -> float:
    """One-sided p of "the slice reaches the bound", from its interval (normal)."""
    z = NormalDist().inv_cdf(0.5 + spec.confidence / 2)
    spread = (estimate.high - estimate.low) / (2 * z)
    gap = estimate.value - bound if _higher(metric) else bound - estimate.value
    if spread <= 0 or not math.isfinite(spread):
        return 0.0 if gap < 0 else 1.0
    return NormalDist().cdf(gap / spread)


def _cost(name: str, limit: float, measured: float | None) -> GateResult:
    word = COST_LIMITS[name]
    gate = f"{name} {word} {limit:g}"
    if measured is None:
        return GateResult(
            gate,
            False,
            "not measured: serving cost is measured on a published version "
            "(`gyre registry publish --run RUN`, then `gyre evaluate MODEL@VERSION`)",
        )
    passed = measured >= limit if word == "at least" else measured <= limit
    return GateResult(gate, passed, f"measured {measured:.4g}")
