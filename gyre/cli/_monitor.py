"""`gyre monitor …`: what the server logged off the request path."""

from __future__ import annotations

import datetime
from typing import Annotated

import typer
from rich.table import Table

from gyre.cli._app import JsonOption, State, print_json, print_table
from gyre.monitor import read_predictions
from gyre.monitor._prediction_chunks import MAX_READ
from gyre.stores import Stores

monitor_app = typer.Typer(help="The prediction log: what was answered.", no_args_is_help=True)


@monitor_app.command()
def predictions(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(metavar="MODEL")],
    limit: Annotated[
        int, typer.Option(help=f"Records to list (at most {MAX_READ}).", min=1, max=MAX_READ)
    ] = 20,
    after: Annotated[
        int, typer.Option(help="Only records past this id (the last id of a page).", min=0)
    ] = 0,
    as_json: JsonOption = False,
) -> None:
    """List MODEL's records in the prediction log, oldest first (page on with --after)."""
    state: State = ctx.obj
    path = Stores.from_config(state.config()).prediction_log_path
    found = read_predictions(path, model, after=after, limit=limit)
    if as_json:
        print_json(found)
        return
    table = Table(title=f"predictions of {model}")
    for column in ("id", "time", "version", "route", "protocol", "consumer", "ms", "answer"):
        table.add_column(column)
    for record in found:
        when = datetime.datetime.fromtimestamp(record["at"]).strftime("%Y-%m-%d %H:%M:%S")
        answer = f"default: {record['default_reason']}" if record["default"] else "model"
        table.add_row(
            str(record["id"]), when, str(record["version"]), record["route"],
            record["protocol"], record["consumer"] or "", f"{record['latency_ms']:.2f}", answer,
        )  # fmt: skip
    print_table(table)


def register(app: typer.Typer) -> None:
    """Add `gyre monitor …` to `app`."""
    app.add_typer(monitor_app, name="monitor")
