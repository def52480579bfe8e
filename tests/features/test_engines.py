"""Offline (DuckDB) = online (incremental) = a brute-force reference, for random event
streams: every aggregation and window, out-of-order arrivals, equal timestamps."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyre.collect import EventType, SQLiteFactLog
from gyre.errors import ConfigError
from gyre.features import FUNCTIONS, Aggregation, FeatureView, OnlineStore, training_set

MINUTE = 60_000_000
ORDERS = EventType(
    "orders",
    {"id": "string", "shop": "int", "amount": "float", "items": "int", "kind": "string?",
     "at": "timestamp"},
    ("shop",), "at", "id",
)  # fmt: skip
AGGREGATIONS = tuple(
    Aggregation(function, column, window)
    for window in ("10m", "1h")
    for function, column in [
        ("count", None), ("sum", "amount"), ("mean", "amount"), ("min", "items"),
        ("max", "amount"), ("last", "kind"), ("distinct_count", "kind"), ("sum", "items"),
    ]
)  # fmt: skip
VIEW = FeatureView("shop_orders", ORDERS, AGGREGATIONS)


def reference(facts: list[dict[str, Any]], shop: int, ts: int) -> dict[str, Any]:
    """The definition, computed the slowest, plainest way."""
    out: dict[str, Any] = {}
    for agg in AGGREGATIONS:
        rows = [(f["at"], i, f) for i, f in enumerate(facts)
                if f["shop"] == shop and ts - agg.window_us < f["at"] <= ts]  # fmt: skip
        rows.sort(key=lambda r: r[:2])
        values = [f[agg.column] for _, _, f in rows if agg.column and f[agg.column] is not None]
        out[agg.name] = _plain(agg.function, len(rows), values)
    return out


def _plain(function: str, count: int, values: list[Any]) -> Any:
    if function == "count":
        return count
    if function == "distinct_count":
        return len(set(values))
    if not values:
        return 0 if function == "sum" else None
    if function == "sum":
        return sum(values)
    if function == "mean":
        return sum(values) / len(values)
    if function == "last":
        return values[-1]
    return min(values) if function == "min" else max(values)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return bool(a == b)


facts_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "shop": st.integers(0, 2),
            "amount": st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 2)),
            "items": st.integers(0, 5),
            "kind": st.none() | st.sampled_from(["a", "b", "c"]),
            "at": st.integers(0, 120).map(lambda m: m * MINUTE),  # many equal timestamps
        }
    ),
    max_size=40,
)
queries_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 150 * MINUTE)), min_size=1, max_size=15
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(facts=facts_strategy, queries=queries_strategy, order=st.randoms())
def test_offline_online_and_reference_agree(
    tmp_path_factory: pytest.TempPathFactory, facts: list[dict], queries: list, order: Any
) -> None:
    for i, fact in enumerate(facts):
        fact["id"] = f"o{i}"
    log = SQLiteFactLog(tmp_path_factory.mktemp("log") / "facts.db")
    arrival = list(facts)
    order.shuffle(arrival)  # events arrive out of order, in several batches
    for start in range(0, len(arrival), 7):
        log.append([(ORDERS, arrival[start : start + 7])])
    rows = [{"shop": shop, "ts": ts, "label": i} for i, (shop, ts) in enumerate(queries)]
    offline = training_set(log, VIEW, rows)
    online = OnlineStore(VIEW)
    online.rebuild(log)
    # The reference orders equal timestamps by arrival, as the log does.
    by_arrival = [dict(f) for f in arrival]
    for row, got in zip(rows, offline, strict=True):
        expected = reference(by_arrival, row["shop"], row["ts"])
        live = online.lookup({"shop": row["shop"]}, row["ts"])
        assert got["label"] == row["label"]
        for name, want in expected.items():
            assert same(got[name], want), (name, got[name], want)
            assert same(live[name], want), (name, live[name], want)
    log.close()


def test_a_training_set_streams_to_parquet_and_is_reproducible_at_a_watermark(
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [{"id": f"o{i}", "shop": 1, "amount": 1.0, "items": 1, "kind": "a",
                           "at": i * MINUTE} for i in range(10)])])  # fmt: skip
    mark = log.watermark()
    log.append([(ORDERS, [{"id": "late", "shop": 1, "amount": 9.0, "items": 1, "kind": None,
                           "at": 0}])])  # fmt: skip
    queries = [{"shop": 1, "ts": 9 * MINUTE}]
    then = training_set(log, VIEW, queries, watermark=mark, output=tmp_path / "train.parquet")
    now = training_set(log, VIEW, queries)
    assert then[0]["count_events_1h"] == 10 and now[0]["count_events_1h"] == 11
    assert pq.read_table(tmp_path / "train.parquet").to_pylist() == then


def test_the_online_store_evicts_what_no_window_needs() -> None:
    store = OnlineStore(VIEW)
    from gyre.collect import Fact

    store.update(Fact(i, "orders", i * MINUTE, {"shop": 1, "amount": 1.0, "items": 1,
                                                "kind": "a", "at": i * MINUTE})
                 for i in range(200))  # fmt: skip
    before = store.lookup({"shop": 1}, 200 * MINUTE)
    store.evict(200 * MINUTE)
    assert store.lookup({"shop": 1}, 200 * MINUTE) == before
    assert before["count_events_1h"] == 59
    assert sum(len(rows) for rows in store._state.values()) == 59


@pytest.mark.parametrize(
    ("aggregation", "message"),
    [
        (Aggregation("median", "amount", "1h"), "unknown function"),
        (Aggregation("sum", "kind", "1h"), "sum needs a number"),
        (Aggregation("max", "nope", "1h"), "`nope` is not a field"),
        (Aggregation("count", None, "1w"), "window '1w' must be"),
    ],
)
def test_bad_feature_definitions_are_refused(aggregation: Aggregation, message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        FeatureView("v", ORDERS, (aggregation,))
    assert message in str(caught.value)


def test_every_function_is_covered() -> None:
    assert {a.function for a in AGGREGATIONS} == set(FUNCTIONS)
