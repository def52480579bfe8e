"""`gyre evaluate --data FILE`: the rows to evaluate on, read from a Parquet or CSV file
instead of rebuilt from the run's holdout.

The file has a column per feature the model reads (named as the run's training set names
them), the label column, optionally the slice columns and the spec's time column. Every
problem is an `EvaluationError` naming the file and the column: a missing column, a
feature that is not numeric, a label the model never saw, an empty or unreadable file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gyre.errors import EvaluationError, GyreError


@dataclass(frozen=True)
class GivenRows:
    path: Path
    x: np.ndarray  # float32, NaN for a missing value, the model's feature order
    y: np.ndarray  # the labels, as the model's classes (or floats, for regression)
    ts: np.ndarray | None  # int64 epoch microseconds; None when the file has no time column
    table: Any  # the file's columns (an Arrow table): what slices are cut by


def read_given(
    path: Path,
    features: Sequence[str],
    label: str,
    task: str,
    classes: Sequence[Any] | None,
    *,
    time_column: str,
    time_unit: str,
) -> GivenRows:
    """The rows of `path` for a model reading `features`; `classes`: the labels the
    classifier learned (None for a regressor)."""
    table = _read(path)
    where = f"the rows file {path}"
    if table.num_rows == 0:
        raise EvaluationError(f"{where} has no rows: give a file with the rows to evaluate on")
    names = table.column_names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # which of the two is the feature? Arrow's lookup would raise KeyError
        raise EvaluationError(
            f"{where} has the column(s) {', '.join(twice)} more than once; give each "
            "column one name"
        )
    missing = [f for f in features if f not in names]
    if missing:
        raise EvaluationError(
            f"{where} lacks the feature column(s) {', '.join(missing)} the model reads; it "
            f"has: {', '.join(names)}"
        )
    if label not in names:
        raise EvaluationError(
            f"{where} has no label column `{label}`; name it with --label COLUMN "
            f"(the file has: {', '.join(names)})"
        )
    x = np.column_stack([_numeric(table, f, where) for f in features]).astype(np.float32)
    y = _labels(table, label, task, classes, where)
    ts = None
    if time_column in names:
        ts = _times(table, time_column, time_unit, where)
    return GivenRows(path, x, y, ts, table)


def _read(path: Path) -> Any:
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise EvaluationError(
            f"the rows file {path} must be Parquet (.parquet) or CSV (.csv), not `{suffix}`"
        )
    if not path.is_file():
        raise EvaluationError(f"the rows file {path} does not exist")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pcsv

        return pcsv.read_csv(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise EvaluationError(
            f"the rows file {path} cannot be read as {suffix[1:]}: {exc}"
        ) from None


def _numeric(table: Any, column: str, where: str) -> np.ndarray:
    import pyarrow as pa

    values = table.column(column)
    kind = values.type
    if pa.types.is_null(kind):  # every value missing
        return np.full(table.num_rows, np.nan)
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
        raise EvaluationError(
            f"feature column `{column}` of {where} is {kind}, not numeric: the model reads "
            "numbers (a missing value may be empty)"
        )
    return np.asarray(values.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)


def _labels(
    table: Any, column: str, task: str, classes: Sequence[Any] | None, where: str
) -> np.ndarray:
    values = table.column(column).to_pylist()
    if any(v is None for v in values):
        raise EvaluationError(
            f"label column `{column}` of {where} has {sum(v is None for v in values)} empty "
            "value(s): every row to evaluate on needs its label"
        )
    if task == "regression":
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise EvaluationError(
                f"label column `{column}` of {where} is {table.column(column).type}, not "
                "numeric: a regressor's labels are numbers"
            )
        found: np.ndarray = np.asarray(values, dtype=np.float64)
        if not np.isfinite(found).all():
            raise EvaluationError(f"label column `{column}` of {where} has non-finite values")
        return found
    assert classes is not None
    known = list(classes)
    unseen = sorted({str(v) for v in values if not any(_same(v, c) for c in known)})
    if unseen:
        raise EvaluationError(
            f"label column `{column}` of {where} has label(s) the model never saw: "
            f"{', '.join(unseen[:10])}; it learned {', '.join(str(c) for c in known)}"
        )
    positive = known[1]
    # As the model's classes: the positive class where the row's label is it, else the other.
    return np.asarray([positive if _same(v, positive) else known[0] for v in values], dtype=object)


def _same(value: Any, known: Any) -> bool:
    if isinstance(value, str) != isinstance(known, str):  # "1" is not 1
        return False
    return bool(value == known)


def _times(table: Any, column: str, unit: str, where: str) -> np.ndarray:
    from gyre.features._queries import _micros_column

    try:
        micros = _micros_column(table, column, unit, nullable=False)
    except GyreError as exc:
        raise EvaluationError(f"time column `{column}` of {where}: {exc}") from None
    return np.asarray(micros.to_numpy(zero_copy_only=False), dtype=np.int64)


def label_column(spec: Any, given: str | None) -> str:
    """The label column of a rows file: `given`, else the spec's table label column, else
    `label`."""
    if given:
        return given
    return str(getattr(spec.label, "column", None) or "label")


def time_column(spec: Any) -> tuple[str, str]:
    """(the time column of a rows file, the unit of its integers): the spec's rows table's,
    else `ts` in seconds."""
    return getattr(spec.rows, "time_column", "ts"), getattr(spec.rows, "time_unit", "s")


def with_given(
    built: Any, given: GivenRows, column: str
) -> tuple[Any, Any, str | None, str | None]:
    """The run's rows with the file's appended as the holdout (the threshold's and the
    baselines' rows stay the run's), the file's table (for slices), the file's first time
    (None: the file has no time column), and why the file's rows may be rows the run
    learned from (None: they start after them). Rows it may have learned from would look
    better than they are, so that reason fails the evaluation (`judge(doubts=)`)."""
    from dataclasses import replace

    from gyre.collect import format_timestamp

    n, m = len(built.y), len(given.y)
    try:
        labels = given.y.astype(built.y.dtype)
    except (TypeError, ValueError):
        labels = given.y
    ts = given.ts if given.ts is not None else np.zeros(m, dtype=np.int64)
    joined = replace(
        built,
        x=np.vstack([built.x, given.x]).astype(built.x.dtype),
        y=np.concatenate([built.y, labels]),
        ts=np.concatenate([built.ts, ts]),
        holdout=np.arange(n, n + m),
        queries=None,
    )
    learned = np.concatenate([built.train, built.validation])
    if given.ts is None:
        untimed = (
            f"the rows file has no `{column}` column, so whether its rows are rows this run "
            "learned from cannot be checked; add the column (a champion cannot be compared "
            "without it either)"
        )
        return joined, given.table, None, untimed
    first = int(given.ts.min())
    doubt: str | None = None
    last = int(built.ts[learned].max()) if len(learned) else None
    if last is not None and first <= last:
        doubt = (
            f"the rows file starts at {format_timestamp(first)}, at or before the end of this "
            f"run's training and validation rows ({format_timestamp(last)}); give rows after it"
        )
    return joined, given.table, format_timestamp(first), doubt
