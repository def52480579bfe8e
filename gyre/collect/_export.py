"""Offline export: a time range of one event type to Parquet, partitioned by day."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gyre.collect._factlog import Fact, FactLog
from gyre.collect._schema import EventType, format_timestamp

_ARROW_TYPES = {"int": "int64", "float": "float64", "bool": "bool_", "string": "string"}
_DAY_US = 86_400_000_000


def _arrow_schema(event_type: EventType) -> Any:
    import pyarrow as pa

    columns = [pa.field("_seq", pa.int64(), nullable=False)]
    for name, kind in event_type.fields.items():
        base = kind.rstrip("?")
        arrow = (
            pa.timestamp("us", tz="UTC")
            if base == "timestamp"
            else getattr(pa, _ARROW_TYPES[base])()
        )
        columns.append(pa.field(name, arrow, nullable=kind.endswith("?")))
    return pa.schema(columns)


def _by_day(facts: Iterator[Fact]) -> Iterator[tuple[int, list[Fact]]]:
    day, chunk = None, []
    for fact in facts:
        this = fact.event_time // _DAY_US
        if day is not None and (this != day or len(chunk) >= 100_000):
            yield day, chunk
            chunk = []
        day = this
        chunk.append(fact)
    if chunk and day is not None:
        yield day, chunk


def export_parquet(
    log: FactLog,
    event_type: EventType,
    folder: Path,
    start: int | None = None,
    end: int | None = None,
) -> list[Path]:
    """Write `folder/type=NAME/day=YYYY-MM-DD/part-W-N.parquet` (W: the log watermark),
    streaming, so memory stays bounded whatever the range. Returns the files written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _arrow_schema(event_type)
    watermark = log.watermark()
    written: list[Path] = []
    counts: dict[int, int] = {}
    for day, facts in _by_day(log.scan(event_type.name, start, end, up_to_seq=watermark)):
        columns: dict[str, list[Any]] = {"_seq": [f.seq for f in facts]}
        for name in event_type.fields:
            columns[name] = [f.data.get(name) for f in facts]
        table = pa.Table.from_pydict(columns, schema=schema)
        label = format_timestamp(day * _DAY_US)[:10]
        target = folder / f"type={event_type.name}" / f"day={label}"
        target.mkdir(parents=True, exist_ok=True)
        part = counts.get(day, 0)
        counts[day] = part + 1
        path = target / f"part-{watermark}-{part}.parquet"
        pq.write_table(table, path)
        written.append(path)
    return written
