"""Input invariants and numerical health: what the training rows promise about the inputs.

The schema of each feature is inferred from the rows a model learned from (`infer_schema`):
the range of its finite values, its share of missing values (NaN), whether every value is
a whole number, and, when it has at most `CATEGORY_VALUES` distinct values, those values. A
window of served inputs is then checked against it (`check_invariants`), each rule a
count and a share of the window's rows:

- `non_finite`: an infinite value (numerical health: never expected in an input);
- `missing`: more missing values than training had, by more than `missing_margin`
  (absolute), or any at all for a feature that never missed one in training;
- `out_of_range`: finite values outside the training range, in more than
  `out_of_range_share` of the rows (a few new extremes are the world, not a bug);
- `not_integral`: a fraction where training had only whole numbers;
- `unseen_value`: a value outside the training values of a categorical feature.

`check_outputs` is the numerical health of a model's answers: NaN or infinite outputs.
Everything here is pure: arrays in, violations out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gyre.errors import MonitorError

CATEGORY_VALUES = 20  # distinct training values up to which a feature's values are kept


@dataclass(frozen=True)
class InvariantTolerance:
    missing_margin: float = 0.05  # more missing than training by this share is a violation
    out_of_range_share: float = 0.01  # out-of-range rows beyond this share are a violation

    def __post_init__(self) -> None:
        for name in ("missing_margin", "out_of_range_share"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < 1):
                raise MonitorError(f"invariant tolerance `{name}` must be in [0, 1), not {value!r}")


@dataclass(frozen=True)
class FeatureSchema:
    feature: str
    low: float  # the smallest finite training value (NaN: none)
    high: float
    missing: float  # the share of missing training values
    integral: bool  # every finite training value is a whole number
    values: tuple[float, ...] | None  # the distinct training values, when few

    def as_record(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "low": None if np.isnan(self.low) else self.low,
            "high": None if np.isnan(self.high) else self.high,
            "missing": self.missing,
            "integral": self.integral,
            "values": None if self.values is None else list(self.values),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FeatureSchema:
        try:
            values = record["values"]
            low, high = record["low"], record["high"]
            return cls(
                feature=str(record["feature"]),
                low=np.nan if low is None else float(low),
                high=np.nan if high is None else float(high),
                missing=float(record["missing"]),
                integral=bool(record["integral"]),
                values=None if values is None else tuple(float(v) for v in values),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MonitorError(f"not a feature schema record ({exc!r})") from None


@dataclass(frozen=True)
class Violation:
    feature: str
    rule: str  # non_finite, missing, out_of_range, not_integral, unseen_value
    rows: int  # of the window's rows that break it
    share: float
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"feature": self.feature, "rule": self.rule, "rows": self.rows,
                "share": self.share, "detail": self.detail}  # fmt: skip


def infer_schema(names: Sequence[str], rows: Any) -> tuple[FeatureSchema, ...]:
    """Each feature's schema from the training rows (a 2-D table, a column per name)."""
    table = _table(rows, len(names))
    if len(table) == 0:
        raise MonitorError("no training rows to infer a schema from")
    return tuple(
        sorted_schema(name, np.sort(column[~np.isnan(column)]), float(np.isnan(column).mean()))
        for name, column in zip(names, table.T, strict=True)
    )


def sorted_schema(name: str, present: np.ndarray, missing: float) -> FeatureSchema:
    """One feature's schema from its present (not missing) values already sorted and the
    share of its values that are missing."""
    finite = present[np.isfinite(present)]  # sorted: the infinities are at either end
    first = np.ones(len(finite), bool)  # the first of each run of equal values
    first[1:] = finite[1:] != finite[:-1]
    distinct = finite[first]
    return FeatureSchema(
        feature=name,
        low=float(finite[0]) if len(finite) else np.nan,
        high=float(finite[-1]) if len(finite) else np.nan,
        missing=missing,
        integral=bool(np.all(distinct == np.round(distinct))),
        values=tuple(float(v) for v in distinct) if len(distinct) <= CATEGORY_VALUES else None,
    )


def check_invariants(
    schema: Sequence[FeatureSchema],
    rows: Any,
    tolerance: InvariantTolerance | None = None,
) -> list[Violation]:
    """The violations of `schema` by a window of inputs (a 2-D table in the schema's
    feature order); none for an empty window."""
    limits = tolerance or InvariantTolerance()
    table = _table(rows, len(schema))
    total = len(table)
    if total == 0:
        return []
    found: list[Violation] = []

    def flag(feature: FeatureSchema, rule: str, rows: int, detail: str) -> None:
        found.append(Violation(feature.feature, rule, rows, rows / total, detail))

    for j, feature in enumerate(schema):
        column = table[:, j]
        infinite = int(np.isinf(column).sum())
        if infinite:
            flag(feature, "non_finite", infinite, "infinite values")
        missing = int(np.isnan(column).sum())
        allowed = 0.0 if feature.missing == 0 else feature.missing + limits.missing_margin
        if missing / total > allowed:
            flag(feature, "missing", missing,
                 f"{missing / total:.1%} missing, {feature.missing:.1%} in training")  # fmt: skip
        finite = column[np.isfinite(column)]
        if not len(finite):
            continue
        if not np.isnan(feature.low):
            outside = int(((finite < feature.low) | (finite > feature.high)).sum())
            if outside / total > limits.out_of_range_share:
                flag(feature, "out_of_range", outside,
                     f"outside the training range [{feature.low:g}, {feature.high:g}]")  # fmt: skip
        if feature.integral:
            fractions = int((finite != np.round(finite)).sum())
            if fractions:
                flag(feature, "not_integral", fractions, "fractions where training had none")
        if feature.values is not None:
            unseen = int((~np.isin(finite, np.asarray(feature.values))).sum())
            if unseen:
                flag(feature, "unseen_value", unseen,
                     f"values outside the {len(feature.values)} seen in training")  # fmt: skip
    return found


def check_outputs(outputs: Any) -> int:
    """How many of a model's outputs are NaN or infinite (numerical health)."""
    try:
        values = np.asarray(outputs, dtype=np.float64)
    except (TypeError, ValueError):
        raise MonitorError("model outputs must be numbers") from None
    return int((~np.isfinite(values)).sum())


def _table(rows: Any, width: int) -> np.ndarray:
    try:
        table = np.asarray(rows, dtype=np.float64)
    except (TypeError, ValueError):
        raise MonitorError("rows must be numbers (a 2-D table, a column per feature)") from None
    if table.ndim != 2 or table.shape[1] != width:
        raise MonitorError(
            f"rows must be a 2-D table of {width} feature columns, not of shape {table.shape}"
        )
    return table
