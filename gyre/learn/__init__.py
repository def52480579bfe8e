"""Training: models fitted on feature views (with their lineage), and the quick-start
model of the demo."""

from gyre.learn._quickstart import QuickstartModel, train_quickstart_model
from gyre.learn._views import TrainedOnView, train_on_view

__all__ = ["QuickstartModel", "TrainedOnView", "train_on_view", "train_quickstart_model"]
