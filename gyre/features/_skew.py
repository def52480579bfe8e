"""The training/serving skew check: every logged serving vector, recomputed by the
offline engine at the same time from the same facts, compared feature by feature."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gyre.collect import SQLiteFactLog
from gyre.features._definitions import FeatureView
from gyre.features._offline import recompute
from gyre.features._serving import ServedRecord, read_served

DEFAULT_TOLERANCE = 1e-9
CHUNK = 10_000


@dataclass
class SkewReport:
    """One view: vectors checked, mismatches per feature, and a few examples of each."""

    view: str
    definition_hash: str
    checked: int = 0
    # served under another definition of the view: not comparable, counted apart
    other_definition: int = 0
    mismatches: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(self.mismatches.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "view": self.view,
            "definition_hash": self.definition_hash,
            "checked": self.checked,
            "other_definition": self.other_definition,
            "mismatches": self.mismatches,
            "examples": self.examples,
        }


def same_value(served: Any, offline: Any, tolerance: float) -> bool:
    """Equal, with floats within a relative (and as small an absolute) tolerance: the
    engines may add a mean's terms in another order."""
    if isinstance(served, float) or isinstance(offline, float):
        if served is None or offline is None:
            return False
        return math.isclose(served, offline, rel_tol=tolerance, abs_tol=tolerance)
    return bool(served == offline)


def check_skew(
    log: SQLiteFactLog,
    views: Mapping[str, FeatureView],
    served_path: Path,
    *,
    view: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_examples: int = 5,
    export: Path | None = None,
) -> list[SkewReport]:
    """Compare the served vectors (of one view, or all) with the offline engine (reading
    older facts from a Parquet `export` of each view's source, if given)."""
    reports = {
        name: SkewReport(name, v.definition_hash, mismatches=dict.fromkeys(v.features, 0))
        for name, v in views.items()
        if view is None or name == view
    }
    pending: dict[str, list[ServedRecord]] = {name: [] for name in reports}
    for record in read_served(served_path, view):
        report = reports.get(record.vector.view)
        if report is None:
            continue  # a view no longer declared
        if record.vector.definition_hash != report.definition_hash:
            report.other_definition += 1
            continue
        batch = pending[record.vector.view]
        batch.append(record)
        if len(batch) >= CHUNK:
            _compare(log, views[report.view], batch, report, tolerance, max_examples, export)
            batch.clear()
    for name, batch in pending.items():
        if batch:
            _compare(log, views[name], batch, reports[name], tolerance, max_examples, export)
    return list(reports.values())


def _compare(
    log: SQLiteFactLog,
    view: FeatureView,
    records: list[ServedRecord],
    report: SkewReport,
    tolerance: float,
    max_examples: int,
    export: Path | None,
) -> None:
    offline = recompute(log, view, [record.vector for record in records], export=export)
    for record, row in zip(records, offline, strict=True):
        report.checked += 1
        for name in view.features:
            served = record.vector.values.get(name)
            if same_value(served, row[name], tolerance):
                continue
            report.mismatches[name] += 1
            if len(report.examples) < max_examples:
                report.examples.append(
                    {
                        "request_id": record.request_id,
                        "model": record.model,
                        "version": record.version,
                        "entity": record.vector.entity,
                        "at_us": record.vector.at_us,
                        "watermark": record.vector.watermark,
                        "feature": name,
                        "served": served,
                        "offline": row[name],
                    }
                )
