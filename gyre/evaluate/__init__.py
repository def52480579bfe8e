"""Evaluation of candidate models: metrics with intervals, gates, reports, serving cost."""

from gyre.evaluate._cost import ServingCost, measure_serving_cost

__all__ = ["ServingCost", "measure_serving_cost"]
