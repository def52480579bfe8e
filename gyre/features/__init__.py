"""Features declared once, computed the same way for training (offline, DuckDB) and for
serving (online, incremental), and checked for skew between the two."""

from gyre.features._definitions import (
    FUNCTIONS,
    REQUEST_KINDS,
    Aggregation,
    FeatureView,
    feature_views,
    find_view,
    window_us,
)
from gyre.features._offline import (
    DuckDBEngine,
    OfflineEngine,
    compile_sql,
    recompute,
    training_set,
    write_training_set,
)
from gyre.features._online import OnlineStore
from gyre.features._queries import outside_facts, read_queries
from gyre.features._serving import OnlineFeatures, ServedLog, ServedVector, read_served
from gyre.features._skew import SkewReport, check_skew

__all__ = [
    "FUNCTIONS",
    "REQUEST_KINDS",
    "Aggregation",
    "DuckDBEngine",
    "FeatureView",
    "OfflineEngine",
    "OnlineFeatures",
    "OnlineStore",
    "ServedLog",
    "ServedVector",
    "SkewReport",
    "check_skew",
    "compile_sql",
    "feature_views",
    "find_view",
    "outside_facts",
    "read_queries",
    "read_served",
    "recompute",
    "training_set",
    "window_us",
    "write_training_set",
]
