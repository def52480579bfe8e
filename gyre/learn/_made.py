"""What a registry version was made from: the run of `gyre train` that its lineage names,
checked against the version's own model, and what that run kept beside the model (the
input profile the monitor compares served inputs with).

A lineage is the publisher's word (`gyre registry publish --lineage` takes any JSON), so
the run it names is taken as the version's maker only when the version's native model is
the very bytes that run stored (`gyre registry publish --run` publishes them as they are).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre.errors import RunError
from gyre.learn._train import RunModel, run_model
from gyre.stores import Stores

if TYPE_CHECKING:
    from gyre.monitor import InputProfile


def version_run(stores: Stores, mv: Any, what: str) -> RunModel:
    """The run that made registry version `mv` (a `ModelVersion`; `what` names it in
    errors, e.g. "model `buyers`"); RunError when none did."""
    made_by = mv.lineage.get("run") or {}
    run_id = made_by.get("run_id") if isinstance(made_by, dict) else None
    if not run_id:
        raise RunError(
            f"{what} version {mv.version} was not published from a run of `gyre train`; "
            "publish one with `gyre registry publish --run RUN`"
        )
    made = run_model(stores, str(run_id))
    if mv.native_sha256 != made.model_sha256:
        raise RunError(
            f"{what} version {mv.version} names run {run_id} in its lineage, but its model "
            f"is not the one that run stored (native sha256 {mv.native_sha256 or 'none'}, "
            f"the run's {made.model_sha256}). Publish the run's model with `gyre registry "
            f"publish --run {run_id}` and use that version"
        )
    return made


def run_profile(stores: Stores, run_id: str) -> InputProfile | None:
    """The input profile the run took of its training rows (None: it took none, as runs
    from before profiles, or of inputs that are not a table of numbers)."""
    from gyre.monitor import InputProfile

    runs = stores.open_runs()
    try:
        artifacts = runs.get(run_id).record.get("artifacts", {})
    finally:
        runs.close()
    found = artifacts.get("profile") if isinstance(artifacts, dict) else None
    if not isinstance(found, dict) or not isinstance(found.get("sha256"), str):
        return None
    data = stores.open_artifacts().get(found["sha256"], what=f"run {run_id}'s input profile")
    return InputProfile.from_bytes(data)


__all__ = ["run_profile", "version_run"]
