"""Features declared once, computed the same way for training (offline, DuckDB) and for
serving (online, incremental). The log of served vectors and the skew check between the
two engines are the monitor's (`gyre.monitor`)."""

from gyre.features._definitions import (
    FUNCTIONS,
    REQUEST_KINDS,
    Aggregation,
    FeatureView,
    feature_views,
    find_view,
    window_us,
)
from gyre.features._factcache import FactCache
from gyre.features._offline import (
    DuckDBEngine,
    OfflineEngine,
    Recomputation,
    compile_sql,
    recompute,
    training_set,
    write_training_set,
)
from gyre.features._online import OnlineStore
from gyre.features._queries import outside_facts, read_queries, read_query_table
from gyre.features._serving import OnlineFeatures, ServedVector
from gyre.features._training import (
    ViewFacts,
    index_view_facts,
    read_view_facts,
    training_matrix,
    training_table,
)

__all__ = [
    "FUNCTIONS",
    "REQUEST_KINDS",
    "Aggregation",
    "DuckDBEngine",
    "FactCache",
    "FeatureView",
    "OfflineEngine",
    "OnlineFeatures",
    "OnlineStore",
    "Recomputation",
    "ServedVector",
    "ViewFacts",
    "compile_sql",
    "feature_views",
    "find_view",
    "index_view_facts",
    "outside_facts",
    "read_queries",
    "read_query_table",
    "read_view_facts",
    "recompute",
    "training_matrix",
    "training_set",
    "training_table",
    "window_us",
    "write_training_set",
]
