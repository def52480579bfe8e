"""Decision thresholds learned from labelled rows, by one of three rules.

A rule is written as text in a spec and parsed once (`parse_rule`):

- `max_f1`: the threshold with the highest F1;
- `precision>=P`: the lowest threshold whose precision reaches P, which is the one with
  the highest recall among those that reach it;
- `cost=C`: the threshold with the lowest fp + C·fn, C being what a false negative costs
  in false positives (C = 5: missing a positive is five times worse than a false alarm).

`learn_threshold` is exact: the scores are sorted once and every distinct score is a
candidate, its counts read from cumulative sums (O(n log n)). The threshold returned is a
score t such that the label is `p >= t`; for the cost rule, labelling nothing positive is a
candidate too, returned as the next float above the highest score. Ties are broken the
same way every time: between thresholds with equal F1 or equal cost, the highest wins
(fewer rows called positive).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from gyre.errors import EvaluationError, SpecError, shown
from gyre.evaluate._metrics import check_binary, rank

RULE_KINDS = ("max_f1", "precision", "cost")
ACCEPTED = (
    '"max_f1", "precision>=P" (0 < P <= 1: the lowest threshold reaching precision P) or '
    '"cost=C" (C > 0: minimise fp + C*fn)'
)
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_RULE = re.compile(rf"\s*(?:(max_f1)|precision\s*>=\s*({_NUMBER})|cost\s*=\s*({_NUMBER}))\s*")


@dataclass(frozen=True)
class ThresholdRule:
    """How to choose a threshold: `kind` is "max_f1" (value None), "precision" (value:
    the target precision) or "cost" (value: a false negative's cost in false positives)."""

    kind: str
    value: float | None

    def __post_init__(self) -> None:
        if self.kind == "max_f1" and self.value is None:
            return
        value = self.value
        if self.kind == "precision" and value is not None and 0.0 < value <= 1.0:
            return
        if self.kind == "cost" and value is not None and 0.0 < value < math.inf:
            return
        raise SpecError(f"threshold rule {self} is not valid: expected {ACCEPTED}")

    def __str__(self) -> str:
        if self.kind == "max_f1":
            return "max_f1"
        return f"{self.kind}{'>=' if self.kind == 'precision' else '='}{self.value}"


def parse_rule(text: str) -> ThresholdRule:
    """The rule written in `text`: "max_f1", "precision>=0.9" or "cost=5" (spaces around
    the operator allowed); SpecError, naming what is accepted, for anything else."""
    match = _RULE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise SpecError(f"threshold rule {shown(text)} is not understood: expected {ACCEPTED}")
    if match[1]:
        return ThresholdRule("max_f1", None)
    if match[2] is not None:
        return ThresholdRule("precision", float(match[2]))
    return ThresholdRule("cost", float(match[3]))


def learn_threshold(y: np.ndarray, p: np.ndarray, rule: ThresholdRule) -> float:
    """The threshold `rule` picks on labels `y` (0/1) and probabilities `p` of class 1:
    label = p >= threshold. SpecError when no threshold reaches a target precision (the
    message says the best one reached); EvaluationError for max_f1 without a positive."""
    positive, p = check_binary(y, p)
    ranking = rank(p)
    scores = p[ranking.order][ranking.last]  # distinct, highest first
    tp = np.cumsum(positive[ranking.order])[ranking.last].astype(np.float64)
    fp = (ranking.last + 1) - tp
    pos = tp[-1]
    if rule.kind == "max_f1":
        if pos == 0:
            raise EvaluationError(
                "no positive labels: F1 is undefined at every threshold; learn the "
                "threshold on rows that include positives"
            )
        return _between(scores, int(np.argmax(2.0 * tp / (tp + fp + pos))))
    value = rule.value
    assert value is not None  # ThresholdRule checks it for the other kinds
    if rule.kind == "precision":
        precision = tp / (tp + fp)
        reached = np.flatnonzero(precision >= value)
        if len(reached) == 0:
            best = int(np.argmax(precision))
            raise SpecError(
                f"no threshold reaches precision {value} on these {len(p)} rows; the "
                f"best is {precision[best]:.4g} (at threshold {scores[best]:.6g}): lower "
                "the target or learn it on more data"
            )
        return _between(scores, int(reached[-1]))
    # Candidate 0 labels nothing positive; candidate g + 1 labels the groups 0..g.
    cost = np.concatenate([[value * pos], fp + value * (pos - tp)])
    best = int(np.argmin(cost))
    return _between(scores, best - 1)


def _between(scores: np.ndarray, last: int) -> float:
    """A threshold that labels positive the distinct `scores` (highest first) up to index
    `last` (-1: none): halfway to the next lower score, so that the same rows are chosen
    with a margin, and strictly inside (0, 1), as a stored threshold must be (a score of
    exactly 0 or 1 is the one that can land on the other side)."""
    upper = 1.0 if last < 0 else float(scores[last])
    lower = float(scores[last + 1]) if last + 1 < len(scores) else 0.0
    middle = (upper + lower) / 2
    return float(min(max(middle, np.nextafter(0.0, 1.0)), np.nextafter(1.0, 0.0)))
