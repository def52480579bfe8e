"""`gyre monitor check` and `gyre monitor quality`: a version's served answers against what
its run learned from, and against the labels that came after them."""

from __future__ import annotations

import time
from typing import Annotated, Any

import numpy as np
import typer
from rich.table import Table

from gyre.cli._app import JsonOption, State, console, print_json, print_table
from gyre.collect import parse_timestamp
from gyre.errors import MonitorError
from gyre.stores import Stores

# `gyre monitor check`'s exit status when anything fired (as `gyre evaluate` exits 3 on a
# veto).
UNHEALTHY = 3


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
    max_model_age: Annotated[
        str | None,
        typer.Option(help="Alert when the version was published longer ago, e.g. 30d."),
    ] = None,
    max_data_age: Annotated[
        str | None,
        typer.Option(help="Alert when the newest row it learned from is older, e.g. 7d."),
    ] = None,
    slo_p99_ms: Annotated[
        float | None,
        typer.Option(help="Alert when the window's p99 latency (ms) is above this.", min=0),
    ] = None,
    max_default_ratio: Annotated[
        float | None,
        typer.Option(help="Alert when this share of answers were defaults.", min=0, max=1),
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            "--record/--no-record",
            help="Store what fires as an alert in the fact log (gyre monitor alerts).",
        ),
    ] = True,
    webhook: Annotated[
        str | None, typer.Option(help="POST new alerts as JSON to this URL as well.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Check the inputs a version was served (its latest records in the prediction log)
    against the input profile its run took of the training rows: drift per feature and
    for the dataset, the training schema's invariants, NaN or infinite outputs, and, when
    limits are given, the age of the model and of its data and the service levels (p99
    latency, share of default answers). What fires is stored as an
    alert. Exit 0 healthy, 3 when anything fired, 1 error."""
    from gyre.learn import run_profile, version_run
    from gyre.monitor import (
        DriftThresholds,
        check_inputs,
        input_alerts,
        output_alert,
        raise_alerts,
        served_window,
        slo_alert,
        staleness_alert,
    )

    webhook = _webhook(webhook, record)
    limits_s = {"model": _duration(max_model_age, "--max-model-age"),
                "data": _duration(max_data_age, "--max-data-age")}  # fmt: skip
    _, stores, mv = _resolved(ctx, ref)
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
    checked = {"records": window.records, "first_at": window.first_at,
               "last_at": window.last_at}  # fmt: skip
    now = time.time()
    until = trained_until(made.lineage)  # the run's record, not the publisher's word
    ages_s = {
        "model": now - mv.created_at,
        "data": None if until is None
        else now - parse_timestamp(until) / 1_000_000,
    }  # fmt: skip
    summary["non_finite_output_records"] = window.bad_outputs
    summary["model_age_s"], summary["data_age_s"] = ages_s["model"], ages_s["data"]
    alerts = input_alerts(mv.model, mv.version, found, checked)
    alerts += [a for a in (
        output_alert(mv.model, mv.version, window.bad_outputs, window.records, checked),
        staleness_alert(mv.model, mv.version, ages_s, limits_s),
        slo_alert(mv.model, mv.version, window.latencies_ms, window.defaults, checked,
                  p99_ms=slo_p99_ms, default_ratio=max_default_ratio),
    ) if a is not None]  # fmt: skip
    summary["default_records"] = window.defaults
    summary["p99_latency_ms"] = (
        float(np.percentile(window.latencies_ms, 99)) if len(window.latencies_ms) else None
    )
    summary["healthy"] = found.healthy and not alerts
    if record and alerts:
        fact_log = stores.open_fact_log()
        try:
            stored = raise_alerts(fact_log, alerts, webhook=webhook)
        finally:
            fact_log.close()
        new = {a.alert_id for a in stored}
        summary["alerts"] = [{**a.as_json(), "new": a.alert_id in new} for a in alerts]
    else:
        summary["alerts"] = [{**a.as_json(), "new": None} for a in alerts]  # not stored
    if as_json:
        print_json(summary)
    else:
        _print_check(summary)
    if not summary["healthy"]:
        raise typer.Exit(UNHEALTHY)


def _resolved(ctx: typer.Context, ref: str) -> tuple[Any, Stores, Any]:
    """(the config, its stores, the registry version `ref` names)."""
    from gyre.registry import Registry

    state: State = ctx.obj
    config = state.config()
    registry = Registry.from_config(config)
    try:
        mv = registry.resolve(ref)
    finally:
        registry.close()
    return config, Stores.from_config(config), mv


def _webhook(url: str | None, record: bool) -> str | None:
    """The checked --webhook URL, before any work (a bad one would fail after the alert
    was stored, and a re-run would never post it)."""
    if url is None:
        return None
    if not record:
        raise typer.BadParameter(
            "posts the alerts it stores: drop --no-record", param_hint="--webhook"
        )
    from gyre.monitor import check_webhook

    try:
        return check_webhook(url)
    except MonitorError as exc:
        raise typer.BadParameter(str(exc), param_hint="--webhook") from None


def _duration(text: str | None, option: str) -> float | None:
    """`30d`, `12h` in seconds (None: no limit)."""
    if text is None:
        return None
    from gyre.errors import ConfigError
    from gyre.features._definitions import window_us

    try:
        return window_us(text) / 1_000_000
    except ConfigError:
        raise typer.BadParameter(
            f"{text!r} is not a duration: a number and s, m, h or d, e.g. 7d", param_hint=option
        ) from None


def _print_check(summary: dict[str, Any]) -> None:
    title = f"{summary['model']} version {summary['version']}: {summary['rows']} served rows"
    if not summary["records"]:
        console.print(f"{title}: no records in the prediction log yet, no inputs to check")
        _print_alerts(summary["alerts"])  # staleness needs no records
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
    _print_alerts(summary["alerts"])


def _print_alerts(alerts: list[dict[str, Any]]) -> None:
    for alert in alerts:
        said = {True: "alert recorded", False: "alert (already recorded)",
                None: "alert (not recorded)"}[alert["new"]]  # fmt: skip
        console.print(f"{said}: {alert['detector']}: {alert['summary']}")


def quality(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(metavar="MODEL[@ALIAS|:VERSION]")],
    last: Annotated[
        int, typer.Option(help="The window: this many of the version's latest records.", min=1)
    ] = 10_000,
    record: Annotated[
        bool,
        typer.Option("--record/--no-record", help="Store a quality drop as an alert."),
    ] = True,
    webhook: Annotated[
        str | None, typer.Option(help="POST a new alert as JSON to this URL as well.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """The version's quality on the labels that came after its answers (by its run's
    label rule), with intervals, against its run's holdout metrics, and the prediction
    bias. Exit 0 no drop, 3 a metric whose whole interval is worse than the holdout's."""
    from gyre.monitor import Alert, live_quality, raise_alerts

    webhook = _webhook(webhook, record)
    config, stores, mv = _resolved(ctx, ref)
    found = live_quality(stores, config, mv, last=last)
    summary = {"model": mv.model, "version": mv.version, **found.as_json()}
    if found.dropped and record:
        dropped = {name: found.metrics[name].as_dict() | {"holdout": found.holdout[name]}
                   for name in found.dropped}  # fmt: skip
        alert = Alert(
            mv.model, mv.version, "quality",
            f"quality dropped on {found.labelled} labelled answers: "
            + ", ".join(f"{n} {d['value']:.4g} (interval {d['low']:.4g} to {d['high']:.4g}; "
                        f"holdout {d['holdout']:.4g})" for n, d in dropped.items()),
            {"labelled": found.labelled, "dropped": dropped, "bias": found.bias},
            int(time.time() * 1_000_000),
        )  # fmt: skip
        fact_log = stores.open_fact_log()
        try:
            summary["alerts"] = [a.as_json() for a in raise_alerts(fact_log, [alert],
                                                                   webhook=webhook)]  # fmt: skip
        finally:
            fact_log.close()
    if as_json:
        print_json(summary)
    else:
        _print_quality(summary)
    if found.dropped:
        raise typer.Exit(UNHEALTHY)


def _print_quality(summary: dict[str, Any]) -> None:
    title = (
        f"{summary['model']} version {summary['version']}: {summary['labelled']} labelled of "
        f"{summary['answers']} entity answers ({summary['pending']} pending, "
        f"{summary['unlabelled']} without a label, {summary['without_entity']} tensor answers)"
    )
    table = Table(title=title)
    for column in ("metric", "live", "interval", "holdout", "dropped"):
        table.add_column(column)
    for name, m in summary["metrics"].items():
        held = summary["holdout"].get(name)
        table.add_row(
            name, _shown(m["value"]), f"{_shown(m['low'])} to {_shown(m['high'])}",
            "" if held is None else _shown(held), "DROPPED" if name in summary["dropped"] else "",
        )  # fmt: skip
    print_table(table)
    if summary["bias"] is not None:
        console.print(f"prediction bias (mean prediction - mean label): {summary['bias']:+.4g}")
    if not summary["metrics"]:
        console.print("fewer than two labelled answers: nothing to score yet")


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def trained_until(run: Any) -> str | None:
    """The newest time of the rows a run learned from (its data's age), from the run's
    summary in a version's lineage (`RunModel.lineage`); None when it says none, or
    something that is not a time."""
    times = run.get("training_times") if isinstance(run, dict) else None
    if not isinstance(times, dict):
        return None
    ends = []
    for span in times.values():
        if isinstance(span, list | tuple) and len(span) == 2 and isinstance(span[1], str):
            try:
                ends.append((parse_timestamp(span[1]), span[1]))
            except ValueError:
                continue
    return max(ends)[1] if ends else None
