"""Quality on delayed labels: a version's answers to entity requests, joined to the labels
that came later in the fact log by the label rule of the run that made it (the first
`event` of the entity strictly after the request, within `within`: the rule training
used), scored with the evaluator's metrics and intervals, and compared with the run's
holdout metrics. An answer is scored once its label window has closed (the label event's
newest fact is past it), so the labels that come early do not bias the window.

A metric has dropped when its whole interval is worse than the holdout's value (so a
small window's noise does not fire). The prediction bias is the mean prediction minus
the mean label (for a classifier, the predicted minus the observed rate of its second
class). Answers whose label window is still open are counted as pending; answers to
requests that sent tensors instead of naming an entity have no entity to label and are
counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gyre.errors import MonitorError
from gyre.monitor._window import newest_records

# The run's holdout metric (`gyre.learn._metrics.score`) each evaluator metric is held to.
HOLDOUT_NAMES = {"roc_auc": "auc", "log_loss": "log_loss", "accuracy": "accuracy",
                 "mae": "mae", "rmse": "rmse", "r2": "r2"}  # fmt: skip


@dataclass(frozen=True)
class LiveQuality:
    task: str
    answers: int  # the entity answers read
    labelled: int
    pending: int  # their label window is still open: not scored yet
    unlabelled: int  # the window closed without a label (and the spec sets no `missing`)
    without_entity: int  # answers to tensor requests: nothing to join a label to
    metrics: dict[str, Any] = field(default_factory=dict)  # name -> Estimate
    holdout: dict[str, float] = field(default_factory=dict)  # the run's, same names
    bias: float | None = None
    dropped: tuple[str, ...] = ()  # metrics whose interval is worse than the holdout's

    def as_json(self) -> dict[str, Any]:
        return {
            "task": self.task, "answers": self.answers, "labelled": self.labelled,
            "pending": self.pending, "unlabelled": self.unlabelled,
            "without_entity": self.without_entity,
            "metrics": {k: v.as_dict() for k, v in self.metrics.items()},
            "holdout": self.holdout, "bias": self.bias, "dropped": list(self.dropped),
        }  # fmt: skip


@dataclass(frozen=True)
class _Answers:
    entities: list[dict[str, Any]]
    at_us: np.ndarray
    outputs: list[dict[str, Any]]  # per answered row: its output tensors' row
    without_entity: int


def _served_answers(path: Path, model: str, version: int, last: int) -> _Answers:
    """The version's latest `last` records' entity answers, a row each, oldest first."""
    rows: list[tuple[dict[str, Any], int, dict[str, Any]]] = []
    without = 0
    for record in newest_records(path, model, version, last):
        if record["default"]:
            continue  # a default answer is not the version's
        if record["input_kind"] != "features":
            without += 1
        else:
            rows.extend(reversed(_entity_rows(record)))
    rows.reverse()
    return _Answers(
        [r[0] for r in rows], np.asarray([r[1] for r in rows], dtype=np.int64),
        [r[2] for r in rows], without,
    )  # fmt: skip


def _entity_rows(record: dict[str, Any]) -> list[tuple[dict[str, Any], int, dict[str, Any]]]:
    vectors = record["input"] if isinstance(record["input"], list) else []
    found = []
    for i, vector in enumerate(vectors):
        if not isinstance(vector, dict) or not isinstance(vector.get("entity"), dict):
            continue
        row = {name: _row_of(tensor, i) for name, tensor in record["output"].items()}
        found.append((vector["entity"], int(vector.get("at_us", 0)), row))
    return found


def _row_of(tensor: Any, i: int) -> Any:
    data = tensor.get("data") if isinstance(tensor, dict) else None
    return data[i] if isinstance(data, list) and i < len(data) else None


def live_quality(
    stores: Any,
    config: Any,
    mv: Any,
    *,
    last: int = 10_000,
    confidence: float = 0.95,
    seed: int = 0,
) -> LiveQuality:
    """Version `mv`'s quality on the labels of its latest `last` answers."""
    import duckdb
    import pyarrow as pa

    from gyre.collect import event_types
    from gyre.evaluate._intervals import metric_intervals
    from gyre.learn import version_run
    from gyre.learn._data import first_outcomes
    from gyre.learn._spec import EventLabel
    from gyre.learn._train import fact_cache
    from gyre.learn._verify import _recorded

    made = version_run(stores, mv, f"model `{mv.model}`")
    run, spec, _ = _recorded(stores, str(made.lineage["run_id"]))
    label = spec.label
    if not isinstance(label, EventLabel):
        raise MonitorError(
            f"run {run.run_id} read its labels from a table file: live quality needs a label "
            "joined from the fact log ([label] event = …)"
        )
    answers = _served_answers(stores.prediction_log_path, mv.model, mv.version, last)
    task = spec.task
    holdout = {k: float(run.metrics[v]) for k, v in HOLDOUT_NAMES.items() if v in run.metrics}
    if not answers.entities:
        return LiveQuality(task, 0, 0, 0, 0, answers.without_entity, holdout=holdout)
    keys = sorted(answers.entities[0])
    if any(sorted(e) != keys for e in answers.entities):
        raise MonitorError("the answers name entities by different keys; check one view's model")
    types = event_types(config.collect.events)
    outcome_type = types.get(label.event)
    if outcome_type is None:
        raise MonitorError(f"the label event `{label.event}` is no longer declared")
    absent = [k for k in keys if k not in outcome_type.fields]
    if absent:
        raise MonitorError(
            f"the label event `{label.event}` has no field {', '.join(absent)} of the "
            "answers' entity: its labels cannot be joined to them"
        )
    log = stores.open_fact_log()
    try:
        outcomes = fact_cache(config).facts(log, outcome_type, log.watermark())
    finally:
        log.close()
    try:
        points = pa.table({
            **{k: pa.array([e[k] for e in answers.entities]).cast(outcomes.schema.field(k).type)
               for k in keys},
            "_time": pa.array(answers.at_us, pa.int64()),
            "_seq": pa.array(np.arange(len(answers.at_us)), pa.int64()),
        })  # fmt: skip
    except (pa.ArrowException, KeyError, TypeError, ValueError) as exc:
        raise MonitorError(
            f"the answers' entity keys are not of the label event `{label.event}`'s types "
            f"({exc}): its labels cannot be joined to them"
        ) from None
    connection = duckdb.connect()
    try:
        found = first_outcomes(connection, points, outcomes, keys, label.field)
    finally:
        connection.close()
    newest = outcomes.column("_time").to_numpy()
    latest = int(newest.max()) if len(newest) else 0
    order = found.column("_seq").to_numpy()
    ts = found.column("_ts").to_numpy()
    known = found.column("_known").fill_null(np.iinfo(np.int64).max).to_numpy()
    values = found.column("_value").to_pylist()
    # Scored only once its label window has closed: the labels that come early (often
    # one class: a purchase comes, its absence only shows when the hour is over) would
    # bias a window of answers scored as soon as some of them are labelled.
    pending = ts + label.within_us > latest
    came = ~pending & (known <= ts + label.within_us)
    null = came & np.array([v is None for v in values], dtype=bool)  # dropped, as in training
    labelled = came & ~null
    unlabelled = ~pending & ~came
    y = [values[i] for i in np.flatnonzero(labelled)]
    if label.missing is not None:
        y += [label.missing] * int(unlabelled.sum())
        chosen = np.concatenate([order[labelled], order[unlabelled]])
    else:
        chosen = order[labelled]
    scores, target = _scored(task, made.model, [answers.outputs[i] for i in chosen], y)
    counts = (len(answers.entities), len(chosen), int(pending.sum()),
              0 if label.missing is not None else int(unlabelled.sum()))  # fmt: skip
    if len(target) < 2:
        return LiveQuality(task, *counts, answers.without_entity, holdout=holdout)
    threshold = mv.decision_threshold if mv.decision_threshold is not None else 0.5
    metrics = metric_intervals(task, target, scores, threshold=threshold,
                               confidence=confidence, seed=seed)  # fmt: skip
    from gyre.evaluate._metrics import HIGHER_IS_BETTER

    def worse(name: str, estimate: Any) -> bool:  # the whole interval, not the value
        if name not in holdout or not np.isfinite(estimate.low):
            return False
        if HIGHER_IS_BETTER[name]:
            return bool(estimate.high < holdout[name])
        return bool(estimate.low > holdout[name])

    dropped = tuple(name for name, estimate in metrics.items() if worse(name, estimate))
    bias = float(np.mean(scores) - np.mean(target))
    return LiveQuality(task, *counts, answers.without_entity, metrics, holdout, bias, dropped)


def _scored(
    task: str, model: Any, outputs: list[dict[str, Any]], labels: list[Any]
) -> tuple[np.ndarray, np.ndarray]:
    """(each answer's score: the probability of the second class, or the prediction; each
    label as the evaluator takes it: 0/1 for the second class, or a number)."""
    if task == "regression":
        scores = [_number(next(iter(o.values()), None)) for o in outputs]
        return np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    classes = list(getattr(model, "classes_", []))
    if len(classes) != 2:
        raise MonitorError("live quality takes binary classifiers and regressors")
    scores = []
    for o in outputs:
        row = o.get("probabilities")
        if not isinstance(row, list) or len(row) != 2:
            raise MonitorError("an answer has no `probabilities` of two classes to score")
        scores.append(float(row[1]))
    positive = classes[1].item() if isinstance(classes[1], np.generic) else classes[1]
    return np.asarray(scores), np.asarray([v == positive for v in labels], dtype=np.int8)


def _number(value: Any) -> float:
    while isinstance(value, list) and value:
        value = value[0]
    return float(value) if isinstance(value, int | float) else float("nan")


__all__ = ["LiveQuality", "live_quality"]
