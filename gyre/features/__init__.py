"""Features declared once, computed the same way for training (offline, DuckDB) and for
serving (online, incremental)."""

from gyre.features._definitions import FUNCTIONS, Aggregation, FeatureView, window_us
from gyre.features._offline import compile_sql, training_set
from gyre.features._online import OnlineStore

__all__ = [
    "FUNCTIONS",
    "Aggregation",
    "FeatureView",
    "OnlineStore",
    "compile_sql",
    "training_set",
    "window_us",
]
