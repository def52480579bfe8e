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

from collections.abc import Sequence
from typing import Any

import numpy as np

from gyre.features._definitions import Aggregation, FeatureView

INT64_MAX = 2**63 - 1
CODE_LIMIT = 2**62  # entity codes past it are renumbered to the key tuples seen
KEY_LIMIT = INT64_MAX // 2  # an entity code bound times a time span stays below it


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
    return FactIndex.of(facts, view.entity, aggregations).columns(queries, view, aggregations)


class FactIndex:
    """One view's facts in (entity, event time, log position) order with their int64 keys,
    built from the facts alone: before the query rows are known, or beside building them.

    The entity code of a fact is the dictionary index of its key tuple among the facts'
    tuples; a query's is looked up in the same dictionaries (a tuple no fact has gets a
    code no fact has, so its windows are empty). The span covers the facts' own times, and
    a query's window edge is first clipped to [earliest - 1, latest], which finds the same
    range: no fact lies outside those times."""

    def __init__(
        self,
        entity: tuple[str, ...],
        encoding: list[tuple[Any, Any, int, np.ndarray | None]],
        size: int,
        order: np.ndarray,
        keys: np.ndarray,
        times: tuple[int, int, int] | np.ndarray,
        values: dict[str, Any],
        final: np.ndarray | None = None,
    ) -> None:
        self.entity = entity
        self._encoding = encoding  # per entity column: fact type, dictionary, count, renumbering
        self._size = size  # every code, of facts and queries, is below it
        self.order = order  # fact positions in key order
        self.keys = keys
        self._times = times  # (earliest, latest, span), or the distinct times (ranks)
        self.values = values  # each aggregated column, its values in key order
        self._final = final  # the entity codes the facts have, when renumbered to their rank

    @classmethod
    def of(
        cls, facts: Any, entity: tuple[str, ...], aggregations: Sequence[Aggregation]
    ) -> FactIndex:
        """The index of `facts` (as for `window_columns`), with the columns `aggregations`
        read taken in its order."""
        import pyarrow as pa

        codes = np.zeros(facts.num_rows, np.int64)
        size = 1
        encoding = []
        for name in entity:
            column = facts.column(name)
            kind = column.type
            if pa.types.is_integer(kind):  # integer keys of any width match by value
                column = column.cast(pa.int64())
            encoded = _dictionary_encode(column)
            index = _codes(encoded.indices)
            count = len(encoded.dictionary)
            codes, size, renumbered = _combine(codes, index, count, size)
            encoding.append((kind, encoded.dictionary, count, renumbered))
        # The facts with a key, in log order (the cache and the log keep that order).
        keep = np.flatnonzero(codes >= 0)
        seq = facts.column("_seq").to_numpy()
        fact_time = facts.column("_time").to_numpy().astype(np.int64, copy=False)
        if len(keep) < len(codes):
            codes, seq, fact_time = codes[keep], seq[keep], fact_time[keep]
        if len(keep) > 1 and not np.all(np.diff(seq) > 0):
            by_seq = np.argsort(seq, kind="stable")
            keep, codes, fact_time = keep[by_seq], codes[by_seq], fact_time[by_seq]
        low, high = (int(fact_time.min()), int(fact_time.max())) if len(keep) else (0, 0)
        times: tuple[int, int, int] | np.ndarray
        final = None
        if size * (high - low + 2) < KEY_LIMIT and low > -(2**62):
            span = high - low + 2
            times = (low, high, span)
            offset = fact_time - low
        else:  # ranks keep the order of the times and stay below the number of times
            distinct, offset = np.unique(fact_time, return_inverse=True)
            times, span = distinct, len(distinct) + 1
            offset = offset.astype(np.int64).reshape(-1)
            if size * span >= KEY_LIMIT:  # codes too: their ranks among the facts' codes
                final, ranks = np.unique(codes, return_inverse=True)
                codes, size = ranks.reshape(-1).astype(np.int64), len(final) + 1
        keys = codes * span + offset
        by_key = _log_ordered_argsort(keys)
        order = keep[by_key]
        values = {}
        for column_name in dict.fromkeys(a.column for a in aggregations if a.column):
            values[column_name] = _taken(facts.column(column_name), order)
        return cls(entity, encoding, size, order, keys[by_key], times, values, final)

    def _query_codes(self, queries: Any) -> np.ndarray | None:
        """The entity codes of the query rows (-1: a null key); None when a key column is
        of another kind than the facts' (the SQL engine's rules then apply)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        codes = np.zeros(queries.num_rows, np.int64)
        for name, (kind, dictionary, count, renumbered) in zip(
            self.entity, self._encoding, strict=True
        ):
            column = queries.column(name)
            integers = pa.types.is_integer(kind) and pa.types.is_integer(column.type)
            if column.type != kind and not integers:
                return None
            if integers:
                column = column.cast(pa.int64())
            index = pc.index_in(column, value_set=dictionary)
            found = index.cast(pa.int64()).fill_null(-1).to_numpy()
            missing = (found < 0) | (codes < 0)
            if renumbered is not None:  # the facts' codes were renumbered at this column
                at = np.searchsorted(renumbered, codes).clip(0, max(len(renumbered) - 1, 0))
                known = renumbered[at] == codes if len(renumbered) else np.zeros_like(missing)
                codes, missing = np.where(known, at, 0), missing | ~known
            codes = np.where(missing, -1, codes * count + found)
        if self._final is not None and len(self._final):  # the facts' codes are ranks
            at = np.searchsorted(self._final, codes).clip(0, len(self._final) - 1)
            codes = np.where((codes >= 0) & (self._final[at] == codes), at, -1)
        elif self._final is not None:
            codes = np.full_like(codes, -1)
        return codes

    def _edge_offsets(self, edges: np.ndarray) -> np.ndarray:
        """Each window edge's time offset: a fact at or before the edge has an offset at or
        below it (within one entity)."""
        if isinstance(self._times, tuple):
            low, high, _ = self._times
            clipped: np.ndarray = np.clip(edges, low - 1, high) - low
            return clipped
        return np.searchsorted(self._times, edges, side="right").astype(np.int64) - 1

    def columns(
        self, queries: Any, view: FeatureView, aggregations: Sequence[Aggregation]
    ) -> dict[str, Any] | None:
        """`window_columns` for `queries`, over these facts."""
        import pyarrow as pa

        query_codes = self._query_codes(queries)
        if query_codes is None:
            return None
        span = self._times[2] if isinstance(self._times, tuple) else len(self._times) + 1
        query_time = queries.column("ts").to_numpy().astype(np.int64, copy=False)
        safe_codes = np.maximum(query_codes, 0)

        def query_key(window: int) -> np.ndarray:
            key: np.ndarray = safe_codes * span + self._edge_offsets(query_time - window)
            return key

        known = query_codes >= 0
        # Needles in order search several times faster; one order serves every window, since
        # (entity, ts - window) sorts as (entity, ts) does.
        by_key = np.argsort(query_key(0), kind="stable")

        def found(window: int) -> np.ndarray:
            at = np.empty(len(by_key), np.int64)
            at[by_key] = np.searchsorted(self.keys, query_key(window)[by_key], side="right")
            return np.where(known, at, 0)

        hi = found(0)
        ranges = {window: (found(window), hi) for window in {a.window_us for a in aggregations}}
        columns: dict[str, Any] = {}
        for agg in aggregations:
            lo, hi = ranges[agg.window_us]
            if agg.function == "count":
                columns[agg.name] = pa.array(hi - lo, pa.int64())
                continue
            assert agg.column is not None
            values = self.values[agg.column]
            if agg.function == "last":
                columns[agg.name] = _last(values, lo, hi)
            else:
                kind = view.feature_kind(agg.name)
                columns[agg.name] = _numeric(agg.function, values, lo, hi, kind)
        return columns


def _log_ordered_argsort(keys: np.ndarray) -> np.ndarray:
    """The order of `keys`, equal keys (one entity, one time) in their given order (the
    log's): an unstable sort, a third faster, then each run of equal keys put back in order
    (they are rare)."""
    order = np.argsort(keys)
    ordered = keys[order]
    tied = np.flatnonzero(ordered[1:] == ordered[:-1])
    if len(tied):
        at = np.union1d(tied, tied + 1)  # runs of equal keys are contiguous and stay put
        order[at] = order[at][np.lexsort((order[at], ordered[at]))]
    return order


def _codes(indices: Any) -> np.ndarray:
    """A dictionary's indices as int64 codes, -1 for a null."""
    import pyarrow as pa

    if indices.null_count == 0:  # no mask to fill: numpy widens them, several times faster
        return np.asarray(indices.to_numpy(), dtype=np.int64)
    codes: np.ndarray = indices.cast(pa.int64()).fill_null(-1).to_numpy()
    return codes


def _taken(column: Any, order: np.ndarray) -> Any:
    """`column` (chunked) in `order`, as one array. Numbers with no null are gathered by
    numpy (a third of Arrow's `take` time); any other column by Arrow."""
    import pyarrow as pa

    kind = column.type
    if column.null_count == 0 and (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
        return pa.array(column.to_numpy()[order], type=kind)
    return column.take(pa.array(order)).combine_chunks()


def _dictionary_encode(column: Any) -> Any:
    """`column` (chunked) dictionary-encoded as one array."""
    import pyarrow.compute as pc

    return pc.dictionary_encode(column).combine_chunks()


def _combine(
    codes: np.ndarray, index: np.ndarray, count: int, size: int
) -> tuple[np.ndarray, int, np.ndarray | None]:
    """The codes of key tuples one column longer: (codes, their bound, the renumbering of
    the shorter codes if they were renumbered to stay small, else None)."""
    missing = (index < 0) | (codes < 0)
    renumbered = None
    if size * count >= CODE_LIMIT:  # keep the codes small: renumber the tuples seen
        renumbered, inverse = np.unique(np.where(missing, -1, codes), return_inverse=True)
        if len(renumbered) and renumbered[0] == -1:  # -1 is no tuple
            renumbered, inverse = renumbered[1:], inverse.reshape(-1) - 1
        codes = inverse.reshape(-1).astype(np.int64)
        size = len(renumbered) + 1
    combined = np.where(missing, -1, codes * count + index)
    return combined, size * max(count, 1), renumbered


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
