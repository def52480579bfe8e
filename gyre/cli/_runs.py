"""`gyre runs …`: list, show and compare training runs (the store of `Stores.open_runs`)."""

from __future__ import annotations

import datetime
import json
import time
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from gyre.cli._app import JsonOption, State, console, print_json, print_table
from gyre.learn import Run, RunStore
from gyre.stores import Stores

runs_app = typer.Typer(help="Training runs: params, metrics, lineage.", no_args_is_help=True)

_MAIN_METRICS = 4  # metric columns of `runs list`


def _open(ctx: typer.Context) -> tuple[RunStore, Stores]:
    state: State = ctx.obj
    stores = Stores.from_config(state.config())
    return stores.open_runs(), stores


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _duration(run: Run) -> str:
    seconds = (run.ended_at if run.ended_at is not None else time.time()) - run.started_at
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _steps(count: int) -> str:
    return f"{count} step{'s' if count != 1 else ''}"


def _run_json(run: Run) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "experiment": run.experiment,
        "name": run.name,
        "status": run.status,
        "error": run.error,
        "started_at": run.started_at,
        "ended_at": run.ended_at,
        "params": run.params,
        "metrics": run.metrics,
        "metric_counts": run.metric_counts,
        "tags": run.tags,
        "record": run.record,
    }


def _main_metrics(runs: list[Run], named: list[str]) -> list[str]:
    """The metrics a listing shows: those its filter and sort name, then the others most
    runs have, by name."""
    mentioned = [k for k in named if any(k in r.metrics for r in runs)]
    counts: dict[str, int] = {}
    for run in runs:
        for key in run.metrics:
            counts[key] = counts.get(key, 0) + 1
    rest = sorted((k for k in counts if k not in mentioned), key=lambda k: (-counts[k], k))
    return [*dict.fromkeys(mentioned), *rest][:_MAIN_METRICS]


def _metric_names(texts: list[str]) -> list[str]:
    """The metric keys a filter or order names (for the listing's columns)."""
    from gyre.learn._filter import parse_filter, parse_order

    found = [c.field.key for t in texts[:1] for c in parse_filter(t) if c.field.kind == "metrics"]
    found += [o.field.key for o in parse_order(texts[1:]) if o.field.kind == "metrics"]
    return found


@runs_app.command("list")
def list_runs(
    ctx: typer.Context,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter", help='e.g. "metrics.auc > 0.8 and params.max_depth = 3" (see docs/runs.md)'
        ),
    ] = None,
    sort: Annotated[
        list[str] | None,
        typer.Option("--sort", help="e.g. 'metrics.auc desc' (repeat for more; default: newest)"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="at most this many runs")] = 20,
    experiment: Annotated[str | None, typer.Option(help="only this experiment's runs")] = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first (or by --sort), matching --filter."""
    store, stores = _open(ctx)
    try:
        runs = store.search(filter, experiment=experiment, order_by=sort or (), limit=limit)
    finally:
        store.close()
    if as_json:
        print_json([_run_json(run) for run in runs])
        return
    metrics = _main_metrics(runs, _metric_names([filter or "", *(sort or ())]))
    table = Table(title=f"runs in {stores.describe}")
    for column in ("run", "experiment", "name", "status", "started", "duration", *metrics):
        table.add_column(column, justify="right" if column in metrics else "left")
    for run in runs:
        table.add_row(
            run.run_id[:8],
            escape(run.experiment),
            escape(run.name) or "-",
            run.status,
            _when(run.started_at),
            _duration(run),
            *(_value(run.metrics[k]) if k in run.metrics else "-" for k in metrics),
        )
    print_table(table)


@runs_app.command()
def show(
    ctx: typer.Context,
    run_ref: Annotated[
        str, typer.Argument(metavar="RUN", help="a run id, or its first 6+ characters")
    ],
    as_json: JsonOption = False,
) -> None:
    """Show one run: params, metrics (with their number of steps), tags, records, error."""
    store, _ = _open(ctx)
    try:
        run = store.get(run_ref)
    finally:
        store.close()
    if as_json:
        print_json(_run_json(run))
        return
    table = Table(title=f"run {run.run_id}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("experiment", run.experiment),
        ("name", run.name or "-"),
        ("status", run.status),
        ("started", _when(run.started_at)),
        ("ended", _when(run.ended_at)),
        ("duration", _duration(run)),
    ]
    if run.error is not None:
        rows.append(("error", run.error))
    rows += [(f"param {k}", _value(v)) for k, v in run.params.items()]
    rows += [
        (f"metric {k}", f"{_value(v)} ({_steps(run.metric_counts.get(k, 1))})")
        for k, v in run.metrics.items()
    ]
    rows += [(f"tag {k}", v) for k, v in run.tags.items()]
    rows += [
        (f"record {k}", json.dumps(v, sort_keys=True, indent=1)) for k, v in run.record.items()
    ]
    for field, value in rows:
        table.add_row(escape(field), escape(value))
    print_table(table)


def _comparison(runs: list[Run], part: str) -> list[dict[str, Any]]:
    keys = sorted({k for run in runs for k in getattr(run, part)})
    missing = object()
    rows = []
    for key in keys:
        values = [getattr(run, part).get(key, missing) for run in runs]
        shown = [None if v is missing else v for v in values]
        texts = {json.dumps(v, sort_keys=True) if v is not missing else "\0missing" for v in values}
        rows.append({"key": key, "values": shown, "differs": len(texts) > 1})
    return rows


@runs_app.command()
def compare(
    ctx: typer.Context,
    run_refs: Annotated[list[str], typer.Argument(metavar="RUN RUN…", help="two runs or more")],
    as_json: JsonOption = False,
) -> None:
    """Params and metrics of runs side by side; rows whose values differ are highlighted."""
    if len(run_refs) < 2:
        raise typer.BadParameter("give two runs or more to compare")
    store, _ = _open(ctx)
    try:
        runs = [store.get(ref) for ref in run_refs]
    finally:
        store.close()
    params, metrics = _comparison(runs, "params"), _comparison(runs, "metrics")
    if as_json:
        print_json({"runs": [_run_json(r) for r in runs], "params": params, "metrics": metrics})
        return
    table = Table(title="runs compared (differences highlighted)")
    table.add_column("")
    for run in runs:
        table.add_column(f"{run.run_id[:8]} {escape(run.name)}".strip())
    table.add_row("experiment", *(escape(r.experiment) for r in runs))
    table.add_row("status", *(r.status for r in runs))
    for part, rows in (("param", params), ("metric", metrics)):
        for row in rows:
            cells = ["-" if v is None else escape(_value(v)) for v in row["values"]]
            style = "bold yellow" if row["differs"] else None
            mark = "≠ " if row["differs"] else "  "
            table.add_row(f"{mark}{part} {escape(row['key'])}", *cells, style=style)
    print_table(table)


@runs_app.command()
def verify(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(help="A run id or a unique prefix (6+ characters).")],
    as_json: JsonOption = False,
) -> None:
    """Redo a `gyre train` run from its recorded spec, watermark and seed, and say whether it
    learned the same thing (bit for bit for scikit-learn and LightGBM); exit 1 if not."""
    from gyre.learn import NEURAL_TOLERANCE, verify_run

    state: State = ctx.obj
    config = state.config()
    found = verify_run(Stores.from_config(config), config, run)
    if as_json:
        print_json(found.as_json())
    else:
        for problem in found.problems:
            console.print(f"[bold red]cannot redo:[/] {escape(problem)}", highlight=False)
        how = "bit for bit" if found.exact else f"within {NEURAL_TOLERANCE:g}"
        table = Table(title=f"run {found.run_id}: metrics compared {how}")
        for column in ("metric", "recorded", "rebuilt", "match"):
            table.add_column(column)
        recorded, rebuilt = found.training_set
        if recorded is not None or rebuilt is not None:
            table.add_row(
                "training set sha256",
                str(recorded)[:16],
                str(rebuilt)[:16],
                "yes" if recorded == rebuilt else "[bold red]NO[/]",
            )
        for key, (then, now, match) in found.metrics.items():
            # repr: every digit, so a difference in the last bit shows
            table.add_row(key, repr(then), repr(now), "yes" if match else "[bold red]NO[/]")
        if found.metrics:
            print_table(table)
        verdict = "reproduced" if found.reproduced else "[bold red]NOT reproduced[/]"
        console.print(f"run {found.run_id}: {verdict}", highlight=False)
    if not found.reproduced:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add `gyre runs …` to `app`."""
    app.add_typer(runs_app, name="runs")
