"""gyre's own cost per request, without HTTP: gyre's ASGI app driven in process against
the floor, baselines.model_ceiling_app (v2 decode, validate, one onnxruntime call per
request, encode, nothing else), driven the same way.

    .venv/bin/python benchmarks/app.py [--requests 20000]

The model is serve.py's GBDT. Requests arrive `concurrency` at a time, as a server's event
loop sees them; gyre batches them, the floor calls the model once per request. No sockets
and no load generator share the CPU, so a change of a few microseconds shows:
run it before and after a change to gyre's request path. Results go to
benchmarks/results/app.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import baselines
import uvloop
from serve import FEATURES, build_model, log, v2_body

import gyre
from gyre.config import load_config
from gyre.serve._server import build_app

RESULTS = Path(__file__).resolve().parent / "results" / "app.json"
CASES = [(1, 1), (1, 8), (32, 1), (32, 8)]  # (rows per request, requests in flight)


async def _drive(app: Any, body: bytes, concurrency: int, requests: int) -> float:
    """Seconds per request through an ASGI app."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v2/models/gbdt/infer",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
    }

    async def one() -> None:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(dict(scope), receive, send)
        if sent[0]["status"] != 200:
            raise SystemExit(f"{app} answered {sent[0]['status']}: {sent[1]['body']!r}")

    rounds = max(1, requests // concurrency)
    for _ in range(max(1, rounds // 10)):  # warm up
        await asyncio.gather(*(one() for _ in range(concurrency)))
    started = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(one() for _ in range(concurrency)))
    return (time.perf_counter() - started) / (rounds * concurrency)


async def _measure(home: Path, rows: Any, requests: int) -> dict[str, Any]:
    app = build_app(load_config(home=home))
    await app.startup()
    # The floor runs the very runtime gyre loaded.
    baselines._MODEL = app.repository.snapshot.resolve("gbdt").runtime
    try:
        cases: dict[str, Any] = {}
        for batch, concurrency in CASES:
            body = v2_body(rows[:batch]).encode()
            app_s = await _drive(app, body, concurrency, requests)
            floor_s = await _drive(baselines.model_ceiling_app, body, concurrency, requests)
            case = f"{batch}-row, {concurrency} in flight"
            cases[case] = {
                "app_us": round(app_s * 1e6, 1),
                "floor_us": round(floor_s * 1e6, 1),
                "app_minus_floor_us": round((app_s - floor_s) * 1e6, 1),
                "app/floor": round(app_s / floor_s, 2),
            }
            log(f"{case:22s} {cases[case]}")
        return cases
    finally:
        await app.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per case")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gyre-bench-") as workdir:
        home = Path(workdir) / "home"
        _, rows = build_model(home)
        cases = uvloop.run(_measure(home, rows, args.requests))
    results = {
        "cases": cases,
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "gyre": gyre.__version__,
            "features": FEATURES,
            "requests_per_case": args.requests,
            "date": time.strftime("%Y-%m-%d"),
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| case | app µs | floor µs | app - floor µs | app/floor |",
        "|---|---:|---:|---:|---:|",
    ]
    for case, r in cases.items():
        lines.append(
            f"| {case} | {r['app_us']} | {r['floor_us']} | {r['app_minus_floor_us']} | "
            f"**{r['app/floor']}** |"
        )
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
