"""Durable ingestion benchmark: events/s into `POST /v1/events/clicks`, every request
acknowledged only after its events are fsynced (group commit).

    .venv/bin/python benchmarks/ingest.py [--seconds 10]

wrk (a separate process) sends 1-event and 1,000-event requests at 1 and 16 connections;
each request carries new event ids (made in wrk's Lua), so every event is stored, none is a
duplicate. Results go to benchmarks/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "ingest.json"
sys.path.insert(0, str(HERE))
from serve import _ms, ensure_wrk, free_port  # noqa: E402

CONFIG = """
[collect.events.clicks]
fields = { id = "string", user = "int", page = "string", at = "timestamp" }
entity = ["user"]
time = "at"
id = "id"

[serve]
max_body_bytes = 67108864
"""

LUA = """
local counter = 0
local per_request = %d
local prefix = tostring(math.random(1, 1000000000))
request = function()
  local parts = {}
  for i = 1, per_request do
    counter = counter + 1
    parts[i] = string.format(
      '{"id":"%%s-%%d","user":%%d,"page":"/p/%%d","at":"2026-11-26T08:00:00Z"}',
      prefix, counter, counter %% 1000, counter %% 50)
  end
  local body = "[" .. table.concat(parts, ",") .. "]"
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


def run_case(wrk: str, url: str, per_request: int, connections: int, seconds: float,
             workdir: Path) -> dict[str, Any]:  # fmt: skip
    script = workdir / f"ingest-{per_request}.lua"
    script.write_text(LUA % per_request)
    out = subprocess.run(
        [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency",
         "--timeout", "30s", "-s", str(script), url],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    # A request that timed out is left out of wrk's latencies: none may (30 s is far above
    # any answer here).
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"some ingestion requests failed:\n{out}")
    req_per_s = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # (wrk pads a value in seconds with a space: "99%    1.94s ".)
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.MULTILINE))
    if set(latency) != {"50", "99"}:
        raise SystemExit(f"wrk printed no latency distribution:\n{out}")
    return {
        "req_per_s": req_per_s,
        "events_per_s": round(req_per_s * per_request, 1),
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="gyre-ingest-"))
    config = workdir / "gyre.toml"
    config.write_text(CONFIG)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    server = subprocess.Popen(
        [sys.executable, "-m", "gyre", "--home", str(workdir / "home"), "--config", str(config),
         "serve", "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    results: dict[str, Any] = {"cases": {}}
    try:
        for per_request in (1, 1000):
            for connections in (1, 16):
                case = f"{per_request}-event c={connections}"
                result = run_case(wrk, f"{url}/v1/events/clicks", per_request, connections,
                                  args.seconds, workdir)  # fmt: skip
                results["cases"][case] = result
                print(f"{case}: {result}", file=sys.stderr, flush=True)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    import gyre

    results["machine"] = {
        "cpus": os.cpu_count(),
        "gyre": gyre.__version__,
        "date": time.strftime("%Y-%m-%d"),
        "seconds_per_case": args.seconds,
        "durability": "fsync per commit (SQLite WAL, synchronous=FULL)",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    lines = ["| case | requests/s | events/s | p50 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for case, r in results["cases"].items():
        lines.append(f"| {case} | {r['req_per_s']:,.0f} | {r['events_per_s']:,.0f} | "
                     f"{r['p50_ms']:.3g} | {r['p99_ms']:.3g} |")  # fmt: skip
    print("\n".join(lines))
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
