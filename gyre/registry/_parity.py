"""The parity check: ONNX and native predictions must agree before a version is published."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from gyre.errors import ParityError


@dataclass(frozen=True)
class ParityResult:
    rows: int
    tolerance: float
    max_abs_diff: float
    label_mismatches: int
    passed: bool

    def as_record(self) -> dict[str, Any]:
        return asdict(self)


def check_parity(
    onnx_outputs: list[np.ndarray],
    native: list[np.ndarray],
    *,
    tolerance: float,
    classifier: bool,
    what: str,
) -> ParityResult:
    """Compare outputs; raise `ParityError` with the observed difference when they disagree.

    For a classifier, output 0 is the label and output 1 the class probabilities: the
    probabilities must agree within `tolerance`, and a label may differ only where the native
    model's two most likely classes are tied within `tolerance` (float32 rounding may break
    such a tie either way).
    """
    rows = len(native[0])
    if classifier:
        labels_onnx, proba_onnx = onnx_outputs[0], np.asarray(onnx_outputs[1], np.float64)
        labels_native, proba_native = native
        max_diff = float(np.max(np.abs(proba_onnx - proba_native), initial=0.0))
        differ = np.asarray(labels_onnx).reshape(-1) != np.asarray(labels_native).reshape(-1)
        top2 = np.sort(proba_native, axis=1)[:, -2:] if proba_native.shape[1] > 1 else None
        tied = (top2[:, 1] - top2[:, 0] <= tolerance) if top2 is not None else np.zeros(rows, bool)
        mismatches = int(np.sum(differ & ~tied))
    else:
        predicted = np.asarray(onnx_outputs[0], np.float64).reshape(-1)
        expected = np.asarray(native[0], np.float64).reshape(-1)
        if predicted.shape != expected.shape:
            raise ParityError(
                f"{what}: ONNX returned {predicted.size} values for {expected.size} native ones"
            )
        max_diff = float(np.max(np.abs(predicted - expected), initial=0.0))
        mismatches = 0
    result = ParityResult(
        rows=rows,
        tolerance=tolerance,
        max_abs_diff=max_diff,
        label_mismatches=mismatches,
        passed=max_diff <= tolerance and mismatches == 0,
    )
    if not result.passed:
        raise ParityError(
            f"{what}: ONNX and native predictions differ on {rows} sample rows: max absolute "
            f"difference {max_diff:.3g} (tolerance {tolerance:.3g}), {mismatches} label "
            "mismatches; the model cannot be served faithfully as ONNX, so it was not published "
            "(for outputs of large magnitude, float32's rounding alone may pass the tolerance: "
            "set `parity_tolerance` under [registry] in gyre.toml if that difference is fine)"
        )
    return result
