"""Adaptive batching and straggler benchmarks, in one run on this machine.

    .venv/bin/python benchmarks/batching.py [--seconds 5]

1. Step load (low -> high -> low offered requests/s, open loop, Poisson arrivals) on an
   MLP-sized model (256 -> 2048 -> 2048 -> 2) and a GBDT-sized one (100 trees of depth 3,
   32 features), each served three ways: adaptive batching (gyre's default), fixed batch
   size 1, and fixed batch size 32 (waiting up to 5 ms to fill). The SLO is 20 ms.
2. Stragglers: a Python model taking 2 ms a batch but 20 ms on 1% of calls, SLO 10 ms,
   with and without a default answer.

The load comes from benchmarks/loadgen.py in a separate process. Results go to
benchmarks/results/batching.json, and a table is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import httpx
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "batching.json"
SLO_MS = 20

CONFIGS = {
    "adaptive": "max_batch_size = 64\nadaptive_batching = true\n",
    "fixed-1": "max_batch_size = 1\nadaptive_batching = false\n",
    "fixed-32": "max_batch_size = 32\nadaptive_batching = false\nmax_batch_delay_ms = 5\n",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def publish_models(home: Path) -> dict[str, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.neural_network import MLPClassifier

    from gyre.registry import Registry

    registry = Registry(home)
    x, y = make_classification(n_samples=20_000, n_features=32, random_state=0)
    log("training the GBDT (100 trees, depth 3) and the MLP (256 -> 2048 -> 2048 -> 2)…")
    gbdt = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(x, y)
    registry.publish("gbdt", gbdt, x[:500])
    xm, ym = make_classification(n_samples=2000, n_features=256, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a few epochs: the cost per row is what matters
        mlp = MLPClassifier((2048, 2048), max_iter=2, random_state=0).fit(xm, ym)
    registry.publish("mlp", mlp, xm[:500])
    registry.publish_file("straggler", HERE / "models" / "straggler.py")
    registry.close()
    return {"gbdt": x[:1], "mlp": xm[:1], "straggler": np.ones((1, 4))}


def v2_body(name: str, row: np.ndarray) -> bytes:
    return json.dumps(
        {"inputs": [{"name": name, "shape": list(row.shape), "datatype": "FP32",
                     "data": [round(float(v), 4) for v in row.ravel()]}]}
    ).encode()  # fmt: skip


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(home: Path, config: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    path = workdir / "gyre.toml"
    path.write_text(config)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "gyre", "--home", str(home), "--config", str(path), "serve",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("gyre serve did not start")


def load(url: str, body: bytes, phases: str, workdir: Path) -> dict[str, Any]:
    body_file = workdir / "body.json"
    body_file.write_bytes(body)
    out = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), url, str(body_file), "--phases", phases],
        capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        raise SystemExit(f"the load generator failed:\n{out.stderr}")
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each load phase")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="gyre-batching-"))
    home = workdir / "home"
    rows = publish_models(home)
    s = args.seconds
    steps = {"gbdt": f"500:{s},4000:{s},500:{s}", "mlp": f"200:{s},2500:{s},200:{s}"}
    results: dict[str, Any] = {"slo_ms": SLO_MS, "step_load": {}, "stragglers": {}}
    for model, phases in steps.items():
        for name, settings in CONFIGS.items():
            config = f"[serve.models.{model}]\nlatency_slo_ms = {SLO_MS}\n{settings}"
            process, url = serve(home, config, workdir)
            try:
                body = v2_body("X", rows[model])
                load(f"{url}/v2/models/{model}/infer", body, f"200:{min(s, 2)}", workdir)
                outcome = load(f"{url}/v2/models/{model}/infer", body, phases, workdir)
            finally:
                process.terminate()
                process.wait(timeout=60)
            results["step_load"].setdefault(model, {})[name] = outcome["phases"]
            log(f"{model} {name}: {outcome['phases']}")
    body = v2_body("x", rows["straggler"].astype(np.float32))
    for name, extra in {
        "defaults on": "default_output = { score = 0.0 }\n",
        "no default": "",
    }.items():
        config = f"[serve.models.straggler]\nlatency_slo_ms = 10\n{extra}"
        process, url = serve(home, config, workdir)
        try:
            outcome = load(f"{url}/v2/models/straggler/infer", body, f"300:{2 * s}", workdir)
        finally:
            process.terminate()
            process.wait(timeout=60)
        results["stragglers"][name] = outcome["phases"][0]
        log(f"straggler {name}: {outcome['phases'][0]}")
    import gyre

    results["machine"] = {"cpus": os.cpu_count(), "gyre": gyre.__version__,
                          "date": time.strftime("%Y-%m-%d"), "seconds_per_phase": s}  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))


def table(results: dict[str, Any]) -> str:
    lines = [
        f"Step load, SLO {results['slo_ms']} ms: answered/s (200), p99 ms, share of 200s",
        "",
        "| model | batching | low | high | low again |",
        "|---|---|---|---|---|",
    ]
    for model, by_config in results["step_load"].items():
        for name, phases in by_config.items():
            cells = []
            for p in phases:
                total = sum(p["statuses"].values()) or 1
                share = p["statuses"].get("200", 0) / total
                cells.append(
                    f"{p['answered_200_per_s']:,.0f}/s of {p['offered_per_s']:,.0f}, "
                    f"p99 {p['p99_ms']} ms, {share:.0%} ok"
                )
            lines.append(f"| {model} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "Stragglers (2 ms, 20 ms on 1% of calls), SLO 10 ms, 300 requests/s:", ""]
    lines += ["| | p50 ms | p99 ms | default ratio | statuses |", "|---|---:|---:|---:|---|"]
    for name, p in results["stragglers"].items():
        lines.append(
            f"| {name} | {p['p50_ms']} | {p['p99_ms']} | {p['default_ratio']:.2%} | "
            f"{p['statuses']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
