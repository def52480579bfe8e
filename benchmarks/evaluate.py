"""What judging a challenger against the champion costs on 1M scored rows with 10 slices.

    .venv/bin/python benchmarks/evaluate.py [--rows 1000000] [--slices 10]

`gyre evaluate` scores both models on the holdout, then does the work timed here on the
two score arrays: every metric with its interval for each model, the paired differences
(DeLong, McNemar, paired means, a paired bootstrap of 200 resamples), the two baselines'
differences, each slice's metrics with intervals, the gates, the curves and the HTML
report. The peer is what a user would write instead: scikit-learn's metric functions
called directly on the same arrays, once per model and once per slice, with no interval
at all. Each side is timed twice and the better time kept. Results go to
benchmarks/results/evaluate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "evaluate.json"
sys.path.insert(1, str(HERE.parent))

from timing import best_of_two  # noqa: E402

import gyre  # noqa: E402
from gyre.evaluate import judge, metric_intervals, paired_differences  # noqa: E402
from gyre.evaluate._curves import classification_curves  # noqa: E402
from gyre.evaluate._gates import SliceResult  # noqa: E402
from gyre.evaluate._report import render_report  # noqa: E402
from gyre.learn._evalspec import EvaluateSpec  # noqa: E402


def _world(rows: int, slices: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    signal = rng.normal(size=rows)
    y = (rng.random(rows) < 1 / (1 + np.exp(-1.5 * signal))).astype(np.int8)
    champion = 1 / (1 + np.exp(-(1.2 * signal + rng.normal(scale=1.0, size=rows))))
    challenger = 1 / (1 + np.exp(-(1.3 * signal + rng.normal(scale=0.9, size=rows))))
    return {"y": y, "challenger": challenger, "champion": champion,
            "slice": rng.integers(0, slices, size=rows)}  # fmt: skip


def gyre_side(w: dict[str, np.ndarray], slices: int) -> dict[str, Any]:
    y, mine, theirs = w["y"], w["challenger"], w["champion"]
    spec = EvaluateSpec(absolute={"roc_auc": 0.7}, change={"roc_auc": 0.005},
                        baseline=("roc_auc",), slice_absolute={"roc_auc": 0.7})  # fmt: skip
    timings: dict[str, float] = {}

    def timed(name: str, work: Any) -> Any:
        started = time.perf_counter()
        found = work()
        timings[name] = round(time.perf_counter() - started, 3)
        return found

    metrics = timed("challenger_intervals", lambda: metric_intervals("classification", y, mine))
    timed("champion_intervals", lambda: metric_intervals("classification", y, theirs))
    differences = timed(
        "paired_differences", lambda: paired_differences("classification", y, mine, theirs)
    )
    prior = np.full(len(y), float(y.mean()))
    baselines = timed(
        "baselines",
        lambda: {"majority": paired_differences("classification", y, mine, prior)},
    )

    def cut() -> list[SliceResult]:
        parts = []
        for value in range(slices):
            mask = w["slice"] == value
            found = metric_intervals("classification", y[mask], mine[mask])
            parts.append(SliceResult("segment", value, int(mask.sum()), found, True))
        return parts

    parts = timed("slices", cut)
    verdict = timed(
        "gates",
        lambda: judge(
            spec, metrics, against=differences, baselines=baselines, slices=parts, cost=None
        ),
    )
    curves = timed(
        "curves",
        lambda: {
            "challenger": classification_curves(y, mine, 0.5),
            "champion": classification_curves(y, theirs, 0.5),
        },
    )
    page = timed(
        "report",
        lambda: render_report(
            {
                "title": "benchmark",
                "verdict": "blessed" if verdict.blessed else "vetoed",
                "reasons": verdict.reasons,
                "task": "classification",
                "models": {"challenger": "m:2", "champion": "m:1"},
                "rows": len(y),
                "metrics": [
                    {
                        "metric": k,
                        "challenger": v.as_dict(),
                        "champion": None,
                        "difference": differences[k].as_dict() if k in differences else None,
                    }
                    for k, v in metrics.items()
                ],
                "gates": [g.as_dict() for g in verdict.gates],
                "curves": curves,
                "slices": [],
                "created_at": "",
            }
        ),
    )
    return {"timings_s": timings, "report_bytes": len(page.encode()), "blessed": verdict.blessed}


def sklearn_side(w: dict[str, np.ndarray], slices: int) -> None:
    from sklearn import metrics

    y = w["y"]
    for p in (w["challenger"], w["champion"]):
        label = p >= 0.5
        metrics.roc_auc_score(y, p)
        metrics.average_precision_score(y, p)
        metrics.log_loss(y, p)
        metrics.accuracy_score(y, label)
        metrics.precision_score(y, label)
        metrics.recall_score(y, label)
        metrics.f1_score(y, label)
        metrics.brier_score_loss(y, p)
    for value in range(slices):
        mask = w["slice"] == value
        metrics.roc_auc_score(y[mask], w["challenger"][mask])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--slices", type=int, default=10)
    args = parser.parse_args()
    world = _world(args.rows, args.slices)
    gyre_s, found = best_of_two(lambda: gyre_side(world, args.slices))
    sklearn_s, _ = best_of_two(lambda: sklearn_side(world, args.slices))
    results = {
        "rows": args.rows,
        "slices": args.slices,
        "gyre_evaluation_s": round(gyre_s, 2),
        "gyre_stages_s": found["timings_s"],
        "report_bytes": found["report_bytes"],
        "sklearn_metrics_no_intervals_s": round(sklearn_s, 2),
        "ratio_to_sklearn": round(gyre_s / sklearn_s, 2),
        "target_s": 20,
        "machine": {
            "cpus": os.cpu_count(),
            "gyre": gyre.__version__,
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print("| case | gyre (intervals, paired, slices, gates, report) | scikit-learn metrics, "
          "no intervals | ratio |")  # fmt: skip
    print("|---|---|---|---|")
    print(
        f"| {args.rows:,} rows, {args.slices} slices, champion against challenger | "
        f"{results['gyre_evaluation_s']} s (target 20 s) | "
        f"{results['sklearn_metrics_no_intervals_s']} s | {results['ratio_to_sklearn']}x |"
    )


if __name__ == "__main__":
    main()
