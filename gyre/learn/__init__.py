"""Training. For now: the quick-start model that the main job trains and publishes."""

from gyre.learn._quickstart import QuickstartModel, train_quickstart_model

__all__ = ["QuickstartModel", "train_quickstart_model"]
