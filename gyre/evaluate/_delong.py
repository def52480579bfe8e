"""DeLong's variance of the ROC AUC, and the covariance of two AUCs on the same rows.

DeLong, DeLong & Clarke-Pearson (1988), in the O(n log n) form of Sun & Xu (2014). Each
row gets a placement value: a positive's is the share of negatives it outscores (a tie
counts one half), a negative's the share of positives that outscore it. The AUC is the
mean placement of the positives (and one minus … of the negatives), and

    Var(AUC) = s²(V_pos)/m + s²(V_neg)/n,

with m positives, n negatives and s² the sample variance. For two models scored on the
same rows the placements pair up row by row, and the covariance of the two AUCs is the
same formula with sample covariances: Var(A - B) = Var A + Var B - 2 Cov(A, B).

The placements come from one sort of the scores (`rank`): for the tie group g, with the
cumulative counts tp_g and fp_g at its end (highest scores first), a positive's placement
is (N - fp_g + neg_g/2)/N and a negative's (tp_g - pos_g/2)/P.
"""

from __future__ import annotations

import math

import numpy as np

from gyre.evaluate._metrics import Ranking


def placements(positive: np.ndarray, ranking: Ranking) -> np.ndarray:
    """Each row's placement value, in row order (NaN everywhere with one class only)."""
    n = len(positive)
    sorted_pos = positive[ranking.order]
    tp = np.cumsum(sorted_pos)[ranking.last].astype(np.float64)
    fp = (ranking.last + 1) - tp
    pos, neg = tp[-1], fp[-1]
    if pos == 0 or neg == 0:
        return np.full(n, math.nan)
    pos_g = np.diff(tp, prepend=0.0)
    neg_g = np.diff(fp, prepend=0.0)
    of_positive = (neg - fp + neg_g / 2.0) / neg
    of_negative = (tp - pos_g / 2.0) / pos
    group = np.zeros(n, dtype=np.intp)
    group[ranking.last[:-1] + 1] = 1
    group = np.cumsum(group)
    values = np.empty(n)
    values[ranking.order] = np.where(sorted_pos, of_positive[group], of_negative[group])
    return values


def _cov(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return math.nan
    return float(np.dot(a - a.mean(), b - b.mean())) / (len(a) - 1)


def auc_variance(positive: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """The AUC and its DeLong variance from the placements `v`."""
    vp, vn = v[positive], v[~positive]
    if len(vp) == 0 or len(vn) == 0:
        return math.nan, math.nan
    return float(vp.mean()), _cov(vp, vp) / len(vp) + _cov(vn, vn) / len(vn)


def auc_difference_variance(positive: np.ndarray, va: np.ndarray, vb: np.ndarray) -> float:
    """DeLong's variance of AUC(a) - AUC(b) for placements of two models on the same rows."""
    pa, pb, na, nb = va[positive], vb[positive], va[~positive], vb[~positive]
    if len(pa) == 0 or len(na) == 0:
        return math.nan
    d_pos, d_neg = pa - pb, na - nb
    return _cov(d_pos, d_pos) / len(pa) + _cov(d_neg, d_neg) / len(na)
