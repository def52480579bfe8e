"""`gyre evaluate`: a trained model against the champion, on the same rows, to a verdict.

The subject is a run of `gyre train` (RUN) or a registry version made by one
(MODEL@ALIAS, MODEL:VERSION), whose run is then evaluated and whose serving cost is
measured. The rows are the run's own holdout, rebuilt from its lineage (the spec's text
and the fact-log watermark: the training set's sha256 must match the recorded one), or
the rows of a Parquet or CSV file (`data`, `gyre.evaluate._given`); the threshold's and
the baselines' rows are the run's either way. The steps, in order:

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
6. Optionally, leave-one-feature-out (`gyre.evaluate._lofo`): a report, not a gate.
7. The gates (`gyre.evaluate._gates`) give the verdict; the evaluation is recorded on the
   run (`evaluation`) and on the version evaluated (`gyre.evaluate._record`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gyre.collect import format_timestamp
from gyre.config import Config
from gyre.errors import EvaluationError, GyreError, RunError
from gyre.evaluate._gates import judge
from gyre.evaluate._given import label_column, read_given, time_column, with_given
from gyre.evaluate._intervals import metric_intervals, paired_differences
from gyre.evaluate._lofo import LeaveOneOut
from gyre.evaluate._parts import Options as _Options
from gyre.evaluate._parts import baselines as _baselines
from gyre.evaluate._parts import slices as _slices
from gyre.evaluate._result import Evaluation, report_input, write_report
from gyre.evaluate._threshold import learn_threshold, parse_rule
from gyre.stores import Stores


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
    data: Path | None = None,
    label: str | None = None,
    leave_one_out: bool | None = None,
) -> Evaluation:
    """Evaluate `subject` (a run id, or MODEL@ALIAS / MODEL:VERSION made by a run) on its
    run's holdout, or on the rows of the Parquet or CSV file `data` (`label`: its label
    column; the spec's by default). `leave_one_out`: refit without each feature (None:
    as the spec's `[evaluate] leave_one_feature_out` says)."""
    from gyre.learn import run_model
    from gyre.learn._verify import rebuilt_data

    version, run_id = _subject(stores, config, subject)
    made = run_model(stores, run_id)
    spec, built = rebuilt_data(stores, config, run_id)
    judged = spec.evaluate
    task = spec.task
    notes = []
    if not len(built.validation):
        notes.append("the spec has no validation split: the threshold is learned on training rows")
    if len(built.holdout) == 0 and data is None:
        raise EvaluationError(f"run {run_id} has no holdout rows to evaluate on")
    y_all, classes = _targets(task, built.y, made.model)
    table = None if built.queries is None else built.queries.take(built.holdout)
    holdout_from: str | None = None
    doubt = None  # why the rows may be rows the model learned from
    if data is None:
        holdout_from = format_timestamp(int(built.ts[built.holdout].min()))
    else:
        column, unit = time_column(spec)
        given = read_given(
            data,
            made.feature_names,
            label_column(spec, label),
            task,
            classes,
            time_column=column,
            time_unit=unit,
        )
        built, table, holdout_from, doubt = with_given(built, given, column)
        y_all = _targets(task, built.y, made.model)[0]
    holdout, tuning_rows = built.holdout, built.validation if len(built.validation) else built.train
    mine = _score(task, made.model, built.x, holdout, tuning_rows)
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
            theirs = _score(task, model, built.x, holdout, tuning_rows)
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
        for name, scores, base_cut in _baselines(task, built, y_all, y_tuning, rule)
    }
    columns = tuple(slices) if slices is not None else judged.slice_columns
    parts = _slices(task, table, columns, y, mine.holdout, cut, judged, options)
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
    lofo = None
    if leave_one_out if leave_one_out is not None else judged.leave_one_feature_out:
        lofo = _leave_one_out(spec, built, made.feature_names, y, mine.holdout, options, notes)
    verdict = judge(
        judged, metrics, against=differences, baselines=baselines, slices=parts, cost=cost,
        doubts=() if doubt is None else (doubt,),
    )  # fmt: skip
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
        data=None if data is None else str(data),
        leave_one_out=lofo,
        version=version,
    )
    if record:
        from gyre.evaluate._record import record_evaluation

        record_evaluation(stores, config, result)
    return result


def _leave_one_out(
    spec: Any,
    built: Any,
    names: tuple[str, ...],
    y: np.ndarray,
    full: np.ndarray,
    options: _Options,
    notes: list[str],
) -> LeaveOneOut | None:
    from gyre.evaluate._lofo import MAX_LOFO_FEATURES, leave_one_out

    if len(names) < 2:
        notes.append("leave-one-feature-out needs at least two features: not done")
        return None
    found = leave_one_out(
        spec, built, names, y, full, confidence=options.confidence, seed=options.seed
    )
    if found.skipped:
        notes.append(
            f"leave-one-feature-out refitted the first {MAX_LOFO_FEATURES} features only; "
            f"skipped: {', '.join(found.skipped)}"
        )
    return found


def _curves(task: str, y: np.ndarray, scores: np.ndarray, cut: float) -> dict[str, Any] | None:
    from gyre.evaluate._curves import classification_curves, regression_curves

    try:
        if task == "classification":
            return classification_curves(y, scores, cut)
        return regression_curves(y, scores)
    except EvaluationError:  # one class only, say: no curve to draw
        return None


def _subject(stores: Stores, config: Config, subject: str) -> tuple[tuple[str, int] | None, str]:
    """(the registry version, if the subject names one; the run to evaluate)."""
    if "@" not in subject and ":" not in subject:
        return None, subject
    from gyre.registry import Registry

    registry = Registry.from_config(config)
    try:
        mv = registry.resolve(subject)
    finally:
        registry.close()
    return (mv.model, mv.version), _made_by(stores, mv, f"model `{mv.model}`")


def _made_by(stores: Stores, mv: Any, what: str) -> str:
    """The run whose model version `mv` holds (`version_run`): scoring another run's
    model would judge, and bless, another model than the one served."""
    from gyre.learn import version_run

    try:
        return str(version_run(stores, mv, what).lineage["run_id"])
    except RunError as exc:
        raise EvaluationError(f"{exc}; or evaluate the run itself") from None


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
    holdout_from: str | None,
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
    try:
        their_run = _made_by(stores, mv, f"the champion `{name}@{alias}`, which is")
    except EvaluationError as e:
        raise EvaluationError(f"{e}; or compare with --against none") from None
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
    if holdout_from is None:
        raise EvaluationError(
            f"the rows file has no time column, so whether the champion `{name}@{alias}` "
            f"(version {mv.version}) learned from these rows cannot be checked: scored on "
            "rows it was trained on, it would look better than it is. Add the spec's time "
            "column to the file, or compare with --against none"
        )
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


__all__ = ["Evaluation", "evaluate", "report_input", "write_report"]
