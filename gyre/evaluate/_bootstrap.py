"""The Poisson bootstrap, vectorized: many resamples of one evaluation set at once.

A resample gives every row an independent Poisson(1) weight instead of drawing n rows with
replacement (the two agree as n grows, and Poisson weights need no shared draw across
rows, so a block of resamples is one array). The metrics of each resample are the
weighted metrics of `_metrics`, computed for a block of resamples together:

- Weights: a uint8 matrix (resamples x rows) from one 16-bit uniform per weight, looked up
  in a table of the Poisson(1) inverse CDF. The few 16-bit cells that straddle a CDF step
  are redrawn exactly with a float64 uniform inside the cell, so the weights are exact
  Poisson(1) draws (the table only makes the common case fast).
- Classification: the rows are laid out once per model, positives by score (highest
  first) and then negatives by score (`Layout`). Weights never change that order, so one
  cumulative sum along each block gives every resample's weighted tp and fp at every
  row: precision, recall and f1 at the threshold (a prefix of each block), average
  precision (Σ over positives of w·tp/(tp + fp) at its tie group's end) and the ECE
  (the bins are runs of columns; one matrix-vector product per run). A second model sees
  the same weights, permuted to its own layout, so the two are paired row by row.
- Regression: every sum a metric needs (Σw, Σw·y, Σw·y², Σw·e², Σw·|e|/|y|) for a block
  of resamples is one matrix product with the rows' columns.

Blocks hold about `BLOCK_CELLS` weights (`REGRESSION_BLOCK_CELLS` for regression, whose
blocks read every row's columns once), so memory stays under a few hundred MB, and run on
a few threads (numpy releases the GIL). Each block draws from its own generator, spawned
from the seed, so the result depends on the seed only, not on the threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from gyre.evaluate._metrics import ECE_BINS, Ranking, ece_bins

BLOCK_CELLS = 1 << 22  # weights per block: twice as fast as 1 << 24 on 1M rows (measured)
REGRESSION_BLOCK_CELLS = 1 << 24  # a block reads all the rows' columns once: fewer, larger
ROWS_PER_PRODUCT = 1 << 16
WORKERS = min(4, os.cpu_count() or 1)

Replicates = dict[str, np.ndarray]
Replicate = Callable[[np.ndarray], Replicates]

_CELLS = 1 << 16
_REDRAW = 255


def _poisson_table() -> tuple[np.ndarray, np.ndarray]:
    cdf = np.cumsum([math.exp(-1.0) / math.factorial(k) for k in range(30)])
    cells = np.arange(_CELLS, dtype=np.float64)
    low = np.searchsorted(cdf, cells / _CELLS, side="right")
    high = np.searchsorted(cdf, (cells + 1) / _CELLS, side="left")
    return np.where(low == high, low, _REDRAW).astype(np.uint8), cdf


_TABLE, _CDF = _poisson_table()


def poisson_weights(rng: np.random.Generator, resamples: int, rows: int) -> np.ndarray:
    """A (resamples x rows) uint8 matrix of independent Poisson(1) draws."""
    cells = rng.integers(0, _CELLS, size=(resamples, rows), dtype=np.uint16)
    weights = _TABLE[cells]  # (take would copy the indices to intp first)
    redraw = np.flatnonzero(weights == _REDRAW)
    if len(redraw):
        u = (cells.ravel()[redraw] + rng.random(len(redraw))) / _CELLS
        weights.ravel()[redraw] = np.searchsorted(_CDF, u, side="right")
    return weights


def resample(
    rows: int, resamples: int, seed: int, replicate: Replicate, cells: int = BLOCK_CELLS
) -> Replicates:
    """`replicate` over `resamples` Poisson resamples of `rows` rows, in blocks of about
    `cells` weights; each key's arrays are stacked along the first axis (one entry per
    resample)."""
    per_block = max(1, min(resamples, cells // max(rows, 1)))
    sizes = [per_block] * (resamples // per_block)
    if resamples % per_block:
        sizes.append(resamples % per_block)
    seeds = np.random.SeedSequence(seed).spawn(len(sizes))

    def block(i: int) -> Replicates:
        return replicate(poisson_weights(np.random.default_rng(seeds[i]), sizes[i], rows))

    if len(sizes) == 1:
        parts = [block(0)]
    else:
        with ThreadPoolExecutor(max_workers=min(WORKERS, len(sizes))) as pool:
            parts = list(pool.map(block, range(len(sizes))))
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


@dataclass(frozen=True)
class Layout:
    """One model's column order for the classification bootstrap.

    `columns[j]` is the row in column j: positives by score, highest first, then the
    negatives the same way. For positive column j, `tie_ends[j]` counts the positives up
    to the end of its tie group (None when no two positives tie) and `neg_above[j]` the
    negatives scoring at least as high. `called_pos`/`called_neg` count the positives and
    negatives with p >= threshold (the first ones of each block). `segments` are the ECE
    bins' runs of columns: (start, stop, bin, p - y there).
    """

    columns: np.ndarray
    n_pos: int
    tie_ends: np.ndarray | None
    neg_above: np.ndarray
    called_pos: int
    called_neg: int
    segments: tuple[tuple[int, int, int, np.ndarray], ...]


def layout(positive: np.ndarray, p: np.ndarray, ranking: Ranking, threshold: float) -> Layout:
    """The layout of a model with probabilities `p` (ranked by `ranking`)."""
    order = ranking.order
    in_order = positive[order]
    pos_rows, neg_rows = order[in_order], order[~in_order]
    pos_scores, neg_scores = -p[pos_rows], -p[neg_rows]  # ascending, for searchsorted
    n_pos = len(pos_rows)
    ends = np.searchsorted(pos_scores, pos_scores, side="right")
    tie_ends = None if np.array_equal(ends, np.arange(1, n_pos + 1)) else ends
    segments = []
    for offset, rows, target in ((0, pos_rows, 1.0), (n_pos, neg_rows, 0.0)):
        bins = ece_bins(p[rows])
        cuts = np.flatnonzero(np.diff(bins)) + 1
        gaps = p[rows] - target
        for start, stop in zip(np.r_[0, cuts], np.r_[cuts, len(rows)], strict=True):
            if stop > start:
                run = (offset + int(start), offset + int(stop), int(bins[start]))
                segments.append((*run, gaps[start:stop]))
    return Layout(
        columns=np.concatenate([pos_rows, neg_rows]),
        n_pos=n_pos,
        tie_ends=tie_ends,
        neg_above=np.searchsorted(neg_scores, pos_scores, side="right"),
        called_pos=int(np.searchsorted(pos_scores, -threshold, side="right")),
        called_neg=int(np.searchsorted(neg_scores, -threshold, side="right")),
        segments=tuple(segments),
    )


def _classification_block(model: Layout, w: np.ndarray) -> dict[str, np.ndarray]:
    k, n = w.shape
    m = model.n_pos
    cum = np.empty((k, n + 2), dtype=np.int32)
    cum[:, 0] = 0
    cum[:, m + 1] = 0
    np.cumsum(w[:, :m], axis=1, dtype=np.int32, out=cum[:, 1 : m + 1])
    np.cumsum(w[:, m:], axis=1, dtype=np.int32, out=cum[:, m + 2 :])
    cpos, cneg = cum[:, : m + 1], cum[:, m + 1 :]
    pos = cpos[:, m].astype(np.float64)
    total = pos + cneg[:, -1]
    tp = cpos[:, model.called_pos].astype(np.float64)
    fp = cneg[:, model.called_neg].astype(np.float64)
    tp_at = cpos[:, 1:] if model.tie_ends is None else cpos.take(model.tie_ends, axis=1)
    called = cneg.take(model.neg_above, axis=1)
    called += tp_at
    np.maximum(called, 1, out=called)
    share = np.divide(tp_at, called)
    share *= w[:, :m]
    gaps = np.zeros((k, ECE_BINS))
    for start, stop, b, gap in model.segments:
        gaps[:, b] += w[:, start:stop].astype(np.float64) @ gap
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "precision": tp / (tp + fp),
            "recall": tp / pos,
            "f1": 2.0 * tp / (tp + fp + pos),
            "pr_auc": share.sum(axis=1) / pos,
            "ece": np.abs(gaps).sum(axis=1) / total,
        }


def classification_replicates(models: Sequence[Layout]) -> Replicate:
    """precision, recall, f1, pr_auc and ece of each model (columns of each array, in the
    order given) per resample; every model sees the same row weights."""
    first = np.empty(len(models[0].columns), dtype=np.intp)
    first[models[0].columns] = np.arange(len(first))
    # The columns of the first model's layout holding each later model's rows.
    moves = [first[model.columns] for model in models[1:]]

    def replicate(w: np.ndarray) -> Replicates:
        found = [_classification_block(models[0], w)]
        found += [
            _classification_block(m, w.take(g, axis=1))
            for m, g in zip(models[1:], moves, strict=True)
        ]
        return {key: np.stack([f[key] for f in found], axis=1) for key in found[0]}

    return replicate


def regression_replicates(y: np.ndarray, errors: Sequence[np.ndarray]) -> Replicate:
    """rmse, r2 and (when no y is 0) mape of each model (columns, in the order of
    `errors`, each y - prediction) per resample."""
    centred = y - y.mean()  # SST from centred sums: no cancellation
    columns = [np.ones_like(y), centred, centred**2]
    with_mape = bool(np.all(y != 0))
    for e in errors:
        columns.append(e**2)
        if with_mape:
            columns.append(np.abs(e) / np.abs(y))
    x = np.column_stack(columns)
    step = 2 if with_mape else 1

    def replicate(w: np.ndarray) -> Replicates:
        sums = np.zeros((len(w), x.shape[1]))
        for start in range(0, len(y), ROWS_PER_PRODUCT):
            stop = start + ROWS_PER_PRODUCT
            sums += w[:, start:stop].astype(np.float64) @ x[start:stop]
        total, sy, syy = sums[:, 0:1], sums[:, 1:2], sums[:, 2:3]
        sse = sums[:, 3::step]
        with np.errstate(divide="ignore", invalid="ignore"):  # a resample of weight 0
            sst = syy - sy * sy / total
            found = {
                "rmse": np.sqrt(sse / total),
                "r2": np.where(sst > 0, 1.0 - sse / sst, math.nan),
            }
            if with_mape:
                found["mape"] = sums[:, 4::step] / total
        return found

    return replicate


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile interval of the finite replicates; NaN when half or more are not
    finite (the metric is undefined on too many resamples to say anything)."""
    finite = replicates[np.isfinite(replicates)]
    if len(finite) == 0 or 2 * len(finite) <= len(replicates):
        return math.nan, math.nan
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(finite, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_p(deltas: np.ndarray, observed: float) -> float:
    """Two-sided p for "no difference": the share of resampled differences on the other
    side of 0 from the observed one (0 itself counts as the other side), doubled, at
    least 1/(resamples + 1) and at most 1."""
    finite = deltas[np.isfinite(deltas)]
    if len(finite) == 0 or math.isnan(observed):
        return math.nan
    if observed == 0:
        return 1.0
    other = np.count_nonzero(finite <= 0 if observed > 0 else finite >= 0)
    return min(1.0, max(2.0 * int(other) / len(finite), 1.0 / (len(finite) + 1)))
