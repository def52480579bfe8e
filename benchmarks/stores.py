"""The store backends side by side, SQLite and PostgreSQL, in one run on this machine.

    .venv/bin/python benchmarks/stores.py [--seconds 10] [--moves 20]

1. Durable ingestion: wrk (a separate process) posts 1-event and 1,000-event requests of
   fresh clicks to a real `gyre serve --workers 1` at 1 and 16 connections, once with the
   fact log in SQLite and once in PostgreSQL, each answer sent after its commit is durable.
   The physical limit beside it, in the same run: a bare loop of `INSERT` + commit into a
   table with the same unique index, 1 and 1,000 rows a commit, on one connection
   (synchronous=FULL for SQLite, PostgreSQL's default synchronous_commit=on); and the
   fact log's own `append` called in process (what gyre's storage costs without HTTP).
2. How long an alias move takes to reach two replicas: two servers on loopback (their own
   homes and ports, one PostgreSQL database, one artifact folder), `Registry.set_alias`
   from this process after a random pause (so that moves land at any phase of the servers'
   500 ms polls), each server polled every 5 ms until it answers with the new version.
3. Registry operations at scale: one model with 10,000 versions (filled through the
   metadata store's `add_version`) and 100,000 alias changes in its change log (the rows
   `set_alias` writes, inserted in bulk with the backend's own driver: 100,000 real calls
   take 5 to 11 minutes here), each operation timed on a registry of one version first.

PostgreSQL 15 is started from tests/pgcluster.py (a throwaway cluster on loopback, fsync
on). The benchmark waits up to 5 minutes for the 1-minute load to fall under 1.5 and
records it. Results go to benchmarks/results/stores.json; the README's tables are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "stores.json"
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
from ingest import CONFIG as EVENTS_CONFIG  # noqa: E402
from ingest import run_case  # noqa: E402
from serve import ensure_wrk, free_port, log  # noqa: E402

from gyre.config import StoreConfig  # noqa: E402
from gyre.stores import Stores  # noqa: E402
from tests import pgcluster  # noqa: E402

# Why the benchmark's models hold champion/challenger without a `gyre evaluate`.
UNEVALUATED = "benchmark: a fixture model, not evaluated"

BACKENDS = ("sqlite", "postgresql")
ROW = [5.1, 3.5, 1.4, 0.2]
INFER = {"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": ROW}]}


# -- the machine and the database ---------------------------------------------------------


def wait_for_quiet(limit: float = 1.5, wait_s: float = 300.0) -> float:
    """The 1-minute load once it is under `limit`, or after `wait_s` whatever it is."""
    deadline = time.monotonic() + wait_s
    while (load := os.getloadavg()[0]) > limit and time.monotonic() < deadline:
        log(f"load {load:.2f} > {limit}: waiting (until {wait_s:.0f} s have passed)…")
        time.sleep(15)
    return load


class Postgres:
    """One throwaway cluster; `database()` makes a fresh database and gives its URL."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="gyre-bench-pg-"))
        self.cluster = pgcluster.start(self.folder)

    def database(self) -> str:
        import psycopg

        name = f"b_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.cluster.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.cluster.url(name)

    def stop(self) -> None:
        from gyre._postgres import close_pools

        close_pools()
        self.cluster.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def store_config(backend: str, pg: Postgres, artifacts: Path | None = None) -> StoreConfig:
    url = None if backend == "sqlite" else pg.database()
    return StoreConfig(url=url, artifacts=None if artifacts is None else str(artifacts))


def store_toml(config: StoreConfig) -> str:
    lines = [] if config.url is None else [f'url = "{config.url}"']
    if config.artifacts is not None:
        lines.append(f'artifacts = "{config.artifacts}"')
    return "[store]\n" + "\n".join(lines) + "\n" if lines else ""


@contextmanager
def serving(home: Path, config: Path, port: int) -> Iterator[str]:
    """A `gyre serve --workers 1` until the block ends; its URL once it is ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "gyre", "--home", str(home), "--config", str(config), "serve",
         "--port", str(port), "--grpc-port", "0", "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"gyre serve on {home} did not start")
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        yield url
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


# -- 1. durable ingestion -----------------------------------------------------------------


def event(prefix: str, i: int) -> dict[str, Any]:
    """A click as wrk's script makes them."""
    return {"id": f"{prefix}-{i}", "user": i % 1000, "page": f"/p/{i % 50}",
            "at": "2026-11-26T08:00:00Z"}  # fmt: skip


def timed_loop(step: Callable[[int], int], seconds: float) -> float:
    """Rows/s of `step(i)` (which stores rows and says how many) called for `seconds`."""
    rows, i = 0, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        rows += step(i)
        i += 1
    return rows / elapsed


def bare_sqlite(path: Path, per_commit: int, seconds: float) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE bare (seq INTEGER PRIMARY KEY, type TEXT, event_id TEXT, "
                 "payload TEXT)")  # fmt: skip
    conn.execute("CREATE UNIQUE INDEX bare_by_id ON bare (type, event_id)")

    def step(i: int) -> int:
        rows = [("clicks", f"{i}-{n}", json.dumps(event("b", n))) for n in range(per_commit)]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO bare (type, event_id, payload) VALUES (?, ?, ?)", rows)
        conn.execute("COMMIT")
        return per_commit

    try:
        return timed_loop(step, seconds)
    finally:
        conn.close()


def bare_postgres(url: str, per_commit: int, seconds: float) -> float:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bare (seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY "
                     "KEY, type TEXT, event_id TEXT, payload TEXT)")  # fmt: skip
        conn.execute("CREATE UNIQUE INDEX bare_by_id ON bare (type, event_id)")

        def step(i: int) -> int:
            ids = [f"{i}-{n}" for n in range(per_commit)]
            payloads = [json.dumps(event("b", n)) for n in range(per_commit)]
            conn.execute(  # one statement, one commit (autocommit)
                "INSERT INTO bare (type, event_id, payload) SELECT 'clicks', i, p "
                "FROM unnest(%s::text[], %s::text[]) AS r(i, p)",
                (ids, payloads),
            )
            return per_commit

        return timed_loop(step, seconds)


def fact_log_in_process(stores: Stores, per_commit: int, seconds: float) -> float:
    from gyre.collect import event_types
    from gyre.config import load_config

    config = stores.home.parent / "events.toml"
    config.write_text(EVENTS_CONFIG)
    event_type = event_types(load_config(home=stores.home, config_file=config).collect.events)[
        "clicks"
    ]
    fact_log = stores.open_fact_log()

    def step(i: int) -> int:
        batch = [event_type.validate(event(f"p{i}", n)) for n in range(per_commit)]
        fact_log.append([(event_type, batch)])
        return per_commit

    try:
        return timed_loop(step, seconds)
    finally:
        fact_log.close()


def ingestion(pg: Postgres, workdir: Path, seconds: float) -> dict[str, Any]:
    wrk = ensure_wrk()
    results: dict[str, Any] = {}
    for backend in BACKENDS:
        folder = workdir / f"ingest-{backend}"
        folder.mkdir()
        config = store_config(backend, pg)
        toml = folder / "gyre.toml"
        toml.write_text(store_toml(config) + EVENTS_CONFIG)
        cases: dict[str, Any] = {}
        with serving(folder / "home", toml, free_port()) as url:
            for per_request in (1, 1000):
                for connections in (1, 16):
                    case = f"{per_request}-event c={connections}"
                    cases[case] = run_case(wrk, f"{url}/v1/events/clicks", per_request,
                                           connections, seconds, folder)  # fmt: skip
                    log(f"{backend} {case}: {cases[case]}")
        limits: dict[str, float] = {}
        quick = max(2.0, seconds / 3)
        in_process = Stores(folder / "in-process", store_config(backend, pg))
        for rows in (1, 1000):
            if backend == "sqlite":
                limits[f"bare {rows}-row commits"] = bare_sqlite(folder / "bare.db", rows, quick)
                (folder / "bare.db").unlink()
            else:
                limits[f"bare {rows}-row commits"] = bare_postgres(pg.database(), rows, quick)
            limits[f"fact log append {rows}"] = fact_log_in_process(in_process, rows, quick)
        log(f"{backend} limits (rows/s): {limits}")
        for case, result in cases.items():
            rows = int(case.split("-")[0])
            result["of_bare_commits"] = round(
                result["events_per_s"] / limits[f"bare {rows}-row commits"], 3
            )
        results[backend] = {"cases": cases, "rows_per_s": {k: round(v) for k, v in
                                                          limits.items()}}  # fmt: skip
    return results


# -- 2. an alias move reaching two replicas -----------------------------------------------


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return {"p50_ms": round(statistics.median(ordered) * 1e3, 1),
            "p90_ms": round(p90 * 1e3, 1), "max_ms": round(ordered[-1] * 1e3, 1)}  # fmt: skip


def iris_model() -> tuple[Any, Any]:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    return LogisticRegression(max_iter=500).fit(x, y), x


def alias_reach(pg: Postgres, workdir: Path, moves: int) -> dict[str, Any]:
    from gyre.registry import Registry

    folder = workdir / "replicas"
    config = store_config("postgresql", pg, artifacts=folder / "shared-artifacts")
    toml = folder / "gyre.toml"
    folder.mkdir()
    toml.write_text(store_toml(config))
    registry = Registry(Stores(folder / "control", config))
    model, x = iris_model()
    registry.publish("iris", model, x, alias="champion", force_alias=UNEVALUATED)
    registry.publish("iris", model, x, force_new=True)
    with (
        serving(folder / "a" / "home", toml, free_port()) as first,
        serving(folder / "b" / "home", toml, free_port()) as second,
    ):
        clients = [httpx.Client(base_url=url, timeout=10) for url in (first, second)]

        def until(http: httpx.Client, version: str, since: float, out: list[float]) -> None:
            while http.post("/v2/models/iris/infer", json=INFER).json()["model_version"] != (
                version
            ):
                time.sleep(0.005)
            out.append(time.perf_counter() - since)

        for http in clients:  # both serve version 1 first
            until(http, "1", time.perf_counter(), [])
        per_replica: list[list[float]] = [[], []]
        both, writes = [], []
        pause = random.Random(0)
        for move in range(moves):
            version = 2 if move % 2 == 0 else 1
            time.sleep(pause.uniform(0.0, 0.5))  # a move lands at any phase of the polls
            reached: list[list[float]] = [[], []]
            since = time.perf_counter()
            registry.set_alias("iris", "champion", version, reason=UNEVALUATED, force=True)
            writes.append(time.perf_counter() - since)
            threads = [threading.Thread(target=until, args=(c, str(version), since, r))
                       for c, r in zip(clients, reached, strict=True)]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            for i in range(2):
                per_replica[i].append(reached[i][0])
            both.append(max(reached[0][0], reached[1][0]))
            log(f"move {move + 1}: both replicas serve version {version} after "
                f"{both[-1] * 1e3:.0f} ms")  # fmt: skip
        for http in clients:
            http.close()
    registry.close()
    return {"moves": moves, "reload_interval_ms": 500, "both": percentiles(both),
            "replica_a": percentiles(per_replica[0]), "replica_b": percentiles(per_replica[1]),
            "set_alias": percentiles(writes)}  # fmt: skip


# -- the run ------------------------------------------------------------------------------


def tables(results: dict[str, Any]) -> str:
    ingest = results["ingest"]
    lines = ["| case | SQLite events/s | of bare SQLite | PostgreSQL events/s | of bare PG |",
             "|---|---:|---:|---:|---:|"]  # fmt: skip
    for case in ingest["sqlite"]["cases"]:
        s, p = ingest["sqlite"]["cases"][case], ingest["postgresql"]["cases"][case]
        lines.append(f"| {case} | {s['events_per_s']:,.0f} | {s['of_bare_commits']:.2f} | "
                     f"{p['events_per_s']:,.0f} | {p['of_bare_commits']:.2f} |")  # fmt: skip
    lines += ["", "| rows/s, same run | SQLite | PostgreSQL |", "|---|---:|---:|"]
    for limit in ingest["sqlite"]["rows_per_s"]:
        lines.append(f"| {limit} | {ingest['sqlite']['rows_per_s'][limit]:,} | "
                     f"{ingest['postgresql']['rows_per_s'][limit]:,} |")  # fmt: skip
    reach = results["alias_reach"]
    lines += ["", "| alias move reaching | p50 ms | p90 ms | max ms |", "|---|---:|---:|---:|"]
    for who in ("replica_a", "replica_b", "both", "set_alias"):
        r = reach[who]
        lines.append(f"| {who} | {r['p50_ms']} | {r['p90_ms']} | {r['max_ms']} |")
    registry = results["registry"]
    versions = registry["sqlite"]["large"]["versions"]
    lines += ["", f"| p50 ms (max) | SQLite, 1 version | SQLite, {versions:,} | "
              f"PostgreSQL, 1 version | PostgreSQL, {versions:,} |",
              "|---|---:|---:|---:|---:|"]  # fmt: skip
    for op in registry["sqlite"]["large"]["operations"]:
        cells = []
        for backend in BACKENDS:
            for size in ("small", "large"):
                r = registry[backend][size]["operations"][op]
                cells.append(f"{r['p50_ms']:.3g} ({r['max_ms']:.3g})")
        lines.append(f"| {op} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from registry_scale import registry_ops

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="per wrk case")
    parser.add_argument("--moves", type=int, default=20)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--alias-changes", type=int, default=100_000)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--only", choices=["ingest", "alias_reach", "registry"],
        help="rerun one part, keeping the others' results in --output",
    )  # fmt: skip
    args = parser.parse_args()
    load = wait_for_quiet()
    log(f"1-minute load at the start: {load:.2f}")
    workdir = Path(tempfile.mkdtemp(prefix="gyre-bench-stores-"))
    pg = Postgres()
    results: dict[str, Any] = (
        json.loads(args.output.read_text()) if args.only and args.output.exists() else {}
    )
    try:
        if args.only in (None, "ingest"):
            results["ingest"] = ingestion(pg, workdir, args.seconds)
        if args.only in (None, "alias_reach"):
            results["alias_reach"] = alias_reach(pg, workdir, args.moves)
        if args.only in (None, "registry"):
            results["registry"] = {}
        for backend in BACKENDS if args.only in (None, "registry") else ():
            stores = Stores(workdir / f"registry-{backend}", store_config(backend, pg))
            results["registry"][backend] = registry_ops(stores, args.versions,
                                                        args.alias_changes)  # fmt: skip
            log(f"registry on {backend}: {results['registry'][backend]}")
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    import gyre

    results["machine"] = {
        "cpus": os.cpu_count(),
        "gyre": gyre.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "load_1m_at_start": round(load, 2),
        "load_1m_at_end": round(os.getloadavg()[0], 2),
        "seconds_per_case": args.seconds,
        "rerun_only": args.only,
        "postgresql": pgcluster.bindir().parent.name,
        "durability": "SQLite WAL synchronous=FULL; PostgreSQL fsync=on, synchronous_commit=on",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(tables(results))


if __name__ == "__main__":
    main()
