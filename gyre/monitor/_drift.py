"""Data drift per feature, against a reference summarised once.

The methods are Evidently's defaults (its automatic choice of test), so a user moving from
it sees the same verdicts on the same data:

- a reference of at most `SMALL_REFERENCE` (1,000) rows is kept whole, and tested:
  a feature with more than `FEW_VALUES` (5) distinct values by the two-sample
  Kolmogorov-Smirnov test; one with 2 by the two-proportion Z test; one with 3 to 5 by a
  chi-square test; drift when p < 0.05;
- a larger one is summarised: a numeric feature by `QUANTILES` quantiles and its standard
  deviation, drift when the Wasserstein-1 distance divided by that deviation is at least
  0.1; a few-valued one by the count of each value, drift when the Jensen-Shannon distance
  (natural log, scipy's) of the value shares is at least 0.1.

Beside every method, the population stability index over the reference's deciles (each
value its own bin for a few-valued feature). The dataset drifts when at least half of its
features do. Every threshold is a field of `DriftThresholds`.

Two choices differ from Evidently, on purpose:

- The chi-square test is the two-sample test of homogeneity (the 2 x k table of
  reference and current counts), where Evidently fits the current counts to the
  reference's shares: a value the reference never had then has an expected count of 0
  and the statistic is infinite. A value is compared whichever sample it is seen in.
- The Wasserstein distance of a large reference is taken between quantile functions on a
  grid of `QUANTILES` midpoints (mean |Q_ref(u) - Q_cur(u)|), not between the raw samples:
  the reference then costs 8 KB a feature whatever its size. The grid's error is O(1 /
  `QUANTILES`) of the spread in the tails; the tests hold it to scipy's exact distance.

Missing values (NaN) are left out of every test, and their share is reported. A check
sorts each current column once (the quantiles and the PSI bins come from that order), so
it costs what the current window costs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gyre.errors import MonitorError

SMALL_REFERENCE = 1_000  # rows: up to here the reference is kept whole and tested
FEW_VALUES = 5  # distinct values: up to here a feature is compared value by value
QUANTILES = 1_000  # a large numeric reference's summary
PSI_BINS = 10
PSI_FLOOR = 1e-4  # a bin's share at least, so an empty bin has a finite PSI


@dataclass(frozen=True)
class DriftThresholds:
    p_value: float = 0.05  # the tests of a small reference: drift below it
    distance: float = 0.1  # the distances of a large one: drift at or above it
    dataset_share: float = 0.5  # the dataset drifts when this share of features does
    # Instead of `distance`: each feature's distance threshold calibrated by resampling
    # its reference to this false-alarm rate at the window's size (`_calibrate.py`).
    false_alarm: float | None = None
    draws: int = 200  # resamples of a calibration
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("p_value", "distance", "dataset_share", "false_alarm"):
            value = getattr(self, name)
            if name == "false_alarm" and value is None:
                continue
            if not (isinstance(value, int | float) and 0 < value <= 1):
                raise MonitorError(f"drift threshold `{name}` must be in (0, 1], not {value!r}")
        if not (isinstance(self.draws, int) and 20 <= self.draws <= 100_000):
            raise MonitorError(
                f"drift `draws` must be an integer in [20, 100000], not {self.draws!r}"
            )


@dataclass(frozen=True)
class DriftReference:
    """One feature's reference: what a check needs of it and no more."""

    feature: str
    rows: int  # the values that are not missing
    missing: float  # the share of missing values
    values: np.ndarray | None  # all of them, sorted (a small reference)
    quantiles: np.ndarray | None  # at the QUANTILES midpoints (a large numeric one)
    std: float
    counts: dict[float, int] | None  # each distinct value's count (a few-valued one)
    psi_edges: np.ndarray  # the inner edges of the PSI bins (empty: value by value)
    psi_shares: np.ndarray

    @property
    def few_valued(self) -> bool:
        return self.counts is not None

    def as_record(self) -> dict[str, Any]:
        """JSON-safe, to be stored with a model version."""

        def floats(a: np.ndarray | None) -> list[float] | None:
            return None if a is None else [float(v) for v in a]

        return {
            "feature": self.feature,
            "rows": self.rows,
            "missing": self.missing,
            "values": floats(self.values),
            "quantiles": floats(self.quantiles),
            "std": self.std,
            "counts": None if self.counts is None else [[k, n] for k, n in self.counts.items()],
            "psi_edges": floats(self.psi_edges),
            "psi_shares": floats(self.psi_shares),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> DriftReference:
        """The inverse of `as_record`; a record that is not one is refused."""
        try:

            def array(key: str) -> np.ndarray | None:
                found = record[key]
                return None if found is None else np.asarray(found, dtype=np.float64)

            counts = record["counts"]
            reference = cls(
                feature=str(record["feature"]),
                rows=int(record["rows"]),
                missing=float(record["missing"]),
                values=array("values"),
                quantiles=array("quantiles"),
                std=float(record["std"]),
                counts=None if counts is None else {float(k): int(n) for k, n in counts},
                psi_edges=np.asarray(record["psi_edges"], dtype=np.float64),
                psi_shares=np.asarray(record["psi_shares"], dtype=np.float64),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MonitorError(f"not a drift reference record ({exc!r})") from None
        if reference.values is None and reference.quantiles is None and reference.counts is None:
            raise MonitorError(f"the drift reference of `{reference.feature}` holds no values")
        return reference


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    method: str  # ks, z, chi2, wasserstein, jensen_shannon
    statistic: float  # the p-value of a test, or the distance
    threshold: float
    drifted: bool
    psi: float
    reference_rows: int
    current_rows: int
    missing: tuple[float, float]  # the share of missing values: reference, current

    def as_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "method": self.method,
            "statistic": self.statistic,
            "threshold": self.threshold,
            "drifted": self.drifted,
            "psi": self.psi,
            "reference_rows": self.reference_rows,
            "current_rows": self.current_rows,
            "missing": list(self.missing),
        }


@dataclass(frozen=True)
class DriftReport:
    features: tuple[FeatureDrift, ...]
    share: float  # of the features that drifted
    dataset_drift: bool

    @property
    def drifted(self) -> list[str]:
        return [f.feature for f in self.features if f.drifted]


def drift_reference(feature: str, values: Any) -> DriftReference:
    """The reference of one feature from its values (numbers; NaN is missing)."""
    column = _numbers(feature, values)
    return sorted_reference(feature, np.sort(column[~np.isnan(column)]), len(column))


def sorted_reference(feature: str, present: np.ndarray, rows: int) -> DriftReference:
    """The reference of one feature from its present (not missing) values already sorted,
    of `rows` values in all (`input_profile` sorts each column once for all it takes)."""
    if len(present) and (np.isinf(present[0]) or np.isinf(present[-1])):
        raise MonitorError(f"feature `{feature}`: infinite values have no distribution to compare")
    missing = 1.0 - len(present) / rows if rows else 0.0
    if len(present) == 0:
        raise MonitorError(f"feature `{feature}`: the reference holds no values (all missing)")
    starts = np.concatenate([[0], np.flatnonzero(np.diff(present)) + 1])  # sorted: runs
    distinct, counts = present[starts], np.diff(np.append(starts, len(present)))
    few = len(distinct) <= FEW_VALUES
    std = float(np.std(present))
    small = len(present) <= SMALL_REFERENCE
    if few:
        edges = np.zeros(0)
        shares = counts / len(present)
    else:
        edges = np.unique(sorted_quantiles(present, np.arange(1, PSI_BINS) / PSI_BINS))
        shares = _bin_shares(present, edges)
    return DriftReference(
        feature=feature,
        rows=len(present),
        missing=missing,
        values=present if small else None,
        quantiles=None if small or few else sorted_quantiles(present, quantile_grid()),
        std=std,
        counts={float(v): int(n) for v, n in zip(distinct, counts, strict=True)} if few else None,
        psi_edges=edges,
        psi_shares=shares,
    )


def check_feature(
    reference: DriftReference, values: Any, thresholds: DriftThresholds | None = None
) -> FeatureDrift:
    """Whether one feature's current values drifted from its reference."""
    limits = thresholds or DriftThresholds()
    column = _numbers(reference.feature, values)
    current = np.sort(column[~np.isnan(column)])
    missing = (reference.missing, 1.0 - len(current) / len(column) if len(column) else 0.0)
    if len(current) == 0:
        raise MonitorError(
            f"feature `{reference.feature}`: the current window holds no values (all missing)"
        )
    if reference.few_valued:
        method, statistic = _few_valued(reference, current)
        psi = _psi(*_value_shares(reference, current))
    else:
        method, statistic = _numeric(reference, current)
        psi = _psi(reference.psi_shares, _bin_shares(current, reference.psi_edges))
    test = method in ("ks", "z", "chi2")
    threshold = limits.p_value if test else limits.distance
    if not test and limits.false_alarm is not None and math.isfinite(statistic):
        from gyre.monitor._calibrate import calibrated_distance

        threshold = calibrated_distance(
            reference, len(current), false_alarm=limits.false_alarm, draws=limits.draws,
            seed=limits.seed,
        )  # fmt: skip
    if test:
        drifted = statistic < threshold
    elif limits.false_alarm is not None:  # exceeded with probability false_alarm: a
        drifted = statistic > threshold  # constant reference's 0 is not passed by 0
    else:
        drifted = statistic >= threshold
    return FeatureDrift(
        reference.feature, method, statistic, threshold, bool(drifted), psi,
        reference.rows, len(current), missing,
    )  # fmt: skip


def check_drift(
    references: Sequence[DriftReference],
    current: Mapping[str, Any],
    thresholds: DriftThresholds | None = None,
) -> DriftReport:
    """Every referenced feature of `current` (a mapping of feature name to values)."""
    limits = thresholds or DriftThresholds()
    absent = [r.feature for r in references if r.feature not in current]
    if absent:
        raise MonitorError(
            f"the current window has no column for features {', '.join(absent)}; send every "
            "feature the reference was taken on"
        )
    if not references:
        raise MonitorError("no features to check: the reference is empty")
    found = tuple(check_feature(r, current[r.feature], limits) for r in references)
    share = sum(f.drifted for f in found) / len(found)
    return DriftReport(found, share, share >= limits.dataset_share)


def _numbers(feature: str, values: Any) -> np.ndarray:
    try:
        column = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise MonitorError(f"feature `{feature}`: values must be numbers") from None
    if column.ndim != 1:
        raise MonitorError(f"feature `{feature}`: values must be one column, not {column.shape}")
    if np.isinf(column).any():
        raise MonitorError(f"feature `{feature}`: infinite values have no distribution to compare")
    return column


def quantile_grid() -> np.ndarray:
    return (np.arange(QUANTILES) + 0.5) / QUANTILES


def sorted_quantiles(ordered: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Quantiles of sorted values by linear interpolation (numpy's default method)."""
    at = levels * (len(ordered) - 1)
    low = np.floor(at).astype(np.int64)
    high = np.minimum(low + 1, len(ordered) - 1)
    found: np.ndarray = ordered[low] + (ordered[high] - ordered[low]) * (at - low)
    return found


def _bin_shares(ordered: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The share of sorted values in each bin (-inf, e1], (e1, e2], ..., (ek, inf)."""
    cuts = np.searchsorted(ordered, edges, side="right")
    counts = np.diff(np.concatenate([[0], cuts, [len(ordered)]]))
    shares: np.ndarray = counts / len(ordered)
    return shares


def _value_shares(reference: DriftReference, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The shares of each value seen in either sample: reference, current."""
    assert reference.counts is not None
    distinct, counts = np.unique(current, return_counts=True)
    seen = dict(zip(distinct.tolist(), counts.tolist(), strict=True))
    values = sorted(set(reference.counts) | set(seen))
    mine = np.array([reference.counts.get(v, 0) for v in values], dtype=np.float64)
    theirs = np.array([seen.get(v, 0) for v in values], dtype=np.float64)
    return mine / mine.sum(), theirs / theirs.sum()


def _psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e, a = np.maximum(expected, PSI_FLOOR), np.maximum(actual, PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def _few_valued(reference: DriftReference, current: np.ndarray) -> tuple[str, float]:
    from scipy import spatial, stats

    assert reference.counts is not None
    mine, theirs = _value_shares(reference, current)
    if reference.values is None:  # a large reference: the distance of the shares
        return "jensen_shannon", float(spatial.distance.jensenshannon(mine, theirs))
    n, m = reference.rows, len(current)
    if len(mine) <= 2:  # binary: the share of the larger value, pooled Z test
        p1, p2 = float(mine[-1]), float(theirs[-1])
        pooled = (p1 * n + p2 * m) / (n + m)
        spread = math.sqrt(pooled * (1 - pooled) * (1 / n + 1 / m))
        if spread == 0:  # one value in both samples: nothing changed
            return "z", 1.0
        return "z", float(2 * stats.norm.sf(abs(p1 - p2) / spread))
    table = np.vstack([mine * n, theirs * m])
    return "chi2", float(stats.chi2_contingency(table, correction=False).pvalue)


def _numeric(reference: DriftReference, current: np.ndarray) -> tuple[str, float]:
    if reference.values is not None:
        from scipy import stats  # only here: importing scipy.stats costs a second

        return "ks", float(stats.ks_2samp(reference.values, current).pvalue)
    assert reference.quantiles is not None
    distance = float(
        np.mean(np.abs(sorted_quantiles(current, quantile_grid()) - reference.quantiles))
    )
    if reference.std == 0:  # a constant reference: any spread at all is drift
        return "wasserstein", math.inf if distance > 0 else 0.0
    return "wasserstein", distance / reference.std
