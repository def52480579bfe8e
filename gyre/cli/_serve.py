"""`gyre serve`."""

from __future__ import annotations

from typing import Annotated

import typer

from gyre.cli._app import State


def serve_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="Port of the v2 gRPC service (default 8001; 0: no gRPC)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(help="Server processes sharing the port (default 0: one per core)."),
    ] = None,
    insecure: Annotated[
        bool,
        typer.Option(help="Allow a non-loopback address with no consumers declared."),
    ] = False,
) -> None:
    """Serve every model in the registry (v2 over HTTP and gRPC, TF Serving and MLflow)."""
    from gyre.serve import serve

    state: State = ctx.obj
    serve(
        state.config(
            host=host, port=port, grpc_port=grpc_port, workers=workers, insecure=insecure or None
        )
    )


def register(app: typer.Typer) -> None:
    """Add `gyre serve` to `app`."""
    app.command("serve")(serve_command)
