"""Evaluate: metrics with intervals, paired comparisons against the champion, thresholds."""

from gyre.evaluate._intervals import (
    Difference,
    Estimate,
    holm,
    metric_intervals,
    paired_differences,
)
from gyre.evaluate._metrics import (
    CLASSIFICATION_METRICS,
    HIGHER_IS_BETTER,
    REGRESSION_METRICS,
    classification_metrics,
    regression_metrics,
)

__all__ = [
    "CLASSIFICATION_METRICS",
    "HIGHER_IS_BETTER",
    "REGRESSION_METRICS",
    "Difference",
    "Estimate",
    "classification_metrics",
    "holm",
    "metric_intervals",
    "paired_differences",
    "regression_metrics",
]
