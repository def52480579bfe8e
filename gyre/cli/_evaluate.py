"""`gyre evaluate RUN|MODEL@ALIAS`: metrics with intervals against the champion, the gates'
verdict, and the exit status a CI job can use (0 blessed, 3 vetoed, 1 could not evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from gyre.cli._app import JsonOption, State, console, print_json
from gyre.stores import Stores

VETOED = 3  # the exit status of a veto: apart from 1 (an error) and 2 (a usage error)


def evaluate(
    ctx: typer.Context,
    subject: Annotated[
        str,
        typer.Argument(
            metavar="RUN|MODEL@ALIAS", help="A run of `gyre train`, or a version made by one."
        ),
    ],
    against: Annotated[
        str,
        typer.Option(help="The alias to compare with (`none`: no comparison)."),
    ] = "champion",
    slices: Annotated[
        str | None,
        typer.Option(
            help="Columns of the rows to slice by, comma-separated (default: the spec's)."
        ),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="Evaluate on the rows of this Parquet or CSV file, not the holdout."),
    ] = None,
    label: Annotated[
        str | None,
        typer.Option(help="The label column of --data (default: the spec's, else `label`)."),
    ] = None,
    leave_one_out: Annotated[
        bool,
        typer.Option(
            "--leave-one-out", help="Refit without each feature: what each adds (a report)."
        ),
    ] = False,
    report: Annotated[
        Path | None, typer.Option(help="Write the HTML report (plots, no rows) here.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Evaluate a model on its run's holdout (or --data) against the champion; exit 3 on a
    veto. The verdict is recorded on the run and on the version (MODEL@ALIAS,
    MODEL:VERSION): only a blessed version can be given the champion or challenger alias."""
    from gyre.evaluate import evaluate as run_evaluation
    from gyre.evaluate import record_evaluation, write_report

    if label is not None and data is None:
        raise typer.BadParameter("--label names a column of --data FILE; give --data too")
    state: State = ctx.obj
    config = state.config()
    columns = None if slices is None else [c.strip() for c in slices.split(",") if c.strip()]
    stores = Stores.from_config(config)
    found = run_evaluation(
        stores,
        config,
        subject,
        against=None if against == "none" else against,
        slices=columns,
        data=data,
        label=label,
        leave_one_out=True if leave_one_out else None,
        record=False,  # below, with the report's sha256
    )
    written = None if report is None else write_report(found, report)
    summary = record_evaluation(stores, config, found, report_sha256=written)
    if report is not None:
        summary["report"] = {"path": str(report), "sha256": written}
    if as_json:
        print_json(summary)
    else:
        _show(summary)
    if not found.verdict.blessed:
        raise typer.Exit(VETOED)


def _number(value: Any, signed: bool = False) -> str:
    """A number as shown; an undefined one (null in the JSON) as a dash."""
    if value is None:
        return "—"
    return f"{value:+.4g}" if signed else f"{value:.4g}"


def _interval(found: dict[str, Any] | None, signed: bool = False) -> str:
    if found is None:
        return ""
    value = found.get("value", found.get("delta"))
    low, high = _number(found["low"], signed), _number(found["high"], signed)
    return f"{_number(value, signed)} [{low}, {high}]"


def _show(summary: dict[str, Any]) -> None:
    from rich.table import Table

    word = summary["verdict"].upper()
    style = "bold green" if summary["verdict"] == "blessed" else "bold red"
    console.print(
        f"[{style}]{word}[/]: {summary['subject']} (run {summary['run_id']}) on "
        f"{summary['rows']} "
        + (f"rows of {summary['data']}" if summary.get("data") else "holdout rows")
        + (f", against {summary['champion']}" if summary["champion"] else "")
    )
    for reason in summary["reasons"]:
        console.print(f"  - {reason}", highlight=False, markup=False)
    table = Table("metric", "model", "champion", "difference [interval]", "p")
    champion = summary["champion_metrics"] or {}
    differences = summary["differences"] or {}
    for metric, found in summary["metrics"].items():
        diff = differences.get(metric)
        table.add_row(
            metric,
            _interval(found),
            _interval(champion.get(metric)),
            _interval(diff, signed=True),
            "" if diff is None else _number(diff["p_value"]),
        )
    console.print(table)
    if summary["gates"]:
        gates = Table("gate", "passed", "found")
        for gate in summary["gates"]:
            gates.add_row(gate["gate"], "yes" if gate["passed"] else "NO", gate["detail"])
        console.print(gates)
    lofo = summary.get("leave_one_out")
    if lofo:
        table = Table("feature", f"{lofo['metric']}: full - without [interval]", "p")
        for feature, diff in lofo["features"].items():
            table.add_row(feature, _interval(diff, signed=True), _number(diff["p_value"]))
        console.print("leave one feature out:")
        console.print(table)
    for note in summary["notes"]:
        console.print(f"note: {note}", highlight=False, markup=False)
    if "report" in summary:
        console.print(f"report: {summary['report']['path']}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(evaluate)
