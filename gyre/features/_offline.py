"""The offline engine: point-in-time correct training sets, compiled to DuckDB SQL.

For every query row (entity, ts) each aggregation covers the entity's facts with event
time in (ts - window, ts]: row transforms compiled to SQL expressions over the facts, one
join on the entity and the longest window, then one `FILTER`ed aggregate per feature.
Request-time features come from the query rows themselves, through the same function the
server uses. `training_table` (what training matrices are made of, `_training.py`)
computes the same windows over sorted arrays instead of the join. Facts come from the
fact log up to a watermark, so a training set is reproducible from (view hash, watermark,
queries). With an export folder (`gyre events export`), DuckDB reads the exported Parquet
itself and only the facts stored since the export come from the live log.

`OfflineEngine` is the interface every offline engine implements (`DuckDBEngine` here, over
any `FactLog`; Spark later, in `gyre/engines/`); `tests/features/test_conformance.py` holds
each to the definition.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from gyre.collect import FactLog
from gyre.errors import FeatureError, InvalidFeatureInput
from gyre.features._definitions import Aggregation, FeatureView
from gyre.features._factcache import FactCache, decode
from gyre.features._serving import ServedVector


def _fact_columns(view: FeatureView) -> list[str]:
    """The source fields the view reads: entity keys, aggregated columns, transform inputs."""
    used = {a.column for a in view.aggregations if a.column}
    for expression in view.transform_expressions.values():
        used |= expression.names
    return sorted((used - set(view.transforms)) | set(view.entity))


def _facts_table(
    log: FactLog,
    view: FeatureView,
    watermark: int,
    cache: FactCache | None = None,
    after_seq: int | None = None,
) -> Any:
    """The view's facts stored up to `watermark` (only those after `after_seq`, if given)
    as an Arrow table: the columns it reads, `_time` (event time, µs) and `_seq`."""
    if after_seq is None:
        facts = (cache or FactCache(None)).facts(log, view.source, watermark)
    else:
        facts = decode(log.payloads(view.source.name, after_seq, watermark), view.source)
    return facts.select([*_fact_columns(view), "_time", "_seq"])


def _register_facts(
    connection: Any,
    log: FactLog,
    view: FeatureView,
    watermark: int,
    export: Path | None,
    cache: FactCache | None,
) -> None:
    """Make `facts` a relation of the view's facts up to `watermark`: from the log, or from
    the Parquet export (deduplicated: exports may overlap) plus what the log stored since."""
    import duckdb

    if export is None:
        connection.register("facts", _facts_table(log, view, watermark, cache))
        return
    source = view.source
    files = export / f"type={source.name}"
    if not any(files.glob("*/*.parquet")):
        raise InvalidFeatureInput(
            f"no Parquet export of `{source.name}` in {export}; run "
            f"`gyre events export {source.name} --out {export}` or leave the export out"
        )
    columns = []
    for name in _fact_columns(view):
        quoted = _quote(name)
        timestamp = source.fields[name].rstrip("?") == "timestamp"
        columns.append(f"epoch_us({quoted}) AS {quoted}" if timestamp else quoted)
    time_column = _quote(source.time_field)
    pattern = _literal(files / "*" / "*.parquet")
    try:
        connection.execute(
            f"CREATE TEMP TABLE exported AS SELECT {', '.join(columns)}, "
            f"epoch_us({time_column}) AS _time, _seq FROM read_parquet({pattern}) "
            f"WHERE _seq <= {int(watermark)} QUALIFY row_number() OVER (PARTITION BY _seq) = 1"
        ).fetchall()
    except duckdb.Error as exc:
        raise InvalidFeatureInput(
            f"could not read the Parquet export of `{source.name}` in {files} ({exc}); "
            f"export it again with `gyre events export {source.name} --out {export}`"
        ) from None
    ((count, newest),) = connection.execute(
        "SELECT count(*), coalesce(max(_seq), 0) FROM exported"
    ).fetchall()
    stored = log.count(source.name, up_to_seq=newest)
    if count != stored:
        raise InvalidFeatureInput(
            f"the Parquet export of `{source.name}` in {export} holds {count} of the "
            f"{stored} facts stored up to log position {newest} (an export of a time range?); "
            f"export the type whole (`gyre events export {source.name} --out {export}`)"
        )
    connection.register("recent", _facts_table(log, view, watermark, after_seq=newest))
    connection.execute(
        "CREATE TEMP VIEW facts AS SELECT * FROM exported UNION ALL BY NAME SELECT * FROM recent"
    ).fetchall()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _expression(agg: Aggregation, view: FeatureView) -> str:
    in_window = f"f._time > q.ts - {agg.window_us}"
    column = f"f.{_quote(agg.column)}" if agg.column else "f._seq"
    if agg.function == "count":
        return f"count(f._seq) FILTER (WHERE {in_window})"
    if agg.function == "sum":
        total = f"coalesce(sum({column}) FILTER (WHERE {in_window}), 0)"
        # DuckDB sums integers as HUGEINT; the online engine's sum is a 64-bit int.
        return f"CAST({total} AS BIGINT)" if view.feature_kind(agg.name) == "int" else total
    if agg.function == "mean":
        return f"avg({column}) FILTER (WHERE {in_window})"
    if agg.function in ("min", "max"):
        return f"{agg.function}({column}) FILTER (WHERE {in_window})"
    if agg.function == "distinct_count":
        return f"count(DISTINCT {column}) FILTER (WHERE {in_window})"
    # last: the latest non-null value by (event time, arrival)
    order = "f._time::HUGEINT * 1000000000000 + f._seq"
    return f"max_by({column}, {order}) FILTER (WHERE {in_window} AND {column} IS NOT NULL)"


def _facts_sql(view: FeatureView) -> str:
    """The facts with each transform as one more column."""
    if not view.transforms:
        return "facts"
    expressions = view.transform_expressions

    def column(name: str) -> str:
        if name in expressions:
            return f"({expressions[name].sql(column)})"
        return _quote(name)

    derived = ", ".join(f"{column(name)} AS {_quote(name)}" for name in expressions)
    return f"(SELECT *, {derived} FROM facts)"


def compile_sql(
    view: FeatureView,
    *,
    per_row_watermark: bool = False,
    aggregations: Sequence[Aggregation] | None = None,
) -> str:
    """The SQL that computes `view`'s aggregations (or only `aggregations`) for the rows of
    table `queries` (entity, ts; with `per_row_watermark`, also `_watermark`: only facts
    stored up to that log position count for the row)."""
    chosen = view.aggregations if aggregations is None else tuple(aggregations)
    longest = max(a.window_us for a in chosen)
    on = " AND ".join(f"f.{_quote(k)} = q.{_quote(k)}" for k in view.entity)
    if per_row_watermark:
        on += " AND f._seq <= q._watermark"
    features = ",\n  ".join(f"{_expression(a, view)} AS {_quote(a.name)}" for a in chosen)
    return (
        f"SELECT q._row,\n  {features}\n"
        f"FROM queries q LEFT JOIN {_facts_sql(view)} f\n"
        f"  ON {on} AND f._time <= q.ts AND f._time > q.ts - {longest}\n"
        f"GROUP BY q._row, q.ts\nORDER BY q._row"
    )


def _facts_connection(
    log: FactLog,
    view: FeatureView,
    watermark: int,
    export: Path | None,
    cache: FactCache | None = None,
) -> Any:
    """A DuckDB connection holding the view's facts up to `watermark` as `facts`."""
    import duckdb

    connection = duckdb.connect()
    try:
        _register_facts(connection, log, view, watermark, export, cache)
    except BaseException:
        connection.close()
        raise
    return connection


def _query_table(view: FeatureView, queries: Sequence[dict[str, Any]] | Any) -> Any:
    """The query rows (with their request-time features) as an Arrow table with `_row`,
    their position. `queries` may be an Arrow table."""
    import numpy as np
    import pyarrow as pa

    if isinstance(queries, pa.Table) and not view.request:
        return queries.append_column("_row", pa.array(np.arange(queries.num_rows)))
    if isinstance(queries, pa.Table):
        queries = queries.to_pylist()
    rows = []
    for i, row in enumerate(queries):
        try:
            request = view.request_values(row, row["ts"])
        except ValueError as exc:
            raise InvalidFeatureInput(f"query row {i}: {exc}") from None
        rows.append({**row, **request, "_row": i})
    return pa.Table.from_pylist(
        rows, schema=None if rows else pa.schema([("_row", pa.int64()), ("ts", pa.int64())])
    )


def _register_queries(
    connection: Any,
    view: FeatureView,
    queries: Sequence[dict[str, Any]] | Any,
    per_row_watermark: bool = False,
) -> str:
    """Register the query rows (with their request-time features) as `queries`, replacing
    any before; returns the training-set SQL over them. `queries` may be an Arrow table."""
    connection.register("queries", _query_table(view, queries))
    return (
        f"SELECT q.* EXCLUDE (_row), v.* EXCLUDE (_row) FROM queries q "
        f"JOIN ({compile_sql(view, per_row_watermark=per_row_watermark)}) v USING (_row) "
        "ORDER BY q._row"
    )


def _prepared(
    log: FactLog,
    view: FeatureView,
    queries: Sequence[dict[str, Any]] | Any,
    watermark: int | None,
    export: Path | None,
    cache: FactCache | None = None,
) -> tuple[Any, str]:
    mark = log.watermark() if watermark is None else watermark
    connection = _facts_connection(log, view, mark, export, cache)
    try:
        return connection, _register_queries(connection, view, queries)
    except BaseException:
        connection.close()
        raise


def training_set(
    log: FactLog,
    view: FeatureView,
    queries: Sequence[dict[str, Any]],
    *,
    watermark: int | None = None,
    export: Path | None = None,
    cache: FactCache | None = None,
) -> list[dict[str, Any]]:
    """Each query row (the entity fields, `ts` in epoch microseconds, the values of the
    view's request-time features as the request sent them, plus anything else such as a
    label) with the view's features at `ts`, from the facts up to `watermark` (default:
    all of them). `export`: a `gyre events export` folder to read the older facts from;
    `cache`: where the decoded facts are kept between calls (`FactCache`)."""
    connection, sql = _prepared(log, view, queries, watermark, export, cache)
    try:
        rows: list[dict[str, Any]] = connection.sql(sql).to_arrow_table().to_pylist()
    finally:
        connection.close()
    return rows


def write_training_set(
    log: FactLog,
    view: FeatureView,
    queries: Sequence[dict[str, Any]],
    output: Path,
    *,
    watermark: int | None = None,
    export: Path | None = None,
    cache: FactCache | None = None,
) -> int:
    """`training_set` streamed by DuckDB into a Parquet file, never held in memory;
    returns the number of rows written."""
    import duckdb

    connection, sql = _prepared(log, view, queries, watermark, export, cache)
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        copy = f"COPY ({sql}) TO {_literal(output)} (FORMAT PARQUET)"
        ((count,),) = connection.execute(copy).fetchall()
    except (OSError, duckdb.IOException) as exc:
        raise FeatureError(f"cannot write the training set to {output}: {exc}") from None
    finally:
        connection.close()
    return int(count)


class Recomputation:
    """The offline engine over one view's facts up to a log position, read once, for any
    number of batches of served vectors (the skew check)."""

    def __init__(
        self, log: FactLog, view: FeatureView, watermark: int, export: Path | None = None
    ) -> None:
        self.view = view
        self.watermark = watermark
        self._connection = _facts_connection(log, view, watermark, export)

    def rows(self, served: Sequence[ServedVector]) -> list[dict[str, Any]]:
        """What the offline engine computes for each served vector: same entity, same time,
        same request values, and only the facts the server had (its logged position, at
        most this recomputation's)."""
        queries = [
            {**v.entity, **v.request, "ts": v.at_us, "_watermark": v.watermark} for v in served
        ]
        sql = _register_queries(self._connection, self.view, queries, per_row_watermark=True)
        rows: list[dict[str, Any]] = self._connection.sql(sql).to_arrow_table().to_pylist()
        return rows

    def close(self) -> None:
        self._connection.close()


def recompute(
    log: FactLog,
    view: FeatureView,
    served: Sequence[ServedVector],
    *,
    export: Path | None = None,
) -> list[dict[str, Any]]:
    """`Recomputation.rows` for one batch of served vectors."""
    mark = max((vector.watermark for vector in served), default=0)
    recomputation = Recomputation(log, view, mark, export)
    try:
        return recomputation.rows(served)
    finally:
        recomputation.close()


def _literal(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


class Recomputing(Protocol):
    """An engine's computation over one view's facts up to a log position, for batches of
    served vectors (see `Recomputation`)."""

    def rows(self, served: Sequence[ServedVector]) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class OfflineEngine(Protocol):
    """Point-in-time correct features from the fact log, for training and for the skew
    check, computing exactly the view's definition."""

    name: str

    def training_set(
        self,
        log: FactLog,
        view: FeatureView,
        queries: Sequence[dict[str, Any]],
        *,
        watermark: int | None = None,
        export: Path | None = None,
    ) -> list[dict[str, Any]]: ...

    def write_training_set(
        self,
        log: FactLog,
        view: FeatureView,
        queries: Sequence[dict[str, Any]],
        output: Path,
        *,
        watermark: int | None = None,
        export: Path | None = None,
    ) -> int: ...

    def recomputation(
        self, log: FactLog, view: FeatureView, watermark: int, export: Path | None = None
    ) -> Recomputing: ...


class DuckDBEngine:
    """The embedded offline engine: the functions of this module, as an `OfflineEngine`."""

    name = "duckdb"

    def training_set(
        self,
        log: FactLog,
        view: FeatureView,
        queries: Sequence[dict[str, Any]],
        *,
        watermark: int | None = None,
        export: Path | None = None,
    ) -> list[dict[str, Any]]:
        return training_set(log, view, queries, watermark=watermark, export=export)

    def write_training_set(
        self,
        log: FactLog,
        view: FeatureView,
        queries: Sequence[dict[str, Any]],
        output: Path,
        *,
        watermark: int | None = None,
        export: Path | None = None,
    ) -> int:
        return write_training_set(log, view, queries, output, watermark=watermark, export=export)

    def recomputation(
        self, log: FactLog, view: FeatureView, watermark: int, export: Path | None = None
    ) -> Recomputing:
        return Recomputation(log, view, watermark, export)
