"""A spec's `[evaluate]` table: how `gyre evaluate` judges a model of this spec.

    [evaluate]
    threshold = "max_f1"        # binary classifiers: the rule that learns the decision
                                # threshold on the validation rows ("precision>=0.9",
                                # "cost=5": a missed positive costs 5 false alarms)
    confidence = 0.95           # of every interval, and 1 - the gates' error rate
    leave_one_feature_out = false   # refit without each feature: what each adds (a report)

    [evaluate.gates]            # every gate is judged on the interval's worse end
    absolute = {roc_auc = 0.80, log_loss = 0.5}   # at least (or at most, for a loss)
    change = {roc_auc = 0.005}  # not worse than the champion by more than this
    baseline = ["roc_auc"]      # better than a majority/mean predictor and a linear model
    cost = {p99_ms = 5.0, rows_per_s_batch32 = 20000, file_bytes = 50_000_000}

    [evaluate.slices]           # per value of each column: reported; gated from min_rows
    columns = ["country"]
    min_rows = 200
    absolute = {roc_auc = 0.70} # vetoes a slice clearly below it (Holm over the slices)

The metric names are those of `gyre.evaluate` for the spec's task; a wrong one is named
with the file and line, like every other problem of the spec.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

COST_LIMITS = {"p99_ms": "at most", "rows_per_s_batch32": "at least", "file_bytes": "at most"}


@dataclass(frozen=True)
class EvaluateSpec:
    threshold: str = "max_f1"
    confidence: float = 0.95
    absolute: Mapping[str, float] = field(default_factory=dict)
    change: Mapping[str, float] = field(default_factory=dict)
    baseline: tuple[str, ...] = ()
    cost: Mapping[str, float] = field(default_factory=dict)
    slice_columns: tuple[str, ...] = ()
    slice_min_rows: int = 200
    slice_absolute: Mapping[str, float] = field(default_factory=dict)
    leave_one_feature_out: bool = False


class _Problems(Protocol):
    def problem(self, table: str, key: str | None, message: str) -> None: ...

    def unused(self, table: str, data: Mapping[str, Any], known: tuple[str, ...]) -> None: ...


def parse_evaluate(r: _Problems, data: Mapping[str, Any], task: str) -> EvaluateSpec:
    """The `[evaluate]` table (empty: the defaults, no gates), problems reported to `r`."""
    from gyre.errors import SpecError
    from gyre.evaluate import CLASSIFICATION_METRICS, REGRESSION_METRICS, parse_rule

    metrics = CLASSIFICATION_METRICS if task == "classification" else REGRESSION_METRICS
    known = ("threshold", "confidence", "gates", "slices", "leave_one_feature_out")
    r.unused("evaluate", data, known)
    lofo = data.get("leave_one_feature_out", False)
    if not isinstance(lofo, bool):
        r.problem("evaluate", "leave_one_feature_out", f"must be true or false, got {lofo!r}")
        lofo = False
    threshold = data.get("threshold", "max_f1")
    try:
        parse_rule(threshold if isinstance(threshold, str) else repr(threshold))
    except SpecError as exc:
        r.problem("evaluate", "threshold", str(exc))
    confidence = data.get("confidence", 0.95)
    if not _number(confidence) or not 0.5 <= confidence < 1:
        r.problem("evaluate", "confidence", f"must be in [0.5, 1), got {confidence!r}")
        confidence = 0.95
    gates = _table(r, data, "gates", "evaluate.gates")
    r.unused("evaluate.gates", gates, ("absolute", "change", "baseline", "cost"))
    slices = _table(r, data, "slices", "evaluate.slices")
    r.unused("evaluate.slices", slices, ("columns", "min_rows", "absolute"))
    baseline = gates.get("baseline", [])
    if not isinstance(baseline, list) or not all(m in metrics for m in baseline):
        r.problem("evaluate.gates", "baseline", f"must be a list of: {', '.join(metrics)}")
        baseline = []
    columns = slices.get("columns", [])
    if not isinstance(columns, list) or not all(isinstance(c, str) and c for c in columns):
        r.problem("evaluate.slices", "columns", f"must be a list of column names, got {columns!r}")
        columns = []
    min_rows = slices.get("min_rows", 200)
    if not isinstance(min_rows, int) or isinstance(min_rows, bool) or min_rows < 1:
        r.problem("evaluate.slices", "min_rows", f"must be a positive integer, got {min_rows!r}")
        min_rows = 200
    return EvaluateSpec(
        threshold=threshold if isinstance(threshold, str) else "max_f1",
        confidence=float(confidence),
        absolute=_bounds(r, gates, "absolute", "evaluate.gates", metrics),
        change=_bounds(r, gates, "change", "evaluate.gates", metrics, at_least=0.0),
        baseline=tuple(baseline),
        cost=_bounds(r, gates, "cost", "evaluate.gates", tuple(COST_LIMITS), at_least=0.0),
        slice_columns=tuple(columns),
        slice_min_rows=min_rows,
        slice_absolute=_bounds(r, slices, "absolute", "evaluate.slices", metrics),
        leave_one_feature_out=lofo,
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _table(r: _Problems, data: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        r.problem(where, None, f"must be a table, got {type(value).__name__}")
        return {}
    return value


def _bounds(
    r: _Problems,
    data: Mapping[str, Any],
    key: str,
    where: str,
    known: tuple[str, ...],
    at_least: float | None = None,
) -> dict[str, float]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        r.problem(where, key, "must be a table of metric = number")
        return {}
    found = {}
    for metric, bound in value.items():
        if metric not in known:
            r.problem(where, key, f"`{metric}` is not a metric here; known: {', '.join(known)}")
        elif not _number(bound) or (at_least is not None and bound < at_least):
            r.problem(where, key, f"`{metric}` must be a finite number, got {bound!r}")
        else:
            found[metric] = float(bound)
    return found
