"""`gyre monitor …`: what the server logged off the request path."""

from __future__ import annotations

import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from gyre.cli._app import JsonOption, State, console, print_json, print_table
from gyre.errors import MonitorError
from gyre.monitor import read_predictions
from gyre.monitor._prediction_chunks import MAX_READ
from gyre.stores import Stores

monitor_app = typer.Typer(
    help="The prediction log (what was answered) and checks of it.", no_args_is_help=True
)

# `gyre monitor check`'s exit status when the inputs drifted or broke the schema (as
# `gyre evaluate` exits 3 on a veto).
UNHEALTHY = 3


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


@monitor_app.command()
def check(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="MODEL[@ALIAS|:VERSION]")],
    last: Annotated[
        int, typer.Option(help="The window: this many of the version's latest records.", min=1)
    ] = 10_000,
    false_alarm: Annotated[
        float | None,
        typer.Option(
            help="Calibrate each feature's threshold to this false-alarm rate, by resampling "
            "the reference at the window's size (default: Evidently's fixed thresholds)."
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the inputs a version was served (its latest records in the prediction log)
    against the input profile its run took of the training rows: drift per feature and
    for the dataset, and the training schema's invariants. Exit 0 healthy, 3 drift or
    violations, 1 error."""
    from gyre.learn import run_profile, version_run
    from gyre.monitor import DriftThresholds, check_inputs, served_window
    from gyre.registry import Registry

    state: State = ctx.obj
    config = state.config()
    stores = Stores.from_config(config)
    registry = Registry.from_config(config)
    try:
        mv = registry.resolve(ref)
    finally:
        registry.close()
    made = version_run(stores, mv, f"model `{mv.model}`")
    run_id = str(made.lineage["run_id"])
    profile = run_profile(stores, run_id)
    if profile is None:
        raise MonitorError(
            f"run {run_id}, which made `{mv.model}` version {mv.version}, took no input "
            "profile (a gyre before profiles, or inputs that are not a table of numbers): "
            "train it again to take one"
        )
    window = served_window(
        stores.prediction_log_path, mv.model, mv.version, profile.features, last=last
    )
    thresholds = DriftThresholds(false_alarm=false_alarm)
    found = check_inputs(profile, window.rows, thresholds)
    summary = {
        "model": mv.model, "version": mv.version, "run_id": run_id,
        "reference_rows": profile.rows, "records": window.records,
        "unreadable_records": window.unreadable, "first_at": window.first_at,
        "last_at": window.last_at, **found.as_json(),
    }  # fmt: skip
    if as_json:
        print_json(summary)
    else:
        _print_check(summary)
    if not found.healthy:
        raise typer.Exit(UNHEALTHY)


def _print_check(summary: dict[str, Any]) -> None:
    title = f"{summary['model']} version {summary['version']}: {summary['rows']} served rows"
    if not summary["records"]:
        console.print(f"{title}: no records in the prediction log yet, nothing to check")
        return
    table = Table(title=f"{title} against {summary['reference_rows']} training rows")
    for column in ("feature", "method", "statistic", "threshold", "drift", "psi", "missing"):
        table.add_column(column)
    for f in summary["features"]:
        table.add_row(
            f["feature"], f["method"], _shown(f["statistic"]), _shown(f["threshold"]),
            "DRIFT" if f["drifted"] else "no", _shown(f["psi"]),
            f"{f['missing'][0]:.1%} -> {f['missing'][1]:.1%}",
        )  # fmt: skip
    print_table(table)
    for v in summary["violations"]:
        console.print(f"[bold red]violation[/] {v['feature']} {v['rule']}: {v['detail']}")
    if summary["unreadable_records"]:
        console.print(
            f"{summary['unreadable_records']} of {summary['records']} records had inputs "
            "that are not rows of the model's features, and were left out"
        )
    if summary["dataset_drift"] is None:
        verdict = "no readable rows to compare"
    elif summary["dataset_drift"]:
        verdict = f"DATASET DRIFT ({summary['drifted_share']:.0%} of the features drifted)"
    else:
        verdict = f"no dataset drift ({summary['drifted_share']:.0%} of the features drifted)"
    state = "healthy" if summary["healthy"] else "UNHEALTHY"
    console.print(f"{state}: {verdict}, {len(summary['violations'])} invariant violations")


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def register(app: typer.Typer) -> None:
    """Add `gyre monitor …` to `app`."""
    app.add_typer(monitor_app, name="monitor")
