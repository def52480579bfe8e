"""`gyre features …`: the declared views with their hashes, training sets, the skew check."""

from __future__ import annotations

import enum
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gyre.cli._app import JsonOption, State, console, err_console, print_json, print_table
from gyre.collect import event_types
from gyre.features import (
    FactCache,
    FeatureView,
    compile_sql,
    feature_views,
    find_view,
    outside_facts,
    read_queries,
    write_training_set,
)
from gyre.monitor import DEFAULT_TOLERANCE, check_skew
from gyre.stores import Stores


class TimeUnit(enum.StrEnum):
    s = "s"
    ms = "ms"
    us = "us"


features_app = typer.Typer(
    help="Feature views, training sets and the skew check.", no_args_is_help=True
)


def _views(ctx: typer.Context) -> dict[str, FeatureView]:
    state: State = ctx.obj
    config = state.config()
    return feature_views(config.features.views, event_types(config.collect.events))


def _view_json(name: str, view: FeatureView) -> dict[str, object]:
    return {
        "view": name,
        "source": view.source.name,
        "entity": list(view.entity),
        "definition_hash": view.definition_hash,
        "transforms": dict(view.transforms),
        "features": [
            {"name": agg.name, "definition": str(agg), "kind": view.feature_kind(agg.name)}
            for agg in view.aggregations
        ]
        + [{"name": f, "definition": "request", "kind": k} for f, k in view.request.items()],
    }


@features_app.command("list")
def list_views(ctx: typer.Context, as_json: JsonOption = False) -> None:
    r"""List the declared feature views (\[features.views.NAME] in gyre.toml)."""
    if as_json:
        print_json([_view_json(name, view) for name, view in sorted(_views(ctx).items())])
        return
    table = Table(title="feature views")
    for column in ("view", "source", "entity", "features", "hash"):
        table.add_column(column)
    for name, view in sorted(_views(ctx).items()):
        table.add_row(
            name, view.source.name, ", ".join(view.entity), str(len(view.features)),
            view.definition_hash[:12],
        )  # fmt: skip
    print_table(table)


@features_app.command()
def show(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="VIEW")],
    sql: Annotated[bool, typer.Option(help="Also print the offline engine's SQL.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Print one view: its hash, transforms, and each feature with its kind."""
    view = find_view(_views(ctx), name)
    if as_json:
        print_json({**_view_json(name, view), **({"sql": compile_sql(view)} if sql else {})})
        return
    console.print(f"[bold]{name}[/]  hash {view.definition_hash}", highlight=False)
    console.print(f"source {view.source.name}, entity {', '.join(view.entity)}", highlight=False)
    for column, text in view.transforms.items():
        console.print(f"  transform {column} = {text}", markup=False)
    for agg in view.aggregations:
        kind = view.feature_kind(agg.name)
        console.print(f"  {agg.name}: {agg} ({kind})", markup=False)
    for feature, kind in view.request.items():
        console.print(f"  {feature}: from the request ({kind})", markup=False)
    if sql:
        console.print(compile_sql(view), markup=False, highlight=False)


@features_app.command()
def build(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="VIEW")],
    queries: Annotated[
        Path,
        typer.Argument(
            help="Rows of entity, ts (RFC 3339, or epoch seconds; see --ts-unit), request "
            "values, label: "
            ".parquet, .csv, .json or .ndjson."
        ),
    ],
    out: Annotated[Path, typer.Option(help="The Parquet file to write.")],
    export: Annotated[
        Path | None, typer.Option(help="A `gyre events export` folder to read facts from.")
    ] = None,
    watermark: Annotated[
        int | None, typer.Option(help="Only facts stored up to this log position.", min=0)
    ] = None,
    ts_unit: Annotated[
        TimeUnit, typer.Option(help="The unit of numbers in `ts` (as for events: seconds).")
    ] = TimeUnit.s,
) -> None:
    """Build VIEW's point-in-time correct training set for the rows of QUERIES."""
    state: State = ctx.obj
    view = find_view(_views(ctx), name)
    config = state.config()
    log = Stores.from_config(config).open_fact_log()
    try:
        mark = log.watermark() if watermark is None else watermark
        query_rows = read_queries(queries, ts_unit.value)
        source = next((s for s in log.stats() if s["type"] == view.source.name), {})
        warning = outside_facts(
            query_rows,
            source.get("first_event_time"),
            source.get("last_event_time"),
            max((agg.window_us for agg in view.aggregations), default=0),
        )
        if warning is not None:
            err_console.print(f"warning: {warning}", markup=False, highlight=False)
        cache = FactCache.under(config.home)
        rows = write_training_set(
            log, view, query_rows, out, watermark=mark, export=export, cache=cache
        )
    finally:
        log.close()
    console.print(
        f"{out}: {rows} rows of view `{name}` ({view.definition_hash[:12]}) at fact-log "
        f"watermark {mark}",
        highlight=False,
        markup=False,
    )


@features_app.command()
def skew(
    ctx: typer.Context,
    view: Annotated[str | None, typer.Option(help="Check only this view.")] = None,
    tolerance: Annotated[
        float, typer.Option(help="Relative (and absolute) tolerance for float features.", min=0)
    ] = DEFAULT_TOLERANCE,
    as_json: JsonOption = False,
    export: Annotated[
        Path | None, typer.Option(help="A `gyre events export` folder to read facts from.")
    ] = None,
) -> None:
    """Recompute every logged serving vector offline, at its time and log position, and
    count mismatches per feature. Exits with status 3 when any feature differs."""
    state: State = ctx.obj
    views = _views(ctx)
    if view is not None:
        find_view(views, view)
    stores = Stores.from_config(state.config())
    log = stores.open_fact_log()
    try:
        reports = check_skew(
            log, views, stores.served_log_path, view=view, tolerance=tolerance, export=export
        )
    finally:
        log.close()
    if as_json:
        print_json([report.as_json() for report in reports])
    else:
        for report in reports:
            total = sum(report.mismatches.values())
            other = report.other_definition
            console.print(
                f"[bold]{report.view}[/] ({report.definition_hash[:12]}): {report.checked} "
                f"vectors checked, {total} mismatching values"
                + (f", {other} served under another definition" if other else "")
                + (f", {report.later} served after the check began" if report.later else ""),
                highlight=False,
            )
            for feature, count in report.mismatches.items():
                if count:
                    console.print(f"  {feature}: {count}", markup=False)
            for example in report.examples:
                console.print(f"  e.g. {json.dumps(example)}", markup=False, highlight=False)
    if not all(report.clean for report in reports):
        raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add `gyre features …` to `app`."""
    app.add_typer(features_app, name="features")
