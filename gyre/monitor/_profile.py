"""A model's input profile: what it learned from, in brief, taken once at training time and
kept with the run that made it (so with every version published from that run). Each
feature has its drift reference (`_drift`) and its schema (`_invariants`); a check of a
window of served inputs against the profile then costs what the window costs, however
large the training set was.

The profile is stored as JSON (`as_record`) and read back whole or refused: a record that
does not parse, or whose parts disagree (another feature list, a missing part), is a
`MonitorError` naming what is wrong, never a check against half a profile.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gyre.errors import MonitorError
from gyre.monitor._drift import (
    DriftReference,
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    check_drift,
    sorted_reference,
)
from gyre.monitor._invariants import (
    FeatureSchema,
    InvariantTolerance,
    Violation,
    check_invariants,
    sorted_schema,
)

PROFILE_VERSION = 1


@dataclass(frozen=True)
class InputProfile:
    """Per feature its schema; per feature with any training value its drift reference."""

    features: tuple[str, ...]
    rows: int  # the training rows it was taken on
    references: tuple[DriftReference, ...]
    schema: tuple[FeatureSchema, ...]

    def as_record(self) -> dict[str, Any]:
        return {
            "profile_version": PROFILE_VERSION,
            "features": list(self.features),
            "rows": self.rows,
            "references": [r.as_record() for r in self.references],
            "schema": [s.as_record() for s in self.schema],
        }

    def as_bytes(self) -> bytes:
        return json.dumps(self.as_record(), sort_keys=True, allow_nan=False).encode()

    @classmethod
    def from_record(cls, record: Any) -> InputProfile:
        if not isinstance(record, Mapping):
            raise MonitorError(f"an input profile is a JSON object, not {type(record).__name__}")
        if record.get("profile_version") != PROFILE_VERSION:
            raise MonitorError(
                f"input profile version {record.get('profile_version')!r} is not one this "
                f"gyre reads ({PROFILE_VERSION}); train the model again to take a new one"
            )
        features, references, schema = (
            record.get("features"),
            record.get("references"),
            record.get("schema"),
        )
        if not (isinstance(features, list) and isinstance(references, list)
                and isinstance(schema, list)):  # fmt: skip
            raise MonitorError("an input profile needs lists `features`, `references`, `schema`")
        if not features:
            raise MonitorError("an input profile names no feature")
        found = cls(
            tuple(str(f) for f in features),
            _count(record.get("rows")),
            tuple(DriftReference.from_record(r) for r in references),
            tuple(FeatureSchema.from_record(s) for s in schema),
        )
        referenced = [r.feature for r in found.references]
        if [s.feature for s in found.schema] != list(found.features) or referenced != [
            f for f in found.features if f in set(referenced)
        ]:
            raise MonitorError(
                "the input profile's references and schema name other features than its "
                "feature list; train the model again to take a new one"
            )
        return found

    @classmethod
    def from_bytes(cls, data: bytes) -> InputProfile:
        try:
            record = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            raise MonitorError(f"the input profile is not JSON: {exc}") from None
        return cls.from_record(record)


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MonitorError(f"an input profile's `rows` must be a count, not {value!r}")
    return value


def input_profile(features: Sequence[str], rows: Any) -> InputProfile:
    """The profile of training rows: a 2-D table, a column per feature, NaN for missing."""
    table = np.asarray(rows, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != len(features):
        raise MonitorError(
            f"an input profile is taken on a 2-D table of {len(features)} columns, "
            f"not one of shape {table.shape}"
        )
    if len(table) == 0:
        raise MonitorError("no training rows to infer a schema from")
    # Each column is sorted once, for its drift reference and its schema. A feature with no
    # value in training (all missing) has a schema (its missing share is checked) but no
    # drift reference: there is no distribution to drift from.
    references, schema = [], []
    for name, column in zip(features, np.ascontiguousarray(table.T), strict=True):
        present = np.sort(column[~np.isnan(column)])
        if len(present):
            references.append(sorted_reference(name, present, len(column)))
        schema.append(sorted_schema(name, present, (len(column) - len(present)) / len(column)))
    return InputProfile(tuple(features), len(table), tuple(references), tuple(schema))


@dataclass(frozen=True)
class InputCheck:
    """A window of served inputs against a profile: drift and invariant violations."""

    rows: int
    drift: DriftReport | None  # None: an empty window, nothing to compare
    violations: tuple[Violation, ...]

    @property
    def healthy(self) -> bool:
        return not self.violations and not (self.drift is not None and self.drift.dataset_drift)

    def as_json(self) -> dict[str, Any]:
        drift = self.drift
        return {
            "rows": self.rows,
            "healthy": self.healthy,
            "dataset_drift": None if drift is None else drift.dataset_drift,
            "drifted_share": None if drift is None else drift.share,
            "features": [] if drift is None else [_finite(f.as_dict()) for f in drift.features],
            "violations": [v.as_dict() for v in self.violations],
        }


def _finite(found: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN: a statistic that could not be computed (a feature missing from
    every row of the window, say) is null."""
    return {k: None if isinstance(v, float) and not np.isfinite(v) else v for k, v in found.items()}


def check_inputs(
    profile: InputProfile,
    rows: Any,
    thresholds: DriftThresholds | None = None,
    tolerance: InvariantTolerance | None = None,
) -> InputCheck:
    """`rows` (a 2-D table in the profile's feature order) against `profile`."""
    table = np.asarray(rows, dtype=np.float64).reshape(-1, len(profile.features))
    if len(table) == 0:
        return InputCheck(0, None, ())
    violations = tuple(check_invariants(profile.schema, table, tolerance))
    # Infinities are the invariants' to report (non_finite); the drift tests take them as
    # missing, and a feature with no value left is drifted by definition.
    finite = np.where(np.isfinite(table), table, np.nan)
    current = {name: finite[:, j] for j, name in enumerate(profile.features)}
    empty = {name for name, values in current.items() if np.isnan(values).all()}
    present = [r for r in profile.references if r.feature not in empty]
    gone = [r for r in profile.references if r.feature in empty]
    if not profile.references:
        return InputCheck(len(table), None, violations)
    found = list(check_drift(present, current, thresholds).features) if present else []
    found += [
        FeatureDrift(r.feature, "all_missing", math.nan, math.nan, True, math.nan, r.rows, 0,
                     (r.missing, 1.0))
        for r in gone
    ]  # fmt: skip
    order = {name: i for i, name in enumerate(profile.features)}
    found.sort(key=lambda f: order[f.feature])
    share = sum(f.drifted for f in found) / len(found)
    limits = thresholds or DriftThresholds()
    drift = DriftReport(tuple(found), share, share >= limits.dataset_share)
    return InputCheck(len(table), drift, violations)


__all__ = ["InputCheck", "InputProfile", "check_inputs", "input_profile"]
