"""An evaluation's result: the `Evaluation` record, its JSON (what is recorded on the run
and printed by `gyre evaluate --json`) and the report's input (`gyre.evaluate._report`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gyre.evaluate._gates import SliceResult, Verdict
from gyre.evaluate._intervals import Difference, Estimate
from gyre.evaluate._lofo import LeaveOneOut


@dataclass(frozen=True)
class Evaluation:
    subject: str
    run_id: str
    task: str
    rows: int
    metrics: dict[str, Estimate]
    verdict: Verdict
    threshold: dict[str, Any] | None = None  # rule, challenger, champion
    champion: str | None = None
    champion_metrics: dict[str, Estimate] | None = None
    differences: dict[str, Difference] | None = None
    baselines: dict[str, dict[str, Difference]] = field(default_factory=dict)
    slices: list[SliceResult] = field(default_factory=list)
    cost: dict[str, float] | None = None
    notes: list[str] = field(default_factory=list)
    curves: dict[str, Any] | None = None  # for the report (`gyre.evaluate._curves`)
    gated_slice_metrics: tuple[str, ...] = ()
    data: str | None = None  # the rows file evaluated on (None: the run's holdout)
    leave_one_out: LeaveOneOut | None = None
    version: tuple[str, int] | None = None  # the registry version evaluated, if one was

    def as_json(self) -> dict[str, Any]:
        """The evaluation as JSON values (an undefined metric, NaN, as null)."""
        found: dict[str, Any] = _json_safe(self._as_dict())
        return found

    def _as_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "run_id": self.run_id,
            "task": self.task,
            "rows": self.rows,
            "data": self.data,
            "verdict": "blessed" if self.verdict.blessed else "vetoed",
            "reasons": self.verdict.reasons,
            "gates": [g.as_dict() for g in self.verdict.gates],
            "threshold": self.threshold,
            "metrics": {k: v.as_dict() for k, v in self.metrics.items()},
            "champion": self.champion,
            "champion_metrics": None
            if self.champion_metrics is None
            else {k: v.as_dict() for k, v in self.champion_metrics.items()},
            "differences": None
            if self.differences is None
            else {k: v.as_dict() for k, v in self.differences.items()},
            "baselines": {
                name: {k: v.as_dict() for k, v in found.items()}
                for name, found in self.baselines.items()
            },
            "slices": [
                {
                    "slice": s.name,
                    "rows": s.rows,
                    "gated": s.gated,
                    "metrics": {k: v.as_dict() for k, v in s.estimates.items()},
                }
                for s in self.slices
            ],
            "cost": self.cost,
            "leave_one_out": None if self.leave_one_out is None else self.leave_one_out.as_dict(),
            "notes": self.notes,
        }


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def write_report(evaluation: Evaluation, path: Path) -> str:
    """The HTML report of `evaluation` at `path` (`gyre.evaluate._report`); its sha256."""
    from gyre.evaluate._report import write_report as write_page

    return write_page(report_input(evaluation), path)


def report_input(e: Evaluation) -> dict[str, Any]:
    """The report's mapping (see `gyre.evaluate._report`) of an evaluation."""
    import time

    differences = e.differences or {}
    champion = e.champion_metrics or {}
    metrics = [
        {
            "metric": name,
            "challenger": found.as_dict(),
            "champion": champion[name].as_dict() if name in champion else None,
            "difference": differences[name].as_dict() if name in differences else None,
        }
        for name, found in e.metrics.items()
    ]
    gates = {g.gate: g.passed for g in e.verdict.gates}

    def passed(part: SliceResult, metric: str) -> bool | None:
        mine = [ok for gate, ok in gates.items() if gate.startswith(f"{part.name}: {metric} ")]
        return mine[0] if mine else None

    default = "roc_auc" if e.task == "classification" else "mae"
    shown = [m for m in e.slices[0].estimates if m in e.gated_slice_metrics] if e.slices else []
    slices = [
        {
            "slice": part.name,
            "rows": part.rows,
            "metric": metric,
            "challenger": part.estimates[metric].as_dict(),
            "champion": None,
            "gated": part.gated,
            "passed": passed(part, metric) if part.gated else None,
        }
        for part in e.slices
        for metric in (shown or [default])
        if metric in part.estimates
    ]
    threshold = None
    if e.threshold is not None:
        threshold = {"challenger": e.threshold["challenger"]}
        threshold["champion"] = e.threshold.get("champion", e.threshold["challenger"])
    return {
        "title": f"Evaluation of {e.subject}",
        "verdict": "blessed" if e.verdict.blessed else "vetoed",
        "reasons": e.verdict.reasons + e.notes,
        "task": e.task,
        "models": {"challenger": f"{e.subject} (run {e.run_id[:12]})", "champion": e.champion},
        "rows": e.rows,
        "threshold": threshold,
        "metrics": metrics,
        "gates": [g.as_dict() for g in e.verdict.gates],
        "curves": e.curves,
        "slices": slices,
        "latency": e.cost,
        "data": e.data,
        "leave_one_out": None if e.leave_one_out is None else e.leave_one_out.as_dict(),
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
