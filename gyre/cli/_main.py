"""`gyre`: global options, the error boundary, and the command groups."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from gyre.config import Config, load_config
from gyre.errors import GyreError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="gyre",
    help="gyre: publish, serve and monitor machine-learning models.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


class State:
    """Options shared by every command; the config is built once, on first use."""

    def __init__(self, home: Path | None, config_file: Path | None) -> None:
        self.home = home
        self.config_file = config_file

    def config(self, **serve_overrides: object) -> Config:
        return load_config(self.home, self.config_file, serve_overrides)


@app.callback()
def _options(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(help="State directory (default: $GYRE_HOME, else ./.gyre)."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="TOML configuration (default: $GYRE_CONFIG, else ./gyre.toml)."),
    ] = None,
) -> None:
    ctx.obj = State(home, config)


def main() -> None:
    """Entry point: gyre errors are printed as one clear line and exit with status 1."""
    from gyre.cli import _consumers, _demo, _events, _features, _registry, _serve  # noqa: F401

    try:
        app()
    except (GyreError, OSError) as exc:  # OSError: a path, a permission, a full disk
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(1) from None
