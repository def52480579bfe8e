"""Leave-one-feature-out: what each feature adds (the ML Test Score's Data 2).

For each feature the run's model family is refitted with the same parameters and seed on
the run's training rows without that feature (through `gyre.learn`'s trainers, as
`gyre train` fits), scored on the evaluated rows, and compared paired with the run's own
model: the primary metric's difference, full model minus the model without the feature,
with its interval. A report, never a gate. At most `MAX_LOFO_FEATURES` features are
refitted (in the model's order); the rest are named as skipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gyre.evaluate._intervals import Difference, paired_differences

MAX_LOFO_FEATURES = 50  # refits of one evaluation: each is a full training on the rows
PRIMARY = {"classification": "roc_auc", "regression": "rmse"}


@dataclass(frozen=True)
class LeaveOneOut:
    metric: str  # the primary metric: roc_auc (higher is better) or rmse (lower is)
    features: dict[str, Difference]  # full model - model without the feature
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "features": {name: d.as_dict() for name, d in self.features.items()},
            "skipped": self.skipped,
        }


def leave_one_out(
    spec: Any,
    data: Any,
    names: Sequence[str],
    y: np.ndarray,
    full: np.ndarray,
    *,
    confidence: float,
    seed: int,
) -> LeaveOneOut:
    """`data`: the rows (`TrainingData`: x, y, train, validation, holdout) with the rows
    evaluated on as its holdout; `y` their targets as scored (0/1, or values); `full` the
    run's model's scores on them."""
    from gyre.learn._trainer import make_trainer

    metric = PRIMARY[spec.task]
    kept, skipped = list(names[:MAX_LOFO_FEATURES]), list(names[MAX_LOFO_FEATURES:])
    found = {}
    for index, name in enumerate(kept):
        others = [j for j in range(len(names)) if j != index]
        x = data.x[:, others]
        validation = None
        if len(data.validation):
            validation = (x[data.validation], data.y[data.validation])
        trainer = make_trainer(spec.model.family, spec.task, spec.model.params, spec.seed)
        trainer.fit(x[data.train], data.y[data.train], validation=validation)
        rows = x[data.holdout]
        if spec.task == "regression":
            without = np.asarray(trainer.predict(rows), dtype=np.float64)
        else:
            without = np.asarray(trainer.predict_proba(rows), dtype=np.float64)[:, 1]
        found[name] = paired_differences(
            spec.task, y, full, without, confidence=confidence, seed=seed
        )[metric]
    return LeaveOneOut(metric, found, skipped)
