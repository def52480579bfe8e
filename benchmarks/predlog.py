"""What the prediction log costs the server: gyre's ASGI app with every answer logged
(`prediction_log_sample = 1`, the default) against the same app with it off
(`prediction_log_sample = 0`), driven in process, interleaved in the same run.

    .venv/bin/python benchmarks/predlog.py [--requests 20000] [--rounds 5]

The model is serve.py's GBDT (32 features). Each case is a request size and a number of
requests in flight; each round times `--requests` requests through each app, one after
the other, and the median round of each is kept, so a slow moment of the machine hits
both. No sockets and no load generator share the CPU: this is the worst case for the
ratio (HTTP parsing and a client would add the same cost to both sides). The log's own
thread encodes and writes the records beside the event loop, as in a server; its work
is in the measurement. Issue 15's target: throughput with the log on at most 5% lower.
Results go to benchmarks/results/predlog.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from app import _drive
from serve import FEATURES, build_model, log, v2_body

import gyre
from gyre.config import load_config
from gyre.serve._server import build_app

RESULTS = Path(__file__).resolve().parent / "results" / "predlog.json"
CASES = [(1, 1), (1, 8), (32, 8)]  # (rows per request, requests in flight)
TARGET = 0.05  # at most this much lower throughput with the log on


async def _measure(home: Path, rows: Any, requests: int, rounds: int) -> dict[str, Any]:
    apps = {}
    for name, share in (("on", 1.0), ("off", 0.0)):
        config = home.parent / f"gyre-{name}.toml"
        config.write_text(f"[serve.models.gbdt]\nprediction_log_sample = {share}\n")
        apps[name] = build_app(load_config(home=home, config_file=config))
        await apps[name].startup()
    try:
        cases: dict[str, Any] = {}
        for batch, concurrency in CASES:
            body = v2_body(rows[:batch]).encode()
            times: dict[str, list[float]] = {"on": [], "off": []}
            for i in range(rounds):
                for name in ("on", "off") if i % 2 == 0 else ("off", "on"):
                    times[name].append(await _drive(apps[name], body, concurrency, requests))
            on, off = statistics.median(times["on"]), statistics.median(times["off"])
            case = f"{batch}-row, {concurrency} in flight"
            cases[case] = {
                "log_on_us": round(on * 1e6, 1),
                "log_off_us": round(off * 1e6, 1),
                "throughput_on_per_s": round(1 / on),
                "throughput_off_per_s": round(1 / off),
                "throughput_lower_by": round(1 - off / on, 4),
                "rounds_on_us": [round(t * 1e6, 1) for t in times["on"]],
                "rounds_off_us": [round(t * 1e6, 1) for t in times["off"]],
            }
            log(f"{case:22s} {cases[case]}")
        return cases
    finally:
        for app in apps.values():
            await app.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per case and side")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gyre-bench-") as workdir:
        home = Path(workdir) / "home"
        _, rows = build_model(home)
        cases = uvloop.run(_measure(home, rows, args.requests, args.rounds))
    results = {
        "cases": cases,
        "target_lower_by_at_most": TARGET,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "gyre": gyre.__version__,
            "features": FEATURES,
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| case | log on µs | log off µs | throughput on / off | lower by (target 5%) |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, r in cases.items():
        lines.append(
            f"| {case} | {r['log_on_us']} | {r['log_off_us']} | "
            f"{r['throughput_on_per_s']:,} / {r['throughput_off_per_s']:,} | "
            f"**{r['throughput_lower_by']:.1%}** |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
