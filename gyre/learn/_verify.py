"""`gyre runs verify RUN`: redo a run from what it recorded (its spec's text, the fact-log
watermark, the seed) and say whether it learned the same thing.

scikit-learn and LightGBM are deterministic for a seed: their metrics must match bit for
bit. PyTorch and Keras on the CPU are deterministic for a seed and a thread count on one
machine, but not across machines and builds: their metrics must match within
`NEURAL_TOLERANCE` (absolute, on metrics in [0, 1] or losses). The training set must be
the same (its sha256), and so must every feature definition the run read: when a view
changed since, the run cannot be redone, and verify says so rather than compare.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gyre.config import Config
from gyre.errors import RunError
from gyre.learn._check import resolve
from gyre.learn._data import TrainingData, build
from gyre.learn._spec import TableRows, TrainingSpec, parse_spec
from gyre.learn._train import _file_sha256, _scores, check, fact_cache, fit
from gyre.stores import Stores

NEURAL_TOLERANCE = 1e-4
_NEURAL = ("torch.", "keras.")


@dataclass(frozen=True)
class Verification:
    run_id: str
    reproduced: bool
    exact: bool  # compared bit for bit (else within NEURAL_TOLERANCE)
    problems: list[str] = field(default_factory=list)  # why it could not be redone
    metrics: dict[str, tuple[float | None, float | None, bool]] = field(default_factory=dict)
    training_set: tuple[str | None, str | None] = (None, None)  # recorded, rebuilt

    def as_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "reproduced": self.reproduced,
            "exact": self.exact,
            "problems": self.problems,
            "training_set_sha256": {
                "recorded": self.training_set[0],
                "rebuilt": self.training_set[1],
            },
            "metrics": {
                k: {"recorded": a, "rebuilt": b, "match": m}
                for k, (a, b, m) in self.metrics.items()
            },
        }


def _recorded(stores: Stores, run_id: str) -> tuple[Any, TrainingSpec, dict[str, Any]]:
    """A run of `gyre train`: the run, its spec, its lineage."""
    store = stores.open_runs()
    try:
        run = store.get(run_id)
    finally:
        store.close()
    recorded = run.record.get("spec")
    lineage = run.record.get("lineage", {})
    if not recorded or "fact_log_watermark" not in lineage:
        raise RunError(f"run {run.run_id} was not made by `gyre train`: it has no spec to redo")
    return run, parse_spec(recorded["text"], Path(recorded["path"])), lineage


def _changed_since(spec: TrainingSpec, config: Config, lineage: dict[str, Any]) -> list[str]:
    """Why the run's data cannot be rebuilt as it was: a view or the table changed."""
    problems = []
    current = {view.name: view.definition_hash for view in resolve(spec, config).views}
    for name, digest in lineage.get("feature_definitions", {}).items():
        if current.get(name) != digest:
            problems.append(
                f"feature view `{name}` changed since the run (definition hash "
                f"{digest[:12]} then, {str(current.get(name))[:12]} now)"
            )
    if isinstance(spec.rows, TableRows):
        was = lineage.get("table", {}).get("sha256")
        now = _file_sha256(spec.rows) if spec.rows.path.is_file() else None
        if was != now:
            problems.append(f"the rows table {spec.rows.path} changed or is gone since the run")
    return problems


def rebuilt_data(stores: Stores, config: Config, run_id: str) -> tuple[TrainingSpec, TrainingData]:
    """The run's spec and its training data, rebuilt at its watermark: the same rows (the
    training set's sha256 is checked), for evaluating its model."""
    run, spec, lineage = _recorded(stores, run_id)
    problems = _changed_since(spec, config, lineage)
    if problems:
        raise RunError(f"run {run.run_id}'s rows cannot be rebuilt: " + "; ".join(problems))
    log = stores.open_fact_log()
    try:
        mark = int(lineage["fact_log_watermark"])
        checked = check(spec, config, log, mark)
        views = checked.resolved.views
        data = build(spec, checked.rows, log, views, mark, None, fact_cache(config))
    finally:
        log.close()
    recorded = lineage.get("training_set", {}).get("sha256")
    if recorded != data.sha256:
        raise RunError(
            f"run {run.run_id}'s rows rebuilt differently (training set "
            f"{str(recorded)[:12]} then, {data.sha256[:12]} now): the fact log or the code "
            "that builds rows changed; train again"
        )
    return spec, data


def verify(stores: Stores, config: Config, run_id: str) -> Verification:
    run, spec, lineage = _recorded(stores, run_id)
    exact = not spec.model.family.startswith(_NEURAL)
    problems = _changed_since(spec, config, lineage)
    if problems:
        return Verification(run.run_id, False, exact, problems)
    log = stores.open_fact_log()
    try:
        fitted = fit(spec, config, log, watermark=int(lineage["fact_log_watermark"]))
    finally:
        log.close()
    rebuilt = dict(_scores(spec.task, fitted.trainer, fitted.data))
    rebuilt.update({f"baseline_{k}": v for k, v in fitted.baseline_metrics.items()})
    compared: dict[str, tuple[float | None, float | None, bool]] = {}
    for key in sorted(set(rebuilt) | {k for k in run.metrics if k in rebuilt or _final(k)}):
        recorded, redone = run.metrics.get(key), rebuilt.get(key)
        compared[key] = (recorded, redone, _same(recorded, redone, exact))
    was_set = lineage.get("training_set", {}).get("sha256")
    same_set = was_set == fitted.data.sha256
    ok = same_set and all(match for _, _, match in compared.values())
    return Verification(run.run_id, ok, exact, [], compared, (was_set, fitted.data.sha256))


def _final(key: str) -> bool:
    """Metrics `train` computes at the end (not per epoch)."""
    return key.startswith(("validation_", "train_", "baseline_")) or key in (
        "accuracy",
        "log_loss",
        "auc",
        "mae",
        "rmse",
        "r2",
    )


def _same(then: float | None, now: float | None, exact: bool) -> bool:
    if then is None or now is None:
        return False
    if exact:
        return then == now or (math.isnan(then) and math.isnan(now))
    return abs(then - now) <= NEURAL_TOLERANCE
