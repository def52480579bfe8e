"""The offline engine: point-in-time correct training sets, compiled to DuckDB SQL.

For every query row (entity, ts) each aggregation covers the entity's facts with event
time in (ts - window, ts]: one join on the entity and the longest window, then one
`FILTER`ed aggregate per feature. Facts come from the fact log up to a watermark, so a
training set is reproducible from (view hash, watermark, queries).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gyre.collect import SQLiteFactLog
from gyre.features._definitions import Aggregation, FeatureView

_ARROW = {"int": "int64", "float": "float64", "bool": "bool_", "string": "string",
          "timestamp": "int64"}  # fmt: skip


def _facts_table(log: SQLiteFactLog, view: FeatureView, watermark: int) -> Any:
    import pyarrow as pa

    columns = {*view.entity, *(a.column for a in view.aggregations if a.column)}
    names = sorted(columns)
    data: dict[str, list[Any]] = {name: [] for name in [*names, "_time", "_seq"]}
    for fact in log.scan(view.source.name, up_to_seq=watermark):
        for name in names:
            data[name].append(fact.data.get(name))
        data["_time"].append(fact.event_time)
        data["_seq"].append(fact.seq)
    schema = pa.schema(
        [pa.field(n, getattr(pa, _ARROW[view.source.fields[n].rstrip("?")])()) for n in names]
        + [pa.field("_time", pa.int64()), pa.field("_seq", pa.int64())]
    )
    return pa.Table.from_pydict(data, schema=schema)


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _expression(agg: Aggregation) -> str:
    in_window = f"f._time > q.ts - {agg.window_us}"
    column = f"f.{_quote(agg.column)}" if agg.column else "f._seq"
    if agg.function == "count":
        return f"count(f._seq) FILTER (WHERE {in_window})"
    if agg.function == "sum":
        return f"coalesce(sum({column}) FILTER (WHERE {in_window}), 0)"
    if agg.function == "mean":
        return f"avg({column}) FILTER (WHERE {in_window})"
    if agg.function in ("min", "max"):
        return f"{agg.function}({column}) FILTER (WHERE {in_window})"
    if agg.function == "distinct_count":
        return f"count(DISTINCT {column}) FILTER (WHERE {in_window})"
    # last: the latest non-null value by (event time, arrival)
    order = "f._time::HUGEINT * 1000000000000 + f._seq"
    return f"max_by({column}, {order}) FILTER (WHERE {in_window} AND {column} IS NOT NULL)"


def compile_sql(view: FeatureView) -> str:
    """The SQL that computes `view` for the rows of table `queries` (entity, ts)."""
    longest = max(a.window_us for a in view.aggregations)
    on = " AND ".join(f"f.{_quote(k)} = q.{_quote(k)}" for k in view.entity)
    features = ",\n  ".join(f"{_expression(a)} AS {_quote(a.name)}" for a in view.aggregations)
    return (
        f"SELECT q._row,\n  {features}\n"
        f"FROM queries q LEFT JOIN facts f\n"
        f"  ON {on} AND f._time <= q.ts AND f._time > q.ts - {longest}\n"
        f"GROUP BY q._row, q.ts\nORDER BY q._row"
    )


def training_set(
    log: SQLiteFactLog,
    view: FeatureView,
    queries: Sequence[dict[str, Any]],
    *,
    watermark: int | None = None,
    output: Path | None = None,
) -> list[dict[str, Any]]:
    """Each query row (the entity fields and `ts` in epoch microseconds, plus anything else
    such as a label) with the view's features at `ts`. With `output`, the rows are also
    streamed to that Parquet file by DuckDB."""
    import duckdb
    import pyarrow as pa

    mark = log.watermark() if watermark is None else watermark
    facts = _facts_table(log, view, mark)
    query_table = pa.Table.from_pylist(
        [{**row, "_row": i} for i, row in enumerate(queries)] if queries else [],
        schema=None if queries else pa.schema([("_row", pa.int64()), ("ts", pa.int64())]),
    )
    connection = duckdb.connect()
    connection.register("facts", facts)
    connection.register("queries", query_table)
    sql = (
        f"SELECT q.* EXCLUDE (_row), v.* EXCLUDE (_row) FROM queries q "
        f"JOIN ({compile_sql(view)}) v USING (_row) ORDER BY q._row"
    )
    if output is not None:
        connection.execute(f"COPY ({sql}) TO '{output}' (FORMAT PARQUET)")
    rows: list[dict[str, Any]] = connection.sql(sql).to_arrow_table().to_pylist()
    connection.close()
    return rows
