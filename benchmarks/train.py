"""What `gyre train` costs over the same training code run by hand on a prepared NumPy array.

    .venv/bin/python benchmarks/train.py [--facts 1000000] [--requests 100000] [--mlp-rows 50000]

1. A GBDT (LightGBM) on 1M facts: `--facts` visits by 5,000 users over 30 days in the
   fact log, `--requests` prediction points (a `requests` event each), and a purchase within
   the hour as the label, more likely for users who visit more. `gyre train` builds the
   training set point-in-time correct from the log at one watermark (four window
   aggregations of the `activity` view), fits, scores the split and records the run. The
   first run decodes every fact of the log (and keeps them decoded under the home,
   `gyre.features.FactCache`); the runs after it read the kept copy and only the facts
   stored since. Both are shown.
2. The PyTorch MLP (`torch.mlp`) on `--mlp-rows` rows of 32 numeric columns read from a
   Parquet table.

The hand-written side is the same trainer (`make_trainer`, the same parameters and seed)
fitted on the NumPy arrays gyre built, already in memory, plus scoring its holdout: the
physical limit of the same work. Plain `lightgbm.LGBMClassifier.fit` on the same arrays
(one thread, as gyre's trainer fits by default for runs that reproduce on any machine),
with no loss recorded per round, and its holdout predicted, is shown beside it. The sides
take turns, five rounds (`timing.best_interleaved`), and each keeps its best time: on a
shared machine one fit's time wanders by 15%, more than the gap measured. Results go to
benchmarks/results/train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "train.json"
sys.path.insert(1, str(HERE.parent))

from timing import best_interleaved  # noqa: E402

import gyre  # noqa: E402
from gyre.collect import event_types  # noqa: E402
from gyre.config import load_config  # noqa: E402
from gyre.learn import fit_spec, load_spec, make_trainer, train_spec  # noqa: E402
from gyre.learn._metrics import score  # noqa: E402
from gyre.stores import Stores  # noqa: E402

HOUR_US = 3_600_000_000
START_US = 1_750_000_000 * 1_000_000
USERS = 5_000
DAYS = 30

GYRE_TOML = """
[collect.events.visits]
fields = {visit = "int", user = "int", pages = "int", at = "timestamp"}
entity = ["user"]
time = "at"
id = "visit"

[collect.events.requests]
fields = {request = "int", user = "int", at = "timestamp"}
entity = ["user"]
time = "at"
id = "request"

[collect.events.purchases]
fields = {order = "int", user = "int", at = "timestamp"}
entity = ["user"]
time = "at"
id = "order"

[features.views.activity]
source = "visits"
aggregations = ["count() over 1h", "count() over 1d", "mean(pages) over 1d", "max(pages) over 7d"]
"""

GBDT_PARAMS = {"n_estimators": 400, "num_leaves": 63, "learning_rate": 0.05}
GBDT_SPEC = f"""
[model]
name = "buyers"
task = "classification"
family = "lightgbm"
seed = 0
params = {json.dumps(GBDT_PARAMS).replace(":", " =").replace('"', "")}

[features]
views = ["activity"]

[rows]
event = "requests"

[label]
event = "purchases"
within = "1h"

[split]
validation = 0.0  # no early stopping: every round is fitted, as by hand
"""

MLP_PARAMS = {"hidden": [128, 64], "epochs": 8, "batch_size": 256, "patience": 100}
MLP_SPEC = """
[model]
name = "table"
task = "classification"
family = "torch.mlp"
seed = 0
params = {hidden = [128, 64], epochs = 8, batch_size = 256, patience = 100}

[features]
columns = [COLUMNS]

[rows]
table = "table.parquet"

[label]
column = "y"

[split]
validation = 0.0
"""


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _fill(folder: Path, facts: int, requests: int) -> Any:
    (folder / "gyre.toml").write_text(GYRE_TOML)
    config = load_config(folder / "home", folder / "gyre.toml")
    types = event_types(config.collect.events)
    rng = random.Random(0)
    rate = [rng.random() for _ in range(USERS)]  # how often each user visits
    weights = [0.1 + r for r in rate]
    span = DAYS * 24 * HOUR_US
    fact_log = Stores.from_config(config).open_fact_log()
    started = time.perf_counter()
    for chunk in range(0, facts, 100_000):
        users = rng.choices(range(USERS), weights, k=min(100_000, facts - chunk))
        batch = [
            {"visit": chunk + i, "user": u, "pages": rng.randrange(1, 20),
             "at": START_US + rng.randrange(span)}
            for i, u in enumerate(users)
        ]  # fmt: skip
        fact_log.append([(types["visits"], batch)])
    points, bought = [], []
    for i in range(requests):
        user = rng.randrange(USERS)
        at = START_US + rng.randrange(span)
        points.append({"request": i, "user": user, "at": at})
        if rng.random() < 0.1 + 0.6 * rate[user]:
            bought.append({"order": i, "user": user, "at": at + rng.randrange(1, HOUR_US)})
    fact_log.append([(types["requests"], points), (types["purchases"], bought)])
    log(f"filled {facts:,} visits, {requests:,} requests, {len(bought):,} purchases "
        f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
    fact_log.close()
    return config


def _hand(spec: Any, data: Any) -> Callable[[], None]:
    """The same trainer on the prepared arrays, and its holdout scored: the work to time."""
    x_train, y_train = data.part("train")
    validation = data.part("validation") if len(data.validation) else None

    def work() -> None:
        trainer = make_trainer(spec.model.family, spec.task, spec.model.params, spec.seed)
        trainer.fit(x_train, y_train, validation=validation)
        score(spec.task, trainer, *data.part("holdout"))

    return work


def gbdt(folder: Path, facts: int, requests: int) -> dict[str, Any]:
    config = _fill(folder, facts, requests)
    (folder / "buyers.toml").write_text(GBDT_SPEC)
    spec = load_spec(folder / "buyers.toml")
    stores = Stores.from_config(config)
    started = time.perf_counter()
    first = train_spec(spec, config, stores)  # decodes every fact of the log once
    first_s = time.perf_counter() - started
    data = first.fitted.data
    import lightgbm

    x_train, y_train = data.part("train")
    x_holdout = data.part("holdout")[0]

    def plain() -> None:
        model = lightgbm.LGBMClassifier(**GBDT_PARAMS, random_state=0, verbose=-1, n_jobs=1)
        model.fit(x_train, y_train)
        model.predict_proba(x_holdout)

    timed = best_interleaved(
        {"gyre": lambda: train_spec(spec, config, stores), "hand": _hand(spec, data),
         "plain": plain}
    )  # fmt: skip
    (again_s, again), (hand_s, _), (plain_s, _) = timed["gyre"], timed["hand"], timed["plain"]
    assert first.fitted.data.sha256 == again.fitted.data.sha256
    return {
        "facts": facts + requests,
        "training_rows": len(data.train),
        "features": len(data.feature_names),
        "auc": round(again.fitted.metrics["auc"], 4),
        "gyre_train_first_s": round(first_s, 2),
        "gyre_train_again_s": round(again_s, 2),
        "stages_first_s": first.fitted.timings_s,
        "stages_again_s": again.fitted.timings_s,
        "hand_same_trainer_s": round(hand_s, 2),
        "hand_plain_lightgbm_s": round(plain_s, 2),
        "ratio_first": round(first_s / hand_s, 2),
        "ratio_again": round(again_s / hand_s, 2),
        "ratio_again_to_plain_lightgbm": round(again_s / plain_s, 2),
    }


def mlp(folder: Path, rows: int) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=32, n_informative=12, random_state=0)
    names = [f"c{i}" for i in range(32)]
    table = {
        "ts": 1_700_000_000 + np.arange(rows),
        "y": y,
        **{n: x[:, i] for i, n in enumerate(names)},
    }
    pq.write_table(pa.table(table), folder / "table.parquet")
    (folder / "table.toml").write_text(
        MLP_SPEC.replace("COLUMNS", ", ".join(f'"{n}"' for n in names))
    )
    (folder / "mlp.gyre.toml").write_text("")
    config = load_config(folder / "mlp-home", folder / "mlp.gyre.toml")
    stores = Stores.from_config(config)
    spec = load_spec(folder / "table.toml")
    first = train_spec(spec, config, stores)
    timed = best_interleaved(
        {"gyre": lambda: train_spec(spec, config, stores), "hand": _hand(spec, first.fitted.data)}
    )
    (gyre_s, result), (hand_s, _) = timed["gyre"], timed["hand"]
    fact_log = stores.open_fact_log()
    fitted = fit_spec(spec, config, fact_log)  # the same build, not recorded: the same rows
    fact_log.close()
    assert fitted.data.sha256 == result.fitted.data.sha256
    return {
        "rows": rows,
        "columns": 32,
        "accuracy": round(result.fitted.metrics["accuracy"], 4),
        "gyre_train_s": round(gyre_s, 2),
        "stages_s": result.fitted.timings_s,
        "hand_same_trainer_s": round(hand_s, 2),
        "ratio": round(gyre_s / hand_s, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--mlp-rows", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        log("GBDT on the fact log…")
        results = {"gbdt": gbdt(folder, args.facts, args.requests)}
        log("PyTorch MLP on a table…")
        results["mlp"] = mlp(folder, args.mlp_rows)
    results["machine"] = {"cpus": os.cpu_count(), "gyre": gyre.__version__,
                          "date": time.strftime("%Y-%m-%d")}  # fmt: skip
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    g, m = results["gbdt"], results["mlp"]
    print("| case | gyre train | by hand (same trainer, prepared arrays) | ratio |")
    print("|---|---|---|---|")
    print(
        f"| GBDT, {g['facts']:,} facts, {g['training_rows']:,} rows, first run (decodes the log) "
        f"| {g['gyre_train_first_s']} s | {g['hand_same_trainer_s']} s | {g['ratio_first']}x |"
    )
    print(
        f"| GBDT, the same, run again (decoded facts kept) | {g['gyre_train_again_s']} s | "
        f"{g['hand_same_trainer_s']} s | {g['ratio_again']}x |"
    )
    print(
        f"| GBDT, run again, against plain `LGBMClassifier.fit` + predict | "
        f"{g['gyre_train_again_s']} s | {g['hand_plain_lightgbm_s']} s | "
        f"{g['ratio_again_to_plain_lightgbm']}x |"
    )
    print(f"| PyTorch MLP, {m['rows']:,} rows x 32 | {m['gyre_train_s']} s | "
          f"{m['hand_same_trainer_s']} s | {m['ratio']}x |")  # fmt: skip


if __name__ == "__main__":
    main()
