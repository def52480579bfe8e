"""`gyre demo` (what `make run` does): train, publish, serve, and show real requests; then
the features loop (`_demo_features`)."""

from __future__ import annotations

import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from typing import Annotated, Any

import httpx
import typer
from rich.panel import Panel
from rich.syntax import Syntax

from gyre.cli._app import State, console
from gyre.cli._demo_features import FIRST_MODEL, demo_config, run_features_demo
from gyre.cli._demo_features import MODEL as FEATURES_MODEL
from gyre.config import load_config
from gyre.errors import GyreError
from gyre.registry import CHAMPION, Registry

MODEL = "breast-cancer"


def _free_port(host: str, preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise GyreError(f"no free port on {host}")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_ready(base: str, process: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise GyreError(f"gyre serve exited with status {process.returncode} during startup")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise GyreError(f"gyre serve was not ready within {timeout_s:.0f} s")


def _curl(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> str:
    parts = ["curl", "-s"]
    if method != "GET":
        parts += ["-X", method]
    for key, value in (headers or {}).items():
        parts += ["-H", f"{key}: {value}"]
    if body is not None:
        parts += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
    parts.append(url)
    return shlex.join(parts)


def _show(
    title: str, method: str, url: str, body: Any = None, headers: dict[str, str] | None = None
) -> int:
    """Make the request, print it as a curl command and its answer; returns the status."""
    response = httpx.request(method, url, json=body, headers=headers, timeout=10.0)
    try:
        answer = json.dumps(response.json(), indent=2)
    except ValueError:
        answer = response.text
    console.print(f"\n[bold cyan]{title}[/]  [dim]HTTP {response.status_code}[/]")
    # Soft wrap keeps the command on one logical line, so it can be copied and pasted.
    console.print(_curl(method, url, body, headers), soft_wrap=True, markup=False, highlight=False)
    console.print(Syntax(answer, "json"))
    return response.status_code


def demo(
    ctx: typer.Context,
    port: Annotated[
        int, typer.Option(help="Port to serve on (another if taken).", min=0, max=65535)
    ] = 8000,
    wait: Annotated[bool, typer.Option(help="Keep serving until Ctrl-C.")] = True,
) -> None:
    """Train a classifier, publish it, serve it, and call it through every protocol; then
    ingest events, train a model on a feature view, call it by entity, check for skew."""
    from gyre.learn import train_quickstart_model

    state: State = ctx.obj
    config_file = demo_config(state.config().home, state.config_file)
    config = load_config(state.home, config_file)
    console.rule("[bold]gyre demo")
    trained = train_quickstart_model()
    console.print(
        f"trained a logistic regression on the breast-cancer data set "
        f"(test accuracy {trained.lineage['metrics']['test_accuracy']:.3f})"
    )
    registry = Registry.from_config(config)
    mv = registry.publish(
        MODEL, trained.model, trained.sample, alias=CHAMPION, lineage=trained.lineage,
        force_alias=FIRST_MODEL,  # no run to evaluate: forced, and the change log says why
    )  # fmt: skip
    registry.close()
    console.print(
        f"{'already published' if mv.reused else 'published'} [bold]{MODEL}[/] version "
        f"{mv.version} as {CHAMPION} in {config.home} "
        f"(ONNX parity max |diff| {mv.parity['max_abs_diff']:.2g})"
    )
    host = config.serve.host
    port = _free_port(host, port)
    command = [sys.executable, "-m", "gyre", "--home", str(config.home)]
    command += ["--config", str(config_file), "serve", "--host", host, "--port", str(port)]
    # gRPC too, on its configured port when free (another server may hold 8001).
    grpc_port = _free_port(host, config.serve.grpc_port) if config.serve.grpc_port else 0
    command += ["--grpc-port", str(grpc_port)]
    # Its own session: Ctrl-C reaches the demo only, which then stops the server once
    # (a second SIGINT would cut the server's graceful shutdown short).
    process = subprocess.Popen(command, start_new_session=True)
    # SIGTERM (a supervisor, `kill`) stops the demo as Ctrl-C does: the server, in its own
    # session, would otherwise be left serving with nobody to stop it.
    signal.signal(signal.SIGTERM, _interrupt)
    base = f"http://{host}:{port}"
    try:
        _wait_ready(base, process)
        row = [round(float(v), 4) for v in trained.test_rows[0]]
        _show("health (v2)", "GET", f"{base}/v2/health/ready")
        _show("model metadata (v2)", "GET", f"{base}/v2/models/{MODEL}")
        _show(
            "predict (Open Inference Protocol v2)",
            "POST",
            f"{base}/v2/models/{MODEL}/infer",
            {
                "id": "demo-1",
                "inputs": [{"name": "X", "shape": [1, len(row)], "datatype": "FP32", "data": row}],
            },
        )
        _show(
            "predict (TensorFlow Serving REST)",
            "POST",
            f"{base}/v1/models/{MODEL}/labels/{CHAMPION}:predict",
            {"instances": [row]},
        )
        names = list(trained.feature_names)
        _show(
            "predict (MLflow /invocations, dataframe_split)",
            "POST",
            f"{base}/invocations",
            {"dataframe_split": {"columns": names, "data": [row]}},
            headers={"Gyre-Model": MODEL},
        )
        run_features_demo(config, base, _show)
        console.print(
            Panel(
                f"gyre is serving [bold]{MODEL}[/] and [bold]{FEATURES_MODEL}[/] at {base}\n"
                f"metrics: curl {base}/metrics\n"
                + (f"v2 gRPC (tritonclient.grpc): {host}:{grpc_port}\n" if grpc_port else "")
                + ("press Ctrl-C to stop" if wait else "stopping (--no-wait)"),
                title="ready",
            )
        )
        if wait:
            process.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    console.print(f"gyre serve exited with status {process.returncode}")


def register(app: typer.Typer) -> None:
    """Add `gyre demo` to `app`."""
    app.command()(demo)
