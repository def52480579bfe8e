"""The sorted-array window aggregations against the SQL engine on the paths the
conformance suite's small streams never take: times far apart (the rank fallback), keys of
two columns, NaN, and entity keys of two kinds."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from gyre.collect import EventType
from gyre.features import Aggregation, FeatureView, training_set, training_table
from gyre.features._windows import window_columns
from gyre.stores import Stores

HOUR = 3_600_000_000
FIELDS = {"id": "string", "shop": "int", "till": "string", "amount": "float", "at": "timestamp"}
SALES = EventType("sales", FIELDS, ("shop", "till"), "at", "id")
AGGS = tuple(
    Aggregation(f, c, w)
    for w in ("1h", "3000d")
    for f, c in [("count", None), ("sum", "amount"), ("mean", "amount"), ("min", "amount"),
                 ("max", "amount"), ("last", "amount"), ("distinct_count", "till")]
)  # fmt: skip
VIEW = FeatureView("tills", SALES, AGGS)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    return a == b


def test_arrays_equal_sql_for_two_column_keys_and_times_centuries_apart(tmp_path) -> None:
    rng = np.random.default_rng(0)
    log = Stores(tmp_path).open_fact_log()
    facts = [
        {"id": f"s{i}", "shop": int(rng.integers(0, 3)), "till": str(rng.choice(["a", "b"])),
         "amount": float(rng.normal()), "at": int(rng.integers(0, 2_000_000)) * HOUR}
        for i in range(400)
    ]  # fmt: skip
    log.append([(SALES, facts)])
    queries = [
        {"shop": int(rng.integers(0, 4)), "till": str(rng.choice(["a", "b", "c"])),
         "ts": int(rng.integers(0, 2_000_000)) * HOUR}
        for _ in range(200)
    ]  # fmt: skip
    want = training_set(log, VIEW, queries)
    got = training_table(log, VIEW, queries).to_pylist()
    log.close()
    for w, g in zip(want, got, strict=True):
        assert all(_same(g[k], v) for k, v in w.items()), (w, g)


def test_nan_is_the_max_of_its_range_and_the_min_only_alone() -> None:
    view = FeatureView("t", SALES, (Aggregation("min", "amount", "1h"),
                                    Aggregation("max", "amount", "1h")))  # fmt: skip
    facts = pa.table({"shop": [1, 1, 2], "till": ["a", "a", "a"],
                      "amount": [float("nan"), 2.0, float("nan")],
                      "_time": [0, 1, 0], "_seq": [1, 2, 3]})  # fmt: skip
    queries = pa.table({"shop": [1, 2], "till": ["a", "a"], "ts": [5, 5]})
    got = window_columns(facts, queries, view, list(view.aggregations))
    assert got is not None
    assert got["min_amount_1h"].to_pylist()[0] == 2.0
    assert math.isnan(got["min_amount_1h"].to_pylist()[1])
    assert all(math.isnan(v) for v in got["max_amount_1h"].to_pylist())


def test_entity_keys_of_two_kinds_are_left_to_sql() -> None:
    view = FeatureView("t", SALES, (Aggregation("count", None, "1h"),))
    facts = pa.table({"shop": [1], "till": ["a"], "_time": [0], "_seq": [1]})
    queries = pa.table({"shop": ["1"], "till": ["a"], "ts": [5]})
    assert window_columns(facts, queries, view, list(view.aggregations)) is None


def test_times_too_far_apart_for_one_key_are_ranked_first() -> None:
    """Codes times the span of the times would overflow int64: ranks keep the order."""
    view = FeatureView("t", SALES, (Aggregation("count", None, "1h"),
                                    Aggregation("sum", "amount", "1h")))  # fmt: skip
    far = 2**61
    facts = pa.table({"shop": [0, 0, 1, 1], "till": ["a", "a", "a", "a"],
                      "amount": [1.0, 2.0, 4.0, 8.0], "_time": [-far, far, -far, far - 1],
                      "_seq": [1, 2, 3, 4]})  # fmt: skip
    queries = pa.table({"shop": [0, 1, 1], "till": ["a", "a", "a"], "ts": [far, far, -far]})
    got = window_columns(facts, queries, view, list(view.aggregations))
    assert got is not None
    assert got["count_events_1h"].to_pylist() == [1, 1, 1]
    assert got["sum_amount_1h"].to_pylist() == [2.0, 8.0, 4.0]
