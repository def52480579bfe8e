"""Query rows for a training set from a file: Parquet, CSV, or JSON (an array or NDJSON).

Each row names the entity, its time `ts` and anything else to carry along (a label, the
request-time values). `ts` is read as events' times are (`gyre.collect.parse_timestamp`):
an RFC 3339 string, or a number since the epoch in the unit the caller names (seconds by
default, as for events), or an Arrow timestamp column.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gyre.collect import format_timestamp, parse_events, parse_timestamp
from gyre.errors import InvalidEvents, InvalidFeatureInput

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# A number of the epoch written as text; ASCII digits only (str.isdigit also takes "²").
_NUMBER = re.compile(r"-?[0-9]{1,20}(\.[0-9]{1,20})?")


def read_queries(
    path: Path, unit: str = "s", *, time_column: str = "ts", also_times: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The rows of a query file, each with `ts` in epoch microseconds (read from
    `time_column`); numbers in it count `unit`s (s, ms or us) since the epoch. The columns
    `also_times` are times too, converted the same way (a missing value stays None)."""
    if not path.is_file():
        raise InvalidFeatureInput(f"query file {path} does not exist")
    suffix = path.suffix.lower()
    import pyarrow as pa

    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
        elif suffix == ".csv":
            import pyarrow.csv as pcsv

            rows = pcsv.read_csv(path).to_pylist()
        elif suffix in (".json", ".ndjson", ".jsonl"):
            rows = parse_events(path.read_bytes())
        else:
            raise InvalidFeatureInput(
                f"query file {path}: use .parquet, .csv, .json or .ndjson (one row per line)"
            )
    except (pa.ArrowException, OSError, InvalidEvents) as exc:
        raise InvalidFeatureInput(f"query file {path} cannot be read as {suffix}: {exc}") from None
    return [_with_ts(i, row, unit, time_column, also_times) for i, row in enumerate(rows)]


def read_query_table(
    path: Path, unit: str = "s", *, time_column: str = "ts", also_times: Sequence[str] = ()
) -> Any:
    """`read_queries`' rows as an Arrow table, read without a Python object per row where
    its columns allow: a table of many rows for training (the same values)."""
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv") or not path.is_file():
        return pa.Table.from_pylist(
            read_queries(path, unit, time_column=time_column, also_times=also_times)
        )
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path)
    except (pa.ArrowException, OSError) as exc:
        raise InvalidFeatureInput(f"query file {path} cannot be read as {suffix}: {exc}") from None
    if table.num_rows and time_column not in table.column_names:
        raise InvalidFeatureInput(f"query row 0 has no `{time_column}` (the time of the row)")
    times = {"ts": _micros_column(table, time_column, unit, nullable=False)}
    for column in also_times:
        if column in table.column_names:
            times[column] = _micros_column(table, column, unit, nullable=True)
    for name, values in times.items():
        if name in table.column_names:
            table = table.drop_columns([name])
        table = table.append_column(name, values)
    return table


def _micros_column(table: Any, column: str, unit: str, *, nullable: bool) -> Any:
    """A time column in epoch microseconds: integers and Arrow timestamps at once, any
    other column row by row, as `read_queries` reads it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = table.column(column)
    kind = values.type
    if pa.types.is_timestamp(kind) and kind.unit in ("s", "ms", "us"):
        return values.cast(pa.timestamp("us", kind.tz)).cast(pa.int64())
    if pa.types.is_integer(kind) and table.num_rows and (nullable or not values.null_count):
        low, high = (v.as_py() for v in pc.min_max(values).values())
        try:  # the smallest and the largest are times: so is every value between
            if low is not None:
                parse_timestamp(low, unit), parse_timestamp(high, unit)
        except ValueError:
            pass  # row by row below, to name the first that is not
        else:
            return pc.multiply(values.cast(pa.int64()), parse_timestamp(1, unit))
    return pa.array(
        [
            None if nullable and v is None else _micros(i, v, unit, column)
            for i, v in enumerate(values.to_pylist())
        ],
        pa.int64(),
    )


def _with_ts(
    index: int, row: Any, unit: str, time_column: str, also_times: Sequence[str]
) -> dict[str, Any]:
    if not isinstance(row, dict):
        # An NDJSON line that is not JSON comes back from parse_events with its reason.
        reason = getattr(row, "reason", f"expected an object, got {type(row).__name__}")
        raise InvalidFeatureInput(f"query row {index}: {reason}")
    if time_column not in row:
        raise InvalidFeatureInput(f"query row {index} has no `{time_column}` (the time of the row)")
    times: dict[str, int | None] = {"ts": _micros(index, row[time_column], unit, time_column)}
    for column in also_times:
        value = row.get(column)
        times[column] = None if value is None else _micros(index, value, unit, column)
    return {**row, **times}


def _micros(index: int, ts: Any, unit: str, column: str) -> int:
    if isinstance(ts, datetime.datetime):
        moment = ts if ts.tzinfo else ts.replace(tzinfo=datetime.UTC)
        delta = moment - _EPOCH
        return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    if isinstance(ts, str) and _NUMBER.fullmatch(ts.strip()):
        ts = float(ts) if "." in ts else int(ts)  # a CSV column mixing times and numbers
    try:
        return parse_timestamp(ts, unit)
    except ValueError as exc:
        raise InvalidFeatureInput(
            f"query row {index}: `{column}` {exc}"
            + ("; name the unit with --ts-unit" if isinstance(ts, (int, float)) else "")
        ) from None


def outside_facts(
    rows: list[dict[str, Any]], first_us: int | None, last_us: int | None, window_us: int
) -> str | None:
    """A warning when query times fall where no fact can reach them (a wrong `ts` unit, or
    facts not ingested yet): before the first fact, or past the last by more than the
    view's longest window. Their features are computed from no facts at all."""
    if not rows:
        return None
    if first_us is None or last_us is None:
        return f"all {len(rows)} query rows: the fact log has no facts of the view's source"
    before = sum(1 for row in rows if row["ts"] < first_us)
    after = sum(1 for row in rows if row["ts"] > last_us + window_us)
    if not before and not after:
        return None
    return (
        f"{before} of {len(rows)} query rows are before the first fact "
        f"({format_timestamp(first_us)}) and {after} past the last "
        f"({format_timestamp(last_us)}) by more than the longest window; their features see "
        "no facts. Check the unit of `ts` (--ts-unit) and the facts' times"
    )
