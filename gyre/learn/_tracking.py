"""The tracking API for users' own training code: a run that logs without waiting.

    with gyre.learn.start_run("eta", params={"lr": 0.1}) as run:
        for step in range(epochs):
            run.log_metric("loss", loss, step=step)

`log_*` checks its arguments (a key, a finite number, a JSON value: cheap, in the caller's
thread) and appends to an in-memory buffer; one writer thread per run takes what the
buffer holds every `flush_interval_s` (sooner when it holds a batch) and writes it with
`RunStore.log_batch`, one transaction a batch. The caller never waits on storage: a
training loop's `log_metric` costs about a microsecond whatever the store.

What is logged reaches the store, in order, unless the process is killed (SIGKILL):
- `flush()` returns once everything logged before it is durable; `end()` flushes first.
- Leaving the `with` block: finished; on an exception, failed with "Type: message"; on
  KeyboardInterrupt (SIGINT), interrupted.
- While a run is active in the main thread, SIGTERM is turned into an interruption: every
  active run is flushed and ended as interrupted, then the previous handler runs (by
  default the process ends as SIGTERM ends it). SIGINT raises KeyboardInterrupt (so the
  `with` marks the run interrupted). The previous handlers are restored when the last run
  ends.
- A run never ended is flushed and ended at exit: failed or interrupted when the program
  ends with an uncaught exception, else finished.
- A store that cannot be reached (`StoreUnavailable`: a database restarting, an SQLite file
  locked past its timeout) does not stop the training loop: the writer retries the batch
  with backoff, and `flush`/`end` raise `RunError` if it is still not written when they
  give up. Any other write error (a parameter logged with two values by two processes)
  is kept and raised by the next `flush` or `end`.
"""

from __future__ import annotations

import collections
import functools
import json
import logging
import math
import operator
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from gyre._numbers import is_int64
from gyre.errors import RunError, StoreUnavailable
from gyre.learn._exits import unwatch, watch
from gyre.learn._runs import (
    MetricPoint,
    RunStore,
    check_key,
    check_name,
    check_status,
    check_text,
    encode_json,
)

if TYPE_CHECKING:
    from gyre.registry import ArtifactStore
    from gyre.stores import Stores

log = logging.getLogger("gyre.learn")

_BATCH_POINTS = 10_000  # metric points per log_batch (and the buffer size that wakes the writer)
_END_TIMEOUT_S = 60.0  # what end() waits for the writer at most by default
_now = time.time
_isfinite = math.isfinite


class ActiveRun:
    """A run being logged to; a context manager. `start_run` makes one (and opens the
    stores); `ActiveRun(store, artifacts, run_id)` logs to a run created in `store`."""

    def __init__(
        self,
        store: RunStore,
        artifacts: ArtifactStore,
        run_id: str,
        *,
        flush_interval_s: float = 0.2,
        close_store: bool = False,
    ) -> None:
        if not (isinstance(flush_interval_s, int | float) and 0 < flush_interval_s < 3600):
            raise RunError(
                f"flush_interval_s must be above 0 and under 3600, got {flush_interval_s!r}"
            )
        self.id = run_id
        self.store = store
        self.artifacts = artifacts
        self._interval_s = float(flush_interval_s)
        self._close_store = close_store
        self._buffer: collections.deque[tuple[Any, ...]] = collections.deque()
        self._steps: dict[str, int] = {}  # per metric key: the step after the highest logged
        self._steps_lock = threading.Lock()
        self._metric_keys: set[str] = set()
        self._params: dict[str, str] = {}  # key -> JSON text, as logged here
        self._artifacts: dict[str, dict[str, Any]] = {}
        self._errors: list[tuple[str, str]] = []  # (what, why) not written, not yet raised
        self._errors_lock = threading.Lock()
        self._unavailable: StoreUnavailable | None = None  # the outage being retried
        self._lost = 0  # metric points given up on
        self._ended: str | None = None  # the status end() was asked for
        self._recorded = False  # the end is in the store
        self._end_lock = threading.RLock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._writer = threading.Thread(
            target=self._loop, name=f"gyre-run-{run_id[:8]}", daemon=True
        )
        self._writer.start()
        watch(self)

    def __repr__(self) -> str:
        return f"ActiveRun({self.id!r}, {self.store.where!r})"

    def __enter__(self) -> ActiveRun:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._ended is not None:
            return
        if exc is None:
            self.end("finished")
            return
        if isinstance(exc, KeyboardInterrupt):
            status, error = "interrupted", "KeyboardInterrupt"
        else:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        try:
            self.end(status, error=error)
        except Exception as problem:  # the body's exception goes on; this one rides with it
            log.error("run %s: %s", self.id, problem)
            exc.add_note(f"gyre: while ending run {self.id}: {problem}")

    # -- logging (the caller's thread: checks and a buffer append, no I/O) -----------------

    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        """Log `value` of metric `key` at `step` (None: the step after the highest this
        run logged for `key`, from 0)."""
        if key not in self._metric_keys:
            self._metric_keys.add(check_key("metric", key))
        if type(value) is not float:
            value = _as_float(key, value)
        if not _isfinite(value):
            raise RunError(f"metric `{key}` value {value!r} is not a finite number")
        if self._ended is not None:
            raise self._has_ended()
        with self._steps_lock:
            if step is None:
                step = self._steps.get(key, 0)
            elif type(step) is not int or not -(2**63) <= step < 2**63:
                step = _as_step(key, step)
            if step >= self._steps.get(key, 0):
                self._steps[key] = step + 1
            self._buffer.append(("m", key, value, step, _now()))
        if len(self._buffer) >= _BATCH_POINTS and not self._wake.is_set():
            self._wake.set()

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        for key, value in metrics.items():
            self.log_metric(key, value, step)

    def log_param(self, key: str, value: Any) -> None:
        """Log a parameter (any JSON value), once: the same value again is fine, another
        raises `RunError`."""
        check_key("param", key)
        text = encode_json(f"param `{key}`", value)
        self._check_running()
        before = self._params.setdefault(key, text)
        if before != text:
            raise RunError(
                f"param `{key}` of run {self.id} is {before}; it cannot become {text}: "
                "parameters are written once (log the new value under another key)"
            )
        self._buffer.append(("p", key, json.loads(text)))  # a copy, as it is now

    def log_params(self, params: Mapping[str, Any]) -> None:
        for key, value in params.items():
            self.log_param(key, value)

    def set_tag(self, key: str, value: str) -> None:
        check_key("tag", key)
        check_text(f"tag `{key}`", value)
        self._check_running()
        self._buffer.append(("t", key, value))

    def set_record(self, section: str, value: Any) -> None:
        """Replace record section `section` (JSON: "lineage", "timings_s", …)."""
        check_key("record section", section)
        text = encode_json(f"record section `{section}`", value)
        self._check_running()
        self._buffer.append(("r", section, json.loads(text)))

    def log_artifact(
        self, name: str, data: bytes, *, media_type: str = "application/octet-stream"
    ) -> str:
        """Store `data` in the artifact store (now, durably) and record it in the run's
        "artifacts" section as {"sha256", "bytes", "media_type"}; its sha256."""
        check_key("artifact", name)
        check_text("media type", media_type, limit=250)
        if not isinstance(data, bytes | bytearray | memoryview):
            raise RunError(f"artifact `{name}` must be bytes, not {type(data).__name__}")
        self._check_running()
        blob = bytes(data)
        digest = self.artifacts.put(blob)
        self._artifacts[name] = {"sha256": digest, "bytes": len(blob), "media_type": media_type}
        self.set_record("artifacts", dict(sorted(self._artifacts.items())))
        return digest

    def _check_running(self) -> None:
        if self._ended is not None:
            raise self._has_ended()

    def _has_ended(self) -> RunError:
        return RunError(f"run {self.id} has ended ({self._ended}); start a new run to log more")

    # -- flushing and ending ---------------------------------------------------------------

    def flush(self, timeout_s: float | None = None) -> None:
        """Block until everything logged so far is durable; `RunError` when the writer met
        errors, or after `timeout_s` (None: no limit) while the store cannot be reached."""
        if not self._wait_for_writer(timeout_s):
            outage = f": {self._unavailable}" if self._unavailable is not None else ""
            raise RunError(
                f"run {self.id}: what was logged is not durable after {timeout_s} s{outage}; "
                "the writer keeps retrying (flush again, or end the run)"
            )
        self._raise_errors()

    def _wait_for_writer(self, timeout_s: float | None) -> bool:
        """Whether the writer wrote (or gave up on) everything logged before this call
        within `timeout_s`."""
        if not self._writer.is_alive():
            return True
        done = threading.Event()
        self._buffer.append(("f", done))
        self._wake.set()
        return done.wait(timeout_s)

    def _raise_errors(self) -> None:
        problem = self._take_errors()
        if problem is not None:
            raise problem

    def _take_errors(self) -> RunError | None:
        """The write errors since the last call, as one error: what was not written, by
        cause."""
        with self._errors_lock:
            errors, self._errors = self._errors, []
            lost, self._lost = self._lost, 0
        if not errors:
            return None
        causes: dict[str, list[str]] = {}
        for what, why in errors:
            if what == "metrics" and lost:
                what = f"{lost} metric point{'s' if lost != 1 else ''}"
            if what not in causes.setdefault(why, []):
                causes[why].append(what)
        text = "; ".join(
            f"{' and '.join(whats)} not written: {why}" for why, whats in causes.items()
        )
        return RunError(f"run {self.id}: {text}")

    def _error(self, what: str, why: object) -> None:
        with self._errors_lock:
            self._errors.append((what, str(why)))

    def end(
        self,
        status: str = "finished",
        *,
        error: str | None = None,
        timeout_s: float | None = _END_TIMEOUT_S,
    ) -> None:
        """Flush, then record the run's end: finished, failed or interrupted (`error`: why).
        Waits up to `timeout_s` for a store that cannot be reached; then what is still
        unwritten is given up and `RunError` says so."""
        check_status(status)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._end_lock:
            if self._recorded:
                raise RunError(f"run {self.id} has ended already ({self._ended})")
            self._ended = status
            try:
                self._wait_for_writer(timeout_s)
                self._abandon.set()  # what is still unwritten is given up
                self._stopping.set()
                self._wake.set()
                self._writer.join()
                if not self._recorded:
                    self._record_end(status, error, deadline)
            finally:
                unwatch(self)
                if self._close_store and self._recorded:
                    self.store.close()
            self._raise_errors()

    def _record_end(self, status: str, error: str | None, deadline: float | None) -> None:
        delay = 0.05
        while True:
            try:
                self.store.end_run(self.id, status, error=error)
            except StoreUnavailable as exc:
                if deadline is not None and time.monotonic() + delay > deadline:
                    self._error(f"its end ({status})", exc)
                    return
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            self._recorded = True
            return

    def _end_quietly(self, status: str | None, error: str | None) -> None:
        """End (a signal, the end of the program) without raising: as `status`, or, when
        None, as the status an end under way was asked for, else interrupted."""
        try:
            if not self._recorded:
                status = status or self._ended or "interrupted"
                self.end(status, error=error if status != "finished" else None)
        except Exception as exc:
            log.error("run %s: while ending it (%s): %s", self.id, error or status, exc)

    # -- the writer thread -----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            stopping = self._stopping.is_set()
            try:
                self._drain()
            except Exception as exc:  # a bug here must not stop the writer silently
                log.exception("run %s: the writer failed", self.id)
                self._error("what the writer held", f"the writer failed: {exc}")
            if stopping and not self._buffer:
                return

    def _drain(self) -> None:
        buffer = self._buffer
        while buffer:
            points: list[MetricPoint] = []
            params: dict[str, Any] = {}
            tags: dict[str, str] = {}
            records: dict[str, Any] = {}
            marker: threading.Event | None = None
            while buffer and len(points) < _BATCH_POINTS:
                item = buffer.popleft()
                kind = item[0]
                if kind == "m":
                    points.append(MetricPoint(item[1], item[2], item[3], item[4]))
                elif kind == "p":
                    params[item[1]] = item[2]
                elif kind == "t":
                    tags[item[1]] = item[2]
                elif kind == "r":
                    records[item[1]] = item[2]
                else:  # a flush: write what came before it, then say so
                    marker = item[1]
                    break
            # Parameters apart: one refused (logged elsewhere with another value) loses no
            # metric point.
            write = self.store.log_batch
            if params:
                self._retried("params", functools.partial(write, self.id, params=params))
            if (points or tags) and not self._retried(
                "metrics", functools.partial(write, self.id, metrics=points, tags=tags)
            ):
                with self._errors_lock:
                    self._lost += len(points)
            for section, value in records.items():
                record = functools.partial(self.store.set_record, self.id, section, value)
                self._retried(f"record `{section}`", record)
            if marker is not None:
                marker.set()

    def _retried(self, what: str, write: Callable[[], None]) -> bool:
        """Run `write` until it succeeds (True), retrying an unreachable store with
        backoff until the run is abandoned; another error is kept for flush (False)."""
        delay = 0.05
        while True:
            if self._abandon.is_set() and self._unavailable is not None:
                self._error(what, self._unavailable)
                return False
            try:
                write()
            except StoreUnavailable as exc:
                if self._unavailable is None:
                    log.warning("run %s: store unavailable, retrying: %s", self.id, exc)
                self._unavailable = exc
                self._abandon.wait(delay)
                delay = min(delay * 2, 2.0)
                continue
            except Exception as exc:
                self._error(what, exc)
                return False
            self._unavailable = None
            return True


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool | str | bytes) or value is None:
        raise RunError(f"metric `{key}` value {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise RunError(f"metric `{key}` value {value!r} is not a number") from None


def _as_step(key: str, step: Any) -> int:
    try:
        found = operator.index(step)  # numpy integers too; not floats
    except TypeError:
        found = None
    if found is None or isinstance(step, bool) or not is_int64(found):
        raise RunError(f"metric `{key}` step {step!r} is not a 64-bit integer")
    return found


def start_run(
    experiment: str,
    name: str = "",
    *,
    stores: Stores | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    flush_interval_s: float = 0.2,
) -> ActiveRun:
    """Start a run of `experiment` (e.g. the model's name) in `stores` (None: the stores of
    `load_config()`: `--home`, $GYRE_HOME, ./.gyre, and `[store]`)."""
    check_name("experiment", experiment)
    for key, value in (params or {}).items():  # checked before the run exists
        check_key("param", key)
        encode_json(f"param `{key}`", value)
    if stores is None:
        from gyre.config import load_config
        from gyre.stores import Stores

        stores = Stores.from_config(load_config())
    store = stores.open_runs()
    try:
        run = store.create_run(experiment, name, tags=tags)
    except BaseException:
        store.close()
        raise
    active = ActiveRun(
        store,
        stores.open_artifacts(),
        run.run_id,
        flush_interval_s=flush_interval_s,
        close_store=True,
    )
    active.log_params(params or {})
    return active
