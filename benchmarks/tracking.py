"""Tracking: gyre's runs against MLflow's own client, in one run on this machine.

    .venv/bin/python benchmarks/tracking.py [--calls 100000] [--runs 10000]

1. Logging. The in-process cost of one `log_metric` call (each call timed alone with
   perf_counter_ns, p50 and p99 over --calls calls inside a run), and points durably
   written per second (--points points logged as fast as the loop goes, then `flush()`:
   points / time until the flush returns). gyre's `ActiveRun.log_metric` on SQLite under
   the home and on PostgreSQL, against MLflow's `mlflow.log_metric` logging to a local
   SQLite tracking store (`sqlite:///…`, its strongest local store), as it is by default
   (synchronous) and with
   `synchronous=False` (MLflow's async logging, until `flush_async_logging()` returns),
   and MLflow's `log_batch` with 1,000 metrics a call. MLflow's calls are fewer
   (--mlflow-calls): at milliseconds a call, 100,000 would take minutes.
2. Search. --runs runs, each with the same 10 params and 5 metrics of --points-per-metric
   steps in both (10: MLflow's client takes 16 ms a run at 10, 27 ms at 50; drawn from
   one seeded generator), created through gyre's store API
   (`create_run`, `log_batch`, `end_run`) and MLflow's client (`create_run`, `log_batch`,
   `set_terminated`); then the filter `metrics.auc > 0.8 and params.max_depth = 3` (in
   MLflow `params.max_depth = '3'`: its params are strings), the first 100 runs newest
   first in both, timed --repeats times after one call not counted (reported apart as
   the first): gyre's `search` on SQLite and on PostgreSQL, MLflow's `search_runs`, and
   the wall time of the command `gyre runs list --filter …` (a new Python process each
   time: its imports included). Both return the same number of matching runs (checked).

PostgreSQL 15 is started from tests/pgcluster.py (a throwaway cluster on loopback, fsync
on). MLflow is installed in a benchmark-only virtual environment under the temporary
folder (mlflow 3.17.2: the package index here has no mlflow-skinny 3.18.0, which
mlflow 3.18.0 requires). Results go to benchmarks/results/tracking.json; the README's
table is printed.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "tracking.json"
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
from peers import peer_python  # noqa: E402
from serve import log  # noqa: E402
from stores import Postgres  # noqa: E402

from gyre.config import StoreConfig  # noqa: E402
from gyre.learn import MetricPoint, start_run  # noqa: E402
from gyre.stores import Stores  # noqa: E402
from tests import pgcluster  # noqa: E402

MLFLOW_VERSION = "3.17.2"
FILTER = "metrics.auc > 0.8 and params.max_depth = 3"
MLFLOW_FILTER = "metrics.auc > 0.8 and params.max_depth = '3'"
PAGE = 100


def run_values(i: int, points: int) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """Run `i`'s 10 params and 5 metrics (`points` values each, the last the final one):
    the same in both systems (this function's source is sent to MLflow's process)."""
    rng = random.Random(i)
    params = {
        "max_depth": rng.choice([2, 3, 4, 5, 6]),
        "learning_rate": rng.choice([0.01, 0.03, 0.1, 0.3]),
        "n_estimators": rng.choice([100, 200, 400]),
        "subsample": rng.choice([0.6, 0.8, 1.0]),
        "colsample": rng.choice([0.5, 0.7, 1.0]),
        "min_child": rng.randint(1, 20),
        "reg_lambda": rng.choice([0.0, 0.1, 1.0, 10.0]),
        "objective": rng.choice(["binary", "cross_entropy"]),
        "seed": i,
        "features": rng.choice(["v1", "v2", "v3"]),
    }
    final = {
        "auc": rng.uniform(0.5, 1.0),
        "loss": rng.uniform(0.1, 1.0),
        "accuracy": rng.uniform(0.5, 1.0),
        "f1": rng.uniform(0.3, 1.0),
        "rmse": rng.uniform(0.1, 2.0),
    }
    metrics = {
        key: [value * (1 + (points - 1 - s) * 0.01) for s in range(points)]
        for key, value in final.items()
    }
    return params, metrics


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    ordered = sorted(samples_ns)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return {
        "p50_us": round(statistics.median(ordered) / 1e3, 3),
        "p99_us": round(p99 / 1e3, 3),
        "mean_us": round(statistics.fmean(ordered) / 1e3, 3),
        "calls": len(ordered),
    }


def timer_floor_ns(calls: int) -> float:
    """What timing with perf_counter_ns costs by itself (p50 of an empty pair)."""
    clock = time.perf_counter_ns
    samples = []
    for _ in range(calls):
        start = clock()
        samples.append(clock() - start)
    return statistics.median(samples)


# -- 1. logging ---------------------------------------------------------------------------


def gyre_logging(stores: Stores, calls: int, points: int) -> dict[str, Any]:
    clock = time.perf_counter_ns
    with start_run("logging", stores=stores) as run:
        for step in range(1000):  # warm
            run.log_metric("warm", 1.0, step=step)
        samples = [0] * calls
        for step in range(calls):
            value = 1.0 / (step + 1)
            start = clock()
            run.log_metric("loss", value, step=step)
            samples[step] = clock() - start
        run.flush()
        start = clock()
        for step in range(points):
            run.log_metric("throughput", 0.5, step=step)
        logged = clock() - start
        run.flush()
        durable = clock() - start
    store = stores.open_runs()
    assert store.get(run.id).metric_counts["throughput"] == points
    store.close()
    return {
        "log_metric": percentiles_us(samples),
        "points_per_s_durable": round(points / (durable / 1e9)),
        "points_per_s_logged": round(points / (logged / 1e9)),
        "points": points,
    }


MLFLOW_LOGGING = """
import json, statistics, sys, time
import mlflow
from mlflow import MlflowClient
from mlflow.entities import Metric

args = json.loads(sys.argv[1])
mlflow.set_tracking_uri(args["uri"])
mlflow.set_experiment("logging")
clock = time.perf_counter_ns
out = {}
with mlflow.start_run() as run:
    for step in range(20):  # warm
        mlflow.log_metric("warm", 1.0, step=step)
    for mode, synchronous in (("log_metric", True), ("log_metric_async", False)):
        samples = []
        start = clock()
        for step in range(args["calls"]):
            value = 1.0 / (step + 1)
            t0 = clock()
            mlflow.log_metric(mode, value, step=step, synchronous=synchronous)
            samples.append(clock() - t0)
        logged = clock() - start
        mlflow.flush_async_logging()
        durable = clock() - start
        out[mode] = {"samples_ns": samples, "logged_ns": logged, "durable_ns": durable}
    client = MlflowClient(args["uri"])
    batch_points = args["batches"] * 1000
    start = clock()
    for b in range(args["batches"]):
        ts = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric("batched", 0.5, ts, b * 1000 + s)
                                                   for s in range(1000)])
    out["log_batch"] = {"points": batch_points, "durable_ns": clock() - start}
    history = client.get_metric_history(run.info.run_id, "log_metric")
    assert len(history) == args["calls"], len(history)
print(json.dumps(out))
"""


def mlflow_python(venv: Path) -> Path:
    """The benchmark-only environment's Python, with mlflow installed (made if absent)."""
    return peer_python(venv, "mlflow", MLFLOW_VERSION, ())


def run_mlflow(python: Path, script: str, args: dict[str, Any]) -> Any:
    env = {**os.environ, "MLFLOW_ENABLE_ASYNC_LOGGING": "false", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [str(python), "-c", script, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"the MLflow part failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def mlflow_logging(python: Path, workdir: Path, calls: int) -> dict[str, Any]:
    raw = run_mlflow(
        python,
        MLFLOW_LOGGING,
        {"uri": f"sqlite:///{workdir / 'logging.db'}", "calls": calls, "batches": 20},
    )
    found: dict[str, Any] = {}
    for mode in ("log_metric", "log_metric_async"):
        r = raw[mode]
        found[mode] = {
            "log_metric": percentiles_us(r["samples_ns"]),
            "points_per_s_durable": round(calls / (r["durable_ns"] / 1e9)),
            "points": calls,
        }
    batch = raw["log_batch"]
    found["log_batch"] = {
        "points_per_s_durable": round(batch["points"] / (batch["durable_ns"] / 1e9)),
        "points": batch["points"],
        "metrics_per_call": 1000,
    }
    return found


# -- 2. search over many runs ---------------------------------------------------------------


def fill_gyre(stores: Stores, runs: int, points: int) -> float:
    store = stores.open_runs()
    start = time.perf_counter()
    for i in range(runs):
        params, metrics = run_values(i, points)
        run = store.create_run("search", f"run-{i}")
        now = time.time()
        store.log_batch(
            run.run_id,
            params=params,
            metrics=[
                MetricPoint(key, value, step, now)
                for key, values in metrics.items()
                for step, value in enumerate(values)
            ],
        )
        store.end_run(run.run_id, "finished")
    elapsed = time.perf_counter() - start
    store.close()
    return elapsed


def timed(call: Any, repeats: int) -> dict[str, Any]:
    start = time.perf_counter()
    found = call()
    first = time.perf_counter() - start
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return {
        "p50_ms": round(statistics.median(samples) * 1e3, 2),
        "max_ms": round(max(samples) * 1e3, 2),
        "first_ms": round(first * 1e3, 2),
        "returned": len(found),
        "repeats": repeats,
    }


def gyre_search(stores: Stores, repeats: int) -> dict[str, Any]:
    store = stores.open_runs()
    try:
        result = timed(lambda: store.search(FILTER, limit=PAGE), repeats)
        result["matching"] = len(store.search(FILTER, limit=1_000_000))
    finally:
        store.close()
    return result


def cli_list(home: Path, repeats: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "gyre", "--home", str(home), "runs", "list", "--filter",
               FILTER, "--limit", "20", "--json"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}

    def once() -> list[Any]:
        done = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
        listed: list[Any] = json.loads(done.stdout)
        return listed

    bare = [sys.executable, "-c", "pass"]
    start = time.perf_counter()
    for _ in range(repeats):
        subprocess.run(bare, check=True)
    python_ms = (time.perf_counter() - start) / repeats * 1e3
    return {**timed(once, repeats), "python_startup_ms": round(python_ms, 1)}


def cli_in_process(home: Path, repeats: int) -> dict[str, Any]:
    """The same command run in this process (typer's runner): its work without the
    imports of a new process."""
    from typer.testing import CliRunner

    from gyre.cli._main import app

    runner = CliRunner()
    args = ["--home", str(home), "runs", "list", "--filter", FILTER, "--limit", "20", "--json"]

    def once() -> list[Any]:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        listed: list[Any] = json.loads(result.output)
        return listed

    return timed(once, repeats)


MLFLOW_SEARCH = """
import json, statistics, sys, time
from mlflow import MlflowClient
from mlflow.entities import Metric, Param

args = json.loads(sys.argv[1])
exec(args["run_values"])
client = MlflowClient(args["uri"])
experiment = client.create_experiment("search")
start = time.perf_counter()
for i in range(args["runs"]):
    params, metrics = run_values(i, args["points"])
    run = client.create_run(experiment, run_name=f"run-{i}")
    ts = int(time.time() * 1000)
    client.log_batch(run.info.run_id,
                     metrics=[Metric(k, v, ts, s) for k, vs in metrics.items()
                              for s, v in enumerate(vs)],
                     params=[Param(k, str(v)) for k, v in params.items()])
    client.set_terminated(run.info.run_id)
fill_s = time.perf_counter() - start

def search():
    return client.search_runs([experiment], filter_string=args["filter"],
                              max_results=args["page"])

start = time.perf_counter()
found = search()
first = time.perf_counter() - start
samples = []
for _ in range(args["repeats"]):
    start = time.perf_counter()
    search()
    samples.append(time.perf_counter() - start)
matching = len(client.search_runs([experiment], filter_string=args["filter"],
                                  max_results=50000))
print(json.dumps({"fill_s": fill_s, "p50_ms": round(statistics.median(samples) * 1e3, 2),
                  "max_ms": round(max(samples) * 1e3, 2), "first_ms": round(first * 1e3, 2),
                  "returned": len(found), "repeats": args["repeats"], "matching": matching}))
"""


def mlflow_search(python: Path, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    found: dict[str, Any] = run_mlflow(python, MLFLOW_SEARCH, {
        "uri": f"sqlite:///{workdir / 'search.db'}", "runs": args.runs,
        "points": args.points_per_metric, "filter": MLFLOW_FILTER, "page": PAGE,
        "repeats": args.repeats,
        "run_values": "import random\nfrom typing import Any\n" + inspect.getsource(run_values),
    })  # fmt: skip
    return found


# -- the run ------------------------------------------------------------------------------


def ratios(results: dict[str, Any]) -> dict[str, float]:
    gyre, mlflow = results["logging"]["gyre_sqlite"], results["logging"]["mlflow_sqlite"]
    call, points = gyre["log_metric"]["p50_us"], gyre["points_per_s_durable"]
    search = results["search"]
    return {
        "mlflow/gyre time per log_metric call (p50)": mlflow["log_metric"]["log_metric"]["p50_us"]
        / call,
        "mlflow async/gyre time per call (p50)": mlflow["log_metric_async"]["log_metric"]["p50_us"]
        / call,
        "gyre/mlflow durable points per s": points / mlflow["log_metric"]["points_per_s_durable"],
        "gyre/mlflow log_batch durable points per s": points
        / mlflow["log_batch"]["points_per_s_durable"],
        "mlflow/gyre search p50 (SQLite)": search["mlflow_sqlite"]["p50_ms"]
        / search["gyre_sqlite"]["p50_ms"],
    }


# fmt: off
def table(results: dict[str, Any]) -> str:
    logging, search = results["logging"], results["search"]
    mlflow = logging["mlflow_sqlite"]
    lines = ["| logging | p50 µs a call | p99 µs a call | points/s durable |",
             "|---|---:|---:|---:|"]
    for name, r in (("gyre `log_metric`, SQLite", logging["gyre_sqlite"]),
                    ("gyre `log_metric`, PostgreSQL", logging["gyre_postgresql"]),
                    ("MLflow `log_metric`, SQLite", mlflow["log_metric"]),
                    ("MLflow `log_metric(synchronous=False)`", mlflow["log_metric_async"])):
        call = r["log_metric"]
        lines.append(f"| {name} | {call['p50_us']:,.2f} | {call['p99_us']:,.2f} | "
                     f"{r['points_per_s_durable']:,} |")
    lines.append(f"| MLflow `log_batch`, 1,000 a call | | | "
                 f"{mlflow['log_batch']['points_per_s_durable']:,} |")
    lines += ["", f"| `{FILTER}` over {search['runs']:,} runs | p50 ms | max ms | first ms | "
              "matching |", "|---|---:|---:|---:|---:|"]
    for name, key in (("gyre `search`, SQLite", "gyre_sqlite"),
                      ("gyre `search`, PostgreSQL", "gyre_postgresql"),
                      ("MLflow `search_runs`, SQLite", "mlflow_sqlite"),
                      ("`gyre runs list --filter …` (a process), SQLite", "cli_sqlite"),
                      ("the same command in process (no imports), SQLite",
                       "cli_in_process_sqlite")):
        r = search[key]
        lines.append(f"| {name} | {r['p50_ms']} | {r['max_ms']} | {r['first_ms']} | "
                     f"{r.get('matching', r['returned'])} |")
    lines += ["", "| ratio, same run | |", "|---|---:|"]
    lines += [f"| {name} | {value:,.1f} |" for name, value in results["ratios"].items()]
    return "\n".join(lines)
# fmt: on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000, help="gyre log_metric calls timed")
    parser.add_argument("--points", type=int, default=1_000_000, help="points for points/s")
    parser.add_argument("--mlflow-calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--points-per-metric", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--mlflow-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"gyre-bench-mlflow-{MLFLOW_VERSION}",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    python = mlflow_python(args.mlflow_venv)
    load = round(os.getloadavg()[0], 2)
    workdir = Path(tempfile.mkdtemp(prefix="gyre-bench-tracking-"))
    pg = Postgres()
    started = time.perf_counter()
    results: dict[str, Any] = {
        "logging": {},
        "search": {"runs": args.runs, "points_per_metric": args.points_per_metric},
    }
    try:
        sqlite = Stores(workdir / "sqlite")
        postgres = Stores(workdir / "postgresql", StoreConfig(url=pg.database()))
        for name, stores in (("gyre_sqlite", sqlite), ("gyre_postgresql", postgres)):
            results["logging"][name] = gyre_logging(stores, args.calls, args.points)
            log(f"{name} logging: {results['logging'][name]}")
        results["logging"]["mlflow_sqlite"] = mlflow_logging(python, workdir, args.mlflow_calls)
        log(f"mlflow logging: {results['logging']['mlflow_sqlite']}")
        results["logging"]["timer_floor_ns"] = timer_floor_ns(100_000)
        search = results["search"]
        for name, stores in (
            ("gyre_sqlite", Stores(workdir / "search-sqlite")),
            ("gyre_postgresql", Stores(workdir / "search-pg", StoreConfig(url=pg.database()))),
        ):
            fill_s = fill_gyre(stores, args.runs, args.points_per_metric)
            search[name] = {**gyre_search(stores, args.repeats), "fill_s": round(fill_s, 1)}
            log(f"{name} search: {search[name]}")
            if name == "gyre_sqlite":
                search["cli_sqlite"] = cli_list(stores.home, max(3, args.repeats // 4))
                search["cli_in_process_sqlite"] = cli_in_process(stores.home, args.repeats)
                log(f"cli: {search['cli_sqlite']}, in process: {search['cli_in_process_sqlite']}")
        search["mlflow_sqlite"] = mlflow_search(python, workdir, args)
        log(f"mlflow search: {search['mlflow_sqlite']}")
        matching = {
            search[k]["matching"] for k in ("gyre_sqlite", "gyre_postgresql", "mlflow_sqlite")
        }
        assert len(matching) == 1, f"the systems disagree on what matches: {search}"
    finally:
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    import gyre

    results["ratios"] = {k: round(v, 1) for k, v in ratios(results).items()}
    results["machine"] = {
        "cpus": os.cpu_count(), "gyre": gyre.__version__, "mlflow": MLFLOW_VERSION,
        "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0],
        "load_1m_at_start": load, "load_1m_at_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - started),
        "postgresql": pgcluster.bindir().parent.name,
        "durability": "gyre: SQLite WAL synchronous=FULL, PostgreSQL fsync=on and "
                      "synchronous_commit=on; MLflow: its SQLite defaults",
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
