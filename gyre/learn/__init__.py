"""Training: tracked runs (params, metrics per step, tags, lineage records) logged without
waiting from users' training code, models fitted on feature views (with their lineage),
and the quick-start model of the demo."""

from gyre.learn._pgruns import PostgresRunStore
from gyre.learn._quickstart import QuickstartModel, train_quickstart_model
from gyre.learn._runs import RUN_STATUSES, MetricPoint, Run, RunStore
from gyre.learn._sqliteruns import SQLiteRunStore
from gyre.learn._tracking import ActiveRun, start_run
from gyre.learn._views import TrainedOnView, train_on_view

__all__ = [
    "RUN_STATUSES",
    "ActiveRun",
    "MetricPoint",
    "PostgresRunStore",
    "QuickstartModel",
    "Run",
    "RunStore",
    "SQLiteRunStore",
    "TrainedOnView",
    "start_run",
    "train_on_view",
    "train_quickstart_model",
]
