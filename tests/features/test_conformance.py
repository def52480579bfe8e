"""The feature-engine conformance suite: every engine (offline DuckDB, the online store,
the online follower a server runs) must compute exactly the definition, which a
brute-force reference spells out, over every fact-log backend (SQLite, PostgreSQL). A Spark
engine joins `ENGINES`."""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyre.collect import EventType, FactLog, export_parquet
from gyre.features import (
    FUNCTIONS,
    Aggregation,
    FeatureView,
    OnlineFeatures,
    OnlineStore,
    training_set,
    training_table,
)
from gyre.stores import Stores

MINUTE = 60_000_000
ORDERS = EventType(
    "orders",
    {"id": "string", "shop": "int", "amount": "float", "items": "int", "kind": "string?",
     "tip": "float?", "at": "timestamp"},
    ("shop",), "at", "id",
)  # fmt: skip
TRANSFORMS = {
    "gross": "amount * 2 + items",
    "log_tip": "log1p(coalesce(tip, 0) / items)",  # null when items = 0
    "per_item": "gross / items",
}
AGGREGATIONS = tuple(
    Aggregation(function, column, window)
    for window in ("10m", "1h")
    for function, column in [
        ("count", None), ("sum", "amount"), ("mean", "amount"), ("min", "items"),
        ("max", "amount"), ("last", "kind"), ("distinct_count", "kind"), ("sum", "items"),
        ("mean", "gross"), ("max", "log_tip"), ("last", "per_item"), ("sum", "tip"),
    ]
)  # fmt: skip
VIEW = FeatureView(
    "shop_orders", ORDERS, AGGREGATIONS, TRANSFORMS, {"basket": "float", "hour": "hour_of_day"}
)

Engine = Callable[[FactLog, FeatureView, Sequence[dict[str, Any]]], list[dict[str, Any]]]


def offline_engine(log: FactLog, view: FeatureView, queries: Sequence[dict]) -> list[dict]:
    return training_set(log, view, queries)


def parquet_engine(log: FactLog, view: FeatureView, queries: Sequence[dict]) -> list[dict]:
    """The offline engine reading a Parquet export of the log instead of the log."""
    folder = Path(tempfile.mkdtemp(prefix="gyre-export-"))
    try:
        export_parquet(log, view.source, folder)
        if not any(folder.rglob("*.parquet")):
            return training_set(log, view, queries)
        return training_set(log, view, queries, export=folder)
    finally:
        shutil.rmtree(folder)


def arrays_engine(log: FactLog, view: FeatureView, queries: Sequence[dict]) -> list[dict]:
    """The offline engine's training tables: window aggregations over sorted arrays."""
    rows: list[dict] = training_table(log, view, queries).to_pylist()
    return rows


def online_engine(log: FactLog, view: FeatureView, queries: Sequence[dict]) -> list[dict]:
    store = OnlineStore(view)
    store.rebuild(log)
    return [{**q, **store.lookup(q, q["ts"]), **view.request_values(q, q["ts"])} for q in queries]


def follower_engine(log: FactLog, view: FeatureView, queries: Sequence[dict]) -> list[dict]:
    follower = OnlineFeatures({view.name: view}, log)
    try:
        return [
            {**q, **follower.vectors(view.name, [q], [q], at_us=q["ts"])[0].values} for q in queries
        ]
    finally:
        follower.close()


ENGINES: dict[str, Engine] = {
    "offline-duckdb": offline_engine,
    "offline-duckdb-parquet": parquet_engine,
    "offline-arrays": arrays_engine,
    "online-store": online_engine,
    "online-follower": follower_engine,
}


@pytest.fixture(params=sorted(ENGINES))
def engine(request: pytest.FixtureRequest) -> Engine:
    return ENGINES[request.param]


@pytest.fixture
def log(stores: Stores) -> Iterator[FactLog]:
    """An empty fact log of each backend (`stores` is parametrized over them)."""
    opened = stores.open_fact_log(check_same_thread=False)
    yield opened
    opened.close()


def empty_log(stores: Stores, tmp_path_factory: pytest.TempPathFactory) -> FactLog:
    """A fact log with nothing in it, for one example of a property test."""
    if stores.config.url is None:
        return Stores(tmp_path_factory.mktemp("home")).open_fact_log(check_same_thread=False)
    import psycopg

    with psycopg.connect(stores.config.url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS facts, gyre_schema")
    return stores.open_fact_log()


# -- the reference: the definition, computed the slowest, plainest way ------------------------


def plain_transforms(fact: dict[str, Any]) -> dict[str, Any]:
    row = dict(fact)
    row["gross"] = fact["amount"] * 2.0 + fact["items"]
    tip = fact["tip"] if fact["tip"] is not None else 0.0
    ratio = tip / fact["items"] if fact["items"] else None
    row["log_tip"] = math.log(1.0 + ratio) if ratio is not None and ratio > -1 else None
    row["per_item"] = row["gross"] / fact["items"] if fact["items"] else None
    return row


def reference(facts: list[dict[str, Any]], query: dict[str, Any]) -> dict[str, Any]:
    """`facts` in arrival order."""
    out: dict[str, Any] = {}
    ts = query["ts"]
    for agg in AGGREGATIONS:
        rows = [(f["at"], i, plain_transforms(f)) for i, f in enumerate(facts)
                if f["shop"] == query["shop"] and ts - agg.window_us < f["at"] <= ts]  # fmt: skip
        rows.sort(key=lambda r: r[:2])
        values = [f[agg.column] for _, _, f in rows if agg.column and f[agg.column] is not None]
        out[agg.name] = _plain(agg.function, len(rows), values)
    out["basket"] = float(query["basket"])
    out["hour"] = (ts // 3_600_000_000) % 24
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


def assert_matches(got: list[dict], queries: list[dict], facts_by_arrival: list[dict]) -> None:
    assert len(got) == len(queries)
    for query, row in zip(queries, got, strict=True):
        assert row["label"] == query["label"]
        for name, want in reference(facts_by_arrival, query).items():
            assert same(row[name], want), (name, row[name], want, query)


# -- the suite --------------------------------------------------------------------------------

facts_strategy = st.lists(
    st.fixed_dictionaries(
        {
            "shop": st.integers(0, 2),
            "amount": st.floats(-100, 100, allow_nan=False).map(lambda x: round(x, 2)),
            "items": st.integers(0, 5),
            "kind": st.none() | st.sampled_from(["a", "b", "c"]),
            "tip": st.none() | st.floats(-3, 30, allow_nan=False).map(lambda x: round(x, 2)),
            "at": st.integers(0, 120).map(lambda m: m * MINUTE),  # many equal timestamps
        }
    ),
    max_size=40,
)
queries_strategy = st.lists(
    st.tuples(st.integers(0, 3), st.integers(0, 150 * MINUTE), st.integers(0, 9)),
    min_size=1,
    max_size=15,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(facts=facts_strategy, queries=queries_strategy, order=st.randoms())
def test_an_engine_computes_the_definition_for_random_streams(
    tmp_path_factory: pytest.TempPathFactory,
    stores: Stores,
    engine: Engine,
    facts: list[dict],
    queries: list,
    order: Any,
) -> None:
    for i, fact in enumerate(facts):
        fact["id"] = f"o{i}"
    log = empty_log(stores, tmp_path_factory)
    arrival = list(facts)
    order.shuffle(arrival)  # events arrive out of order, in several batches
    for start in range(0, len(arrival), 7):
        log.append([(ORDERS, arrival[start : start + 7])])
    rows = [{"shop": s, "ts": ts, "basket": b, "label": i} for i, (s, ts, b) in enumerate(queries)]
    assert_matches(engine(log, VIEW, rows), rows, arrival)
    log.close()


def order(i: int, at_minute: float, **fields: Any) -> dict[str, Any]:
    base = {"id": f"o{i}", "shop": 1, "amount": 1.0, "items": 1, "kind": "a", "tip": None}
    return {**base, **fields, "at": round(at_minute * MINUTE)}


def test_window_edges_equal_times_and_late_facts(log: FactLog, engine: Engine) -> None:
    log.append([(ORDERS, [
        order(0, 0, amount=5.0, kind="x"),     # exactly one hour before the query: outside 1h
        order(1, 50, amount=2.0, kind="b"),
        order(2, 60, amount=3.0, kind="c"),    # at the query time: inside
        order(3, 60, amount=4.0, kind="d"),    # same time, later arrival: the `last`
        order(4, 61, amount=100.0),            # after the query: never counts
    ])])  # fmt: skip
    log.append([(ORDERS, [order(5, 55, amount=7.0, kind=None)])])  # arrives late, lands inside
    got = engine(log, VIEW, [{"shop": 1, "ts": 60 * MINUTE, "basket": 2.5, "label": 0}])[0]
    assert got["count_events_1h"] == 4
    assert got["sum_amount_1h"] == 16.0
    assert got["last_kind_1h"] == "d"
    assert got["count_events_10m"] == 3  # the fact at minute 50 is on the edge: outside
    assert got["max_amount_10m"] == 7.0
    assert got["distinct_count_kind_1h"] == 3
    assert (got["basket"], got["hour"]) == (2.5, 1)


def test_an_entity_without_facts_gets_the_empty_values(log: FactLog, engine: Engine) -> None:
    log.append([(ORDERS, [order(0, 0)])])
    got = engine(log, VIEW, [{"shop": 9, "ts": MINUTE, "basket": 0, "label": 0}])[0]
    assert got["count_events_1h"] == 0 and got["sum_amount_1h"] == 0
    assert got["mean_amount_1h"] is None and got["last_kind_1h"] is None
    assert got["distinct_count_kind_1h"] == 0


def test_transforms_follow_the_null_rules(log: FactLog, engine: Engine) -> None:
    log.append([(ORDERS, [order(0, 0, items=0, tip=5.0), order(1, 1, items=2, tip=None)])])
    got = engine(log, VIEW, [{"shop": 1, "ts": MINUTE, "basket": 0, "label": 0}])[0]
    assert got["max_log_tip_1h"] == 0.0  # items=0 divides by zero: null, skipped; coalesce -> 0
    assert got["last_per_item_1h"] == 2.0  # (1*2 + 2) / 2
    assert got["mean_gross_1h"] == 3.0  # (2 + 0 + 2 + 2) / 2


def test_every_function_is_covered() -> None:
    assert {a.function for a in AGGREGATIONS} == set(FUNCTIONS)
