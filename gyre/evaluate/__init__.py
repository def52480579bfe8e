"""Evaluate: metrics with intervals, paired comparisons against the champion, thresholds."""

from gyre.evaluate._cost import ServingCost, measure_serving_cost
from gyre.evaluate._evaluate import Evaluation, evaluate, report_input, write_report
from gyre.evaluate._gates import GateResult, SliceResult, Verdict, judge
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
from gyre.evaluate._record import record_evaluation
from gyre.evaluate._threshold import ThresholdRule, learn_threshold, parse_rule

__all__ = [
    "CLASSIFICATION_METRICS",
    "HIGHER_IS_BETTER",
    "REGRESSION_METRICS",
    "Difference",
    "Estimate",
    "Evaluation",
    "GateResult",
    "ServingCost",
    "SliceResult",
    "ThresholdRule",
    "Verdict",
    "classification_metrics",
    "evaluate",
    "holm",
    "judge",
    "learn_threshold",
    "measure_serving_cost",
    "metric_intervals",
    "paired_differences",
    "parse_rule",
    "record_evaluation",
    "regression_metrics",
    "report_input",
    "write_report",
]
