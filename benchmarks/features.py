"""Feature engine benchmark: offline training-set build rate and online lookup latency.

    .venv/bin/python benchmarks/features.py [--events 1000000] [--queries 100000]

Facts: `--events` orders over 10,000 shops spread across 30 days, appended to a fact log.
Offline: a point-in-time correct training set for `--queries` (shop, ts, label) rows with
10 window aggregations, built by DuckDB (rows/s), reading the facts from the log, then
again from a Parquet export of it (`gyre events export`; the same rows, checked). Online:
the same view rebuilt from the log, then single-entity lookups at the latest time (p50/p99
in microseconds), both of the bare store and as the server makes them
(`OnlineFeatures.vectors`: checking the log for new facts first, typing the entity key,
adding request-time features), and the restart path: saving the online state and restoring
it from that snapshot. Results go to benchmarks/results/features.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

import numpy as np

import gyre
from gyre.collect import EventType, SQLiteFactLog, export_parquet
from gyre.features import Aggregation, FeatureView, OnlineFeatures, OnlineStore, training_set
from gyre.monitor import DEFAULT_TOLERANCE, same_value

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "features.json"
DAY_US = 86_400_000_000
SHOPS = 10_000

ORDERS = EventType(
    "orders",
    {"id": "string", "shop": "int", "amount": "float", "items": "int", "kind": "string",
     "at": "timestamp"},
    ("shop",), "at", "id",
)  # fmt: skip
VIEW = FeatureView(
    "shop_orders",
    ORDERS,
    (
        Aggregation("count", None, "1h"),
        Aggregation("count", None, "1d"),
        Aggregation("count", None, "7d"),
        Aggregation("sum", "amount", "1d"),
        Aggregation("mean", "amount", "7d"),
        Aggregation("min", "amount", "7d"),
        Aggregation("max", "amount", "7d"),
        Aggregation("last", "kind", "1d"),
        Aggregation("distinct_count", "kind", "7d"),
        Aggregation("sum", "items", "7d"),
    ),
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--lookups", type=int, default=20_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    rng = random.Random(0)
    log = SQLiteFactLog(Path(tempfile.mkdtemp(prefix="gyre-features-")) / "facts.db")
    started = time.perf_counter()
    for start in range(0, args.events, 50_000):
        batch = [
            {"id": f"o{i}", "shop": rng.randrange(SHOPS), "amount": round(rng.uniform(5, 80), 2),
             "items": rng.randint(1, 6), "kind": rng.choice("abcdef"),
             "at": rng.randrange(30 * DAY_US)}
            for i in range(start, min(start + 50_000, args.events))
        ]  # fmt: skip
        log.append([(ORDERS, batch)])
    append_s = time.perf_counter() - started
    queries = [
        {"shop": rng.randrange(SHOPS), "ts": rng.randrange(7 * DAY_US, 30 * DAY_US),
         "label": rng.random() < 0.2}
        for _ in range(args.queries)
    ]  # fmt: skip
    started = time.perf_counter()
    rows = training_set(log, VIEW, queries)
    build_s = time.perf_counter() - started
    assert len(rows) == args.queries
    export = Path(tempfile.mkdtemp(prefix="gyre-export-"))
    started = time.perf_counter()
    export_parquet(log, ORDERS, export)
    export_s = time.perf_counter() - started
    started = time.perf_counter()
    from_parquet = training_set(log, VIEW, queries, export=export)
    parquet_build_s = time.perf_counter() - started
    # The same rows; floats may differ in the last bits (a mean's terms in another order).
    for a, b in zip(from_parquet, rows, strict=True):
        assert all(same_value(a[k], b[k], DEFAULT_TOLERANCE) for k in b), (a, b)
    del from_parquet
    online = OnlineStore(VIEW)
    started = time.perf_counter()
    online.rebuild(log)
    rebuild_s = time.perf_counter() - started
    now = 30 * DAY_US
    timings = []
    for _ in range(args.lookups):
        shop = rng.randrange(SHOPS)
        t0 = time.perf_counter()
        online.lookup({"shop": shop}, now)
        timings.append(time.perf_counter() - t0)
    micros = np.array(timings) * 1e6
    del online
    # Synthetic event times sit in 1970: no eviction by the wall clock.
    served = OnlineFeatures({VIEW.name: VIEW}, log.path, evict_interval_s=None)
    served.refresh()
    served.evict(now)  # what a server keeps: the facts its windows need
    snapshot = log.path.with_name("online.snapshot")
    started = time.perf_counter()
    served.save_snapshot(snapshot)
    snapshot_save_s = time.perf_counter() - started
    restored = OnlineFeatures({VIEW.name: VIEW}, log.path, evict_interval_s=None)
    started = time.perf_counter()
    assert restored.load_snapshot(snapshot)
    restored.refresh()
    snapshot_restore_s = time.perf_counter() - started
    restored.close()
    served_timings = []
    for _ in range(args.lookups):
        shop = rng.randrange(SHOPS)
        t0 = time.perf_counter()
        served.vectors(VIEW.name, [{"shop": shop}], [{}], at_us=now)
        served_timings.append(time.perf_counter() - t0)
    served.close()
    served_micros = np.array(served_timings) * 1e6
    results = {
        "events": args.events,
        "query_rows": args.queries,
        "aggregations": len(VIEW.aggregations),
        "fact_log_append_events_per_s": round(args.events / append_s),
        "offline_build_s": round(build_s, 2),
        "offline_rows_per_s": round(args.queries / build_s),
        "parquet_export_s": round(export_s, 2),
        "offline_from_parquet_build_s": round(parquet_build_s, 2),
        "offline_from_parquet_rows_per_s": round(args.queries / parquet_build_s),
        "online_rebuild_s": round(rebuild_s, 2),
        "online_snapshot_save_s": round(snapshot_save_s, 2),
        "online_snapshot_restore_s": round(snapshot_restore_s, 2),
        "online_snapshot_mib": round(snapshot.stat().st_size / 2**20, 1),
        "online_lookup_p50_us": round(float(np.percentile(micros, 50)), 1),
        "online_lookup_p99_us": round(float(np.percentile(micros, 99)), 1),
        "served_lookup_p50_us": round(float(np.percentile(served_micros, 50)), 1),
        "served_lookup_p99_us": round(float(np.percentile(served_micros, 99)), 1),
        "events_per_entity_in_7d": round(args.events / SHOPS * 7 / 30, 1),
        "machine": {"cpus": os.cpu_count(), "gyre": gyre.__version__,
                    "date": time.strftime("%Y-%m-%d")},
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
