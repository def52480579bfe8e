"""`gyre train SPEC`: check a training spec whole, fit it, record the run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import typer

from gyre.cli._app import JsonOption, State, console, err_console, print_json
from gyre.stores import Stores


class _Progress:
    """Stages and epochs on stderr, so stdout keeps only the result."""

    def __init__(self) -> None:
        self.run_id: str | None = None

    def started(self, run_id: str) -> None:
        self.run_id = run_id
        err_console.print(f"run {run_id}", highlight=False)

    def stage(self, name: str) -> None:
        err_console.print(f"[dim]{name}…[/]", highlight=False)

    def epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        shown = "  ".join(f"{k} {v:.5g}" for k, v in metrics.items())
        err_console.print(f"  epoch {epoch}: {shown}", highlight=False)


def train(
    ctx: typer.Context,
    spec_path: Annotated[Path, typer.Argument(metavar="SPEC", help="The training spec (TOML).")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the spec, its rows and labels; fit nothing.")
    ] = False,
    export: Annotated[
        Path | None,
        typer.Option(help="A `gyre events export` folder to read the views' older facts from."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Fit a model from a training spec and record the run (see docs/learn.md)."""
    from gyre.learn import check_spec, load_spec, train_spec

    state: State = ctx.obj
    config = state.config()
    stores = Stores.from_config(config)
    spec = load_spec(spec_path)
    if dry_run:
        log = stores.open_fact_log()
        try:
            checked = check_spec(spec, config, log)
        finally:
            log.close()
        summary = {
            "spec": str(spec.path),
            "sha256": spec.sha256,
            "model": spec.name,
            "family": spec.model.family,
            "watermark": checked.watermark,
            "rows": len(checked.rows.queries),
            **checked.rows.counts,
        }
        if as_json:
            print_json(summary)
        else:
            console.print(
                f"spec {spec.path}: ok, {len(checked.rows.queries)} labelled rows "
                f"at watermark {checked.watermark} ({checked.rows.counts})",
                highlight=False,
            )
        return
    progress = _Progress()
    try:
        result = train_spec(spec, config, stores, reporter=progress, export=export)
    except KeyboardInterrupt:
        which = f"run {progress.run_id}" if progress.run_id else "the run"
        err_console.print(f"interrupted: {which} is marked interrupted; nothing was published")
        raise typer.Exit(130) from None
    metrics = result.fitted.metrics
    if as_json:
        print_json(
            {
                "run_id": result.run_id,
                "metrics": metrics,
                "baseline": result.fitted.baseline_metrics,
                "timings_s": result.fitted.timings_s,
            }
        )
        return
    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if "_" not in k or k == "log_loss")
    console.print(f"run {result.run_id} finished: {shown}", highlight=False)
    console.print(f"publish it: gyre registry publish --run {result.run_id}", highlight=False)


def register(app: typer.Typer) -> None:
    app.command()(train)
