"""What the server writes off the request path, and what is read back from it: the
prediction log (`predictions.db`), served answers with their feedback and shadow
comparisons (`feedback.db`), the feature vectors served (`served.db`) and the skew check
over them, and the request ids that tie them to the answers.

The server imports this package, never the other way round: nothing here imports
`gyre.serve`. Nothing here may block a request either: every write from the request path
is queued in memory and written by a thread of its own.
"""

from gyre.monitor._alerts import (
    ALERT_EVENT,
    WEBHOOK_TIMEOUT_S,
    Alert,
    check_webhook,
    input_alerts,
    output_alert,
    raise_alerts,
    read_alerts,
    slo_alert,
    staleness_alert,
)
from gyre.monitor._drift import (
    DriftReference,
    DriftReport,
    DriftThresholds,
    FeatureDrift,
    check_drift,
    check_feature,
    drift_reference,
)
from gyre.monitor._feedback import Comparison, FeedbackStore, Served
from gyre.monitor._invariants import (
    FeatureSchema,
    InvariantTolerance,
    Violation,
    check_invariants,
    check_outputs,
    infer_schema,
)
from gyre.monitor._prediction_chunks import read_predictions
from gyre.monitor._predictions import PredictionLog
from gyre.monitor._profile import InputCheck, InputProfile, check_inputs, input_profile
from gyre.monitor._quality import LiveQuality, live_quality
from gyre.monitor._request_ids import Issued, RequestIds
from gyre.monitor._retrain import RetrainDecision, RetrainLimits, RetrainPolicy, Trigger
from gyre.monitor._sequential import CanaryTest, CanaryVerdict
from gyre.monitor._served import ServedLog, ServedRecord, read_served
from gyre.monitor._skew import DEFAULT_TOLERANCE, SkewReport, check_skew, same_value
from gyre.monitor._window import Window, served_window

__all__ = [
    "ALERT_EVENT",
    "DEFAULT_TOLERANCE",
    "WEBHOOK_TIMEOUT_S",
    "Alert",
    "CanaryTest",
    "CanaryVerdict",
    "Comparison",
    "DriftReference",
    "DriftReport",
    "DriftThresholds",
    "FeatureDrift",
    "FeatureSchema",
    "FeedbackStore",
    "InputCheck",
    "InputProfile",
    "InvariantTolerance",
    "Issued",
    "LiveQuality",
    "PredictionLog",
    "RequestIds",
    "RetrainDecision",
    "RetrainLimits",
    "RetrainPolicy",
    "Served",
    "ServedLog",
    "ServedRecord",
    "SkewReport",
    "Trigger",
    "Violation",
    "Window",
    "check_drift",
    "check_feature",
    "check_inputs",
    "check_invariants",
    "check_outputs",
    "check_skew",
    "check_webhook",
    "drift_reference",
    "infer_schema",
    "input_alerts",
    "input_profile",
    "live_quality",
    "output_alert",
    "raise_alerts",
    "read_alerts",
    "read_predictions",
    "read_served",
    "same_value",
    "served_window",
    "slo_alert",
    "staleness_alert",
]
