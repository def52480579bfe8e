"""Training tables: `training_set`'s rows as Arrow, the windows aggregated over sorted arrays.

A view's facts are read once (`read_view_facts`: from the fact log or its kept decoded
copy, or from a Parquet export plus what the log stored since) and indexed once
(`index_view_facts`: transforms applied, sorted by entity and time, `_windows.FactIndex`).
Reading touches the log and stays on the caller's thread; indexing is pure, so `gyre
train` runs it beside building the rows and labels. A training table for any query rows
then costs binary searches and one pass per aggregation. Aggregations with no array form
(`distinct_count`, min/max of strings) and entity keys of two kinds go to the SQL engine
(`_offline.compile_sql`) over the same facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gyre.collect import FactLog
from gyre.features._definitions import Aggregation, FeatureView
from gyre.features._factcache import FactCache
from gyre.features._offline import (
    _fact_columns,
    _facts_connection,
    _facts_sql,
    _facts_table,
    _query_table,
    _quote,
    compile_sql,
)
from gyre.features._windows import FactIndex, supported


@dataclass(frozen=True)
class ViewFacts:
    """One view's facts up to a log position: as read (`raw`: the columns the view reads,
    `_time`, `_seq`) and, once indexed, with the transforms applied and sorted."""

    view: FeatureView
    watermark: int
    raw: Any
    indexed: bool = False
    fast: tuple[Aggregation, ...] = ()  # the aggregations computed over `index`
    index: FactIndex | None = None


def read_view_facts(
    log: FactLog,
    view: FeatureView,
    watermark: int,
    *,
    export: Path | None = None,
    cache: FactCache | None = None,
) -> ViewFacts:
    """The view's facts stored up to `watermark`, not yet indexed. `export`: a `gyre
    events export` folder to read the older facts from; `cache`: where decoded facts are
    kept between calls (`FactCache`)."""
    if export is None:
        return ViewFacts(view, watermark, _facts_table(log, view, watermark, cache))
    connection = _facts_connection(log, view, watermark, export, cache)
    try:
        return ViewFacts(view, watermark, connection.sql("SELECT * FROM facts").to_arrow_table())
    finally:
        connection.close()


def index_view_facts(facts: ViewFacts) -> ViewFacts:
    """`facts` with the transforms applied and the index built (no log access: any thread)."""
    import duckdb

    view, table = facts.view, facts.raw
    if view.transforms:
        used = ", ".join(_quote(c) for c in [*_fact_columns(view), *view.transforms])
        connection = duckdb.connect()
        try:
            connection.register("facts", table)
            table = connection.sql(f"SELECT {used}, _time, _seq FROM {_facts_sql(view)}")
            table = table.to_arrow_table()
        finally:
            connection.close()
    kinds = {name: table.schema.field(name).type for name in table.column_names}
    fast = tuple(a for a in view.aggregations if supported(a, kinds))
    index = FactIndex.of(table, view.entity, fast) if fast else None
    return ViewFacts(view, facts.watermark, facts.raw, True, fast, index)


def training_table(
    log: FactLog,
    view: FeatureView,
    queries: Any,
    *,
    watermark: int | None = None,
    export: Path | None = None,
    cache: FactCache | None = None,
    facts: ViewFacts | None = None,
) -> Any:
    """`training_set`'s rows as an Arrow table (the query columns, then the features).
    `facts`: the view's facts already read (and indexed) at `watermark`."""
    import pyarrow as pa

    mark = log.watermark() if watermark is None else watermark
    if facts is None:
        facts = read_view_facts(log, view, mark, export=export, cache=cache)
    if facts.view.definition_hash != view.definition_hash or facts.watermark != mark:
        raise ValueError(
            f"facts of view `{facts.view.name}` at log position {facts.watermark} given for "
            f"view `{view.name}` at {mark}"
        )
    if not facts.indexed:
        facts = index_view_facts(facts)
    query_table = _query_table(view, queries)
    fast = list(facts.fast)
    columns = facts.index.columns(query_table, view, fast) if facts.index is not None else {}
    if columns is None:  # entity keys of two kinds: the SQL engine's rules apply
        fast, columns = [], {}
    rest = [a for a in view.aggregations if a not in fast]
    if rest:
        columns.update(_sql_columns(view, facts.raw, query_table, rest))
    kept = [c for c in query_table.column_names if c != "_row"]
    return pa.table(
        {
            **{c: query_table.column(c) for c in kept},
            **{a.name: columns[a.name] for a in view.aggregations},
        }
    )


def _sql_columns(
    view: FeatureView, raw: Any, queries: Any, aggregations: list[Aggregation]
) -> dict[str, Any]:
    """`aggregations` computed by the SQL engine over the facts as read."""
    import duckdb

    connection = duckdb.connect()
    try:
        connection.register("facts", raw)
        connection.register("queries", queries)
        computed = connection.sql(compile_sql(view, aggregations=aggregations)).to_arrow_table()
    finally:
        connection.close()
    return {a.name: computed.column(a.name) for a in aggregations}


def training_matrix(
    log: FactLog,
    view: FeatureView,
    queries: Any,
    *,
    watermark: int | None = None,
    export: Path | None = None,
    cache: FactCache | None = None,
    facts: ViewFacts | None = None,
) -> Any:
    """`view.matrix` of `training_set`'s rows for `queries` (an Arrow table of query rows),
    computed without a Python object per row: what a model is trained on."""
    table = training_table(
        log, view, queries, watermark=watermark, export=export, cache=cache, facts=facts
    )
    return view.matrix(table)
