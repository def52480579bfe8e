"""The few distribution functions the intervals and tests need (scipy is not a dependency).

- The normal quantile is the standard library's (`statistics.NormalDist.inv_cdf`,
  Wichura's AS241, accurate to about 1e-16); the two-sided normal p-value is
  erfc(|z|/√2), which keeps its relative accuracy far into the tail.
- McNemar's exact test is the two-sided binomial test of the discordant pairs against
  one half: p = min(1, 2·P(X ≤ min(b, c))) for X ~ Binomial(b + c, 1/2). The tail is a sum
  of terms C(n, i)/2^n written with `math.lgamma` and added in log space; above
  `EXACT_BINOMIAL_MAX` discordant pairs the normal approximation with a continuity
  correction replaces it (the two agree to about 1e-3 relative there).
- Wilson's score interval for a proportion: it stays inside [0, 1] and keeps its coverage
  near 0 and 1, where the normal (Wald) interval does not.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

EXACT_BINOMIAL_MAX = 100_000
_STANDARD = NormalDist()


def z_value(confidence: float) -> float:
    """The two-sided normal critical value: 1.959964… for a confidence of 0.95."""
    return _STANDARD.inv_cdf(0.5 + confidence / 2.0)


def normal_cdf(x: float) -> float:
    """P(Z ≤ x) for a standard normal Z."""
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def two_sided_p(z: float) -> float:
    """P(|Z| ≥ |z|) for a standard normal Z; 1 for NaN (no evidence either way)."""
    if math.isnan(z):
        return 1.0
    return math.erfc(abs(z) / math.sqrt(2.0))


def mcnemar_p(b: int, c: int) -> tuple[float, bool]:
    """McNemar's two-sided p-value for `b` and `c` discordant pairs, and whether it is
    exact (False: the continuity-corrected normal approximation, for many pairs)."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0, True
    if n > EXACT_BINOMIAL_MAX:
        tail = normal_cdf((k + 0.5 - n / 2.0) / math.sqrt(n / 4.0))
        return min(1.0, 2.0 * tail), False
    top = math.lgamma(n + 1) - n * math.log(2.0)
    logs = np.array([top - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k + 1)])
    peak = float(logs.max())
    tail = math.exp(peak) * float(np.exp(logs - peak).sum())
    return min(1.0, 2.0 * tail), True


def wilson(successes: float, trials: float, z: float) -> tuple[float, float]:
    """Wilson's score interval for `successes` out of `trials`; NaN for no trials."""
    if trials <= 0:
        return math.nan, math.nan
    share = successes / trials
    shrink = 1.0 + z * z / trials
    centre = (share + z * z / (2.0 * trials)) / shrink
    half = z / shrink * math.sqrt(share * (1.0 - share) / trials + z * z / (4.0 * trials**2))
    # At 0 or all successes the bound is exactly 0 or 1 (rounding would leave 1e-17).
    low = 0.0 if successes <= 0 else max(0.0, centre - half)
    high = 1.0 if successes >= trials else min(1.0, centre + half)
    return low, high
