"""The run-store conformance suite: every implementation (SQLite under the home,
PostgreSQL) must behave as the plain-dict reference (`Reference`) does for any sequence of
writes, and search as the reference's own evaluation of a filter and an order does; plus
what a reference cannot show: run-id prefixes, several writers at once (threads on one
run, processes on several), and the schema's migrations."""

from __future__ import annotations

import functools
import json
import multiprocessing
import operator
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyre.config import StoreConfig
from gyre.errors import RunError, RunNotFound, StoreError
from gyre.learn import MetricPoint, Run, RunStore
from gyre.learn._runstore import SCHEMA_VERSION
from gyre.stores import Stores

TABLES = "runs, run_params, run_metrics, run_latest, run_tags, run_records"


@pytest.fixture
def store(stores: Stores) -> Iterator[RunStore]:
    opened = stores.open_runs()
    yield opened
    opened.close()


def _fresh(stores: Stores) -> RunStore:
    """An empty store: a new home, or the database's run tables dropped."""
    if stores.config.url is None:
        import shutil

        shutil.rmtree(stores.home, ignore_errors=True)
    else:
        import psycopg

        with psycopg.connect(stores.config.url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {TABLES}, gyre_schema")
    return stores.open_runs()


# -- the reference: the rules of gyre/learn/_runs.py and _filter.py on plain dicts ---------


class Reference:
    def __init__(self) -> None:
        self.runs: dict[str, dict[str, Any]] = {}
        self.order: list[str] = []

    def create(self, run: Run, tags: dict[str, str]) -> None:
        self.order.append(run.run_id)
        self.runs[run.run_id] = {
            "run": run, "status": "running", "error": None, "params": {}, "points": [],
            "tags": dict(tags), "record": {},
        }  # fmt: skip

    def log(self, run_id: str, params: dict[str, Any], points: list[MetricPoint],
            tags: dict[str, str]) -> str | None:  # fmt: skip
        """None when the batch is taken, else the part of the error it must raise."""
        run = self.runs[run_id]
        if run["status"] != "running":
            return "has ended"
        for key, value in sorted(params.items()):  # the first refused, in key order
            if key in run["params"] and _text(run["params"][key]) != _text(value):
                return f"param `{key}`"
        run["params"].update(params)
        run["points"].extend(points)
        run["tags"].update(tags)
        return None

    def latest(self, run_id: str) -> dict[str, float]:
        found: dict[str, MetricPoint] = {}
        for point in self.runs[run_id]["points"]:  # the highest step; ties to the last
            if point.key not in found or point.step >= found[point.key].step:
                found[point.key] = point
        return {k: p.value for k, p in found.items()}

    def history(self, run_id: str, key: str) -> list[MetricPoint]:
        points = [p for p in self.runs[run_id]["points"] if p.key == key]
        return sorted(points, key=lambda p: p.step)  # stable: write order within a step


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


MISSING = object()


def field_value(ref: Reference, run_id: str, kind: str, key: str, ended_at: float | None) -> Any:
    run = ref.runs[run_id]
    if kind == "metrics":
        return ref.latest(run_id).get(key, MISSING)
    if kind in ("params", "tags"):
        return run[kind].get(key, MISSING)
    attributes = {
        "status": run["status"], "name": run["run"].name, "experiment": run["run"].experiment,
        "run_id": run_id, "started_at": run["run"].started_at, "ended_at": ended_at,
    }  # fmt: skip
    value = attributes[key]
    return MISSING if value is None else value


OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
       ">": operator.gt, ">=": operator.ge}  # fmt: skip


def matches(value: Any, kind: str, op: str, literal: float | str) -> bool:
    if value is MISSING:
        return False
    if kind == "params":
        if isinstance(literal, str):
            value = value if isinstance(value, str) else _text(value)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return False
    return bool(OPS[op](value, literal))


def sort_parts(value: Any, kind: str) -> tuple[int, list[Any]]:
    """(group, values): the group sorts ascending in every direction (numbers before text,
    missing last); the values in the order's direction."""
    if value is MISSING:
        return 2, []
    if kind == "params":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return 0, [float(value), _text(value)]
        return 1, [value if isinstance(value, str) else _text(value)]
    return 0, [value]


def reference_search(
    ref: Reference, ended: dict[str, float], comparisons: list[tuple[str, str, str, Any]],
    orders: list[tuple[str, str, bool]], limit: int,
) -> list[str]:  # fmt: skip
    found = [
        run_id
        for run_id in ref.order
        if all(
            matches(field_value(ref, run_id, kind, key, ended.get(run_id)), kind, op, literal)
            for kind, key, op, literal in comparisons
        )
    ]
    terms = [*orders, ("attributes", "started_at", True), ("attributes", "run_id", False)]

    def compare(a: str, b: str) -> int:
        for kind, key, descending in terms:
            ga, va = sort_parts(field_value(ref, a, kind, key, ended.get(a)), kind)
            gb, vb = sort_parts(field_value(ref, b, kind, key, ended.get(b)), kind)
            if ga != gb:
                return -1 if ga < gb else 1
            for x, y in zip(va, vb, strict=True):
                if x != y:
                    return (1 if x < y else -1) if descending else (-1 if x < y else 1)
        return 0

    return sorted(found, key=functools.cmp_to_key(compare))[:limit]


# -- strategies ------------------------------------------------------------------------------

TEXT = st.text(alphabet="ab3 é中'\"", max_size=4)
PARAM_VALUES = st.one_of(
    st.integers(-3, 3), st.floats(-4, 4, allow_nan=False).map(lambda x: round(x, 2)),
    TEXT, st.booleans(), st.none(), st.lists(st.integers(0, 2), max_size=2),
)  # fmt: skip
PARAM_KEYS = st.sampled_from(["depth", "lr", "model.kind"])
METRIC_KEYS = st.sampled_from(["auc", "loss", "val-loss"])
TAG_KEYS = st.sampled_from(["team", "stage"])
POINTS = st.lists(
    st.builds(MetricPoint, METRIC_KEYS, st.integers(-3, 3).map(lambda v: v / 4),
              st.integers(0, 3), st.just(1.0)),
    max_size=6,
)  # fmt: skip
operation = st.one_of(
    st.tuples(st.just("create"), st.sampled_from(["x", "y"]), TEXT,
              st.dictionaries(TAG_KEYS, TEXT, max_size=1)),
    st.tuples(st.just("log"), st.integers(0, 5), st.dictionaries(PARAM_KEYS, PARAM_VALUES,
              max_size=2), POINTS, st.dictionaries(TAG_KEYS, TEXT, max_size=2)),
    st.tuples(st.just("record"), st.integers(0, 5), st.sampled_from(["lineage", "timings_s"]),
              PARAM_VALUES),
    st.tuples(st.just("end"), st.integers(0, 5), st.sampled_from(["finished", "failed",
              "interrupted"])),
)  # fmt: skip


def quoted(key: str) -> str:
    return key if key.replace("_", "").isalnum() else f"`{key}`"


def literal_text(value: float | str) -> str:
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


COMPARISON = st.one_of(
    st.tuples(st.just("metrics"), METRIC_KEYS, st.sampled_from(list(OPS)),
              st.integers(-3, 3).map(lambda v: v / 4)),
    st.tuples(st.just("params"), PARAM_KEYS, st.sampled_from(list(OPS)),
              st.one_of(st.integers(-3, 3).map(float), TEXT, st.just("true"), st.just("[1]"))),
    st.tuples(st.just("tags"), TAG_KEYS, st.sampled_from(list(OPS)), TEXT),
    st.tuples(st.just("attributes"), st.sampled_from(["status"]), st.sampled_from(["=", "!="]),
              st.sampled_from(["running", "finished", "failed"])),
    st.tuples(st.just("attributes"), st.sampled_from(["name", "experiment"]),
              st.sampled_from(list(OPS)), TEXT),
)  # fmt: skip
ORDER = st.tuples(
    st.sampled_from(["metrics", "params", "tags", "attributes"]), st.integers(0, 2), st.booleans()
)


def order_field(kind: str, pick: int) -> str:
    keys = {
        "metrics": ["auc", "loss", "val-loss"],
        "params": ["depth", "lr", "model.kind"],
        "tags": ["team", "stage", "team"],
        "attributes": ["name", "ended_at", "status"],
    }
    return keys[kind][pick]


def render(kind: str, key: str) -> str:
    return key if kind == "attributes" else f"{kind}.{quoted(key)}"


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    operations=st.lists(operation, max_size=20),
    searches=st.lists(
        st.tuples(st.lists(COMPARISON, max_size=3), st.lists(ORDER, max_size=2),
                  st.integers(1, 8)),
        min_size=1, max_size=6,
    ),
)  # fmt: skip
def test_the_store_follows_the_reference(
    stores: Stores, operations: list[tuple[Any, ...]], searches: list[Any]
) -> None:
    store = _fresh(stores)
    ref = Reference()
    ended: dict[str, float] = {}
    try:
        for op, *args in operations:
            if op == "create":
                experiment, name, tags = args
                run = store.create_run(experiment, name, tags=tags)
                assert (run.status, run.experiment, run.name, run.tags) == (
                    "running", experiment, name, tags
                )  # fmt: skip
                ref.create(run, tags)
                continue
            if not ref.order:
                continue
            run_id = ref.order[args[0] % len(ref.order)]
            if op == "log":
                params, points, tags = args[1:]
                expected = ref.log(run_id, params, points, tags)
                if expected is None:
                    store.log_batch(run_id, params=params, metrics=points, tags=tags)
                else:
                    with pytest.raises(RunError, match=expected):
                        store.log_batch(run_id, params=params, metrics=points, tags=tags)
            elif op == "record":
                section, value = args[1:]
                store.set_record(run_id, section, value)
                ref.runs[run_id]["record"][section] = value
            else:
                (status,) = args[1:]
                if ref.runs[run_id]["status"] == "running":
                    store.end_run(run_id, status, error=f"why {status}")
                    ref.runs[run_id].update(status=status, error=f"why {status}")
                    ended[run_id] = store.get(run_id).ended_at or 0.0
                else:
                    with pytest.raises(RunError, match="has ended already"):
                        store.end_run(run_id, status)
        for run_id, expected in ref.runs.items():
            found = store.get(run_id[:7])
            assert (found.run_id, found.status, found.error) == (
                run_id, expected["status"], expected["error"]
            )  # fmt: skip
            assert (found.params, found.tags, found.record) == (
                expected["params"], expected["tags"], expected["record"]
            )  # fmt: skip
            assert found.metrics == ref.latest(run_id)
            for key in found.metrics:
                history = ref.history(run_id, key)
                assert store.metric_history(run_id, key) == history
                assert found.metric_counts[key] == len(history)
            assert (found.ended_at is None) == (expected["status"] == "running")
        for comparisons, orders, limit in searches:
            text = " and ".join(
                f"{render(kind, key)} {op} {literal_text(value)}"
                for kind, key, op, value in comparisons
            )
            order_fields = [(k, order_field(k, pick), desc) for k, pick, desc in orders]
            order_by = [f"{render(k, key)}{' desc' if d else ''}" for k, key, d in order_fields]
            found_ids = [r.run_id for r in store.search(text, order_by=order_by, limit=limit)]
            assert found_ids == reference_search(ref, ended, comparisons, order_fields, limit), (
                text, order_by,
            )  # fmt: skip
        for experiment in ("x", "y"):
            assert [r.run_id for r in store.search(experiment=experiment, limit=50)] == [
                r for r in reference_search(ref, ended, [], [], 50)
                if ref.runs[r]["run"].experiment == experiment
            ]  # fmt: skip
    finally:
        store.close()


def test_a_param_is_written_once_and_a_refused_batch_writes_nothing(store: RunStore) -> None:
    run = store.create_run("eta")
    store.log_batch(run.run_id, params={"depth": 3, "layers": [64, 32]})
    store.log_batch(run.run_id, params={"depth": 3, "layers": [64, 32]})  # the same again
    point = MetricPoint("loss", 0.5, 0, 1.0)
    with pytest.raises(RunError, match=r"param `depth` of run .* is 3; it cannot become 3.0"):
        store.log_batch(run.run_id, params={"depth": 3.0}, metrics=[point], tags={"t": "x"})
    found = store.get(run.run_id)
    assert (found.params, found.metrics, found.tags) == ({"depth": 3, "layers": [64, 32]}, {}, {})
    store.end_run(run.run_id, "finished")
    with pytest.raises(RunError, match=r"has ended \(finished\).*start a new run"):
        store.log_batch(run.run_id, metrics=[point])
    store.set_record(run.run_id, "verified", {"ok": True})  # records may come after the end
    assert store.get(run.run_id).record == {"verified": {"ok": True}}


def test_bad_input_is_refused_with_what_to_do(store: RunStore) -> None:
    run = store.create_run("eta")
    cases: list[tuple[Any, str]] = [
        (lambda: store.log_batch(run.run_id, params={"bad key!": 1}), "param key 'bad key!'"),
        (lambda: store.log_batch(run.run_id, params={"x": float("nan")}), "not a JSON value"),
        (lambda: store.log_batch(run.run_id, params={"x": object()}), "not a JSON value"),
        (lambda: store.log_batch(run.run_id, params={"x": "a\x00b"}), "NUL"),
        (lambda: store.log_batch(run.run_id, metrics=[MetricPoint("m", float("inf"), 0, 1.0)]),
         "not a finite number"),
        (lambda: store.log_batch(run.run_id, metrics=[MetricPoint("m", 1.0, 2**63, 1.0)]),
         "64-bit integer"),
        (lambda: store.log_batch(run.run_id, tags={"t": 3}), "must be text"),
        (lambda: store.end_run(run.run_id, "running"), "not one of finished, failed"),
        (lambda: store.create_run(""), "experiment"),
        (lambda: store.create_run("eta", "two\nlines"), "one line"),
        (lambda: store.set_record(run.run_id, "s", {1j}), "not a JSON value"),
    ]  # fmt: skip
    for call, message in cases:
        with pytest.raises(RunError, match=message):
            call()
    assert store.get(run.run_id).params == {}


def _set_id(stores: Stores, old: str, new: str) -> None:
    """Give a run a chosen id (two ids sharing a prefix cannot be drawn at random)."""
    if stores.config.url is None:
        with sqlite3.connect(stores.runs_path) as conn:
            conn.execute("UPDATE runs SET run_id = ? WHERE run_id = ?", (new, old))
        conn.close()
        return
    import psycopg

    with psycopg.connect(stores.config.url, autocommit=True) as pg:
        pg.execute("UPDATE runs SET run_id = %s WHERE run_id = %s", (new, old))


def test_a_run_is_found_by_its_id_or_a_unique_prefix(stores: Stores, store: RunStore) -> None:
    first, second = store.create_run("eta", "a"), store.create_run("eta", "b")
    _set_id(stores, first.run_id, "abcdef" + "0" * 26)
    _set_id(stores, second.run_id, "abcdef" + "1" * 26)
    assert store.get("abcdef0").name == "a"
    assert store.get("ABCDEF1").name == "b"  # ids are hex: any case
    assert store.get("abcdef" + "1" * 26).name == "b"
    with pytest.raises(RunNotFound, match=r"prefix 'abcdef' matches two runs .*give more"):
        store.get("abcdef")
    with pytest.raises(RunNotFound, match=r"no run id starts with 'abcdee'.*gyre runs list"):
        store.get("abcdee")
    with pytest.raises(RunNotFound, match="no run has id"):
        store.metric_history("f" * 32, "loss")
    with pytest.raises(RunNotFound, match="too short: give at least 6"):
        store.get("abc")
    with pytest.raises(RunNotFound, match="is not a run id"):
        store.get("not-an-id")
    with pytest.raises(RunNotFound, match="whole id"):
        store.end_run("abcdef0", "finished")


def test_writers_on_threads_of_one_run_lose_nothing(stores: Stores) -> None:
    run = stores.open_runs().create_run("eta")
    writers = [stores.open_runs() for _ in range(4)]

    def write(number: int) -> None:
        for batch in range(25):
            points = [MetricPoint("loss", float(number), batch, 1.0) for _ in range(8)]
            writers[number].log_batch(run.run_id, metrics=points, tags={f"t{number}": "x"})

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    reader = writers[0]
    history = reader.metric_history(run.run_id, "loss")
    assert len(history) == 4 * 25 * 8
    assert sorted((p.step, p.value) for p in history) == sorted(
        (b, float(n)) for n in range(4) for b in range(25) for _ in range(8)
    )
    found = reader.get(run.run_id)
    assert found.metric_counts == {"loss": 800} and len(found.tags) == 4
    for each in writers:
        each.close()


def _log_many(config: StoreConfig, home: str, queue: multiprocessing.Queue[str]) -> None:
    store = Stores(Path(home), config).open_runs()
    run = store.create_run("race")
    for batch in range(10):
        points = [MetricPoint("loss", float(i), batch * 50 + i, 1.0) for i in range(50)]
        store.log_batch(run.run_id, metrics=points, params={f"p{batch}": batch})
    store.end_run(run.run_id, "finished")
    store.close()
    queue.put(run.run_id)


def test_processes_writing_their_own_runs_lose_nothing(stores: Stores, store: RunStore) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[str] = ctx.Queue()
    workers = [
        ctx.Process(target=_log_many, args=(stores.config, str(stores.home), queue))
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    run_ids = sorted(queue.get(timeout=5) for _ in range(3))
    assert sorted(r.run_id for r in store.search("experiment = 'race'")) == run_ids
    for run_id in run_ids:
        history = store.metric_history(run_id, "loss")
        assert [p.step for p in history] == list(range(500))
        assert store.get(run_id).params == {f"p{b}": b for b in range(10)}


def test_a_new_store_is_made_from_nothing_beside_the_registry(stores: Stores) -> None:
    metadata = stores.open_metadata()  # the same database (or home) holds both
    store = stores.open_runs()
    run = store.create_run("eta")
    store.close()
    metadata.close()
    if stores.config.url is None:
        with sqlite3.connect(stores.runs_path) as conn:
            assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        conn.close()
    else:
        import psycopg

        with psycopg.connect(stores.config.url, autocommit=True) as pg:
            rows = pg.execute("SELECT name, version FROM gyre_schema ORDER BY name").fetchall()
        assert ("runs", SCHEMA_VERSION) in rows and any(name == "registry" for name, _ in rows)
    reopened = stores.open_runs()  # the made schema opens as it is
    assert reopened.get(run.run_id).experiment == "eta"
    reopened.close()


def test_a_newer_schema_is_refused(stores: Stores) -> None:
    stores.open_runs().close()
    if stores.config.url is None:
        with sqlite3.connect(stores.runs_path) as conn:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        conn.close()
    else:
        import psycopg

        with psycopg.connect(stores.config.url, autocommit=True) as pg:
            pg.execute("UPDATE gyre_schema SET version = version + 1 WHERE name = 'runs'")
    with pytest.raises(StoreError, match=f"version {SCHEMA_VERSION + 1}"):
        stores.open_runs()
