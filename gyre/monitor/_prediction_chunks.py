"""The prediction log's file, `predictions.db`: records stored in chunks, read back by id.

One SQLite row per chunk rather than per record: a chunk holds up to CHUNK_RECORDS records
of one model as columns (msgpack), so a server answering tens of thousands of requests a
second makes a few inserts a second, and encoding a chunk is one C call over it (tensors
go in as their raw bytes). Each record still has its own id: ids are given out in one
sequence over all models and processes (`sequence`, under the write lock), a chunk holds
the records `first_id` to `last_id`, and `last_id` is its key. So a page "after record
ID" is one index range on (model, last_id): keyset pagination, never OFFSET. Retention
keeps the newest `max_records` ids, whole chunks at a time (so up to one chunk more).

A chunk's columns: request_id, at (seconds since the epoch), consumer, version, route,
protocol, latency_s, default_reason, input_kind (`tensors` or `features`), input (per
record its tensors by name, or its feature vectors), output (its tensors by name). A
tensor is [v2 datatype, shape, raw bytes], or [datatype, shape, values] for BYTES (as
text) and any array in another byte order.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from gyre._sqlite import connect_wal
from gyre.errors import ServeError
from gyre.types import DATATYPE_TO_NUMPY, NUMPY_TO_DATATYPE

SCHEMA_VERSION = 1
# The file's page size. A chunk of 32-row records is megabytes: in SQLite's default 4 KiB
# pages, writing one cost the log's thread 29 us of CPU per record here, in 64 KiB pages
# 17 us (fewer pages to chain, frame and checkpoint).
PAGE_BYTES = 65536
CHUNK_RECORDS = 1000
# The most records one read returns.
MAX_READ = 1000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS predictions (
    last_id INTEGER PRIMARY KEY,
    first_id INTEGER NOT NULL,
    model TEXT NOT NULL,
    chunk BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS predictions_by_model ON predictions (model, last_id);
CREATE TABLE IF NOT EXISTS sequence (last_id INTEGER NOT NULL);
"""

# The columns of a chunk, in the order of a record as PredictionLog keeps it (its model
# and size aside).
COLUMNS = (
    "request_id", "at", "consumer", "model", "version", "route", "protocol", "input_kind",
    "input", "output", "latency_s", "default_reason",
)  # fmt: skip


def _tensor(array: np.ndarray) -> tuple[str, tuple[int, ...], Any]:
    datatype = NUMPY_TO_DATATYPE.get(array.dtype)
    if datatype is not None and datatype != "BYTES":
        return datatype, array.shape, array.tobytes()
    values = [v.decode(errors="replace") if isinstance(v, bytes) else v for v in
              array.ravel().tolist()]  # fmt: skip
    if array.dtype.kind in "OUS":
        return "BYTES", array.shape, values
    native = NUMPY_TO_DATATYPE.get(array.dtype.newbyteorder("="), str(array.dtype))
    return native, array.shape, values


def _hook(value: Any) -> Any:
    """What msgspec cannot encode itself: arrays, numpy scalars; anything else as text."""
    if isinstance(value, np.ndarray):
        return _tensor(value)
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


_encode = msgspec.msgpack.Encoder(enc_hook=_hook).encode


def connect(path: Path) -> sqlite3.Connection:
    """A connection that starts its transactions itself (`BEGIN IMMEDIATE` to write)."""
    conn = connect_wal(path, timeout_s=30.0, isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")  # monitoring data: no fsync per commit
    return conn


def prepare(path: Path) -> None:
    """Create the tables (in pages of PAGE_BYTES), or refuse a file a later gyre wrote;
    then switch the file to WAL."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    try:
        conn.execute(f"PRAGMA page_size = {PAGE_BYTES}")  # a new file's only: before a write
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
            if conn.execute("SELECT COUNT(*) FROM sequence").fetchone() == (0,):
                conn.execute("INSERT INTO sequence VALUES (0)")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    connect_wal(path, timeout_s=30.0).close()


def encode_chunk(records: Sequence[tuple[Any, ...]]) -> bytes:
    """One chunk of one model's records (tuples in COLUMNS order), as columns."""
    columns = dict(zip(COLUMNS, zip(*records, strict=True), strict=False))
    del columns["model"]
    return _encode(columns)


def write_chunks(
    conn: sqlite3.Connection, chunks: Sequence[tuple[str, int, bytes]], max_records: int
) -> None:
    """Store `(model, records, chunk)`s under new ids in one transaction, then drop the
    chunks whose records are all older than the newest `max_records`."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        (last,) = conn.execute("SELECT last_id FROM sequence").fetchone()
        rows = []
        for model, count, chunk in chunks:
            rows.append((last + count, last + 1, model, chunk))
            last += count
        conn.executemany(
            "INSERT INTO predictions (last_id, first_id, model, chunk) VALUES (?, ?, ?, ?)", rows
        )
        conn.execute("UPDATE sequence SET last_id = ?", (last,))
        conn.execute("DELETE FROM predictions WHERE last_id <= ?", (last - max_records,))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def _tensors(encoded: dict[str, list[Any]]) -> dict[str, Any]:
    """A record's tensors as v2 names them: datatype, shape and nested data."""
    out: dict[str, Any] = {}
    for name, (datatype, shape, data) in encoded.items():
        if isinstance(data, bytes):
            array = np.frombuffer(data, dtype=DATATYPE_TO_NUMPY[datatype])
        else:
            array = np.empty(len(data), dtype=object)
            array[:] = data
        out[name] = {"datatype": datatype, "shape": shape, "data": array.reshape(shape).tolist()}
    return out


def _records(first_id: int, model: str, chunk: bytes) -> Iterator[dict[str, Any]]:
    columns = msgspec.msgpack.decode(chunk)
    for i, values in enumerate(zip(*(columns[name] for name in _STORED), strict=True)):
        record = dict(zip(_STORED, values, strict=True))
        kind = record["input_kind"]
        latency_s = record.pop("latency_s")
        reason = record["default_reason"]
        yield {
            "id": first_id + i, **record, "model": model, "consumer": record["consumer"] or None,
            "input": _tensors(record["input"]) if kind == "tensors" else record["input"],
            "output": _tensors(record["output"]), "latency_ms": latency_s * 1000.0,
            "default": reason is not None,
        }  # fmt: skip


_STORED = tuple(name for name in COLUMNS if name != "model")


def read_predictions(
    path: Path, model: str, *, after: int = 0, limit: int = 100
) -> list[dict[str, Any]]:
    """The model's records with an id past `after`, oldest first, at most `limit` (at
    most MAX_READ); page on with the last record's id."""
    if not path.exists():
        return []
    limit = min(limit, MAX_READ)
    conn = connect(path)
    try:
        found: list[dict[str, Any]] = []
        cursor = conn.execute(
            "SELECT first_id, chunk FROM predictions WHERE model = ? AND last_id > ?"
            " ORDER BY last_id",
            (model, after),
        )
        for first_id, chunk in cursor:
            for record in _records(first_id, model, chunk):
                if record["id"] > after:
                    found.append(record)
                    if len(found) == limit:
                        return found
        return found
    finally:
        conn.close()
