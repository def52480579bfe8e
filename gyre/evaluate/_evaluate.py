"""`gyre evaluate`: a trained model against the champion, on the same rows, to a verdict.

The subject is a run of `gyre train` (RUN) or a registry version made by one
(MODEL@ALIAS, MODEL:VERSION), whose run is then evaluated and whose serving cost is
measured. The rows are the run's own holdout, rebuilt from its lineage (the spec's text
and the fact-log watermark: the training set's sha256 must match the recorded one). The
steps, in order:

1. The decision threshold of a binary classifier is learned on the validation rows (the
   training rows when the spec has no validation split) by the spec's rule.
2. Metrics with intervals on the holdout (`metric_intervals`).
3. The champion (`MODEL@champion`, when there is one, made by a run of the same task on
   the same features that learned from rows older than this holdout) scored on the same
   rows at its stored threshold (else one learned by the same rule on the same rows);
   paired differences (`paired_differences`).
4. Two baselines fitted on the same training rows: the majority (or mean) predictor and a
   linear model; paired differences against each.
5. Slices of the holdout by the values of the spec's slice columns (or `--slices`).
6. The gates (`gyre.evaluate._gates`) give the verdict; the evaluation is recorded on the
   run (`evaluation`) and on the version evaluated (`gyre.evaluate._record`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gyre.collect import format_timestamp
from gyre.config import Config
from gyre.errors import EvaluationError, GyreError
from gyre.evaluate._gates import SliceResult, Verdict, judge
from gyre.evaluate._intervals import Difference, Estimate, metric_intervals, paired_differences
from gyre.evaluate._threshold import learn_threshold, parse_rule
from gyre.stores import Stores

MAX_SLICES_PER_COLUMN = 50  # values of one slice column evaluated, the largest first


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


@dataclass(frozen=True)
class _Options:
    confidence: float
    seed: int


@dataclass(frozen=True)
class _Scored:
    """One model's scores on the rows: p(positive) for a binary classifier, else the
    prediction."""

    holdout: np.ndarray
    tuning: np.ndarray  # on the rows the threshold is learned on


def evaluate(
    stores: Stores,
    config: Config,
    subject: str,
    *,
    against: str | None = "champion",
    slices: Sequence[str] | None = None,
    record: bool = True,
) -> Evaluation:
    """Evaluate `subject` (a run id, or MODEL@ALIAS / MODEL:VERSION made by a run)."""
    from gyre.learn import run_model
    from gyre.learn._verify import rebuilt_data

    version, run_id = _subject(config, subject)
    made = run_model(stores, run_id)
    spec, data = rebuilt_data(stores, config, run_id)
    judged = spec.evaluate
    task = spec.task
    holdout, tuning_rows = data.holdout, data.validation if len(data.validation) else data.train
    notes = []
    if not len(data.validation):
        notes.append("the spec has no validation split: the threshold is learned on training rows")
    if len(holdout) == 0:
        raise EvaluationError(f"run {run_id} has no holdout rows to evaluate on")
    y_all, classes = _targets(task, data.y, made.model)
    mine = _score(task, made.model, data.x, holdout, tuning_rows)
    y, y_tuning = y_all[holdout], y_all[tuning_rows]
    rule = parse_rule(judged.threshold)
    threshold: dict[str, Any] | None = None
    cut = 0.5
    if task == "classification":
        cut = learn_threshold(y_tuning, mine.tuning, rule)
        threshold = {"rule": judged.threshold, "challenger": cut, "classes": classes}
    options = _Options(judged.confidence, spec.seed)
    metrics = metric_intervals(
        task, y, mine.holdout, threshold=cut, confidence=options.confidence, seed=options.seed
    )
    champion, champion_metrics, differences = None, None, None
    champion_scores, champion_cut = None, 0.5
    if against is not None:
        holdout_from = format_timestamp(int(data.ts[holdout].min()))
        found = _champion(
            stores,
            config,
            spec.name,
            against,
            run_id,
            made.feature_names,
            task,
            holdout_from,
            notes,
        )
        if found is not None:
            champion, model, stored = found
            theirs = _score(task, model, data.x, holdout, tuning_rows)
            their_cut = 0.5
            if task == "classification":  # the threshold it is served with, if it has one
                their_cut = (
                    stored if stored is not None else learn_threshold(y_tuning, theirs.tuning, rule)
                )
                assert threshold is not None
                threshold["champion"] = their_cut
            champion_scores, champion_cut = theirs.holdout, their_cut
            champion_metrics = metric_intervals(
                task,
                y,
                theirs.holdout,
                threshold=their_cut,
                confidence=options.confidence,
                seed=options.seed,
            )
            differences = paired_differences(
                task,
                y,
                mine.holdout,
                theirs.holdout,
                thresholds=(cut, their_cut),
                confidence=options.confidence,
                seed=options.seed,
            )
    baselines = {
        name: paired_differences(
            task,
            y,
            mine.holdout,
            scores,
            thresholds=(cut, base_cut),
            confidence=options.confidence,
            seed=options.seed,
        )
        for name, scores, base_cut in _baselines(task, data, y_all, y_tuning, rule)
    }
    columns = tuple(slices) if slices is not None else judged.slice_columns
    parts = _slices(task, data, columns, y, mine.holdout, cut, judged, options)
    for part in parts:
        undefined = [m for m in judged.slice_absolute if math.isnan(part.estimates[m].value)]
        if part.gated and undefined:  # one class in the slice, say: nothing to judge
            notes.append(f"slice {part.name}: {', '.join(undefined)} undefined, not gated")
    cost = None
    if version is not None and judged.cost:
        from gyre.evaluate._cost import measure_serving_cost
        from gyre.registry import Registry

        registry = Registry.from_config(config)
        try:
            measured = measure_serving_cost(registry, version[0], version[1], sample=made.sample)
            cost = measured.as_dict()
        finally:
            registry.close()
    verdict = judge(
        judged, metrics, against=differences, baselines=baselines, slices=parts, cost=cost
    )
    curves = {"challenger": _curves(task, y, mine.holdout, cut), "champion": None}
    if champion_scores is not None:
        curves["champion"] = _curves(task, y, champion_scores, champion_cut)
    result = Evaluation(
        subject=subject,
        run_id=run_id,
        task=task,
        rows=len(holdout),
        metrics=metrics,
        verdict=verdict,
        threshold=threshold,
        champion=champion,
        champion_metrics=champion_metrics,
        differences=differences,
        baselines=baselines,
        slices=parts,
        cost=cost,
        notes=notes,
        curves=curves,
        gated_slice_metrics=tuple(judged.slice_absolute),
        version=version,
    )
    if record:
        from gyre.evaluate._record import record_evaluation

        record_evaluation(stores, config, result)
    return result


def _curves(task: str, y: np.ndarray, scores: np.ndarray, cut: float) -> dict[str, Any] | None:
    from gyre.evaluate._curves import classification_curves, regression_curves

    try:
        if task == "classification":
            return classification_curves(y, scores, cut)
        return regression_curves(y, scores)
    except EvaluationError:  # one class only, say: no curve to draw
        return None


def _subject(config: Config, subject: str) -> tuple[tuple[str, int] | None, str]:
    """(the registry version, if the subject names one; the run to evaluate)."""
    if "@" not in subject and ":" not in subject:
        return None, subject
    from gyre.registry import Registry

    registry = Registry.from_config(config)
    try:
        mv = registry.resolve(subject)
    finally:
        registry.close()
    made_by = mv.lineage.get("run") or {}
    if not made_by.get("run_id"):
        raise EvaluationError(
            f"model `{mv.model}` version {mv.version} was not published from a run of "
            "`gyre train`; evaluate the run that made it, or publish one with "
            "`gyre registry publish --run RUN`"
        )
    return (mv.model, mv.version), str(made_by["run_id"])


def _targets(task: str, y: np.ndarray, model: Any) -> tuple[np.ndarray, list[Any] | None]:
    if task == "regression":
        return np.asarray(y, dtype=np.float64), None
    classes = list(getattr(model, "classes_", []))
    if len(classes) != 2:
        raise EvaluationError(
            f"gyre evaluate takes binary classifiers and regressors; this model has "
            f"{len(classes)} classes"
        )
    return (np.asarray(y, dtype=object) == classes[1]).astype(np.int8), _plain(classes)


def _plain(values: Sequence[Any]) -> list[Any]:
    return [v.item() if isinstance(v, np.generic) else v for v in values]


def _score(
    task: str, model: Any, x: np.ndarray, holdout: np.ndarray, tuning: np.ndarray
) -> _Scored:
    def one(rows: np.ndarray) -> np.ndarray:
        if len(rows) == 0:
            return np.zeros(0)
        if task == "regression":
            return np.asarray(model.predict(x[rows]), dtype=np.float64)
        return np.asarray(model.predict_proba(x[rows]), dtype=np.float64)[:, 1]

    return _Scored(one(holdout), one(tuning))


def _champion(
    stores: Stores,
    config: Config,
    name: str,
    alias: str,
    run_id: str,
    features: tuple[str, ...],
    task: str,
    holdout_from: str,
    notes: list[str],
) -> tuple[str, Any, float | None] | None:
    """The champion's name, model and stored decision threshold, when it is another run's
    on the same features."""
    from gyre.learn import run_model
    from gyre.registry import Registry

    registry = Registry.from_config(config)
    try:
        mv = registry.resolve(f"{name}@{alias}")
    except GyreError:
        notes.append(f"no `{name}@{alias}` in the registry: nothing to compare with")
        return None
    finally:
        registry.close()
    made_by = mv.lineage.get("run") or {}
    their_run = made_by.get("run_id")
    if not their_run:
        raise EvaluationError(
            f"the champion `{name}@{alias}` (version {mv.version}) was not made by a run of "
            "`gyre train`, so its scores on these rows cannot be computed yet; compare "
            "with --against none, or publish the champion from a run"
        )
    if their_run == run_id:
        notes.append(f"`{name}@{alias}` is this run's own model: nothing to compare with")
        return None
    runs = stores.open_runs()
    try:
        recorded = runs.get(str(their_run))
    finally:
        runs.close()
    if recorded.params.get("task") != task:
        raise EvaluationError(
            f"the champion `{name}@{alias}` (version {mv.version}) is a "
            f"{recorded.params.get('task')} model and this run's is a {task} one: they "
            "cannot be compared; compare with --against none"
        )
    times = recorded.record.get("lineage", {}).get("training_set", {}).get("times", {})
    learned_until = max((t[1] for t in (times.get("train"), times.get("validation")) if t),
                        default=None)  # fmt: skip
    if learned_until is not None and learned_until >= holdout_from:
        raise EvaluationError(
            f"the champion `{name}@{alias}` (version {mv.version}) learned from rows up to "
            f"{learned_until}, at or after this holdout's first row ({holdout_from}): scored "
            "on rows it was trained on, it would look better than it is. Compare on rows "
            "newer than both models' training, or with --against none"
        )
    theirs = run_model(stores, str(their_run))
    if theirs.feature_names != features:
        raise EvaluationError(
            f"the champion `{name}@{alias}` reads other features "
            f"({', '.join(theirs.feature_names)}) than this run ({', '.join(features)}); "
            "comparing them on one set of rows needs both feature sets, which gyre "
            "evaluate does not build yet: compare with --against none"
        )
    return f"{name}:{mv.version}", theirs.model, mv.decision_threshold


def _baselines(
    task: str, data: Any, y_all: np.ndarray, y_tuning: np.ndarray, rule: Any
) -> list[tuple[str, np.ndarray, float]]:
    """The majority (mean) predictor and a linear model, fitted on the training rows:
    (name, holdout scores, threshold)."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train, holdout = data.train, data.holdout
    tuning = data.validation if len(data.validation) else data.train
    x, y_train = data.x, y_all[train]
    found = []
    constant = float(np.mean(y_train))
    if task == "classification":  # its cut by the spec's rule too (all positive, say)
        cut = learn_threshold(y_tuning, np.full(len(tuning), constant), rule)
        found.append(("majority", np.full(len(holdout), constant), cut))
    else:
        found.append(("mean", np.full(len(holdout), constant), 0.0))
    estimator = LogisticRegression(max_iter=1000) if task == "classification" else Ridge(alpha=1.0)
    model = make_pipeline(SimpleImputer(keep_empty_features=True), StandardScaler(), estimator)
    if task == "classification" and len(np.unique(y_train)) < 2:
        return found
    model.fit(x[train], y_train)
    if task == "classification":
        scores = model.predict_proba(x[holdout])[:, 1]
        cut = learn_threshold(y_tuning, model.predict_proba(x[tuning])[:, 1], rule)
    else:
        scores, cut = model.predict(x[holdout]), 0.0
    found.append(("linear", np.asarray(scores, dtype=np.float64), cut))
    return found


def _slices(
    task: str,
    data: Any,
    columns: Sequence[str],
    y: np.ndarray,
    scores: np.ndarray,
    cut: float,
    judged: Any,
    options: _Options,
) -> list[SliceResult]:
    if not columns:
        return []
    queries = data.queries
    known = [] if queries is None else queries.column_names
    missing = [c for c in columns if c not in known]
    if missing:
        raise EvaluationError(
            f"slice column(s) {', '.join(missing)} are not columns of the rows; the rows "
            f"have: {', '.join(c for c in known if not c.startswith('_'))}"
        )
    parts = []
    holdout = queries.take(data.holdout)
    for column in columns:
        values = np.asarray([str(v) for v in holdout.column(column).to_pylist()])
        keys, which, counts = np.unique(values, return_inverse=True, return_counts=True)
        for index in np.argsort(-counts, kind="stable")[:MAX_SLICES_PER_COLUMN]:
            key, mask = keys[index], which == index
            rows = int(counts[index])
            estimates = metric_intervals(
                task,
                y[mask],
                scores[mask],
                threshold=cut,
                confidence=options.confidence,
                seed=options.seed,
            )
            parts.append(
                SliceResult(column, str(key), rows, estimates, rows >= judged.slice_min_rows)
            )
    return parts


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
        "created_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
