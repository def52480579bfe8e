"""Serving benchmark: gyre against in-process onnxruntime, FastAPI + uvicorn (in its
strongest form, and in the common sync-endpoint form as a second row), and the ceilings of
gyre's own HTTP stack (see baselines.py), all in one run on this machine.
With `--workers N`, every server runs N processes sharing the port through SO_REUSEPORT.

    make bench            # or: .venv/bin/python benchmarks/serve.py [--seconds 10]

The model: GradientBoostingClassifier, 100 trees of depth 3, 32 features, trained on
make_classification(20_000, seed 0). Load comes from wrk (Debian's package; installed here
if missing) in a separate process, with v2 infer requests of 1 and 32 rows. The same
requests over v2 gRPC (`gyre-grpc`, raw tensor contents as tritonclient sends them) come
from benchmarks/loadgen.py --grpc in a separate process, against gyre's gRPC port and a
constant-answer gRPC server (`grpc-ceiling`). Results go to benchmarks/results/serve.json;
the README's table is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import gyre

# Why the benchmark's models hold champion/challenger without a `gyre evaluate`.
UNEVALUATED = "benchmark: a fixture model, not evaluated"

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "serve.json"
FEATURES = 32


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise SystemExit("wrk is missing: run `sudo apt-get install -y wrk`, then rerun")
    log("installing wrk (Debian package)…")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True)
    return shutil.which("wrk") or "wrk"


def build_model(home: Path) -> tuple[Path, np.ndarray]:
    from sklearn.datasets import make_classification
    from sklearn.ensemble import GradientBoostingClassifier

    from gyre.registry import CHAMPION, Registry

    x, y = make_classification(n_samples=20_000, n_features=FEATURES, random_state=0)
    log("training GradientBoostingClassifier(100 trees, depth 3) on 20k x 32…")
    model = GradientBoostingClassifier(n_estimators=100, max_depth=3, random_state=0).fit(x, y)
    registry = Registry(home)
    mv = registry.publish("gbdt", model, x[:1000], alias=CHAMPION, force_alias=UNEVALUATED)
    onnx_path = home / "gbdt.onnx"
    onnx_path.write_bytes(registry.artifact(mv))
    registry.close()
    return onnx_path, x[:1000].astype(np.float32)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def listening(port: int) -> int:
    """How many sockets listen on 127.0.0.1:`port` (one per process sharing it); gRPC's
    are IPv6 sockets on the IPv4-mapped address."""
    wanted = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            count += fields[1] in wanted and fields[3] == "0A"
    return count


class Server:
    """One server under test: its processes (one per command) sharing `port`."""

    def __init__(
        self, name: str, commands: list[list[str]], env: dict[str, str], port: int, sockets: int
    ) -> None:
        self.name = name
        self.port = port
        self.processes = [
            subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE
            )
            for command in commands
        ]
        # Load starts only when every process listens, or the first one would get it all.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(process.poll() is not None for process in self.processes):
                self.stop()
                raise SystemExit(f"{name} exited during startup")
            if listening(port) >= sockets:
                return
            time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{name} did not start")

    def rss_mib(self) -> float:
        """Peak resident memory (VmHWM) of the server's processes and children, in MiB."""
        total_kib = 0
        parents = [process.pid for process in self.processes]
        for pid in parents + [child for parent in parents for child in descendants(parent)]:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            found = re.search(r"VmHWM:\s+(\d+) kB", status)
            total_kib += int(found.group(1)) if found else 0
        return round(total_kib / 1024, 1)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def v2_body(rows: np.ndarray) -> str:
    return json.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "shape": list(rows.shape),
                    "datatype": "FP32",
                    "data": [round(float(v), 5) for v in rows.ravel()],
                }
            ]
        }
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS[unit]


def binary_body(rows: np.ndarray) -> tuple[bytes, int]:
    """A v2 request in Triton's binary tensor extension, as tritonclient sends it."""
    header = json.dumps(
        {"inputs": [{"name": "X", "shape": list(rows.shape), "datatype": "FP32",
                     "parameters": {"binary_data_size": rows.nbytes}}]}
    ).encode()  # fmt: skip
    return header + rows.astype(np.float32).tobytes(), len(header)


def run_wrk(
    wrk: str,
    url: str,
    body: str | bytes,
    connections: int,
    seconds: float,
    workdir: Path,
    header_length: int | None = None,
) -> dict[str, Any]:
    body_file = workdir / "body.bin"
    body_file.write_bytes(body.encode() if isinstance(body, str) else body)
    extra = (
        f'wrk.headers["Inference-Header-Content-Length"] = "{header_length}"\n'
        if header_length is not None
        else ""
    )
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"{extra}"
        f'local f = io.open("{body_file}", "rb")\n'
        'wrk.body = f:read("*a")\n'
        "f:close()\n"
    )
    out = subprocess.run(
        [
            wrk,
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.MULTILINE))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)$", out, re.MULTILINE)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} responses were not 2xx; the result is void")
    return {
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": _ms(latency["50"]),
        "p99_ms": _ms(latency["99"]),
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def grpc_body(rows: np.ndarray) -> bytes:
    """A v2 gRPC ModelInferRequest with the tensor in raw_input_contents, as tritonclient
    sends it."""
    from gyre.serve.protocols import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name="gbdt")
    request.inputs.add(name="X", datatype="FP32", shape=rows.shape)
    request.raw_input_contents.append(rows.astype(np.float32).tobytes())
    data: bytes = request.SerializeToString()
    return data


def run_grpc_load(
    address: str, body: bytes, concurrency: int, seconds: float, workdir: Path
) -> dict[str, Any]:
    """benchmarks/loadgen.py --grpc in its own process, as wrk is for HTTP."""
    body_file = workdir / "grpc-body.bin"
    body_file.write_bytes(body)
    out = subprocess.run(
        [
            *(sys.executable, str(HERE / "loadgen.py"), "--grpc", address, str(body_file)),
            *("--concurrency", str(concurrency), "--seconds", str(seconds)),
            *("--channels", str(min(concurrency, 8))),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result: dict[str, Any] = json.loads(out)
    failed = {status: n for status, n in result.pop("statuses").items() if status != "OK"}
    if failed:
        raise SystemExit(f"gRPC {address}: calls failed {failed}; the result is void")
    return result


def in_process(onnx_path: Path, rows: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    feeds = {"X": rows[:batch]}
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    per_call = np.array(times) * 1000
    return {
        "req_per_s": round(len(times) / sum(times), 1),
        "p50_ms": round(float(np.percentile(per_call, 50)), 4),
        "p99_ms": round(float(np.percentile(per_call, 99)), 4),
    }


CASES = [  # (name, rows per request, connections)
    ("1-row c=1", 1, 1),
    ("1-row c=16", 1, 16),
    ("1-row c=64", 1, 64),
    ("32-row c=16", 32, 16),
    ("32-row c=64", 32, 64),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each case")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes for gyre and FastAPI alike"
    )
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    wrk = ensure_wrk()
    workdir = Path(tempfile.mkdtemp(prefix="gyre-bench-"))
    home = workdir / "home"
    onnx_path, rows = build_model(home)
    bodies = {1: v2_body(rows[:1]), 32: v2_body(rows[:32])}
    env = {k: v for k, v in os.environ.items() if not k.startswith("GYRE_")}
    env["GYRE_BENCH_ONNX"] = str(onnx_path)
    gyre_command = [sys.executable, "-m", "gyre", "--home", str(home), "serve"]
    baseline = [sys.executable, str(HERE / "baselines.py")]
    servers = {  # name: the command of one process; gyre starts its own workers
        "gyre": [*gyre_command, "--workers", str(args.workers)],
        "fastapi": [*baseline, "fastapi_app"],
        "fastapi-sync": [*baseline, "fastapi_sync_app"],
        "ceiling": [*baseline, "ceiling_app"],
        "parse-ceiling": [*baseline, "parse_ceiling_app"],
        "model-ceiling": [*baseline, "model_ceiling_app"],
    }
    ceiling_cases = {
        "fastapi-sync": ("1-row c=64", "32-row c=16"),
        "ceiling": ("1-row c=64", "32-row c=16"),
        "parse-ceiling": ("32-row c=16", "32-row c=64"),
        "model-ceiling": ("32-row c=16", "32-row c=64"),
    }
    grpc_bodies = {1: grpc_body(rows[:1]), 32: grpc_body(rows[:32])}
    grpc_port = free_port()
    results: dict[str, Any] = {"cases": {}}

    def grpc_cases(server: Server, name: str, port: int, cases: list[tuple[str, int, int]]) -> None:
        """The cases over gRPC, in rows beside HTTP's."""
        deadline = time.monotonic() + 30
        while listening(port) < args.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        address = f"127.0.0.1:{port}"
        run_grpc_load(address, grpc_bodies[1], 16, 2, workdir)  # warm up
        for case, batch, connections in cases:
            result = run_grpc_load(address, grpc_bodies[batch], connections, args.seconds, workdir)
            result["rows_per_s"] = round(result["req_per_s"] * batch, 1)
            result["server_rss_mib"] = server.rss_mib()
            results["cases"].setdefault(case, {})[name] = result
            log(f"{name:8s} {case:12s} {result}")

    for name, command in servers.items():
        port = free_port()
        commands = (
            [[*command, "--port", str(port), "--grpc-port", str(grpc_port)]]
            if name == "gyre"
            else [[*command, "--port", str(port)] for _ in range(args.workers)]
        )
        server = Server(name, commands, env, port, sockets=args.workers)
        url = f"http://127.0.0.1:{port}/v2/models/gbdt/infer"
        try:
            run_wrk(wrk, url, bodies[1], 16, 2, workdir)  # warm up
            wanted = ceiling_cases.get(name)
            cases = CASES if wanted is None else [c for c in CASES if c[0] in wanted]
            for case, batch, connections in cases:
                result = run_wrk(wrk, url, bodies[batch], connections, args.seconds, workdir)
                result["rows_per_s"] = round(result["req_per_s"] * batch, 1)
                result["server_rss_mib"] = server.rss_mib()
                results["cases"].setdefault(case, {})[name] = result
                log(f"{name:8s} {case:12s} {result}")
            if name == "gyre":
                # The binary tensor extension (tritonclient's default) skips JSON numbers;
                # FastAPI has no such path, so this row has no baseline.
                body, length = binary_body(rows[:32])
                result = run_wrk(wrk, url, body, 16, args.seconds, workdir, length)
                result["rows_per_s"] = round(result["req_per_s"] * 32, 1)
                result["server_rss_mib"] = server.rss_mib()
                results["cases"].setdefault("32-row c=16 binary", {})[name] = result
                log(f"{name:8s} 32-row binary {result}")
                grpc_cases(server, "gyre-grpc", grpc_port, CASES)
        finally:
            server.stop()

    port = free_port()
    ceiling = [sys.executable, str(HERE / "baselines.py"), "grpc_ceiling_app", "--port", str(port)]
    server = Server("grpc-ceiling", [ceiling] * args.workers, env, port, sockets=args.workers)
    try:
        wanted = ("1-row c=64", "32-row c=16")
        grpc_cases(server, "grpc-ceiling", port, [c for c in CASES if c[0] in wanted])
    finally:
        server.stop()
    results["in_process"] = {}
    for batch in (1, 32):
        result = in_process(onnx_path, rows, batch, min(args.seconds, 5.0))
        result["rows_per_s"] = round(result["req_per_s"] * batch, 1)
        results["in_process"][f"{batch}-row"] = result
    c64, c16x32 = results["cases"]["1-row c=64"], results["cases"]["32-row c=16"]
    c64x32 = results["cases"]["32-row c=64"]

    def ratio(case: dict[str, Any], metric: str, baseline: str) -> float:
        return round(case["gyre"][metric] / case[baseline][metric], 2)

    results["ratios"] = {
        "gyre/fastapi req/s, 1-row c=64": ratio(c64, "req_per_s", "fastapi"),
        "gyre/fastapi p99, 1-row c=64": ratio(c64, "p99_ms", "fastapi"),
        "gyre/fastapi rows/s, 32-row c=16": ratio(c16x32, "rows_per_s", "fastapi"),
        "gyre/ceiling req/s, 1-row c=64": ratio(c64, "req_per_s", "ceiling"),
        "gyre/ceiling rows/s, 32-row c=16": ratio(c16x32, "rows_per_s", "ceiling"),
        "gyre/parse-ceiling rows/s, 32-row c=16": ratio(c16x32, "rows_per_s", "parse-ceiling"),
        "gyre/model-ceiling rows/s, 32-row c=16": ratio(c16x32, "rows_per_s", "model-ceiling"),
        # The most any server that parses JSON on this stack could show against FastAPI,
        # with no model, then with this model and nothing else.
        "parse-ceiling/fastapi rows/s, 32-row c=16": round(
            c16x32["parse-ceiling"]["rows_per_s"] / c16x32["fastapi"]["rows_per_s"], 2
        ),
        "model-ceiling/fastapi rows/s, 32-row c=16": round(
            c16x32["model-ceiling"]["rows_per_s"] / c16x32["fastapi"]["rows_per_s"], 2
        ),
        "gyre/fastapi rows/s, 32-row c=64": ratio(c64x32, "rows_per_s", "fastapi"),
        # What the strongest FastAPI form gains over the common one (baselines.py).
        "fastapi/fastapi-sync req/s, 1-row c=64": round(
            c64["fastapi"]["req_per_s"] / c64["fastapi-sync"]["req_per_s"], 2
        ),
        "gyre/fastapi-sync req/s, 1-row c=64": ratio(c64, "req_per_s", "fastapi-sync"),
        "gyre/model-ceiling rows/s, 32-row c=64": ratio(c64x32, "rows_per_s", "model-ceiling"),
        "model-ceiling/fastapi rows/s, 32-row c=64": round(
            c64x32["model-ceiling"]["rows_per_s"] / c64x32["fastapi"]["rows_per_s"], 2
        ),
        # gRPC beside HTTP, and against what its stack and load generator can do at all.
        "gyre-grpc/gyre req/s, 1-row c=64": round(
            c64["gyre-grpc"]["req_per_s"] / c64["gyre"]["req_per_s"], 2
        ),
        "gyre-grpc/gyre rows/s, 32-row c=16": round(
            c16x32["gyre-grpc"]["rows_per_s"] / c16x32["gyre"]["rows_per_s"], 2
        ),
        "gyre-grpc/grpc-ceiling req/s, 1-row c=64": round(
            c64["gyre-grpc"]["req_per_s"] / c64["grpc-ceiling"]["req_per_s"], 2
        ),
    }
    results["machine"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gyre": gyre.__version__,
        "seconds_per_case": args.seconds,
        "server_processes": args.workers,
        "load_generator": "wrk -t1; gRPC: loadgen.py --grpc (separate processes, same machine)",
        "date": time.strftime("%Y-%m-%d"),
    }
    output = args.output or (
        RESULTS if args.workers == 1 else RESULTS.with_name(f"serve-w{args.workers}.json")
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    shutil.rmtree(workdir, ignore_errors=True)


def table(results: dict[str, Any]) -> str:
    lines = [
        "| case | server | req/s | rows/s | p50 ms | p99 ms | server RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for case, by_server in results["cases"].items():
        for server, r in by_server.items():
            rss = r.get("server_rss_mib", "-")
            lines.append(
                f"| {case} | {server} | {r['req_per_s']:,.0f} | {r['rows_per_s']:,.0f} | "
                f"{r['p50_ms']:.3g} | {r['p99_ms']:.3g} | {rss} |"
            )
    for batch, r in results["in_process"].items():
        lines.append(
            f"| {batch} call | onnxruntime in-process | {r['req_per_s']:,.0f} | "
            f"{r['rows_per_s']:,.0f} | {r['p50_ms']:.3g} | {r['p99_ms']:.3g} | - |"
        )
    lines.append("")
    lines += [f"- {name}: **{value}**" for name, value in results["ratios"].items()]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
