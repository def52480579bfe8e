"""The training/serving skew check: every logged serving vector, recomputed by the
offline engine at the same time from the same facts, compared feature by feature."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gyre.collect import FactLog
from gyre.features import FeatureView, Recomputation
from gyre.monitor._served import ServedRecord, read_served

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
    # served from a log position past the one the check read up to: for the next check
    later: int = 0
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
            "later": self.later,
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
    log: FactLog,
    views: Mapping[str, FeatureView],
    served_path: Path,
    *,
    view: str | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    max_examples: int = 5,
    export: Path | None = None,
) -> list[SkewReport]:
    """Compare the served vectors (of one view, or all) with the offline engine (reading
    older facts from a Parquet `export` of each view's source, if given). Each view's
    facts are read once, up to the log's position when the check starts; vectors served
    from a later position are counted as `later`, for the next check."""
    mark = log.watermark()
    checks = {
        name: _ViewCheck(log, v, mark, export, tolerance, max_examples)
        for name, v in views.items()
        if view is None or name == view
    }
    try:
        for record in read_served(served_path, view):
            check = checks.get(record.vector.view)
            if check is not None:  # else a view no longer declared
                check.add(record)
        for check in checks.values():
            check.flush()
    finally:
        for check in checks.values():
            check.close()
    return [check.report for check in checks.values()]


class _ViewCheck:
    """One view's served vectors, compared in batches against one offline recomputation."""

    def __init__(
        self,
        log: FactLog,
        view: FeatureView,
        mark: int,
        export: Path | None,
        tolerance: float,
        max_examples: int,
    ) -> None:
        self.view = view
        self.report = SkewReport(
            view.name, view.definition_hash, mismatches=dict.fromkeys(view.features, 0)
        )
        self._log, self._mark, self._export = log, mark, export
        self._tolerance, self._max_examples = tolerance, max_examples
        self._engine: Recomputation | None = None
        self._batch: list[ServedRecord] = []

    def add(self, record: ServedRecord) -> None:
        if record.vector.definition_hash != self.view.definition_hash:
            self.report.other_definition += 1
        elif record.vector.watermark > self._mark:
            self.report.later += 1
        else:
            self._batch.append(record)
            if len(self._batch) >= CHUNK:
                self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        if self._engine is None:  # the facts are read once, on the first batch
            self._engine = Recomputation(self._log, self.view, self._mark, self._export)
        offline = self._engine.rows([record.vector for record in self._batch])
        for record, row in zip(self._batch, offline, strict=True):
            self._compare(record, row)
        self._batch.clear()

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()

    def _compare(self, record: ServedRecord, row: Mapping[str, Any]) -> None:
        report = self.report
        report.checked += 1
        for name in self.view.features:
            served = record.vector.values.get(name)
            if same_value(served, row[name], self._tolerance):
                continue
            report.mismatches[name] += 1
            if len(report.examples) < self._max_examples:
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
