"""Evaluation: metrics with intervals, slices, paired comparisons, gates and the report."""
