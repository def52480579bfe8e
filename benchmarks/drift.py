"""Drift: gyre's check of 100 numeric features against Evidently's data-drift preset.

    .venv/bin/python benchmarks/drift.py [--rows 1000000] [--features 100] [--evidently-features 20]

One seeded NumPy world: --features numeric features (normals, lognormals, normals of
another scale, Poisson counts with far more than 5 distinct values, in turn), a reference
of --rows rows and a current window of --rows rows drawn afresh, in which every fifth
feature (20 of 100) has moved (its location by 0.2 to 0.5 of a deviation, or its scale by
1.5). gyre's side, in this process, one thread:

(a) the references: `drift_reference` of each reference column and its `as_record` JSON,
    done once, at training (the input profile stored with the run);
(b) a check: the stored JSON read back (`DriftReference.from_record`) and `check_drift` of
    the current window with the default thresholds: what every check costs, the number
    for the 10 s target (issue 15);
(c) the same check with `DriftThresholds(false_alarm=0.01)`: each feature's threshold
    calibrated by 200 resamples of its reference at the window's size (timed once: it is
    what the calibration costs, not a cost that varies).

The physical limit of (b) is one `np.sort` of each current column (the order the
quantile comparison needs, the one pass a check makes over the window); the memory floor
(one sum of each column) is recorded beside it. Each is timed twice and the better kept.

Evidently 0.7.23 is installed in a benchmark-only virtual environment under the temporary
folder (with pandas 2.3.3: Evidently 0.7.23 does not import under pandas 3). A subprocess
of it reads the same arrays (.npy files) and runs `Report([DataDriftPreset()])` with every
column declared numerical; at 1M reference rows its automatic choice is the normed
Wasserstein distance, drift at 0.1, as gyre's default. Only `report.run(...)` and reading
the drift scores out of the snapshot are timed (building its `Dataset`s is recorded apart).
It takes about 8 s a feature here (13 minutes for 100), so it runs on the first
--evidently-features features and its time is scaled to --features (per-feature time x
features; its cost is per column): the JSON and the table say so. The two tools'
verdicts are compared feature by feature on the features both checked. Results go to
benchmarks/results/drift.json; the README's table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "drift.json"
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(HERE.parent))
from peers import peer_python  # noqa: E402
from serve import log  # noqa: E402
from timing import best_of_two  # noqa: E402

import gyre  # noqa: E402
from gyre.monitor import DriftReference, DriftThresholds, check_drift, drift_reference  # noqa: E402

EVIDENTLY_VERSION = "0.7.23"
PANDAS_VERSION = "2.3.3"  # Evidently 0.7.23 imports a pandas 2 function pandas 3 removed
TARGET_S = 10.0
KINDS = ("normal", "lognormal", "wide_normal", "poisson")


def shifted(j: int) -> bool:
    return j % 5 == 2


def world(rows: int, features: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, reference and current: arrays of shape (features, rows), a column a row."""
    rng = np.random.default_rng(15)
    names = [f"{KINDS[j % 4]}_{j}" for j in range(features)]
    reference = np.empty((features, rows))
    current = np.empty((features, rows))
    for j in range(features):
        kind = KINDS[j % 4]
        loc, scale = rng.uniform(-2, 2), rng.uniform(0.5, 3)
        move, widen = 0.0, 1.0
        if shifted(j):
            if (j // 5) % 3 == 2:
                widen = 1.5
            else:
                move = rng.uniform(0.2, 0.5)
        if kind == "poisson":
            lam = rng.uniform(5, 40)
            reference[j] = rng.poisson(lam, rows)
            current[j] = rng.poisson(lam * (1 + move) * widen, rows)  # a count moves both
        elif kind == "lognormal":
            sigma = rng.uniform(0.3, 0.8)
            reference[j] = rng.lognormal(loc / 4, sigma, rows)
            current[j] = rng.lognormal(loc / 4 + move * sigma, sigma * widen, rows)
        else:
            scale *= 10 if kind == "wide_normal" else 1
            reference[j] = rng.normal(loc, scale, rows)
            current[j] = rng.normal(loc + move * scale, scale * widen, rows)
    return names, reference, current


def build_references(names: list[str], reference: np.ndarray) -> bytes:
    found = [drift_reference(name, reference[j]).as_record() for j, name in enumerate(names)]
    return json.dumps(found, allow_nan=False).encode()


def gyre_check(
    stored: bytes, names: list[str], current: np.ndarray, thresholds: DriftThresholds
) -> tuple[dict[str, float], Any]:
    started = time.perf_counter()
    references = [DriftReference.from_record(r) for r in json.loads(stored)]
    loaded = time.perf_counter()
    report = check_drift(references, {n: current[j] for j, n in enumerate(names)}, thresholds)
    done = time.perf_counter()
    return {"load_references_s": loaded - started, "check_s": done - loaded}, report


def sort_columns(current: np.ndarray) -> None:
    for column in current:
        np.sort(column)


def sum_columns(current: np.ndarray) -> None:
    for column in current:
        column.sum()


def evidently_python(venv: Path) -> Path:
    """The benchmark-only environment's Python, with evidently installed (made if absent)."""
    return peer_python(venv, "evidently", EVIDENTLY_VERSION, (f"pandas=={PANDAS_VERSION}",))


EVIDENTLY = """
import json, sys, time
import numpy as np, pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

args = json.loads(sys.argv[1])
names, k = args["names"], args["features"]
frames = [pd.DataFrame(np.load(args[part], mmap_mode="r")[:k].T.copy(), columns=names[:k])
          for part in ("reference", "current")]
started = time.perf_counter()
definition = DataDefinition(numerical_columns=names[:k])
reference, current = (Dataset.from_pandas(f, data_definition=definition) for f in frames)
datasets_s = time.perf_counter() - started
report = Report([DataDriftPreset()])
started = time.perf_counter()
snapshot = report.run(reference_data=reference, current_data=current)
found = {}
count = None
for metric in snapshot.dict()["metrics"]:
    config = metric["config"]
    if config["type"].endswith("ValueDrift"):
        found[config["column"]] = {"method": config["method"], "threshold": config["threshold"],
                                   "statistic": float(metric["value"])}
    elif config["type"].endswith("DriftedColumnsCount"):
        count = metric["value"]["count"]
run_s = time.perf_counter() - started
print(json.dumps({"datasets_s": datasets_s, "run_s": run_s, "features": found,
                  "drifted_count": count}))
"""


def run_evidently(python: Path, workdir: Path, names: list[str], k: int) -> dict[str, Any]:
    args = {"names": names, "features": k, "reference": str(workdir / "reference.npy"),
            "current": str(workdir / "current.npy")}  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(python), "-c", EVIDENTLY, json.dumps(args)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"the Evidently part failed:\n{done.stderr[-3000:]}")
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    for feature in found["features"].values():  # its rule: drift at or above the threshold
        feature["drifted"] = feature["statistic"] >= feature["threshold"]
    drifted = sum(f["drifted"] for f in found["features"].values())
    assert drifted == found["drifted_count"], f"Evidently's own count differs: {found}"
    return found


def agreement(report: Any, evidently: dict[str, Any]) -> dict[str, Any]:
    mine = {f.feature: f for f in report.features}
    theirs = evidently["features"]
    agree = [n for n in theirs if mine[n].drifted == theirs[n]["drifted"]]
    gaps = [abs(mine[n].statistic - theirs[n]["statistic"]) for n in theirs]
    return {
        "features_compared": len(theirs),
        "features_agreeing": len(agree),
        "disagreeing": sorted(set(theirs) - set(agree)),
        "drifted_gyre": sum(mine[n].drifted for n in theirs),
        "drifted_evidently": sum(f["drifted"] for f in theirs.values()),
        "methods": {
            "gyre": sorted({mine[n].method for n in theirs}),
            "evidently": sorted({f["method"] for f in theirs.values()}),
        },
        "max_statistic_difference": round(max(gaps), 6),
    }


# fmt: off
def table(r: dict[str, Any]) -> str:
    g, e = r["gyre"], r["evidently"]
    lines = [
        f"| {r['features']} numeric features, {r['rows']:,}-row window against a "
        f"{r['rows']:,}-row reference | time | |",
        "|---|---:|---:|",
        f"| gyre: the references, once at training (`drift_reference` + JSON) | "
        f"{g['references_s']} s | {g['references_bytes'] / 1e6:.1f} MB stored |",
        f"| **gyre: a check** (stored references read back + `check_drift`) | "
        f"**{g['check_s']} s** | target {r['target_s']:.0f} s |",
        f"| physical limit: one `np.sort` of each current column | {r['limit_sort_s']} s | "
        f"gyre **{r['ratios']['check/sort_limit']}x** |",
    ]
    if "calibrated_check_s" in g:
        lines.append(f"| gyre: a check with `DriftThresholds(false_alarm=0.01)` (timed once) | "
                     f"{g['calibrated_check_s']} s | {g['calibrated_drifted']} drifted |")
    ratio = f"gyre's check **{r['ratios']['evidently_scaled/gyre_check']}x** faster"
    lines.append(f"| Evidently {EVIDENTLY_VERSION} `DataDriftPreset`, {e['features_run']} "
                 f"features run | {e['run_s']} s | {e['per_feature_s']} s a feature"
                 f"{'' if e['scaled'] else ', ' + ratio} |")
    if e["scaled"]:
        lines.append(f"| Evidently, scaled to {r['features']} features ({e['features_run']} "
                     f"run x {r['features'] / e['features_run']:g}) | {e['scaled_run_s']} s | "
                     f"{ratio} |")
    a = r["agreement"]
    lines += ["", f"Agreement on the {a['features_compared']} features both checked: "
              f"{a['features_agreeing']} of {a['features_compared']} (drifted: gyre "
              f"{a['drifted_gyre']}, Evidently {a['drifted_evidently']}); the largest "
              f"difference of the normed Wasserstein distance {a['max_statistic_difference']}; "
              f"gyre flags {g['drifted']} of {r['features']} features, "
              f"{r['shifted']} were moved."]
    return "\n".join(lines)
# fmt: on


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=100)
    parser.add_argument("--evidently-features", type=int, default=20)
    parser.add_argument("--no-calibration", action="store_true")
    parser.add_argument(
        "--evidently-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / f"gyre-bench-evidently-{EVIDENTLY_VERSION}",
    )
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    python = evidently_python(args.evidently_venv)
    load, started = round(os.getloadavg()[0], 2), time.perf_counter()
    k = min(args.evidently_features, args.features)
    log(f"drawing {args.features} features x {args.rows:,} rows, twice…")
    names, reference, current = world(args.rows, args.features)
    moved = [n for j, n in enumerate(names) if shifted(j)]

    references_s, stored = best_of_two(lambda: build_references(names, reference))
    log(f"references: {references_s:.2f} s, {len(stored):,} bytes")
    defaults = DriftThresholds()
    check_s, (stages, report) = best_of_two(lambda: gyre_check(stored, names, current, defaults))
    log(f"check: {check_s:.2f} s ({stages}), drifted {report.drifted}")
    assert sorted(report.drifted) == sorted(moved), f"gyre flags {report.drifted}, not {moved}"
    gyre_side: dict[str, Any] = {
        "references_s": round(references_s, 2),
        "references_bytes": len(stored),
        "check_s": round(check_s, 2),
        "check_stages_s": {s: round(v, 3) for s, v in stages.items()},
        "drifted": len(report.drifted),
        "dataset_drift": report.dataset_drift,
    }
    if not args.no_calibration:
        calibrated = DriftThresholds(false_alarm=0.01)
        begun = time.perf_counter()
        _, found = gyre_check(stored, names, current, calibrated)
        gyre_side["calibrated_check_s"] = round(time.perf_counter() - begun, 2)
        gyre_side["calibrated_drifted"] = len(found.drifted)
        gyre_side["calibrated_thresholds"] = {
            "min": round(min(f.threshold for f in found.features), 5),
            "max": round(max(f.threshold for f in found.features), 5),
        }
        log(f"calibrated check: {gyre_side['calibrated_check_s']} s, {found.drifted}")
    sort_s, _ = best_of_two(lambda: sort_columns(current))
    sum_s, _ = best_of_two(lambda: sum_columns(current))

    with tempfile.TemporaryDirectory(prefix="gyre-bench-drift-") as tmp:
        workdir = Path(tmp)
        np.save(workdir / "reference.npy", reference[:k])
        np.save(workdir / "current.npy", current[:k])
        log(f"Evidently on the first {k} features (about 8 s each)…")
        raw = run_evidently(python, workdir, names, k)
    per_feature = raw["run_s"] / k
    evidently = {
        "features_run": k,
        "run_s": round(raw["run_s"], 2),
        "datasets_s": round(raw["datasets_s"], 2),
        "per_feature_s": round(per_feature, 2),
        "scaled_run_s": round(per_feature * args.features, 1),
        "scaled": k < args.features,
        "why_scaled": None
        if k == args.features
        else f"{per_feature:.1f} s a feature here: all {args.features} would take "
        f"{per_feature * args.features / 60:.0f} minutes; its cost is per column, so the "
        f"time of the first {k} is scaled to all {args.features}",
        "drifted": sum(f["drifted"] for f in raw["features"].values()),
        "features": raw["features"],
    }
    results: dict[str, Any] = {
        "rows": args.rows,
        "features": args.features,
        "shifted": len(moved),
        "target_s": TARGET_S,
        "gyre": gyre_side,
        "limit_sort_s": round(sort_s, 2),
        "memory_floor_sum_s": round(sum_s, 3),
        "evidently": evidently,
        "agreement": agreement(report, raw),
    }
    results["ratios"] = {
        "check/sort_limit": round(check_s / sort_s, 2),
        "check/memory_floor": round(check_s / sum_s, 1),
        "evidently_scaled/gyre_check": round(evidently["scaled_run_s"] / check_s, 1),
    }
    results["machine"] = {
        "cpus": os.cpu_count(), "gyre": gyre.__version__, "evidently": EVIDENTLY_VERSION,
        "pandas_for_evidently": PANDAS_VERSION, "numpy": np.__version__,
        "date": time.strftime("%Y-%m-%d"), "python": sys.version.split()[0],
        "load_1m_at_start": load, "load_1m_at_end": round(os.getloadavg()[0], 2),
        "seconds": round(time.perf_counter() - started),
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
