"""Window aggregations over sorted arrays: the offline engine's fast path for training sets.

The definition is the SQL engine's (`_offline.py`): for a query row (entity, ts), an
aggregation covers the entity's facts with event time in (ts - window, ts]. Instead of
joining every query with every fact of its longest window, the facts are sorted once by
(entity, event time, log position), so the facts of one query's window are one contiguous
range [lo, hi) of that order, found by binary search on a single int64 key:

    key = entity code * span + (time - earliest)

where the entity code is the dictionary index of the entity's key tuple (facts and queries
encoded together) and `span` exceeds every time offset, so keys of different entities never
interleave. (When codes times span would overflow int64, the times are first replaced by
their ranks among all the times involved, which keeps their order.) Then, per aggregation:

- count: hi - lo; the non-null count from a prefix sum of the valid mask;
- sum and mean of integers: exact int64 prefix sums (DuckDB sums integers exactly too);
- sum and mean of floats, min, max: `ufunc.reduceat` over the ranges, each range reduced
  left to right (no prefix-sum cancellation), queries taken in order of `lo` so the
  reductions between ranges cost at most one pass over the facts;
- last: the position of the latest non-null value up to each fact (a running maximum), so
  the window's last value is that of its range's end, when it falls inside the range.

Nulls follow SQL: ignored by sum (0 when none), mean, min, max and last (null when none),
counted by count. NaN follows DuckDB, which orders it above every number: it is the max of
any range holding one, and the min only of a range holding nothing else.

`distinct_count` and min/max of strings have no such form; `supported` says when a view
needs the SQL engine, and the engine computes those aggregations in SQL over the same facts.
The features conformance suite holds this path to the definition like every engine.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gyre.features._definitions import Aggregation, FeatureView

INT64_MAX = 2**63 - 1


def supported(agg: Aggregation, fact_types: dict[str, Any]) -> bool:
    """Whether `agg` has an array form here (else the SQL engine computes it)."""
    import pyarrow as pa

    if agg.function == "distinct_count":
        return False
    if agg.function in ("count", "last"):
        return True
    kind = fact_types.get(agg.column or "")
    return kind is not None and (
        pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)
    )


def window_columns(
    facts: Any, queries: Any, view: FeatureView, aggregations: list[Aggregation]
) -> dict[str, Any] | None:
    """The values of `aggregations` (each `supported`) for every row of `queries` (an Arrow
    table with the view's entity columns and `ts`), as Arrow arrays in query order, from
    `facts` (an Arrow table: the entity columns, the aggregated columns with transforms
    applied, `_time` and `_seq`). None when the entity columns of facts and queries are not
    of one kind (the SQL engine then decides what they mean)."""
    import pyarrow as pa

    codes = _entity_codes(facts, queries, view.entity)
    if codes is None:
        return None
    fact_codes, query_codes = codes
    fact_time = facts.column("_time").to_numpy().astype(np.int64, copy=False)
    query_time = queries.column("ts").to_numpy().astype(np.int64, copy=False)
    windows = sorted({a.window_us for a in aggregations})
    order, fact_keys, query_key = _sorted_keys(
        fact_codes, fact_time, facts.column("_seq").to_numpy(), query_codes, query_time, windows
    )
    ranges = {}
    known = query_codes >= 0
    # Needles in order search several times faster; one order serves every window, since
    # (entity, ts - window) sorts as (entity, ts) does.
    by_key = np.argsort(query_key(0), kind="stable")

    def found(window: int) -> np.ndarray:
        at = np.empty(len(by_key), np.int64)
        at[by_key] = np.searchsorted(fact_keys, query_key(window)[by_key], side="right")
        return np.where(known, at, 0)

    hi = found(0)
    for window in windows:
        ranges[window] = (found(window), hi)
    columns: dict[str, Any] = {}
    sorted_columns: dict[str, Any] = {}
    for agg in aggregations:
        lo, hi = ranges[agg.window_us]
        if agg.function == "count":
            columns[agg.name] = pa.array(hi - lo, pa.int64())
            continue
        assert agg.column is not None
        if agg.column not in sorted_columns:
            taken = facts.column(agg.column).take(pa.array(order))
            sorted_columns[agg.column] = taken.combine_chunks()
        values = sorted_columns[agg.column]
        if agg.function == "last":
            columns[agg.name] = _last(values, lo, hi)
        else:
            columns[agg.name] = _numeric(agg.function, values, lo, hi, view.feature_kind(agg.name))
    return columns


def _entity_codes(facts: Any, queries: Any, entity: tuple[str, ...]) -> Any:
    """Dense codes of the entity key tuples of facts and of queries, encoded together
    (-1 where a key is null: such a fact belongs to no entity, such a query to none)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    fact_codes = np.zeros(facts.num_rows, np.int64)
    query_codes = np.zeros(queries.num_rows, np.int64)
    size = 1
    for name in entity:
        fact_column, query_column = facts.column(name), queries.column(name)
        kinds = fact_column.type, query_column.type
        if kinds[0] != kinds[1]:
            if not all(pa.types.is_integer(k) for k in kinds):
                return None
            fact_column, query_column = fact_column.cast(pa.int64()), query_column.cast(pa.int64())
        both = pa.chunked_array([*fact_column.chunks, *query_column.chunks], fact_column.type)
        encoded = pc.dictionary_encode(both).combine_chunks()
        index = encoded.indices.cast(pa.int64()).fill_null(-1).to_numpy()
        count = len(encoded.dictionary)
        combined = np.concatenate([fact_codes, query_codes])
        missing = (index < 0) | (combined < 0)
        if size * count >= 2**62:  # keep the codes small: renumber the tuples seen
            combined = np.unique(combined, return_inverse=True)[1].astype(np.int64)
            size = int(combined.max(initial=0)) + 1
        combined = np.where(missing, -1, combined * count + index)
        size *= max(count, 1)
        fact_codes, query_codes = combined[: facts.num_rows], combined[facts.num_rows :]
    return fact_codes, query_codes


def _sorted_keys(
    fact_codes: np.ndarray,
    fact_time: np.ndarray,
    fact_seq: np.ndarray,
    query_codes: np.ndarray,
    query_time: np.ndarray,
    windows: list[int],
) -> tuple[np.ndarray, np.ndarray, Any]:
    """The facts' order by (entity, time, log position), their sorted keys, and a function
    giving each query's key for the window start ts - window (0: ts itself)."""
    keep = np.flatnonzero(fact_codes >= 0)
    if len(keep) > 1 and not np.all(np.diff(fact_seq[keep]) > 0):
        keep = keep[np.argsort(fact_seq[keep], kind="stable")]
    codes, times = fact_codes[keep], fact_time[keep]
    edges = [query_time - w for w in [0, *windows]]
    low = int(min([times.min(initial=INT64_MAX), *(e.min(initial=INT64_MAX) for e in edges)]))
    high = int(max([times.max(initial=0), *(e.max(initial=0) for e in edges)]))
    span = high - low + 2
    size = int(max(codes.max(initial=0), query_codes.max(initial=0))) + 1
    if size * span < INT64_MAX // 2 and low > -(2**62):
        offset = {w: e - low for w, e in zip([0, *windows], edges, strict=True)}
        fact_offset = times - low
    else:  # ranks keep the order of the times and stay below the number of times
        everything = np.concatenate([times, *edges])
        ranks = np.unique(everything, return_inverse=True)[1].astype(np.int64)
        span = int(ranks.max(initial=0)) + 2
        fact_offset = ranks[: len(times)]
        parts = np.split(ranks[len(times) :], len(edges))
        offset = dict(zip([0, *windows], parts, strict=True))
    keys = codes * span + fact_offset
    order = np.argsort(keys, kind="stable")  # stable: log order within one (entity, time)
    safe_codes = np.maximum(query_codes, 0)
    return keep[order], keys[order], lambda w: safe_codes * span + offset[w]


def _numeric(function: str, values: Any, lo: np.ndarray, hi: np.ndarray, kind: str) -> Any:
    """sum, mean, min or max of a numeric column over each [lo, hi) of the sorted facts."""
    import pyarrow as pa

    valid = values.is_valid().to_numpy(zero_copy_only=False)
    valid_sum = np.concatenate([[0], np.cumsum(valid, dtype=np.int64)])
    counted = valid_sum[hi] - valid_sum[lo]
    integers = pa.types.is_integer(values.type) or pa.types.is_boolean(values.type)
    if integers:
        numbers = values.cast(pa.int64()).fill_null(0).to_numpy()
    else:
        numbers = values.cast(pa.float64()).fill_null(0.0).to_numpy()
    if function in ("sum", "mean"):
        if integers:
            prefix = np.concatenate([[0], np.cumsum(numbers)])
            total: np.ndarray = prefix[hi] - prefix[lo]
        else:
            total = _reduce(np.add, numbers, lo, hi, 0.0)
        if function == "sum":
            return pa.array(total, pa.int64() if kind == "int" else pa.float64())
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / np.maximum(counted, 1)
        return pa.array(mean.astype(np.float64), mask=counted == 0)
    if integers:
        low, high = np.iinfo(np.int64).min, np.iinfo(np.int64).max
        filled = np.where(valid, numbers, low if function == "max" else high)
        found = _reduce(np.maximum if function == "max" else np.minimum, filled, lo, hi, 0)
    else:
        filled = np.where(valid, numbers, -np.inf if function == "max" else np.inf)
        # DuckDB orders NaN above every number: max propagates it, min skips it unless the
        # range holds nothing else.
        found = _reduce(np.maximum if function == "max" else np.fmin, filled, lo, hi, 0.0)
        if function == "min":
            nan = np.concatenate([[0], np.cumsum(np.isnan(numbers) & valid, dtype=np.int64)])
            found = np.where((nan[hi] - nan[lo] == counted) & (counted > 0), np.nan, found)
    return pa.array(found, mask=counted == 0).cast(values.type)


def _reduce(ufunc: Any, values: np.ndarray, lo: np.ndarray, hi: np.ndarray, empty: Any) -> Any:
    """`ufunc` over values[lo[i]:hi[i]] for every i (`empty` where the range is empty).
    One `reduceat` over the ranges in order of `lo`, interleaved with the stretches between
    them, whose results are dropped: at most one pass over `values` besides the ranges."""
    out = np.full(len(lo), empty, dtype=values.dtype)
    nonempty = np.flatnonzero(hi > lo)
    if len(nonempty) == 0:
        return out
    by_start = nonempty[np.argsort(lo[nonempty], kind="stable")]
    bounds = np.empty(2 * len(by_start), np.int64)
    bounds[0::2], bounds[1::2] = lo[by_start], hi[by_start]
    padded = np.append(values, values[:1])  # an end bound may be len(values)
    out[by_start] = ufunc.reduceat(padded, bounds)[0::2]
    return out


def _last(values: Any, lo: np.ndarray, hi: np.ndarray) -> Any:
    """The latest non-null value of each [lo, hi) of the sorted facts (null when none)."""
    import pyarrow as pa

    if len(values) == 0:
        return pa.nulls(len(lo), values.type)
    valid = values.is_valid().to_numpy(zero_copy_only=False)
    latest = np.maximum.accumulate(np.where(valid, np.arange(len(valid)), -1))
    at = latest[np.where(hi > lo, hi - 1, 0)]
    found = (hi > lo) & (at >= lo)
    return values.take(pa.array(np.where(found, at, 0), mask=~found))
