"""`gyre registry list|show|history`: what the registry holds, and what changed in it."""

from __future__ import annotations

import datetime
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from gyre.cli._app import JsonOption, State, print_json, print_table
from gyre.registry import ModelVersion, Registry, VersionEvaluation, decision_of
from gyre.stores import Stores


def _open(ctx: typer.Context) -> Registry:
    state: State = ctx.obj
    return Registry.from_config(state.config())


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _shape(spec_shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("N" if d < 0 else str(d) for d in spec_shape) + "]"


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


def decision_text(mv: ModelVersion) -> str:
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


def _evaluation_text(mv: ModelVersion, judged: VersionEvaluation | None) -> str:
    """The version's latest evaluation: the blessing its champion alias needs."""
    if judged is None:
        return (
            "none: not blessed (champion or challenger only when forced); "
            f"`gyre evaluate {mv.model}:{mv.version}` evaluates it"
        )
    if judged.broken is not None:
        return f"BROKEN: {judged.broken}; it blesses nothing until `gyre evaluate` runs again"
    found = judged.as_json()
    against = f" against {found['champion']}" if found["champion"] else ""
    report = f", report sha256 {found['report_sha256']}" if found["report_sha256"] else ""
    reasons = "; ".join(str(r) for r in found["reasons"]) or "every gate passed"
    rows = f"rows of {found['data']}" if found["data"] else "holdout rows"
    return (
        f"{judged.verdict}{against} on {found['rows']} {rows} ({_when(judged.at)}, run "
        f"{str(found['run_id'])[:12]}{report}): {reasons}"
    )


def _show_table(
    mv: ModelVersion, policy: tuple[Any, Any, str | None], judged: VersionEvaluation | None
) -> Table:
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
    rows.append(("evaluation", _evaluation_text(mv, judged)))
    rows.append(("lineage", json.dumps(mv.lineage, sort_keys=True)))
    if mv.decision is not None:
        rows.append(("decision threshold", decision_text(mv)))
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


def show(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="NAME[:VERSION|@ALIAS]")],
    as_json: JsonOption = False,
) -> None:
    """Show one version: signature, artifacts, parity, lineage and its latest evaluation."""
    registry = _open(ctx)
    mv = registry.resolve(ref)
    judged = registry.evaluation(mv.model, mv.version)
    if as_json:
        kind, params, broken = registry.policy(mv.model)
        policy = {"kind": kind, "params": params, "broken": broken}
        evaluation = None if judged is None else {**judged.as_json(), "at": _when(judged.at)}
        print_json({**_version_json(mv), "traffic_policy": policy, "evaluation": evaluation})
        return
    print_table(_show_table(mv, registry.policy(mv.model), judged))


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


def add_to(registry_app: typer.Typer) -> None:
    """Add the reading commands to `gyre registry` (`_registry.register` calls it)."""
    registry_app.command("list")(list_versions)
    registry_app.command()(show)
    registry_app.command()(history)
