import math
from fractions import Fraction

import numpy as np
import pytest

from gyre.evaluate._distributions import (
    EXACT_BINOMIAL_MAX,
    mcnemar_p,
    normal_cdf,
    two_sided_p,
    wilson,
    z_value,
)


def test_the_normal_critical_values_and_p_values_are_the_textbook_ones() -> None:
    assert z_value(0.95) == pytest.approx(1.959963984540054, abs=1e-12)
    assert z_value(0.99) == pytest.approx(2.5758293035489004, abs=1e-12)
    assert normal_cdf(0.0) == 0.5
    assert two_sided_p(1.959963984540054) == pytest.approx(0.05, rel=1e-10)
    assert two_sided_p(-10.0) == pytest.approx(1.523970604832105e-23, rel=1e-9)


def exact_two_sided(b: int, c: int) -> float:
    n, k = b + c, min(b, c)
    tail = Fraction(sum(math.comb(n, i) for i in range(k + 1)), 2**n)
    return min(1.0, float(2 * tail))


@pytest.mark.parametrize(("b", "c"), [(0, 0), (1, 9), (9, 1), (5, 5), (0, 30), (40, 70), (3, 400)])
def test_mcnemars_exact_p_is_the_binomial_tail(b: int, c: int) -> None:
    p, exact = mcnemar_p(b, c)
    assert exact
    assert p == pytest.approx(exact_two_sided(b, c), rel=1e-10)


def test_mcnemar_is_hand_checked_for_one_against_nine() -> None:
    assert mcnemar_p(1, 9)[0] == pytest.approx(22 / 1024)


def test_mcnemar_switches_to_the_normal_approximation_for_many_pairs() -> None:
    b, c = 49_800, EXACT_BINOMIAL_MAX - 49_800 + 1
    approx, exact = mcnemar_p(b, c)
    assert not exact
    n = b + c
    logs = np.cumsum(np.log(np.arange(1, n + 1)))
    log_comb = logs[-1] - np.r_[0.0, logs][: b + 1] - np.r_[0.0, logs][n - b :][::-1]
    reference = 2 * float(np.exp(log_comb - n * math.log(2)).sum())
    assert approx == pytest.approx(reference, rel=2e-3)


def test_wilson_intervals_are_the_published_ones() -> None:
    low, high = wilson(0, 10, z_value(0.95))
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson(5, 10, z_value(0.95))
    assert (low, high) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert all(math.isnan(v) for v in wilson(0, 0, 1.96))
