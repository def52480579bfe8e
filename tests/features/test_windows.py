"""The sorted-array window aggregations against the SQL engine on the paths the
conformance suite's small streams never take: times far apart (the rank fallback), keys of
two columns, NaN, and entity keys of two kinds."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from gyre.collect import EventType
from gyre.features import (
    Aggregation,
    FeatureView,
    index_view_facts,
    read_view_facts,
    training_set,
    training_table,
)
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


def _random_sales(rng: np.random.Generator, count: int, span: int) -> list[dict]:
    return [
        {"id": f"s{i}", "shop": int(rng.integers(0, 3)), "till": str(rng.choice(["a", "b"])),
         "amount": float(rng.normal()), "at": int(rng.integers(0, span)) * HOUR}
        for i in range(count)
    ]  # fmt: skip


def test_queries_outside_the_facts_times_and_keys_find_what_sql_finds(tmp_path) -> None:
    """The index spans the facts' own times: queries before the first fact, after the
    last, and for keys no fact has are clipped into it and find the same windows."""
    rng = np.random.default_rng(1)
    log = Stores(tmp_path).open_fact_log()
    log.append([(SALES, _random_sales(rng, 300, 500))])
    queries = [
        {"shop": int(rng.integers(0, 5)), "till": str(rng.choice(["a", "b", "z"])),
         "ts": int(rng.integers(-100, 700)) * HOUR}
        for _ in range(300)
    ]  # fmt: skip
    want = training_set(log, VIEW, queries)
    got = training_table(log, VIEW, queries).to_pylist()
    log.close()
    for w, g in zip(want, got, strict=True):
        assert all(_same(g[k], v) for k, v in w.items()), (w, g)


def test_renumbered_entity_codes_find_what_sql_finds(tmp_path, monkeypatch) -> None:
    """Key tuples whose codes would pass the limit are renumbered to those the facts have;
    a query's tuple is looked up in the same renumbering (a limit of 4 forces it here)."""
    monkeypatch.setattr("gyre.features._windows.CODE_LIMIT", 4)
    rng = np.random.default_rng(2)
    log = Stores(tmp_path).open_fact_log()
    log.append([(SALES, _random_sales(rng, 300, 50))])
    queries = [
        {"shop": int(rng.integers(0, 4)), "till": str(rng.choice(["a", "b", "c"])),
         "ts": int(rng.integers(0, 60)) * HOUR}
        for _ in range(200)
    ]  # fmt: skip
    want = training_set(log, VIEW, queries)
    got = training_table(log, VIEW, queries).to_pylist()
    log.close()
    assert any(g["count_events_3000d"] for g in got)
    for w, g in zip(want, got, strict=True):
        assert all(_same(g[k], v) for k, v in w.items()), (w, g)


def test_codes_and_times_too_wide_for_one_key_are_both_ranked(tmp_path, monkeypatch) -> None:
    """Where the entity codes' bound times the number of distinct times would pass the key
    limit (three key columns of millions of values each, say), the codes are replaced by
    their ranks among the facts' codes too, and the queries' looked up in them: int64 keys
    that wrapped around once found other entities' facts. A limit of 50 forces it here."""
    monkeypatch.setattr("gyre.features._windows.KEY_LIMIT", 50)
    rng = np.random.default_rng(5)
    log = Stores(tmp_path).open_fact_log()
    log.append([(SALES, _random_sales(rng, 300, 50))])
    queries = [
        {"shop": int(rng.integers(0, 5)), "till": str(rng.choice(["a", "b", "c", "z"])),
         "ts": int(rng.integers(0, 60)) * HOUR}
        for _ in range(200)
    ]  # fmt: skip
    mark = log.watermark()
    facts = index_view_facts(read_view_facts(log, VIEW, mark))
    assert facts.index is not None and facts.index._final is not None  # the codes were ranked
    want = training_set(log, VIEW, queries)
    got = training_table(log, VIEW, pa.Table.from_pylist(queries), watermark=mark,
                         facts=facts).to_pylist()  # fmt: skip
    log.close()
    assert any(g["count_events_3000d"] for g in got)
    for w, g in zip(want, got, strict=True):
        assert all(_same(g[k], v) for k, v in w.items()), (w, g)


def test_facts_read_and_indexed_once_serve_any_queries(tmp_path) -> None:
    rng = np.random.default_rng(3)
    log = Stores(tmp_path).open_fact_log()
    log.append([(SALES, _random_sales(rng, 200, 100))])
    mark = log.watermark()
    facts = index_view_facts(read_view_facts(log, VIEW, mark))
    for _ in range(2):
        queries = [{"shop": int(rng.integers(0, 3)), "till": "a",
                    "ts": int(rng.integers(0, 120)) * HOUR} for _ in range(50)]  # fmt: skip
        table = pa.Table.from_pylist(queries)
        got = training_table(log, VIEW, table, watermark=mark, facts=facts).to_pylist()
        assert got == training_table(log, VIEW, table, watermark=mark).to_pylist()
    with pytest.raises(ValueError, match="at log position"):
        training_table(log, VIEW, table, watermark=mark - 1, facts=facts)
    log.close()


def test_facts_of_one_entity_and_time_keep_their_log_order() -> None:
    """The index sorts unstably and puts each run of equal keys back in log order: the
    same order as a stable sort, ties or not."""
    from gyre.features._windows import _log_ordered_argsort

    rng = np.random.default_rng(4)
    for size in (0, 1, 2, 7, 1_000, 50_000):
        keys = rng.integers(0, max(size // 3, 1), size)
        assert np.array_equal(_log_ordered_argsort(keys), np.argsort(keys, kind="stable"))
