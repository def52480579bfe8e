"""Runs: what one training run recorded (parameters, metrics per step, tags, record
sections such as lineage and timings, its status), and the store that keeps them.

`RunStore` is the interface (checked by `tests/learn/test_run_store_conformance.py`); the
SQL implementations are in `_runstore.py` (SQLite, the embedded default) and `_pgruns.py`
(PostgreSQL), opened by `gyre.stores.Stores.open_runs`. Users' training code writes
through `gyre.learn.start_run` (`_tracking.py`), which buffers and writes in batches.

The rules every store keeps, and the checks here that enforce them at the boundary:

- a key (of a parameter, metric, tag or record section) is 1 to 250 letters, digits,
  `_`, `-`, `.`, `/` or spaces (MLflow's rule, so that MLflow users' keys carry over);
- a parameter is any JSON value and is written once: the same value again is fine, another
  value is refused (MLflow does this too: a run's parameters are what it was run with);
- a metric point is a finite number at an integer step (64-bit) and a wall-clock time; a
  metric's value in `Run.metrics` is its latest: the highest step, ties to the last written;
- a tag is text and may be overwritten; a record section is any JSON value and replaces
  the section of that name;
- a run that ended (finished, failed, interrupted) takes no more parameters, metrics or
  tags; its record sections may still be added (a verification, an artifact found later).
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from gyre._numbers import is_int64
from gyre.errors import RunError, RunNotFound

RUN_STATUSES = ("running", "finished", "failed", "interrupted")
END_STATUSES = RUN_STATUSES[1:]

KEY = re.compile(r"[A-Za-z0-9_\-./ ]{1,250}")
_HEX = re.compile(r"[0-9a-f]+")
RUN_ID_CHARS = 32
MIN_PREFIX = 6
_FLOAT_MAX = sys.float_info.max  # finite floats lie within ±this; NaN within nothing
MAX_TEXT = 5000  # characters of a tag value, a run name or an error kept in full


@dataclass(frozen=True)
class MetricPoint:
    """One value of a metric: at a step (an epoch, a batch), at wall-clock time `at` (s)."""

    key: str
    value: float
    step: int
    at: float


@dataclass(frozen=True)
class Run:
    """A run as stored. `metrics` holds each metric's latest value (highest step, ties to
    the last written) and `metric_counts` how many points each has (`metric_history`
    gives them all)."""

    run_id: str  # uuid4 hex, 32 characters
    experiment: str  # e.g. the model's name
    name: str
    status: str  # one of RUN_STATUSES
    error: str | None
    started_at: float
    ended_at: float | None
    params: dict[str, Any]  # JSON values
    metrics: dict[str, float]
    tags: dict[str, str]
    # JSON sections written by set_record: "lineage", "environment", "timings_s",
    # "artifacts" (name -> {"sha256", "bytes", "media_type"}), "spec", … (open-ended)
    record: dict[str, Any]
    metric_counts: dict[str, int] = field(default_factory=dict)


class RunStore(Protocol):
    """Where runs live. Every method is safe to call from several threads."""

    where: str  # for people: a path, or a database URL without its password

    def create_run(
        self, experiment: str, name: str = "", *, tags: Mapping[str, str] | None = None
    ) -> Run:
        """A new run, status running, started now."""
        ...

    def log_batch(
        self,
        run_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        metrics: Sequence[MetricPoint] = (),
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Write all of it in one transaction, or none of it: `RunError` for a parameter
        logged before with another value (naming the key) or a run that ended."""
        ...

    def set_record(self, run_id: str, section: str, value: Any) -> None:
        """Replace record section `section` (JSON) of the run."""
        ...

    def end_run(self, run_id: str, status: str, *, error: str | None = None) -> None:
        """End a running run: finished, failed or interrupted, at the time now."""
        ...

    def get(self, run_id: str) -> Run:
        """The run with this id, or the one run whose id starts with this prefix (6 hex
        characters at least); `RunNotFound` otherwise, saying what to do."""
        ...

    def metric_history(self, run_id: str, key: str) -> list[MetricPoint]:
        """Every point of one metric, by step, then in the order written."""
        ...

    def search(
        self,
        filter: str | None = None,
        *,
        experiment: str | None = None,
        order_by: Sequence[str] = (),
        limit: int = 100,
    ) -> list[Run]:
        """Runs matching `filter` (`metrics.auc > 0.8 and params.max_depth = 3`, see
        `_filter.py`), in `order_by` order (default `started_at desc`), at most `limit`."""
        ...

    def close(self) -> None: ...


# -- the checks at the boundary, shared by the stores and the tracking API -----------------


def check_key(kind: str, key: Any) -> str:
    if not isinstance(key, str) or not KEY.fullmatch(key):
        raise RunError(
            f"{kind} key {key!r} is not allowed: use 1-250 letters, digits, '_', '-', '.', "
            "'/' or spaces"
        )
    return key


def check_text(what: str, value: Any, *, limit: int = MAX_TEXT) -> str:
    """Text a database can hold as it is: valid Unicode without NUL (PostgreSQL refuses
    it), at most `limit` characters."""
    if not isinstance(value, str):
        raise RunError(f"{what} must be text, not {type(value).__name__}")
    if len(value) > limit:
        raise RunError(f"{what} is {len(value)} characters long; the most is {limit}")
    if "\x00" in value:
        raise RunError(f"{what} {value[:40]!r} holds a NUL character; remove it")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise RunError(f"{what} {value[:40]!r} is not valid Unicode (a lone surrogate)") from None
    return value


def check_name(what: str, value: Any) -> str:
    """An experiment (1 to 250 characters) or a run name (0 to 250), on one line."""
    text = check_text(what, value, limit=250)
    if (what == "experiment" and not text) or any(c < " " for c in text):
        raise RunError(
            f"{what} {text!r} must be one line of {'1' if what == 'experiment' else '0'} to "
            "250 characters without control characters"
        )
    return text


def encode_json(what: str, value: Any) -> str:
    """`value` as canonical JSON text (sorted keys): what is stored, and what two writes of
    one parameter are compared by. Refuses what JSON cannot hold (NaN, objects)."""
    try:
        text = json.dumps(value, sort_keys=True, allow_nan=False, ensure_ascii=False)
        text.encode()
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError is one
        raise RunError(
            f"{what} is not a JSON value ({exc}); give numbers, text, booleans, null, "
            "lists or objects with text keys"
        ) from None
    if isinstance(value, str):
        check_text(what, value, limit=len(value))
    return text


def param_columns(value: Any, encoded: str) -> tuple[float | None, str]:
    """How filters see a parameter (`encoded`: its JSON text): its number (an int or a
    float, not a bool) for numeric comparisons, and its text: the string itself, or the
    JSON text of anything else (so `params.depth = '3'` matches the number 3 too)."""
    if isinstance(value, str):
        return None, value
    number = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond a double: compared as text only
            number = None
    return number, encoded


def check_point(point: Any) -> MetricPoint:
    if (  # the common case, in a few comparisons (a batch holds thousands)
        type(point) is MetricPoint
        and type(point.value) is float
        and type(point.step) is int
        and type(point.at) is float
        and -_FLOAT_MAX <= point.value <= _FLOAT_MAX
        and -(2**63) <= point.step < 2**63
        and -_FLOAT_MAX <= point.at <= _FLOAT_MAX
    ):
        return point
    if not isinstance(point, MetricPoint):
        raise RunError(f"metrics must be MetricPoint objects, not {type(point).__name__}")
    value, step, at = point.value, point.step, point.at
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RunError(f"metric `{point.key}` value {value!r} is not a finite number")
    if not is_int64(step):
        raise RunError(f"metric `{point.key}` step {step!r} is not a 64-bit integer")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise RunError(f"metric `{point.key}` time {at!r} is not a finite number of seconds")
    return point


def check_status(status: Any, allowed: Sequence[str] = END_STATUSES) -> str:
    if status not in allowed:
        raise RunError(f"run status {status!r} is not one of {', '.join(allowed)}")
    return str(status)


def normalize_id(text: Any) -> str:
    """A run id or prefix as stored (lowercase hex), or `RunNotFound` saying what one is."""
    found = text.strip().lower() if isinstance(text, str) else ""
    if not _HEX.fullmatch(found) or len(found) > RUN_ID_CHARS:
        raise RunNotFound(
            f"{text!r} is not a run id: give the 32 hex characters of one, or its first 6 or "
            "more; `gyre runs list` shows them"
        )
    if len(found) < MIN_PREFIX:
        raise RunNotFound(
            f"run id prefix {found!r} is too short: give at least {MIN_PREFIX} of its hex "
            "characters; `gyre runs list` shows them"
        )
    return found
