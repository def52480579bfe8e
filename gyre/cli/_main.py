"""`gyre`: the commands of every module added to the app, and the error boundary.

Each command module defines its commands and a `register(app)`; importing a module adds
nothing to the app (`_app`, the leaf every module imports). This is the one place that
adds them.
"""

from __future__ import annotations

from rich.markup import escape

from gyre.cli import (
    _consumers,
    _control,
    _demo,
    _evaluate,
    _events,
    _features,
    _monitor,
    _registry,
    _runs,
    _serve,
    _train,
)
from gyre.cli._app import app, err_console
from gyre.errors import GyreError

# Every module that defines commands, each adding its own.
COMMAND_MODULES = (
    _consumers,
    _control,
    _demo,
    _evaluate,
    _events,
    _features,
    _monitor,
    _registry,
    _runs,
    _serve,
    _train,
)
for _commands in COMMAND_MODULES:
    _commands.register(app)


def main() -> None:
    """Entry point: gyre errors are printed as one clear line and exit with status 1."""
    try:
        app()
    except (GyreError, OSError) as exc:  # OSError: a path, a permission, a full disk
        err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        raise SystemExit(1) from None
