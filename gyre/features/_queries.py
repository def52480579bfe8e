"""Query rows for a training set from a file: Parquet, CSV, or JSON (an array or NDJSON).

Each row names the entity, its time `ts` and anything else to carry along (a label, the
request-time values). `ts` is an integer of epoch microseconds, an RFC 3339 string, or an
Arrow timestamp column.
"""

from __future__ import annotations

import datetime
import re
from pathlib import Path
from typing import Any

from gyre.collect import parse_events, parse_timestamp
from gyre.errors import InvalidEvents, InvalidFeatureInput

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
# Epoch microseconds written as text; ASCII digits only (str.isdigit also takes "²").
_INTEGER = re.compile(r"-?[0-9]+")


def read_queries(path: Path) -> list[dict[str, Any]]:
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
    return [_with_ts(i, row) for i, row in enumerate(rows)]


def _with_ts(index: int, row: Any) -> dict[str, Any]:
    if not isinstance(row, dict):
        # An NDJSON line that is not JSON comes back from parse_events with its reason.
        reason = getattr(row, "reason", f"expected an object, got {type(row).__name__}")
        raise InvalidFeatureInput(f"query row {index}: {reason}")
    if "ts" not in row:
        raise InvalidFeatureInput(f"query row {index} has no `ts` (the time of the row)")
    ts = row["ts"]
    if isinstance(ts, datetime.datetime):
        moment = ts if ts.tzinfo else ts.replace(tzinfo=datetime.UTC)
        delta = moment - _EPOCH
        ts = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    elif isinstance(ts, str) and _INTEGER.fullmatch(ts.strip()):
        ts = int(ts)  # a CSV column mixing times and microseconds reads as text
    elif isinstance(ts, str):
        try:
            ts = parse_timestamp(ts)
        except ValueError as exc:
            raise InvalidFeatureInput(f"query row {index}: `ts` {exc}") from None
    elif not isinstance(ts, int) or isinstance(ts, bool):
        raise InvalidFeatureInput(
            f"query row {index}: `ts` must be epoch microseconds (an integer) or an RFC 3339 "
            f"string, got {ts!r}"
        )
    return {**row, "ts": ts}
