"""Where an evaluation is recorded: on its run (`evaluation`, which `gyre registry publish
--run` carries onto the version it makes) and on the registry version it evaluated, whose
latest verdict decides whether it may be `champion` or `challenger`
(`gyre.registry._aliases`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gyre.config import Config
from gyre.stores import Stores

if TYPE_CHECKING:
    from gyre.evaluate._evaluate import Evaluation


def record_evaluation(
    stores: Stores, config: Config, evaluation: Evaluation, *, report_sha256: str | None = None
) -> dict[str, Any]:
    """Record `evaluation` (with the sha256 of its HTML report, when one was written) on
    its run and on the version it evaluated; the summary recorded."""
    from gyre.registry import Registry

    summary = evaluation.as_json()
    if report_sha256 is not None:
        summary["report_sha256"] = report_sha256
    if evaluation.version is not None:  # first: the registry checks it before it stores it
        model, version = evaluation.version
        registry = Registry.from_config(config)
        try:
            registry.record_evaluation(model, version, summary)
        finally:
            registry.close()
    runs = stores.open_runs()
    try:
        runs.set_record(evaluation.run_id, "evaluation", summary)
    finally:
        runs.close()
    return summary
