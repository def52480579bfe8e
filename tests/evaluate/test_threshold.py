import math

import numpy as np
import pytest

from gyre.errors import EvaluationError, SpecError
from gyre.evaluate import ThresholdRule, learn_threshold, parse_rule


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("max_f1", ThresholdRule("max_f1", None)),
        ("max_f1 ", ThresholdRule("max_f1", None)),
        ("precision>=0.9", ThresholdRule("precision", 0.9)),
        (" precision >= 1 ", ThresholdRule("precision", 1.0)),
        ("cost=5", ThresholdRule("cost", 5.0)),
        ("cost = 0.25", ThresholdRule("cost", 0.25)),
        ("cost=1e3", ThresholdRule("cost", 1000.0)),
    ],
)
def test_rules_parse_from_their_text(text: str, rule: ThresholdRule) -> None:
    assert parse_rule(text) == rule
    assert parse_rule(str(rule)) == rule


@pytest.mark.parametrize(
    "text",
    [
        "",
        "f1",
        "precision>0.9",
        "precision>=",
        "precision>=nan",
        "cost=-1",
        "cost=inf",
        "recall>=0.8",
        "cost=5 dollars",
    ],
)
def test_anything_else_is_refused_with_what_is_accepted(text: str) -> None:
    with pytest.raises(SpecError, match=r"not understood: expected \"max_f1\", \"precision>=P\""):
        parse_rule(text)


def test_rule_values_are_checked_when_built() -> None:
    with pytest.raises(SpecError, match=r"precision>=1\.5 is not valid"):
        ThresholdRule("precision", 1.5)
    with pytest.raises(SpecError, match=r"cost=0\.0 is not valid"):
        ThresholdRule("cost", 0.0)
    with pytest.raises(SpecError, match="max_f1"):
        ThresholdRule("max_f1", 0.5)
    with pytest.raises(SpecError, match="rule f1=None is not valid"):
        ThresholdRule("f1", None)


def candidates(p: np.ndarray) -> list[float]:
    """Every threshold that labels a different set of rows, and one above them all."""
    return [*sorted(set(p.tolist()), reverse=True), math.inf]


def counts(y: np.ndarray, p: np.ndarray, t: float) -> tuple[int, int, int]:
    called = p >= t
    return (
        int((called & (y == 1)).sum()),
        int((called & (y == 0)).sum()),
        int(((~called) & (y == 1)).sum()),
    )


def tied_rows(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    return y, np.round(np.clip(rng.random(200) * 0.7 + 0.3 * y, 0, 1), 2)


@pytest.mark.parametrize("seed", range(5))
def test_max_f1_is_the_best_f1_over_every_threshold(seed: int) -> None:
    y, p = tied_rows(seed)
    f1 = {}
    for t in candidates(p)[:-1]:
        tp, fp, fn = counts(y, p, t)
        f1[t] = 2 * tp / (2 * tp + fp + fn)
    best = max(f1.values())
    t = learn_threshold(y, p, parse_rule("max_f1"))
    chosen = max(k for k, v in f1.items() if v == best)  # ties: the highest threshold
    assert np.array_equal(p >= t, p >= chosen) and 0 < t < 1


def test_max_f1_breaks_a_tie_towards_the_higher_threshold() -> None:
    # At 0.8: tp 1, fp 0, fn 1 -> 2/3; at 0.4: tp 2, fp 2, fn 0 -> 2/3.
    y = np.array([1, 0, 0, 1])
    p = np.array([0.8, 0.6, 0.5, 0.4])
    t = learn_threshold(y, p, parse_rule("max_f1"))
    assert 0.6 < t <= 0.8 and np.array_equal(p >= t, p >= 0.8)  # halfway to the next score


@pytest.mark.parametrize("seed", range(5))
def test_a_target_precision_gets_the_lowest_threshold_reaching_it(seed: int) -> None:
    y, p = tied_rows(seed)
    t = learn_threshold(y, p, parse_rule("precision>=0.8"))
    reaching = []
    for c in candidates(p)[:-1]:
        tp, fp, _ = counts(y, p, c)
        if tp / (tp + fp) >= 0.8:
            reaching.append(c)
    assert np.array_equal(p >= t, p >= min(reaching))


def test_a_precision_exactly_at_the_target_reaches_it() -> None:
    y = np.array([1] * 9 + [0] + [0] * 5)
    p = np.array([0.9] * 10 + [0.2] * 5)
    t = learn_threshold(y, p, parse_rule("precision>=0.9"))
    assert np.array_equal(p >= t, p >= 0.9)


def test_an_unreachable_precision_says_the_best_one_reached() -> None:
    y = np.array([1, 0, 1, 0])
    p = np.array([0.9, 0.9, 0.5, 0.4])
    with pytest.raises(SpecError, match=r"no threshold reaches precision 0.99 .* best is 0.6667"):
        learn_threshold(y, p, parse_rule("precision>=0.99"))


@pytest.mark.parametrize("cost", [0.2, 1.0, 5.0, 50.0])
def test_the_cost_rule_minimises_false_positives_plus_cost_times_false_negatives(
    cost: float,
) -> None:
    y, p = tied_rows(7)
    totals = {}
    for c in candidates(p):
        _, fp, fn = counts(y, p, c)
        totals[c] = fp + cost * fn
    t = learn_threshold(y, p, ThresholdRule("cost", cost))
    called = p >= t
    fp, fn = int((called & (y == 0)).sum()), int((~called & (y == 1)).sum())
    assert fp + cost * fn == min(totals.values())


def test_the_cost_rule_may_label_nothing_positive() -> None:
    y = np.array([0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.7, 0.1])
    t = learn_threshold(y, p, parse_rule("cost=0.5"))
    assert t > 0.9 and not np.any(p >= t)


def test_max_f1_without_positives_is_an_error() -> None:
    with pytest.raises(EvaluationError, match="no positive labels"):
        learn_threshold(np.zeros(3), np.array([0.1, 0.5, 0.9]), parse_rule("max_f1"))


def test_a_threshold_stays_strictly_inside_0_and_1_as_the_registry_stores_it() -> None:
    """Scores of exactly 0 and 1 (a nearest-neighbour model's) once gave 0.0 and just above
    1, which a version cannot store."""
    y = np.array([1, 1, 0, 0, 1, 0])
    p = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 1.0])
    for rule in ("max_f1", "cost=0.0001", "cost=1000", "precision>=0.5"):
        t = learn_threshold(y, p, parse_rule(rule))
        assert 0 < t < 1, rule
