"""`gyre control`."""

from __future__ import annotations

from typing import Annotated

import typer

from gyre.cli._app import State


def control_command(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8002).", min=0, max=65535)] = None,
) -> None:
    r"""Run the control plane: alias moves and traffic-policy changes over HTTP.

    Writes need an admin key of \[serve.consumers]; a running `gyre serve` picks each change
    up within its reload interval."""
    from gyre.control import control

    state: State = ctx.obj
    control(state.config(control={"host": host, "port": port}))


def register(app: typer.Typer) -> None:
    """Add `gyre control` to `app`."""
    app.command("control")(control_command)
