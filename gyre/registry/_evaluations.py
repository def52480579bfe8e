"""The evaluations of a version (`gyre evaluate`'s verdicts), as the registry stores them.

A version's evaluations are rows of their own (`SQLMetadataStore.record_evaluation`), one
per `gyre evaluate` of the version or of the run that made it; the latest one decides
whether the version is blessed, which the `champion` and `challenger` aliases require
(`gyre.registry._aliases`). What is stored is the evaluation's JSON summary
(`gyre.evaluate.Evaluation.as_json`: metrics with intervals, gate results, reasons) and the
sha256 of its HTML report when one was written; `check_evaluation` is the one parser of
it, run before a row is written and on every row read back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from gyre.errors import InvalidModel

BLESSED = "blessed"
VETOED = "vetoed"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class _Gate(msgspec.Struct):
    gate: str
    passed: bool
    detail: str = ""


class _Summary(msgspec.Struct):
    """What a stored evaluation must hold (it may hold more: intervals, slices, cost)."""

    verdict: Literal["blessed", "vetoed"]
    run_id: str
    rows: int
    reasons: list[str]
    gates: list[_Gate]
    metrics: dict[str, dict[str, Any]]
    champion: str | None = None
    report_sha256: str | None = None


def check_evaluation(value: Any, what: str) -> dict[str, Any]:
    """`value` as a stored evaluation: a JSON object with the verdict, the run, the rows,
    the reasons, the gate results and the metrics (`_Summary`); InvalidModel naming what is
    wrong when it is not one."""
    if not isinstance(value, dict):
        raise InvalidModel(f"{what}: an evaluation is a JSON object, not {type(value).__name__}")
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidModel(
            f"{what}: not JSON (an undefined metric is null, never NaN or infinity): {exc}"
        ) from None
    try:
        summary = msgspec.json.decode(text, type=_Summary)
    except msgspec.ValidationError as exc:
        raise InvalidModel(
            f"{what}: not an evaluation as `gyre evaluate` writes it: {exc}"
        ) from None
    if summary.report_sha256 is not None and not _SHA256.fullmatch(summary.report_sha256):
        raise InvalidModel(
            f"{what}: report_sha256 {summary.report_sha256!r} is not a sha256 (64 hex digits)"
        )
    clean: dict[str, Any] = json.loads(text)
    return clean


@dataclass(frozen=True)
class VersionEvaluation:
    """One recorded evaluation of `model` version `version`, as read back: `evaluation`
    is the stored JSON; `broken` says why it cannot be read as one (None: it can), and a
    broken evaluation blesses nothing."""

    model: str
    version: int
    at: float
    verdict: str
    evaluation: Any
    broken: str | None = None

    @property
    def blessed(self) -> bool:
        return self.broken is None and self.verdict == BLESSED

    @property
    def summary(self) -> dict[str, Any]:
        """The stored JSON object ({} when broken)."""
        return self.evaluation if self.broken is None else {}

    def as_json(self) -> dict[str, Any]:
        """What `gyre registry show --json` shows of it."""
        found = self.summary
        return {
            "at": self.at,
            "verdict": self.verdict,
            "blessed": self.blessed,
            "run_id": found.get("run_id"),
            "champion": found.get("champion"),
            "rows": found.get("rows"),
            "data": found.get("data") if isinstance(found.get("data"), str) else None,
            "reasons": found.get("reasons", []),
            "gates": found.get("gates", []),
            "metrics": found.get("metrics", {}),
            "report_sha256": found.get("report_sha256"),
            "broken": self.broken,
        }


def read_evaluation(row: Any) -> VersionEvaluation:
    """A row of the evaluations table, parsed by `check_evaluation` (a row that does not
    parse, or whose verdict disagrees with its JSON, comes back `broken`)."""
    model, version = row["model"], int(row["version"])
    what = f"the evaluation of model `{model}` version {version}"
    broken = None
    try:
        evaluation: Any = json.loads(row["evaluation"])
    except (TypeError, ValueError, RecursionError) as exc:
        evaluation, broken = row["evaluation"], f"{what} is not JSON: {exc}"
    if broken is None:
        try:
            evaluation = check_evaluation(evaluation, what)
        except InvalidModel as exc:
            broken = str(exc)
    if broken is None and evaluation["verdict"] != row["verdict"]:
        broken = f"{what}: its verdict {row['verdict']!r} is not its JSON's"
    return VersionEvaluation(model, version, row["at"], row["verdict"], evaluation, broken)


# Called under the store's write lock with a version's latest evaluation before an alias
# moves to it: raises to refuse the move, returns True when the move is forced past the
# rule (recorded as `forced: true`; the rule is `gyre.registry._aliases.blessing_guard`).
AliasGuard = Callable[[VersionEvaluation | None], bool]
