"""The prediction log: what each answered prediction request was asked and answered, in
`predictions.db` under the home.

One record per answered request (a model's own answer or its default), sampled per model
(`prediction_log_sample`): its request id, when (seconds since the epoch), the consumer
("" when none are declared), the model, the version that answered and how it was chosen
(`route`: pinned, alias, champion, latest, split, shadow, bandit), the protocol, the
input (its tensors, or the feature vectors of an entity request), the output tensors,
the latency (from the request's arrival to its answer) and, for a default answer, why.
Requests that got no answer (a 4xx, a 504 without a default) are not predictions.

The request path only appends the record, holding references to its (never mutated)
arrays: no encoding, no I/O, no lock. Records wait in memory, up to
`prediction_log_buffer_bytes` of tensors with the batches being written; a record past
that is dropped and counted (`on_drop`), so a slow or stuck disk costs records, never a
request's time. Every `flush_interval_s` the waiting records go to the log's one thread,
which encodes them (tensors as raw bytes, no text formatting) and writes them in one
transaction, WAL, without fsync (observability data, as the served-vector log).

Retention is by count: after each write, rows more than `max_rows` ids behind the
newest are deleted, over all models (ids only grow: AUTOINCREMENT), so the file stays
bounded however fast requests come. Reads page by id (`after`), never by OFFSET.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from gyre._sqlite import connect_wal
from gyre.errors import ServeError
from gyre.features import ServedVector
from gyre.types import DATATYPE_TO_NUMPY, NUMPY_TO_DATATYPE

log = logging.getLogger("gyre.monitor")

SCHEMA_VERSION = 1
# The most records one read returns.
MAX_READ = 1000
# What a record costs besides its tensors' bytes, about (ids, names, the tuple).
_RECORD_BYTES = 512
_VECTOR_BYTES = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    request_id TEXT NOT NULL,
    at REAL NOT NULL,
    consumer TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    route TEXT NOT NULL,
    protocol TEXT NOT NULL,
    input_kind TEXT NOT NULL,
    input BLOB NOT NULL,
    output BLOB NOT NULL,
    latency_ms REAL NOT NULL,
    default_reason TEXT
);
CREATE INDEX IF NOT EXISTS predictions_by_model ON predictions (model, id);
"""

Tensors = Mapping[str, np.ndarray]
# Told of records dropped: the model, how many, and why ("full" or "error").
Dropped = Callable[[str, int, str], None]

_encode = msgspec.msgpack.Encoder(enc_hook=str).encode
_decode = msgspec.msgpack.decode


def _connect(path: Path) -> sqlite3.Connection:
    conn = connect_wal(path, timeout_s=30.0)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _prepare(path: Path) -> None:
    """Create the table, or refuse a file a later gyre wrote."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = connect_wal(path, timeout_s=30.0, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            if found > SCHEMA_VERSION:
                raise ServeError(
                    f"{path} has schema version {found}, this gyre reads version "
                    f"{SCHEMA_VERSION}; serve it with the gyre version that wrote it"
                )
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()


class PredictionLog:
    """The prediction log of one server process (several may share the file)."""

    def __init__(
        self,
        path: Path,
        *,
        max_rows: int,
        buffer_bytes: int,
        on_drop: Dropped | None = None,
        flush_interval_s: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        self.path = path
        self.max_rows = max_rows
        self.buffer_bytes = buffer_bytes
        self.flush_interval_s = flush_interval_s
        self._on_drop = on_drop
        self._rng = rng or random.Random()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gyre-prediction-log")
        self._conn: sqlite3.Connection | None = None
        self._waiting: list[tuple[Any, ...]] = []
        # Bytes of the records waiting and of those being written (event-loop thread only).
        self._held_bytes = 0
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: Path, **options: Any) -> PredictionLog:
        """The log in `path`, its table made (or a later gyre's file refused)."""
        _prepare(path)
        return cls(path, **options)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="gyre-prediction-log")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # a bug: say so, and keep the log going
                log.exception("could not hand prediction log records to the writer")

    async def close(self) -> None:
        """Write what waits, then stop."""
        if self._task is not None:
            self._task.cancel()
        await self.flush()
        if self._conn is not None:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        self._thread.shutdown(wait=True)

    # -- the request path ----------------------------------------------------------------

    def sampled(self, share: float) -> bool:
        """Whether to log this request, for a model that logs `share` of them."""
        return share >= 1.0 or (share > 0.0 and self._rng.random() < share)

    def record(
        self,
        request_id: str,
        model: str,
        version: int,
        route: str,
        protocol: str,
        consumer: str,
        inputs: Tensors,
        outputs: Tensors,
        latency_s: float,
        default_reason: str | None = None,
        vectors: Sequence[ServedVector] | None = None,
    ) -> None:
        """Keep one answered request for the log (`vectors`: the feature vectors it was
        built from, logged instead of `inputs`); dropped when the buffer is full."""
        size = _RECORD_BYTES
        for array in outputs.values():
            size += array.nbytes
        if vectors is None:
            for array in inputs.values():
                size += array.nbytes
        else:
            size += _VECTOR_BYTES * len(vectors)
        if self._held_bytes + size > self.buffer_bytes:
            if self._on_drop is not None:
                self._on_drop(model, 1, "full")
            return
        self._held_bytes += size
        self._waiting.append(
            (request_id, time.time(), consumer, model, version, route, protocol,
             inputs if vectors is None else vectors, outputs, latency_s, default_reason, size)
        )  # fmt: skip

    # -- the log's thread ----------------------------------------------------------------

    async def flush(self) -> None:
        """Write the records waiting now; returns once every record made before the call
        is written (or dropped), those handed to the thread by earlier flushes too."""
        batch, self._waiting = self._waiting, []
        writing = asyncio.get_running_loop().run_in_executor(self._thread, self._write, batch)
        try:
            # Shielded: a flush cancelled at shutdown still writes its batch (`close` then
            # waits for the thread).
            failed: collections.Counter[str] = await asyncio.shield(writing)
        finally:
            self._held_bytes -= sum(record[-1] for record in batch)
        if self._on_drop is not None:
            for model, count in failed.items():
                self._on_drop(model, count, "error")

    def _write(self, batch: list[tuple[Any, ...]]) -> collections.Counter[str]:
        """Encode and insert `batch`, then cut the log to `max_rows`; returns what was
        dropped, by model: on a storage error the batch (and the log goes on), and any
        record the encoder cannot take."""
        failed: collections.Counter[str] = collections.Counter()
        rows = []
        for record in batch:
            try:
                rows.append(_row(record))
            except Exception as exc:  # a bug, which must not cost the other records
                failed[record[3]] += 1
                reason = exc
        if failed:
            log.error("could not encode %d prediction log records (%s); they are dropped",
                      failed.total(), reason)  # fmt: skip
        if not rows:
            return failed
        try:
            if self._conn is None:
                self._conn = _connect(self.path)
            with self._conn as conn:
                conn.executemany(
                    "INSERT INTO predictions (request_id, at, consumer, model, version, route,"
                    " protocol, input_kind, input, output, latency_ms, default_reason)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                conn.execute(
                    "DELETE FROM predictions WHERE id <= (SELECT MAX(id) FROM predictions) - ?",
                    (self.max_rows,),
                )
        except (sqlite3.Error, OSError):
            # Observability data: a full disk or a locked file must not stop serving.
            log.exception("could not write %d prediction log records; they are dropped",
                          len(batch))  # fmt: skip
            return collections.Counter(record[3] for record in batch)
        return failed


def _row(record: tuple[Any, ...]) -> tuple[Any, ...]:
    request_id, at, consumer, model, version, route, protocol = record[:7]
    given, outputs, latency_s, default_reason = record[7:11]
    if isinstance(given, Mapping):
        kind, data = "tensors", _tensors_blob(given)
    else:
        kind = "features"
        data = _encode([{"view": v.view, "entity": v.entity, "values": v.values} for v in given])
    return (
        request_id, at, consumer, model, version, route, protocol, kind, data,
        _tensors_blob(outputs), latency_s * 1000.0, default_reason,
    )  # fmt: skip


def _tensors_blob(tensors: Tensors) -> bytes:
    """Tensors as msgpack: per name [v2 datatype, shape, raw bytes], or [datatype, shape,
    values] for BYTES (as text) and any array not in a v2 datatype's own byte order."""
    packed: dict[str, Any] = {}
    for name, array in tensors.items():
        datatype = NUMPY_TO_DATATYPE.get(array.dtype)
        if datatype is not None and datatype != "BYTES":
            packed[name] = (datatype, array.shape, array.tobytes())
            continue
        values = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in
                  array.ravel().tolist()]  # fmt: skip
        if array.dtype.kind in "OUS":
            datatype = "BYTES"
        else:
            datatype = NUMPY_TO_DATATYPE.get(array.dtype.newbyteorder("="), str(array.dtype))
        packed[name] = (datatype, array.shape, values)
    return _encode(packed)


def _tensors_json(blob: bytes) -> dict[str, Any]:
    """The tensors of `_tensors_blob` as v2 names them: datatype, shape and nested data."""
    out: dict[str, Any] = {}
    for name, (datatype, shape, data) in _decode(blob).items():
        if isinstance(data, bytes):
            array = np.frombuffer(data, dtype=DATATYPE_TO_NUMPY[datatype])
        else:
            array = np.empty(len(data), dtype=object)
            array[:] = data
        out[name] = {"datatype": datatype, "shape": shape, "data": array.reshape(shape).tolist()}
    return out


def read_predictions(
    path: Path, model: str, *, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """The model's records with an id past `after`, oldest first, at most `limit`
    (at most MAX_READ); page on with the last record's id."""
    if not path.exists():
        return []
    conn = _connect(path)
    try:
        cursor = conn.execute(
            "SELECT id, request_id, at, consumer, model, version, route, protocol, input_kind,"
            " input, output, latency_ms, default_reason FROM predictions"
            " WHERE model = ? AND id > ? ORDER BY id LIMIT ?",
            (model, after, min(limit, MAX_READ)),
        )
        found = []
        for row in cursor:
            (id_, request_id, at, consumer, name, version, route, protocol, kind, given,
             output, latency_ms, reason) = row  # fmt: skip
            found.append({
                "id": id_, "request_id": request_id, "at": at, "consumer": consumer or None,
                "model": name, "version": version, "route": route, "protocol": protocol,
                "input_kind": kind,
                "input": _tensors_json(given) if kind == "tensors" else _decode(given),
                "output": _tensors_json(output), "latency_ms": latency_ms,
                "default": reason is not None, "default_reason": reason,
            })  # fmt: skip
        return found
    finally:
        conn.close()
