"""Distance thresholds calibrated by resampling the reference, so that a drift alarm's
false-alarm rate is the one asked for, whatever the window's size.

A fixed distance threshold (Evidently's 0.1) means different things at different sizes:
a window of 100 rows drawn from the reference's own distribution is often 0.1 away from it
by chance, and a window of 1M rows almost never is, even when it has really moved by 0.05.
Calibrated, the threshold of a feature is the (1 - `false_alarm`) quantile of the distance
between two samples drawn from the reference's distribution, of the reference's size and
the window's:

- few-valued features (Jensen-Shannon): both samples' counts drawn from the reference's
  shares (multinomial), at the true sizes;
- numeric features (normed Wasserstein over the quantile grid): both samples drawn from the
  reference's quantile function at most `SIMULATED_ROWS` rows each, the distances scaled
  by sqrt((1/n + 1/m) / (1/n' + 1/m')), the rate at which a two-sample Wasserstein
  distance shrinks with the sizes n and m.

Tests keep their p-values (they are calibrated already). The draws are seeded: one
reference and one window size always give one threshold.
"""

from __future__ import annotations

import math

import numpy as np

from gyre.monitor._drift import DriftReference, quantile_grid, sorted_quantiles

SIMULATED_ROWS = 10_000  # rows of each simulated sample of a numeric feature, at most


def calibrated_distance(
    reference: DriftReference, rows: int, *, false_alarm: float, draws: int, seed: int
) -> float:
    """The distance a window of `rows` rows from the reference's own distribution exceeds
    with probability `false_alarm`."""
    rng = np.random.default_rng(seed)
    if reference.counts is not None:
        shares = np.array(list(reference.counts.values()), dtype=np.float64)
        shares /= shares.sum()
        mine = rng.multinomial(reference.rows, shares, size=draws) / reference.rows
        theirs = rng.multinomial(rows, shares, size=draws) / rows
        middle = (mine + theirs) / 2
        divergence = (_kl(mine, middle) + _kl(theirs, middle)) / 2
        found = np.sqrt(np.maximum(divergence, 0.0))
    else:
        quantiles = reference.quantiles
        assert quantiles is not None
        grid = quantile_grid()
        n, m = min(reference.rows, SIMULATED_ROWS), min(rows, SIMULATED_ROWS)

        def sample(size: int) -> np.ndarray:
            drawn = np.sort(np.interp(rng.random(size), grid, quantiles))
            return sorted_quantiles(drawn, grid)

        scale = math.sqrt((1 / reference.rows + 1 / rows) / (1 / n + 1 / m))
        spread = reference.std if reference.std > 0 else 1.0
        found = np.array(
            [np.mean(np.abs(sample(n) - sample(m))) / spread * scale for _ in range(draws)]
        )
    return float(np.quantile(found, 1 - false_alarm))


def _kl(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """KL(p || q) row by row, 0 log 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / q), 0.0)
    kl: np.ndarray = terms.sum(axis=1)
    return kl
