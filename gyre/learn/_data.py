"""A spec's training data: its rows with their labels, the features of each row at its
time (point-in-time correct, from the fact log at one watermark), and a time-ordered
split that no later fact can leak into.

Rules, in the order they apply:

- A row is a prediction point: an entity and a time `ts`. Its features see the facts with
  event time up to and including `ts` (`gyre.features`).
- A label from events is the first label event of the entity strictly after `ts` and no
  later than `ts + within`: so the features of a row never see its own label fact. A row
  for which none came gets the spec's `missing` label once its window has closed (the
  latest fact in the log is past `ts + within`), and is left out while it is still open
  ("pending": its label is not known yet). A label from a table column may say when it
  became known (`known_at_column`); a label known at or before its row's time is refused
  as leakage, with the rows that show it.
- Rows are sorted by time and cut into train, validation and holdout, each later than the
  one before; rows with the same time stay in one part. A training row whose label only
  became known after the first validation (or holdout) time is purged: it would teach
  the model what happened after the moment it is evaluated at.
- A feature that equals the label on every training row is refused as leakage too.
"""

from __future__ import annotations

import bisect
import hashlib
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gyre.collect import FactLog, format_timestamp
from gyre.errors import LeakageError, SpecError
from gyre.features import FeatureView, read_queries, training_set
from gyre.learn._spec import ColumnLabel, EventLabel, EventRows, TrainingSpec

_SHOWN_ROWS = 5
_LEAK_MIN_ROWS = 20


@dataclass(frozen=True)
class LabelledRows:
    """The prediction points with their labels, in time order."""

    queries: list[dict[str, Any]]  # entity fields, `ts`, request-time values
    labels: list[Any]
    known_at: list[int]  # when each label became known (epoch microseconds)
    counts: dict[str, int]  # rows seen, pending, missing labels dropped or filled


@dataclass(frozen=True)
class TrainingData:
    feature_names: tuple[str, ...]
    x: np.ndarray  # float32, rows in time order, NaN for a missing value
    y: np.ndarray
    ts: np.ndarray  # int64 epoch microseconds
    train: np.ndarray  # row indices of each part
    validation: np.ndarray
    holdout: np.ndarray
    watermark: int
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """The hash of what the model learns from and is measured on: two builds that give
        the same hash gave the same rows, features, labels and split."""
        digest = hashlib.sha256(json.dumps(self.feature_names).encode())
        for array in (self.x, self.ts, self.train, self.validation, self.holdout):
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(json.dumps(self.y.tolist(), default=str).encode())
        return digest.hexdigest()

    def part(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        index = {"train": self.train, "validation": self.validation, "holdout": self.holdout}
        return self.x[index[name]], self.y[index[name]]

    def time_range(self, name: str) -> list[str] | None:
        index = {"train": self.train, "validation": self.validation, "holdout": self.holdout}
        rows = index[name]
        if len(rows) == 0:
            return None
        return [
            format_timestamp(int(self.ts[rows].min())),
            format_timestamp(int(self.ts[rows].max())),
        ]


def labelled_rows(
    spec: TrainingSpec,
    log: FactLog,
    entity: Sequence[str],
    request: Sequence[str],
    watermark: int,
) -> LabelledRows:
    """The spec's rows and labels, from the fact log up to `watermark` (or its table).
    `entity`: the fields that key a row (and its label events); `request`: the request-time
    values each row carries from its fact."""
    if isinstance(spec.rows, EventRows):
        assert isinstance(spec.label, EventLabel)
        return _event_rows(spec.rows, spec.label, log, tuple(entity), request, watermark)
    assert isinstance(spec.label, ColumnLabel)
    also = (spec.label.known_at_column,) if spec.label.known_at_column else ()
    table = read_queries(
        spec.rows.path, spec.rows.time_unit, time_column=spec.rows.time_column, also_times=also
    )
    return _table_rows(table, spec.label)


def _event_rows(
    rows: EventRows,
    label: EventLabel,
    log: FactLog,
    entity: tuple[str, ...],
    request: Sequence[str],
    watermark: int,
) -> LabelledRows:
    latest = 0
    outcomes: dict[tuple[Any, ...], tuple[list[int], list[Any]]] = defaultdict(lambda: ([], []))
    for fact in log.scan(label.event, up_to_seq=watermark):
        times, values = outcomes[tuple(fact.data[name] for name in entity)]
        times.append(fact.event_time)
        values.append(fact.data.get(label.field) if label.field else 1)
        latest = max(latest, fact.event_time)
    points = []
    for fact in log.scan(rows.event, up_to_seq=watermark):
        points.append(fact)
        latest = max(latest, fact.event_time)
    window = label.within_us
    queries: list[dict[str, Any]] = []
    labels: list[Any] = []
    known_at: list[int] = []
    counts = {"rows_seen": len(points), "label_pending": 0, "label_missing": 0, "label_null": 0}
    for fact in points:
        ts = fact.event_time
        times, values = outcomes.get(tuple(fact.data[name] for name in entity), ([], []))
        at = bisect.bisect_right(times, ts)  # strictly after ts: the features see up to ts
        if at < len(times) and times[at] <= ts + window:
            if values[at] is None:
                counts["label_null"] += 1
                continue
            value, known = values[at], times[at]
        elif ts + window > latest:
            counts["label_pending"] += 1  # its window is still open: not known yet
            continue
        elif label.missing is None:
            counts["label_missing"] += 1
            continue
        else:
            value, known = label.missing, ts + window
        query = {name: fact.data[name] for name in entity}
        query.update({name: fact.data.get(name) for name in request})
        query["ts"] = ts
        queries.append(query)
        labels.append(value)
        known_at.append(known)
    return LabelledRows(queries, labels, known_at, counts)


def _table_rows(table: list[dict[str, Any]], label: ColumnLabel) -> LabelledRows:
    queries: list[dict[str, Any]] = []
    labels: list[Any] = []
    known_at: list[int] = []
    leaks: list[str] = []
    nulls = 0
    for index, row in enumerate(table):
        value = row.get(label.column)
        if value is None:
            nulls += 1
            continue
        known = row["ts"]
        if label.known_at_column is not None:
            stamp = row.get(label.known_at_column)
            if stamp is not None:
                known = stamp
                if known <= row["ts"]:
                    leaks.append(
                        f"row {index}: ts {format_timestamp(row['ts'])}, label {value!r} known "
                        f"at {format_timestamp(known)}"
                    )
        queries.append({k: v for k, v in row.items() if k not in (label.column,)})
        labels.append(value)
        known_at.append(known)
    if leaks:
        raise LeakageError(
            f"{len(leaks)} rows have a label known at or before their own time (`"
            f"{label.known_at_column}` <= `ts`): the features at `ts` could see the outcome. "
            "Give each row the time the prediction is made, before its outcome:\n"
            + "\n".join(f"  {line}" for line in leaks[:_SHOWN_ROWS])
        )
    return LabelledRows(queries, labels, known_at, {"rows_seen": len(table), "label_null": nulls})


def feature_matrix(
    log: FactLog,
    views: Sequence[FeatureView],
    columns: Sequence[str],
    queries: list[dict[str, Any]],
    watermark: int,
    export: Path | None = None,
) -> tuple[tuple[str, ...], np.ndarray]:
    """The features of each query row, in the rows' order: each view's at the row's time,
    then the table's own columns. `export`: a `gyre events export` folder to read the
    older facts from (the same values, read faster)."""
    names: list[str] = []
    parts: list[np.ndarray] = []
    for view in views:
        found = training_set(log, view, queries, watermark=watermark, export=export)
        names.extend(view.features)
        parts.append(view.matrix(found))
    if columns:
        names.extend(columns)
        parts.append(_columns(queries, columns))
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SpecError(f"features named twice across views and columns: {', '.join(twice)}")
    x = np.hstack(parts) if parts else np.zeros((len(queries), 0), np.float32)
    return tuple(names), x.astype(np.float32, copy=False)


def _columns(queries: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> np.ndarray:
    table = np.empty((len(queries), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        values = [row.get(name) for row in queries]
        try:  # one C loop per column: None becomes NaN, booleans 1 and 0
            table[:, j] = np.array(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            i, value = next((i, v) for i, v in enumerate(values) if not _is_number(v))
            raise SpecError(
                f"feature column `{name}` holds {type(value).__name__} values ({value!r}, row "
                f"{i}); a model input must be a number or a boolean"
            ) from None
    return table


def _is_number(value: Any) -> bool:
    if value is None:
        return True
    if not isinstance(value, int | float):
        return False
    try:
        float(value)
    except OverflowError:
        return False
    return True


def build(
    spec: TrainingSpec,
    labelled: LabelledRows,
    log: FactLog,
    views: Sequence[FeatureView],
    watermark: int,
    export: Path | None = None,
) -> TrainingData:
    """Features, the time-ordered split with purging, and the leakage check on features."""
    order = sorted(range(len(labelled.queries)), key=lambda i: labelled.queries[i]["ts"])
    queries = [labelled.queries[i] for i in order]
    labels = [labelled.labels[i] for i in order]
    known = np.array([labelled.known_at[i] for i in order], dtype=np.int64)
    ts = np.array([q["ts"] for q in queries], dtype=np.int64)
    names, x = feature_matrix(log, views, spec.columns, queries, watermark, export)
    y = np.asarray(labels, dtype=np.float64 if spec.task == "regression" else None)
    train, validation, holdout = _split(ts, spec.validation, spec.holdout)
    counts = dict(labelled.counts)
    train, counts["purged_train"] = _purge(train, known, ts, validation, holdout)
    validation, counts["purged_validation"] = _purge(validation, known, ts, holdout, holdout)
    data = TrainingData(names, x, y, ts, train, validation, holdout, watermark, counts)
    _check_usable(spec, data)
    _refuse_label_features(data, queries)
    return data


def _split(ts: np.ndarray, validation: float, holdout: float) -> tuple[np.ndarray, ...]:
    n = len(ts)

    def cut(fraction_after: float) -> int:
        at = n - round(n * fraction_after)
        # Rows of one moment stay together: move the cut to that moment's first row.
        return int(np.searchsorted(ts, ts[at], side="left")) if 0 < at < n else at

    holdout_at = cut(holdout) if holdout else n
    validation_at = cut(holdout + validation) if validation else holdout_at
    index = np.arange(n)
    return index[:validation_at], index[validation_at:holdout_at], index[holdout_at:]


def _purge(
    part: np.ndarray, known: np.ndarray, ts: np.ndarray, nxt: np.ndarray, after: np.ndarray
) -> tuple[np.ndarray, int]:
    """`part` without the rows whose label became known at or after the next part began."""
    following = nxt if len(nxt) else after
    if len(following) == 0 or len(part) == 0:
        return part, 0
    keep = part[known[part] < ts[following[0]]]
    return keep, int(len(part) - len(keep))


def _check_usable(spec: TrainingSpec, data: TrainingData) -> None:
    counts = ", ".join(f"{k} {v}" for k, v in data.counts.items())
    if len(data.train) < 2:
        raise SpecError(
            f"training spec {spec.path}: {len(data.train)} training rows after the split "
            f"({counts}); collect more facts or lower [split] holdout/validation"
        )
    if spec.task == "classification" and len(np.unique(data.y[data.train])) < 2:
        raise SpecError(
            f"training spec {spec.path}: the training rows have one label only "
            f"({data.y[data.train][0]!r}); a classifier needs two or more"
        )
    if spec.task == "regression" and not np.all(np.isfinite(data.y)):
        raise SpecError(f"training spec {spec.path}: a regression label is not a finite number")


def _refuse_label_features(data: TrainingData, queries: Sequence[Mapping[str, Any]]) -> None:
    y = data.y[data.train]
    if y.dtype.kind not in "biuf" or len(np.unique(y)) < 2:
        return
    x = data.x[data.train]
    for j, name in enumerate(data.feature_names):
        present = ~np.isnan(x[:, j])
        if present.sum() < _LEAK_MIN_ROWS or not np.array_equal(x[present, j], y[present]):
            continue
        shown = [
            f"ts {format_timestamp(int(data.ts[i]))}: {name} = {data.x[i, j]:g}, "
            f"label = {data.y[i]!r}"
            for i in data.train[present][:_SHOWN_ROWS]
        ]
        raise LeakageError(
            f"feature `{name}` equals the label on all {int(present.sum())} training rows "
            "that have it: it carries the outcome, known only after the prediction. Remove "
            "it from the features:\n" + "\n".join(f"  {line}" for line in shown)
        )
