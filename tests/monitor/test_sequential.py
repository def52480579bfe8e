"""The canary's always-valid test: peeking after every batch keeps the false-verdict rate
at its nominal level, a better challenger is promoted, a worse one rolled back."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gyre.errors import MonitorError, http_status
from gyre.monitor import CanaryTest


def _run(test: CanaryTest, rng: np.random.Generator, champion: float, challenger: float,
         rows: int, every: int = 25) -> str:  # fmt: skip
    """Feed both versions' losses (normal, sd 1), looking every `every` pairs."""
    theirs = rng.normal(champion, 1.0, rows)
    mine = rng.normal(challenger, 1.0, rows)
    for i in range(rows):
        test.add("champion", float(theirs[i]))
        test.add("challenger", float(mine[i]))
        if (i + 1) % every == 0:
            decision = test.verdict().decision
            if decision != "continue":
                return decision
    return "continue"


def test_looking_after_every_batch_keeps_false_rollbacks_at_the_nominal_rate() -> None:
    """Equal versions, 80 looks each: the sequence decides either way in at most alpha of
    the seeds; a fixed-sample z test looked at as often finds the challenger worse in far
    more."""
    seeds, rows, every = 200, 2_000, 25
    decided = [
        _run(CanaryTest(alpha=0.05, min_samples=25, max_samples=10**6),
             np.random.default_rng(s), 1.0, 1.0, rows, every)
        for s in range(seeds)
    ]  # fmt: skip
    # Margin 0: promoting an equal challenger is as wrong as rolling it back.
    assert sum(d != "continue" for d in decided) / seeds <= 0.05
    naive = 0
    for s in range(seeds):
        rng = np.random.default_rng(s)
        d = rng.normal(1.0, 1.0, rows) - rng.normal(1.0, 1.0, rows)
        n = np.arange(every, rows + 1, every)
        z = np.cumsum(d)[n - 1] / np.sqrt(2 * n)
        naive += bool(np.any(z > 1.96))
    assert naive / seeds > 0.1  # the peeking a fixed test cannot take


def test_a_better_challenger_is_promoted_and_a_worse_one_rolled_back() -> None:
    rng = np.random.default_rng(1)
    assert _run(CanaryTest(), rng, 1.0, 0.7, 5_000) == "promote"
    assert _run(CanaryTest(), rng, 1.0, 1.3, 5_000) == "roll_back"
    # Equal, with room to be a little worse: promoted once the interval is narrow enough.
    assert _run(CanaryTest(margin=0.15), rng, 1.0, 1.0, 5_000) == "promote"


def test_it_waits_for_enough_losses_and_gives_up_on_an_undecided_canary() -> None:
    test = CanaryTest(min_samples=50, max_samples=60)
    for _ in range(49):
        test.add("champion", 1.0)
        test.add("challenger", 1.0)
    early = test.verdict()
    assert early.decision == "continue" and "waiting for 50" in early.reason
    rng = np.random.default_rng(2)
    for _ in range(11):
        test.add("champion", float(rng.normal()))
        test.add("challenger", float(rng.normal()))
    late = test.verdict()
    assert late.decision == "roll_back" and "undecided after 60" in late.reason
    assert late.samples == (60, 60) and late.lower < late.difference < late.upper
    assert late.as_dict()["interval"] == [late.lower, late.upper]


def test_what_a_canary_cannot_take_is_refused_with_a_typed_400() -> None:
    test = CanaryTest()
    cases = [
        (lambda: test.add("shadow", 1.0), "champion` or `challenger"),
        (lambda: test.add("champion", math.nan), "finite"),
        (lambda: CanaryTest(alpha=1.0), "alpha"),
        (lambda: CanaryTest(margin=-0.1), "margin"),
        (lambda: CanaryTest(min_samples=10, max_samples=5), "min_samples"),
    ]
    for make, message in cases:
        with pytest.raises(MonitorError, match=message) as caught:
            make()
        assert http_status(caught.value) == 400


def test_worse_by_less_than_the_margin_is_never_rolled_back_however_late_one_looks() -> None:
    rng = np.random.default_rng(5)
    test = CanaryTest(margin=0.05, max_samples=10**6)
    for _ in range(20_000):
        test.add("champion", float(rng.normal(1.0, 0.1)))
        test.add("challenger", float(rng.normal(1.01, 0.1)))
    assert test.verdict().decision == "promote"
