"""`gyre monitor …`: what the server logged off the request path."""

from __future__ import annotations

import datetime
import time
from typing import Annotated, Any

import typer
from rich.table import Table

from gyre.cli._app import JsonOption, State, print_json, print_table
from gyre.cli._monitor_check import check, quality, trained_until
from gyre.monitor import Alert, read_predictions
from gyre.monitor._prediction_chunks import MAX_READ
from gyre.stores import Stores

monitor_app = typer.Typer(
    help="The prediction log (what was answered) and checks of it.", no_args_is_help=True
)
monitor_app.command()(check)
monitor_app.command()(quality)


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
def alerts(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Argument(metavar="[MODEL]")] = None,
    limit: Annotated[int, typer.Option(help="Alerts to list.", min=1, max=10_000)] = 20,
    as_json: JsonOption = False,
) -> None:
    """The latest alerts in the fact log, newest first (of MODEL only, when given)."""
    from gyre.monitor import read_alerts

    state: State = ctx.obj
    fact_log = Stores.from_config(state.config()).open_fact_log()
    try:
        found = read_alerts(fact_log, model, limit=limit)
    finally:
        fact_log.close()
    if as_json:
        print_json([a.as_json() for a in found])
        return
    table = Table(title="alerts" + (f" of {model}" if model else ""))
    for column in ("at", "model", "version", "detector", "summary"):
        table.add_column(column)
    for a in found:
        shown = a.as_json()
        table.add_row(shown["at"], a.model, str(a.version), a.detector, a.summary)
    print_table(table)


@monitor_app.command()
def status(ctx: typer.Context, as_json: JsonOption = False) -> None:
    """Each model's health at a glance: its champion (else its latest version: where
    requests naming only the model go unless its traffic policy spreads them), the
    policy, how old the version and its training data are, and its latest alert."""
    from gyre.monitor import read_alerts
    from gyre.registry import Registry

    state: State = ctx.obj
    config = state.config()
    stores = Stores.from_config(config)
    registry = Registry.from_config(config)
    try:
        names = sorted({mv.model for mv in registry.versions()})
        serving = {name: registry.resolve(name) for name in names}
        policies = {name: registry.policy(name)[0] for name in names}
    finally:
        registry.close()
    fact_log = stores.open_fact_log()
    try:
        latest: dict[tuple[str, int], Alert] = {}
        for fired in read_alerts(fact_log, limit=10_000):
            latest.setdefault((fired.model, fired.version), fired)
    finally:
        fact_log.close()
    now = time.time()
    rows: list[dict[str, Any]] = []
    for name, mv in serving.items():
        alert = latest.get((name, mv.version))
        until = trained_until(mv.lineage.get("run"))
        rows.append({
            "model": name, "version": mv.version, "policy": policies[name],
            "published_at": mv.created_at,
            "model_age_s": now - mv.created_at,
            "trained_until": until,
            "health": "alert" if alert is not None else "no alert",
            "latest_alert": None if alert is None else alert.as_json(),
        })  # fmt: skip
    if as_json:
        print_json(rows)
        return
    table = Table(title="models")
    columns = ("model", "version", "policy", "model age", "trained until", "health",
               "latest alert")  # fmt: skip
    for column in columns:
        table.add_column(column)
    for row in rows:
        last = row["latest_alert"]
        table.add_row(
            row["model"], str(row["version"]), str(row["policy"]), _age(row["model_age_s"]),
            row["trained_until"] or "n/a", row["health"],
            "" if last is None else f"{last['at']} {last['detector']}: {last['summary']}",
        )  # fmt: skip
    print_table(table)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def register(app: typer.Typer) -> None:
    """Add `gyre monitor …` to `app`."""
    import gyre.cli._monitor_check  # noqa: F401  (its commands join monitor_app)

    app.add_typer(monitor_app, name="monitor")
