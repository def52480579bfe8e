"""`gyre`: global options, the error boundary, and the command groups."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from gyre.config import Config, load_config
from gyre.errors import GyreError

# Lines of text are never hard-wrapped (soft_wrap); tables go through print_table.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def print_table(table: Table) -> None:
    """A table on stdout; to a pipe or a file, as wide as its content needs, where rich
    would cut it to 80 columns with "…" (a terminal gets the terminal's width)."""
    if console.is_terminal:
        console.print(table)
        return
    width = Console(width=1_000_000).measure(table).maximum
    Console(width=max(width, 80), soft_wrap=True).print(table)


# `--json` on every listing: one JSON document on stdout (NDJSON for streams).
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def print_json(payload: Any) -> None:
    """One JSON document on stdout, not through rich (no markup, no wrapping)."""
    sys.stdout.write(json.dumps(payload, sort_keys=True, default=str) + "\n")


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
    from gyre.cli import (  # noqa: F401
        _consumers,
        _demo,
        _events,
        _features,
        _monitor,
        _registry,
        _serve,
    )

    try:
        app()
    except (GyreError, OSError) as exc:  # OSError: a path, a permission, a full disk
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(1) from None
