"""`gyre registry …`: publish, alias, list, show, delete, policy, threshold, history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from gyre.cli import _registry_show
from gyre.cli._app import State, console
from gyre.cli._registry_show import decision_text
from gyre.registry import ModelVersion, Registry
from gyre.stores import Stores

registry_app = typer.Typer(help="Model versions, aliases and artifacts.", no_args_is_help=True)


def _open(ctx: typer.Context) -> Registry:
    state: State = ctx.obj
    return Registry.from_config(state.config())


@registry_app.command()
def publish(
    ctx: typer.Context,
    name: Annotated[
        str | None, typer.Argument(help="Model name (with --run: the run's model by default).")
    ] = None,
    path: Annotated[
        Path | None,
        typer.Argument(
            help=".onnx, .joblib/.pkl (scikit-learn, LightGBM, XGBoost), .py (Python model), "
            "or a TensorFlow SavedModel folder / .keras file."
        ),
    ] = None,
    run: Annotated[
        str | None,
        typer.Option(help="Publish the model of this `gyre train` run, with its lineage."),
    ] = None,
    sample: Annotated[
        Path | None,
        typer.Option(
            help="Sample input rows (.npy or .csv) for the parity check; a .csv with a header "
            "may have string columns (a mixed-type table: one model input per column)."
        ),
    ] = None,
    alias: Annotated[str | None, typer.Option(help="Alias to point at the new version.")] = None,
    lineage: Annotated[
        str | None, typer.Option(help='Free-form lineage as JSON, e.g. \'{"data": "v3"}\'.')
    ] = None,
    python_class: Annotated[
        str, typer.Option("--class", help="The class of a .py model (load() + predict()).")
    ] = "Model",
    force_new: Annotated[
        bool,
        typer.Option(help="Make a new version even if a live one holds the same content."),
    ] = False,
    artifacts: Annotated[
        Path | None,
        typer.Option(help="For a .py model: a folder of files (weights…) given to load()."),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Give --alias champion or challenger to a version no evaluation blessed "
            "(needs --reason; recorded).",
        ),
    ] = False,
    reason: Annotated[str, typer.Option(help="With --force: why, for the change log.")] = "",
) -> None:
    """Publish a model: export to ONNX, check parity, store it as the next version (or name
    the live version that already holds the same content). A run's evaluation (`gyre
    evaluate RUN`) goes with it: only a blessed version may be --alias champion or
    challenger, unless --force --reason "why"."""
    try:
        extra = json.loads(lineage) if lineage else None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--lineage is not valid JSON: {exc}") from None
    if (run is None) == (path is None):
        raise typer.BadParameter("give a model file (NAME PATH) or a run (--run RUN), not both")
    if (force or reason) and alias is None:
        raise typer.BadParameter("--force and --reason go with --alias: the alias to force")
    if reason and not force:
        raise typer.BadParameter(
            '--reason goes with --force (--alias champion --force --reason "why")'
        )
    force_alias = reason if force else None
    registry = _open(ctx)
    if run is not None:
        mv = _publish_run(
            ctx, registry, run, name, alias=alias, extra=extra, force_new=force_new,
            force_alias=force_alias,
        )  # fmt: skip
    else:
        if name is None or path is None:
            raise typer.BadParameter("give the model's NAME before its PATH")
        mv = registry.publish_file(
            name,
            path,
            sample=sample,
            alias=alias,
            lineage=extra,
            python_class=python_class,
            artifacts=artifacts,
            force_new=force_new,
            force_alias=force_alias,
        )
    parity = mv.parity
    check = (
        f"parity max |diff| {parity['max_abs_diff']:.2g} on {parity['rows']} rows"
        if "max_abs_diff" in parity
        else f"no parity check: {parity.get('reason', 'none recorded')}"
    )
    if mv.files:
        check += f", {len(mv.files)} files, {sum(f.bytes for f in mv.files)} bytes"
    if mv.reused:
        console.print(
            f"unchanged: [bold]{mv.model}[/] version [bold]{mv.version}[/] already holds this "
            "content; no new version (--force-new makes one)"
            + (f"; alias {alias} points at it" if alias else "")
        )
        return
    console.print(
        f"published [bold]{mv.model}[/] version [bold]{mv.version}[/] "
        f"({mv.flavor}, {check})" + (f", alias {alias}" if alias else "")
    )


def _publish_run(
    ctx: typer.Context,
    registry: Registry,
    run_id: str,
    name: str | None,
    *,
    alias: str | None,
    extra: dict[str, Any] | None,
    force_new: bool,
    force_alias: str | None,
) -> ModelVersion:
    """A finished run's model, bound to its feature view when it learned from one view
    alone (the server then answers requests that name an entity), with the run's
    evaluation recorded on the version (it is the evaluation of exactly that model)."""
    from gyre.collect import event_types
    from gyre.features import feature_views
    from gyre.learn import run_model

    state: State = ctx.obj
    config = state.config()
    stores = Stores.from_config(config)
    made = run_model(stores, run_id)
    view = None
    if len(made.views) == 1 and made.sample.shape[1] == len(made.feature_names):
        views = feature_views(config.features.views, event_types(config.collect.events))
        found = views.get(made.views[0])
        if found is not None and list(found.features) == list(made.feature_names):
            view = found
    runs = stores.open_runs()
    try:  # the run's latest `gyre evaluate`, whole (the lineage holds a brief of it)
        judged = runs.get(str(made.lineage["run_id"])).record.get("evaluation") or {}
    finally:
        runs.close()
    learned = (judged.get("threshold") or {}).get("challenger")
    return registry.publish(
        name or made.experiment,
        made.model,
        made.sample,
        alias=alias,
        lineage={**(extra or {}), "run": made.lineage},
        names=made.feature_names,
        features=view,
        # The run's own bytes: the version's native sha256 is then the run's model's, which
        # is how `gyre evaluate MODEL:VERSION` knows the version is the run's model.
        native_bytes=made.model_bytes,
        force_new=force_new,
        # The threshold `gyre evaluate` learned on the run's validation rows: the server's
        # label then follows it (a binary classifier's; none before an evaluation).
        decision_threshold=learned if isinstance(learned, float) else None,
        force_alias=force_alias,
        evaluation=judged or None,
    )


@registry_app.command("alias")
def set_alias(
    ctx: typer.Context,
    name: str,
    alias: str,
    version: int,
    reason: Annotated[str, typer.Option(help="Why, for the change log.")] = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Give champion or challenger to a version no evaluation blessed (needs "
            "--reason; recorded as forced).",
        ),
    ] = False,
) -> None:
    """Point ALIAS (e.g. champion) of model NAME at VERSION. Only a version whose latest
    evaluation blessed it (`gyre evaluate NAME:VERSION`) may be champion or challenger,
    unless --force --reason "why"."""
    previous = _open(ctx).set_alias(name, alias, version, reason=reason, force=force)
    moved = f" (was {previous})" if previous is not None else ""
    console.print(f"{name}@{alias} -> version {version}{moved}")


@registry_app.command("unalias")
def delete_alias(
    ctx: typer.Context, name: str, alias: str, reason: Annotated[str, typer.Option()] = ""
) -> None:
    """Delete ALIAS of model NAME."""
    _open(ctx).delete_alias(name, alias, reason=reason)
    console.print(f"deleted {name}@{alias}")


@registry_app.command()
def delete(
    ctx: typer.Context, name: str, version: int, reason: Annotated[str, typer.Option()] = ""
) -> None:
    """Soft-delete a version that no alias points at (its record and artifact stay)."""
    _open(ctx).delete_version(name, version, reason=reason)
    console.print(f"deleted {name} version {version}")


@registry_app.command()
def policy(
    ctx: typer.Context,
    name: str,
    kind: Annotated[str, typer.Argument(help="champion, split, shadow or bandit.")],
    split: Annotated[
        str | None, typer.Option(help="For split: TARGET=WEIGHT,… e.g. champion=90,challenger=10")
    ] = None,
    shadow: Annotated[str | None, typer.Option(help="For shadow: the mirrored target.")] = None,
    primary: Annotated[str, typer.Option(help="For shadow: the answering target.")] = "champion",
    arms: Annotated[
        str | None, typer.Option(help="For bandit: targets, e.g. champion,challenger")
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the change log.")] = "",
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Send clients' traffic to a version no evaluation blessed (needs --reason; "
            "recorded as forced).",
        ),
    ] = False,
) -> None:
    """Set how requests naming only NAME are spread over its versions (aliases or numbers).
    Every target that answers clients (a split's, a shadow's primary, a bandit's arms) must
    be champion, challenger or a blessed version, unless --force --reason "why"."""
    from gyre.registry._policy import parse_weights

    params: dict[str, object] = {}
    if kind == "split" and split is not None:
        params["weights"] = parse_weights(split)
    elif kind == "shadow":
        params = {"primary": primary, "shadow": shadow}
    elif kind == "bandit" and arms is not None:
        params["arms"] = [arm.strip() for arm in arms.split(",")]
    clean = _open(ctx).set_policy(name, kind, params, reason=reason, force=force)
    console.print(f"{name}: traffic policy {kind} {json.dumps(clean, sort_keys=True)}")


@registry_app.command()
def threshold(
    ctx: typer.Context,
    name: str,
    version: int,
    value: Annotated[
        str, typer.Argument(help="The threshold, between 0 and 1; `none` removes it.")
    ],
    classes: Annotated[
        str | None,
        typer.Option(
            help="NEGATIVE,POSITIVE: the classes, for a graph that does not name them "
            "(numbers for an integer label)."
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why, for the change log.")] = "",
) -> None:
    """Set the decision threshold of a binary classifier's VERSION: the server's label is
    its positive (second) class where that class's probability is at or above VALUE."""
    from gyre.errors import InvalidModel

    number: float | None = None
    if value.strip().lower() != "none":
        try:
            number = float(value)
        except ValueError:
            raise InvalidModel(
                f"the threshold must be a number between 0 and 1, or `none`; not {value!r}"
            ) from None
    pair = None if classes is None else [_class(c) for c in classes.split(",")]
    mv = _open(ctx).set_decision_threshold(name, version, number, reason=reason, classes=pair)
    if mv.decision is None:
        console.print(f"{name} version {version}: no decision threshold (its own label)")
    else:
        console.print(f"{name} version {version}: decision threshold {decision_text(mv)}")


def _class(text: str) -> int | str:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


def register(app: typer.Typer) -> None:
    """Add `gyre registry …` to `app`."""
    _registry_show.add_to(registry_app)
    app.add_typer(registry_app, name="registry")
