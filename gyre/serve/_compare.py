"""Comparing a shadow version's answer with the primary's: agreement and differences.

The rule depends on what an output holds:

- **Discrete outputs** (integers, booleans, strings: class labels, ids) agree on a row
  when they are equal.
- **Continuous outputs** (floats: regression values, probabilities, scores) agree on an
  element when `|a - b| <= abs_tolerance + rel_tolerance * max(|a|, |b|)`; two NaNs agree.

A model with a discrete output (a classifier: label and probabilities) agrees when its
discrete outputs do: a challenger that picks the same class agrees even if its
probabilities moved. A model with continuous outputs only (a regressor) agrees when every
element is within the tolerance. Either way the continuous outputs' differences are
measured, so a report shows how far apart the versions are, not only how often they agree:
mean and max of the absolute difference and of the relative one, `|a - b| / max(|a|, |b|)`
(0 when both are 0; it lies in [0, 2]). Non-finite pairs other than two equal values count
as disagreeing and are left out of the differences, which stay finite numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gyre.monitor import Comparison
from gyre.serve._runtime import Tensors
from gyre.serve.protocols._tensors import to_json_value


@dataclass(frozen=True, slots=True)
class Tolerance:
    abs: float
    rel: float


def _discrete(array: np.ndarray) -> bool:
    return array.dtype.kind not in "fc"


def compare(primary: Tensors, shadow: Tensors, tolerance: Tolerance) -> Comparison:
    """Compare every output the primary gave with the shadow's output of the same name."""
    missing = sorted(set(primary) - set(shadow))
    if missing:
        return _mismatch(f"the shadow gave no output {', '.join(missing)}")
    discrete_agree = True
    continuous_agree = True
    has_discrete = False
    abs_diffs: list[np.ndarray] = []
    rel_diffs: list[np.ndarray] = []
    for name, a in primary.items():
        b = shadow[name]
        if a.shape != b.shape:
            return _mismatch(f"output {name} has shape {list(b.shape)}, not {list(a.shape)}")
        if _discrete(a) or _discrete(b):
            has_discrete = True
            discrete_agree = discrete_agree and _equal(a, b)
            continue
        x, y = a.astype(np.float64), b.astype(np.float64)
        finite = np.isfinite(x) & np.isfinite(y)
        same_nonfinite = ~finite & ((x == y) | (np.isnan(x) & np.isnan(y)))
        diff = np.abs(x[finite] - y[finite])
        scale = np.maximum(np.abs(x[finite]), np.abs(y[finite]))
        rel = np.divide(diff, scale, out=np.zeros_like(diff), where=scale > 0)
        within = diff <= tolerance.abs + tolerance.rel * scale
        continuous_agree = (
            continuous_agree and bool(np.all(within)) and bool(np.all(finite | same_nonfinite))
        )
        abs_diffs.append(diff)
        rel_diffs.append(rel)
    agree = discrete_agree if has_discrete else continuous_agree
    absolute = np.concatenate(abs_diffs) if abs_diffs else np.empty(0)
    relative = np.concatenate(rel_diffs) if rel_diffs else np.empty(0)
    if not absolute.size:
        return Comparison(agree, None, None, None, None)
    return Comparison(
        agree,
        float(absolute.mean()),
        float(absolute.max()),
        float(relative.mean()),
        float(relative.max()),
    )


def _equal(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype == object or b.dtype == object:
        # Strings may arrive as str from one runtime and bytes from another.
        return bool(to_json_value(a) == to_json_value(b))
    return bool(np.array_equal(a, b))


def _mismatch(why: str) -> Comparison:
    return Comparison(False, None, None, None, None, mismatch=why)
