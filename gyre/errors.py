"""Every error gyre raises, in one tree.

    GyreError
    ├── ConfigError                  the configuration file or a setting is invalid
    ├── CollectError
    │   ├── UnknownEventType         no such event type is declared
    │   └── InvalidEvents            a body that is neither a JSON array nor NDJSON
    ├── FeatureError
    │   ├── UnknownFeatureView       no such feature view is declared
    │   ├── InvalidFeatureInput      an entity or request-time value is missing or mistyped
    │   └── FeatureViewMismatch      a model was trained on another definition of its view
    ├── RegistryError
    │   ├── ModelNotFound            no such model, version or alias
    │   ├── ArtifactCorrupted        an artifact is missing or its sha256 does not match
    │   ├── ExportError              a native model could not be turned into ONNX
    │   ├── ParityError              ONNX and native predictions disagree beyond tolerance
    │   ├── InvalidModel             a file that is not a usable model, or a bad argument
    │   └── NotBlessed               champion/challenger for a version no evaluation blessed
    ├── LearnError
    │   ├── SpecError                a training spec with wrong, missing or unused keys
    │   │   └── LeakageError         a label the features could see, with the rows that show it
    │   └── RunError                 a run written or read wrongly (a param logged twice)
    │       ├── RunNotFound          no run has this id, or the prefix is ambiguous
    │       └── InvalidRunFilter     a runs filter that does not parse
    ├── EvaluationError              an evaluation could not be done or written (bad input,
    │                                a report file that cannot be written)
    ├── MonitorError                 a drift or quality check that cannot be made (a
    │                                reference that is not one, a feature missing)
    ├── StoreError                   a store cannot be opened (a bad URL, a newer schema)
    │   └── StoreUnavailable         the database cannot be reached now; retry later
    └── ServeError
        ├── BadRequest               a request that does not match the protocol or signature
        ├── PayloadTooLarge          a body over the configured size
        ├── NotFound                 an unknown route, model, version, label or request id
        ├── Unauthorized             no valid API key (401)
        ├── Forbidden                the key may not do this (403)
        ├── RateLimited              the consumer is over its rate; retry after `retry_after_s`
        ├── DeadlineExceeded         no answer could be computed before the request's deadline
        └── Unavailable              the model cannot answer now (not loaded, worker restarting)
            └── Overloaded           shed by admission control; retry after `retry_after_s`

Each error says what it concerns and what to do next. Each class has one HTTP status
(`http_status`, below), the same on the model server and on the control plane; the
server's protocols shape the body (`gyre/serve/_errors.py`).
"""

from __future__ import annotations

from typing import Any


def shown(value: Any, limit: int = 40) -> str:
    """A client's value as an error message quotes it: whole when short, else its start and
    its length (a 400-digit number or a 10,000-dimension shape is not echoed back)."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's limit for printing one
        return f"an integer of {value.bit_length()} bits"
    return text if len(text) <= limit else f"{text[: limit // 2]}… ({len(text)} characters)"


class GyreError(Exception):
    """The root of every error gyre raises on purpose."""


class ConfigError(GyreError):
    """The configuration is invalid; the message names the setting and the expected value."""


class CollectError(GyreError):
    """Something went wrong collecting events."""


class UnknownEventType(CollectError):
    """The event type is not declared."""


class InvalidEvents(CollectError):
    """The events could not be parsed at all (individual bad records are rejected instead)."""


class FeatureError(GyreError):
    """Something went wrong computing features."""


class UnknownFeatureView(FeatureError):
    """The feature view is not declared."""


class InvalidFeatureInput(FeatureError):
    """An entity key or a request-time feature is missing or of the wrong type."""


class FeatureViewMismatch(FeatureError):
    """The model was trained on a feature view definition (hash) the server does not have."""


class RegistryError(GyreError):
    """Something went wrong in the model registry."""


class ModelNotFound(RegistryError):
    """No such model, version or alias."""


class ArtifactCorrupted(RegistryError):
    """An artifact is missing or its content does not match its recorded sha256."""


class ExportError(RegistryError):
    """A native model could not be exported to ONNX."""


class ParityError(RegistryError):
    """ONNX and native predictions differ by more than the configured tolerance."""


class InvalidModel(RegistryError):
    """The file or object given is not a model gyre can publish."""


class NotBlessed(RegistryError):
    """The `champion` or `challenger` alias for a version whose latest evaluation did not
    bless it (or that has none); `gyre evaluate` blesses, `--force --reason` overrides."""


class LearnError(GyreError):
    """Something went wrong training a model or recording a run."""


class SpecError(LearnError):
    """A training spec is invalid: the message names every wrong, missing or unused key and
    where it is."""


class LeakageError(SpecError):
    """A label would leak into training: the message shows rows that prove it."""


class RunError(LearnError):
    """A run cannot be recorded or read as asked (a parameter logged twice with two values,
    a run that already ended)."""


class RunNotFound(RunError):
    """No run has this id (or the prefix matches none, or several)."""


class InvalidRunFilter(RunError):
    """A `gyre runs list --filter` expression does not parse; the message says where."""


class EvaluationError(GyreError):
    """A model cannot be evaluated as asked: labels or scores it cannot use (one class only,
    NaN, probabilities outside [0, 1]), no holdout rows, a champion on other features, a
    malformed evaluation, a report that cannot be written; the message names the input or
    path and what to do instead."""


class MonitorError(GyreError):
    """A monitoring check cannot be made as asked: a reference record that is not one, a
    feature the current window lacks, values that are not numbers; the message names the
    feature and what to send instead."""


class StoreError(GyreError):
    """A store cannot be opened or used: a bad `[store]` URL, a schema this gyre cannot read."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (down, restarting, the network); retry later.
    The message names the host and database, never the password."""

    retry_after_s = 1


class ServeError(GyreError):
    """An inference request could not be answered."""


class BadRequest(ServeError):
    """The request does not match the protocol or the model's signature."""


class PayloadTooLarge(ServeError):
    """The request body is larger than `serve.max_body_bytes`."""


class NotFound(ServeError):
    """Unknown route, model, version, label, or a request id the server did not issue."""


class Unavailable(ServeError):
    """The model cannot answer right now; retry later."""


class DeadlineExceeded(ServeError):
    """The request's deadline passed before an answer was computed (504 without a default)."""


class Overloaded(Unavailable):
    """Admission control shed the request: the queue cannot meet its deadline."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Unauthorized(ServeError):
    """The request carries no valid API key."""


class Forbidden(ServeError):
    """The API key is valid but may not call this model or operation."""


class RateLimited(ServeError):
    """The consumer is over its declared rate."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


# The HTTP status of each error class, most specific first; anything else is a bug (500).
_HTTP_STATUS: tuple[tuple[type[GyreError], int], ...] = (
    (BadRequest, 400),
    (InvalidModel, 400),
    (InvalidEvents, 400),
    (InvalidFeatureInput, 400),
    (InvalidRunFilter, 400),
    (SpecError, 400),
    (EvaluationError, 400),
    (MonitorError, 400),
    (Unauthorized, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (ModelNotFound, 404),
    (UnknownEventType, 404),
    (UnknownFeatureView, 404),
    (RunNotFound, 404),
    (FeatureViewMismatch, 409),
    (NotBlessed, 409),
    (PayloadTooLarge, 413),
    (RateLimited, 429),
    (Unavailable, 503),
    (StoreUnavailable, 503),
    (DeadlineExceeded, 504),
    (RegistryError, 409),
    (RunError, 409),
)


def http_status(exc: GyreError) -> int:
    """The HTTP status that answers `exc`: the one table every HTTP face of gyre uses."""
    for cls, status in _HTTP_STATUS:
        if isinstance(exc, cls):
            return status
    return 500
