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

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gyre.collect import FactLog, format_timestamp
from gyre.errors import LeakageError, SpecError
from gyre.features import FactCache, FeatureView, ViewFacts, read_query_table, training_matrix
from gyre.learn._check import Resolved
from gyre.learn._spec import ColumnLabel, EventLabel, EventRows, TrainingSpec

_SHOWN_ROWS = 5
_LEAK_MIN_ROWS = 20


@dataclass(frozen=True)
class LabelledRows:
    """The prediction points with their labels, in time order."""

    queries: Any  # an Arrow table: entity fields, `ts`, request-time values
    labels: list[Any]
    known_at: np.ndarray  # when each label became known (int64 epoch microseconds)
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
    # The rows' own columns (entity, `ts`, request values; a table's columns), an Arrow
    # table in the rows' order: what slices are cut by. Not part of the hash.
    queries: Any = field(default=None, compare=False, repr=False)

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
    resolved: Resolved,
    watermark: int,
    cache: FactCache | None = None,
) -> LabelledRows:
    """The spec's rows and labels, from the fact log up to `watermark` (or its table):
    rows keyed by `resolved.entity`, each carrying the request-time values it names.
    `cache`: where the decoded facts are kept between builds."""
    if isinstance(spec.rows, EventRows):
        assert isinstance(spec.label, EventLabel)
        return _event_rows(spec.rows, spec.label, log, resolved, watermark, cache)
    assert isinstance(spec.label, ColumnLabel)
    also = (spec.label.known_at_column,) if spec.label.known_at_column else ()
    table = read_query_table(
        spec.rows.path, spec.rows.time_unit, time_column=spec.rows.time_column, also_times=also
    )
    return _table_rows(table, spec.label)


def _event_rows(
    rows: EventRows,
    label: EventLabel,
    log: FactLog,
    resolved: Resolved,
    watermark: int,
    cache: FactCache | None,
) -> LabelledRows:
    """Each fact of the rows' event with its label: the first label fact of its entity
    strictly after it (the earliest stored among those of the same time) in the window.
    One ASOF join in DuckDB over the decoded facts; the rules in numpy."""
    import duckdb

    cache = cache or FactCache(None)
    points = cache.facts(log, resolved.types[rows.event], watermark)
    outcomes = cache.facts(log, resolved.types[label.event], watermark)
    latest = max(_latest(points), _latest(outcomes))
    # The entity and request values first, then every other field of the fact (slices).
    fields = resolved.types[rows.event].fields
    carried = list(dict.fromkeys([*resolved.entity, *resolved.request, *fields]))
    carried = [name for name in carried if name != "ts"]
    connection = duckdb.connect()
    try:
        found = first_outcomes(connection, points, outcomes, resolved.entity, label.field)
        ordered = connection.sql(
            f"SELECT {', '.join(_quote(n) for n in carried)}, _time AS ts FROM points "
            "ORDER BY _time, _seq"
        ).to_arrow_table()
    finally:
        connection.close()
    ts = found.column("_ts").to_numpy()
    known = found.column("_known").fill_null(np.iinfo(np.int64).max).to_numpy()
    values = found.column("_value")
    labelled = known <= ts + label.within_us  # a label came in the window
    null = labelled & ~values.is_valid().to_numpy(zero_copy_only=False)
    pending = ~labelled & (ts + label.within_us > latest)  # its window is still open
    unlabelled = ~labelled & ~pending
    keep = labelled & ~null
    if label.missing is not None:
        keep |= unlabelled
        known = np.where(unlabelled, ts + label.within_us, known)
    labels = values.take(np.flatnonzero(keep)).to_pylist()
    for i in np.flatnonzero(unlabelled[keep]):  # none unless `missing` is set
        labels[i] = label.missing
    counts = {
        "rows_seen": len(ts),
        "label_pending": int(pending.sum()),
        "label_missing": 0 if label.missing is not None else int(unlabelled.sum()),
        "label_null": int(null.sum()),
    }
    index = np.flatnonzero(keep)
    return LabelledRows(ordered.take(index), labels, known[index], counts)


def first_outcomes(
    connection: Any, points: Any, outcomes: Any, entity: Sequence[str], field: str | None
) -> Any:
    """For each point (`_time`, `_seq` and the `entity` columns), in (`_time`, `_seq`)
    order: its time `_ts`, its `_seq`, and the first outcome of its entity strictly after
    it (the earliest stored among those of the same time): its time `_known` and its
    `field` as `_value` (1 when no field is named), null when none came. One ASOF join in
    DuckDB: the label rule of training, and of the monitor's live labels."""
    keys = [_quote(name) for name in entity]
    value = _quote(field) if field else "1"
    connection.register("points", points)
    connection.register("outcomes", outcomes)
    return connection.sql(
        f"WITH first AS (SELECT {', '.join(keys)}, _time, {value} AS _value FROM outcomes "
        f"QUALIFY row_number() OVER (PARTITION BY {', '.join(keys)}, _time "
        "ORDER BY _seq) = 1) "
        "SELECT p._time AS _ts, p._seq AS _seq, l._time AS _known, l._value AS _value "
        f"FROM points p ASOF LEFT JOIN first l ON {' AND '.join(f'p.{k} = l.{k}' for k in keys)} "
        "AND l._time > p._time ORDER BY p._time, p._seq"
    ).to_arrow_table()


def _latest(facts: Any) -> int:
    newest = facts.column("_time").to_numpy()
    return int(newest.max()) if len(newest) else 0


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _table_rows(table: Any, label: ColumnLabel) -> LabelledRows:
    """The rows of the spec's table (Arrow) that have a label, without the label column."""
    import pyarrow as pa

    values = table.column(label.column)
    keep = values.is_valid().to_numpy(zero_copy_only=False)
    ts = table.column("ts").to_numpy() if table.num_rows else np.zeros(0, np.int64)
    known = ts.copy()
    if label.known_at_column is not None:
        stamps = table.column(label.known_at_column)
        stated = stamps.is_valid().to_numpy(zero_copy_only=False)
        known = np.where(stated, stamps.fill_null(0).to_numpy(), ts)
        leaks = np.flatnonzero(keep & stated & (known <= ts))
        if len(leaks):
            shown = [
                f"row {i}: ts {format_timestamp(int(ts[i]))}, label {values[int(i)].as_py()!r} "
                f"known at {format_timestamp(int(known[i]))}"
                for i in leaks[:_SHOWN_ROWS]
            ]
            raise LeakageError(
                f"{len(leaks)} rows have a label known at or before their own time (`"
                f"{label.known_at_column}` <= `ts`): the features at `ts` could see the "
                "outcome. Give each row the time the prediction is made, before its outcome:\n"
                + "\n".join(f"  {line}" for line in shown)
            )
    index = pa.array(np.flatnonzero(keep))
    counts = {"rows_seen": table.num_rows, "label_null": int((~keep).sum())}
    queries = table.drop_columns([label.column]).take(index)
    return LabelledRows(queries, values.take(index).to_pylist(), known[keep], counts)


def feature_matrix(
    log: FactLog,
    views: Sequence[FeatureView],
    columns: Sequence[str],
    queries: Any,
    watermark: int,
    export: Path | None = None,
    cache: FactCache | None = None,
    facts: Sequence[ViewFacts] | None = None,
) -> tuple[tuple[str, ...], np.ndarray]:
    """The features of each query row (an Arrow table), in the rows' order: each view's at
    the row's time, then the table's own columns. `export`: a `gyre events export` folder
    to read the older facts from (the same values, read faster); `cache`: where decoded
    facts are kept between builds; `facts`: each view's facts, already read."""
    names: list[str] = []
    parts: list[np.ndarray] = []
    if len(queries) == 0:  # no rows: nothing to compute (the caller says why)
        width = sum(len(view.features) for view in views) + len(columns)
        return (), np.zeros((0, width), np.float32)
    for i, view in enumerate(views):
        names.extend(view.features)
        read = None if facts is None else facts[i]
        parts.append(
            training_matrix(
                log, view, queries, watermark=watermark, export=export, cache=cache, facts=read
            )
        )
    if columns:
        names.extend(columns)
        parts.append(_columns(queries, columns))
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise SpecError(f"features named twice across views and columns: {', '.join(twice)}")
    x = np.hstack(parts) if parts else np.zeros((len(queries), 0), np.float32)
    return tuple(names), x.astype(np.float32, copy=False)


def _columns(queries: Any, columns: Sequence[str]) -> np.ndarray:
    import pyarrow as pa

    table = np.empty((len(queries), len(columns)), dtype=np.float32)
    for j, name in enumerate(columns):
        column = queries.column(name)
        kind = column.type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind) or pa.types.is_null(kind)):  # fmt: skip
            i, value = next((i, v) for i, v in enumerate(column.to_pylist()) if v is not None)
            raise SpecError(
                f"feature column `{name}` holds {type(value).__name__} values ({value!r}, row "
                f"{i}); a model input must be a number or a boolean"
            )
        # One C loop per column: null becomes NaN, booleans 1 and 0.
        table[:, j] = column.cast(pa.float64()).fill_null(np.nan).to_numpy()
    return table


def build(
    spec: TrainingSpec,
    labelled: LabelledRows,
    log: FactLog,
    views: Sequence[FeatureView],
    watermark: int,
    export: Path | None = None,
    cache: FactCache | None = None,
    facts: Sequence[ViewFacts] | None = None,
) -> TrainingData:
    """Features, the time-ordered split with purging, and the leakage check on features.
    `facts`: each view's facts, already read (`gyre.features.read_view_facts`)."""
    times = labelled.queries.column("ts").to_numpy() if len(labelled.queries) else []
    order = np.argsort(np.asarray(times, dtype=np.int64), kind="stable")
    queries = labelled.queries.take(order)
    known = labelled.known_at[order]
    ts = np.asarray(times, dtype=np.int64)[order]
    names, x = feature_matrix(log, views, spec.columns, queries, watermark, export, cache, facts)
    y = np.asarray(labelled.labels, dtype=np.float64 if spec.task == "regression" else None)[order]
    train, validation, holdout = _split(ts, spec.validation, spec.holdout)
    counts = dict(labelled.counts)
    train, counts["purged_train"] = _purge(train, known, ts, validation, holdout)
    validation, counts["purged_validation"] = _purge(validation, known, ts, holdout, holdout)
    data = TrainingData(names, x, y, ts, train, validation, holdout, watermark, counts, queries)
    _check_usable(spec, data)
    _refuse_label_features(data)
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


def _refuse_label_features(data: TrainingData) -> None:
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
