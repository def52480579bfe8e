"""`gyre registry …`: publish, alias, list, show, delete, policy, threshold, history."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gyre.cli._app import JsonOption, State, console, print_json, print_table
from gyre.registry import ModelVersion, Registry, decision_of
from gyre.stores import Stores

registry_app = typer.Typer(help="Model versions, aliases and artifacts.", no_args_is_help=True)


def _open(ctx: typer.Context) -> Registry:
    state: State = ctx.obj
    return Registry.from_config(state.config())


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _shape(spec_shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if d < 0 else str(d) for d in spec_shape) + "]"


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
) -> None:
    """Publish a model: export to ONNX, check parity, store it as the next version (or name
    the live version that already holds the same content)."""
    try:
        extra = json.loads(lineage) if lineage else None
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--lineage is not valid JSON: {exc}") from None
    if (run is None) == (path is None):
        raise typer.BadParameter("give a model file (NAME PATH) or a run (--run RUN), not both")
    registry = _open(ctx)
    if run is not None:
        mv = _publish_run(ctx, registry, run, name, alias=alias, extra=extra, force_new=force_new)
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
) -> ModelVersion:
    """A finished run's model, bound to its feature view when it learned from one view
    alone (the server then answers requests that name an entity)."""
    from gyre.collect import event_types
    from gyre.features import feature_views
    from gyre.learn import run_model

    state: State = ctx.obj
    config = state.config()
    made = run_model(Stores.from_config(config), run_id)
    view = None
    if len(made.views) == 1 and made.sample.shape[1] == len(made.feature_names):
        views = feature_views(config.features.views, event_types(config.collect.events))
        found = views.get(made.views[0])
        if found is not None and list(found.features) == list(made.feature_names):
            view = found
    judged = made.lineage.get("evaluation") or {}
    learned = (judged.get("threshold") or {}).get("challenger")
    return registry.publish(
        name or made.experiment,
        made.model,
        made.sample,
        alias=alias,
        lineage={**(extra or {}), "run": made.lineage},
        names=made.feature_names,
        features=view,
        force_new=force_new,
        # The threshold `gyre evaluate` learned on the run's validation rows: the server's
        # label then follows it (a binary classifier's; none before an evaluation).
        decision_threshold=learned if isinstance(learned, float) else None,
    )


@registry_app.command("alias")
def set_alias(
    ctx: typer.Context,
    name: str,
    alias: str,
    version: int,
    reason: Annotated[str, typer.Option(help="Why, for the change log.")] = "",
) -> None:
    """Point ALIAS (e.g. champion) of model NAME at VERSION."""
    previous = _open(ctx).set_alias(name, alias, version, reason=reason)
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


@registry_app.command("list")
def list_versions(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument()] = None,
    as_json: JsonOption = False,
) -> None:
    """List models and their versions."""
    versions = _open(ctx).versions(name)
    if as_json:
        print_json([_version_json(mv) for mv in versions])
        return
    table = Table(title=f"models in {Stores.from_config(ctx.obj.config()).describe}")
    for column in ("model", "version", "aliases", "flavor", "created", "inputs", "sha256"):
        table.add_column(column)
    for mv in versions:
        table.add_row(
            mv.model,
            str(mv.version),
            ", ".join(mv.aliases),
            mv.flavor,
            _when(mv.created_at),
            ", ".join(f"{s.name} {s.datatype}{_shape(s.shape)}" for s in mv.signature.inputs),
            mv.artifact_sha256[:12],
        )
    print_table(table)


def _version_json(mv: ModelVersion) -> dict[str, Any]:
    """Every recorded field, hashes in full."""
    return {
        "model": mv.model,
        "version": mv.version,
        "aliases": list(mv.aliases),
        "flavor": mv.flavor,
        "created_at": _when(mv.created_at),
        "gyre_version": mv.gyre_version,
        "artifact_sha256": mv.artifact_sha256,
        "artifact_bytes": mv.artifact_bytes,
        "native_sha256": mv.native_sha256,
        "native_bytes": mv.native_bytes,
        "inputs": [_spec_json(s) for s in mv.signature.inputs],
        "outputs": [_spec_json(s) for s in mv.signature.outputs],
        "feature_names": list(mv.signature.feature_names or []) or None,
        "python_class": mv.entrypoint,
        "files_sha256": mv.files_sha256,
        "files": [{"path": f.path, "sha256": f.sha256, "bytes": f.bytes} for f in mv.files],
        "parity": mv.parity,
        "lineage": mv.lineage,
        "decision_threshold": _decision_json(mv),
    }


def _decision_json(mv: ModelVersion) -> dict[str, Any] | None:
    """The stored decision threshold, and why the server cannot use it (None: it can)."""
    if mv.decision is None:
        return None
    decision, broken = decision_of(mv)
    if decision is None:
        return {"stored": mv.decision, "broken": broken}
    return {**decision.as_record(), "broken": None}


def _decision_text(mv: ModelVersion) -> str:
    decision, broken = decision_of(mv)
    if decision is None:
        stored = json.dumps(mv.decision, sort_keys=True, default=repr, ensure_ascii=False)
        return (
            f"BROKEN: {stored}: {broken}; the server ignores it and serves the model's own "
            f"label until `gyre registry threshold {mv.model} {mv.version} …` sets a valid one"
        )
    negative, positive = (json.dumps(c, ensure_ascii=False) for c in decision.classes)
    return (
        f"{decision.threshold:g}: label {positive} where p({positive}) >= "
        f"{decision.threshold:g}, else {negative}"
    )


def _spec_json(spec: Any) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _show_table(mv: ModelVersion, policy: tuple[Any, Any, str | None]) -> Table:
    table = Table(title=f"{mv.model} version {mv.version}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("aliases", ", ".join(mv.aliases) or "-"),
        ("flavor", mv.flavor),
        ("created", _when(mv.created_at)),
        ("gyre version", mv.gyre_version),
        ("artifact sha256", f"{mv.artifact_sha256} ({mv.artifact_bytes} bytes)"),
        (
            "native sha256",
            f"{mv.native_sha256} ({mv.native_bytes} bytes)" if mv.native_sha256 else "-",
        ),
    ]
    rows += [(f"input {s.name}", f"{s.datatype} {_shape(s.shape)}") for s in mv.signature.inputs]
    rows += [(f"output {s.name}", f"{s.datatype} {_shape(s.shape)}") for s in mv.signature.outputs]
    if mv.entrypoint:
        rows.append(("python class", mv.entrypoint))
    if mv.files:
        total = sum(f.bytes for f in mv.files)
        rows.append(("files", f"{len(mv.files)} ({total} bytes), manifest {mv.files_sha256}"))
        rows += [(f"file {f.path}", f"{f.sha256} ({f.bytes} bytes)") for f in mv.files]
    if mv.signature.feature_names:
        rows.append(("features", ", ".join(mv.signature.feature_names)))
    rows.append(("parity", json.dumps(mv.parity, sort_keys=True)))
    made_by = mv.lineage.get("run")
    if isinstance(made_by, dict) and made_by.get("run_id"):
        rows.append(
            (
                "made by run",
                f"{made_by['run_id']} (spec {str(made_by.get('spec_sha256'))[:12]}, fact log at "
                f"{made_by.get('fact_log_watermark')}, training set "
                f"{str(made_by.get('training_set_sha256'))[:12]}; gyre runs show "
                f"{made_by['run_id'][:8]})",
            )
        )
        judged = made_by.get("evaluation")
        if isinstance(judged, dict) and judged.get("verdict"):
            against = f" against {judged['champion']}" if judged.get("champion") else ""
            rows.append(
                (
                    "evaluation",
                    f"{judged['verdict']}{against} on {judged.get('rows')} holdout rows: "
                    + "; ".join(str(r) for r in judged.get("reasons", [])),
                )
            )
    rows.append(("lineage", json.dumps(mv.lineage, sort_keys=True)))
    if mv.decision is not None:
        rows.append(("decision threshold", _decision_text(mv)))
    kind, params, broken = policy
    stored = f"{kind} {json.dumps(params, sort_keys=True, default=repr, ensure_ascii=False)}"
    rows.append(
        (
            "traffic policy",
            stored
            if broken is None
            else f"BROKEN: {stored}: {broken}; the server ignores it and serves the champion "
            f"until `gyre registry policy {mv.model} …` sets a valid one",
        )
    )
    for field, value in rows:
        table.add_row(field, value)
    return table


@registry_app.command()
def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME[:VERSION|@ALIAS]")],
    as_json: JsonOption = False,
) -> None:
    """Show one version: signature, artifacts, parity and lineage."""
    registry = _open(ctx)
    mv = registry.resolve(ref)
    if as_json:
        kind, params, broken = registry.policy(mv.model)
        policy = {"kind": kind, "params": params, "broken": broken}
        print_json({**_version_json(mv), "traffic_policy": policy})
        return
    print_table(_show_table(mv, registry.policy(mv.model)))


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
) -> None:
    """Set how requests naming only NAME are spread over its versions (aliases or numbers)."""
    from gyre.registry._policy import parse_weights

    params: dict[str, object] = {}
    if kind == "split" and split is not None:
        params["weights"] = parse_weights(split)
    elif kind == "shadow":
        params = {"primary": primary, "shadow": shadow}
    elif kind == "bandit" and arms is not None:
        params["arms"] = [arm.strip() for arm in arms.split(",")]
    clean = _open(ctx).set_policy(name, kind, params, reason=reason)
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
        console.print(f"{name} version {version}: decision threshold {_decision_text(mv)}")


def _class(text: str) -> int | str:
    text = text.strip()
    try:
        return int(text)
    except ValueError:
        return text


@registry_app.command()
def history(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="a model; none: every model")] = None,
    after: Annotated[int, typer.Option(help="only changes after this position (seq)")] = 0,
    limit: Annotated[int, typer.Option(min=1, help="at most this many")] = 50,
    as_json: JsonOption = False,
) -> None:
    """The registry's changes, oldest first: publishes, alias moves, deletions, policies,
    with why. Page on with --after SEQ (the last one shown)."""
    changes = _open(ctx).changes(name, after=after, limit=limit)
    if as_json:
        print_json(changes)
        return
    table = Table(title="registry changes")
    for column in ("seq", "when", "model", "action", "detail"):
        table.add_column(column)
    for change in changes:
        detail = {k: v for k, v in change.items() if k not in ("seq", "at", "model", "action")}
        table.add_row(
            str(change["seq"]), _when(change["at"]), change["model"], change["action"],
            json.dumps(detail, sort_keys=True),
        )  # fmt: skip
    print_table(table)


def register(app: typer.Typer) -> None:
    """Add `gyre registry …` to `app`."""
    app.add_typer(registry_app, name="registry")
