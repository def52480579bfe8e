"""`gyre events …`: declared types, ingestion from a file, tail, stats, Parquet export."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from gyre.cli._app import JsonOption, State, console, print_json, print_table
from gyre.collect import (
    Collector,
    FactLog,
    event_types,
    export_parquet,
    format_timestamp,
    parse_timestamp,
    read_events_file,
)
from gyre.stores import Stores

events_app = typer.Typer(help="Event types and the fact log.", no_args_is_help=True)


def _collector(ctx: typer.Context) -> Collector:
    state: State = ctx.obj
    config = state.config()
    return Collector(
        Stores.from_config(config),
        event_types(config.collect.events),
        config.collect.group_commit_max_wait_ms,
    )


def _log(ctx: typer.Context) -> FactLog:
    state: State = ctx.obj
    return Stores.from_config(state.config()).open_fact_log()


@events_app.command("types")
def list_types(ctx: typer.Context, as_json: JsonOption = False) -> None:
    r"""List the declared event types (\[collect.events.NAME] in gyre.toml)."""
    state: State = ctx.obj
    types = event_types(state.config().collect.events)
    if as_json:
        print_json(
            [
                {"type": name, "fields": dict(t.fields), "entity": list(t.entity),
                 "time": t.time_field, "id": t.id_field, "unknown_fields": t.unknown_fields,
                 "definition_hash": t.definition_hash}
                for name, t in sorted(types.items())
            ]
        )  # fmt: skip
        return
    table = Table(title="event types")
    for column in ("type", "fields", "entity", "time", "id", "unknown fields", "hash"):
        table.add_column(column)
    for name, t in sorted(types.items()):
        fields = ", ".join(f"{k}: {v}" for k, v in t.fields.items())
        table.add_row(
            name, fields, ", ".join(t.entity), t.time_field, t.id_field or "-", t.unknown_fields,
            t.definition_hash[:12],
        )  # fmt: skip
    print_table(table)


@events_app.command()
def ingest(
    ctx: typer.Context,
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
    file: Annotated[Path, typer.Argument(help="A JSON array or NDJSON file of records.")],
) -> None:
    """Validate and store the records of FILE; bad records are listed with their reason."""
    collector = _collector(ctx)
    try:
        result = collector.ingest(type_name, read_events_file(file))
    finally:
        collector.close()
    console.print(
        f"{type_name}: {result.accepted} stored, {result.duplicates} duplicates, "
        f"{len(result.rejected)} rejected (log watermark {result.watermark})"
    )
    for rejected in result.rejected[:20]:
        console.print(f"  record {rejected['index']}: {rejected['reason']}", markup=False)
    if result.rejected:
        raise typer.Exit(2)


@events_app.command()
def tail(
    ctx: typer.Context,
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
    count: Annotated[int, typer.Option("-n", help="How many of the latest facts.", min=1)] = 10,
) -> None:
    """Print the latest facts of TYPE, one JSON object a line (NDJSON)."""
    for fact in _log(ctx).tail(type_name, count):
        print_json({"_seq": fact.seq, **fact.data})


@events_app.command()
def stats(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Facts per type, their event-time range and the log's watermark."""
    log = _log(ctx)
    if as_json:
        print_json({"watermark": log.watermark(), "types": log.stats()})
        return
    table = Table(title=f"fact log (watermark {log.watermark()})")
    for column in ("type", "facts", "first event", "last event", "last seq"):
        table.add_column(column)
    for row in log.stats():
        table.add_row(
            row["type"], str(row["facts"]), format_timestamp(row["first_event_time"]),
            format_timestamp(row["last_event_time"]), str(row["last_seq"]),
        )  # fmt: skip
    print_table(table)


@events_app.command()
def export(
    ctx: typer.Context,
    type_name: Annotated[str, typer.Argument(metavar="TYPE")],
    out: Annotated[Path, typer.Option(help="Folder for type=…/day=…/ Parquet partitions.")],
    start: Annotated[str | None, typer.Option(help="From this event time (RFC 3339).")] = None,
    end: Annotated[str | None, typer.Option(help="Before this event time (RFC 3339).")] = None,
) -> None:
    """Export a time range of TYPE to Parquet, partitioned by day."""
    collector = _collector(ctx)
    event_type = collector.event_type(type_name)
    collector.close()
    try:
        lo = parse_timestamp(start) if start else None
        hi = parse_timestamp(end) if end else None
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    files = export_parquet(_log(ctx), event_type, out, lo, hi)
    console.print(f"wrote {len(files)} Parquet file(s) under {out}", markup=False)


def register(app: typer.Typer) -> None:
    """Add `gyre events …` to `app`."""
    app.add_typer(events_app, name="events")
