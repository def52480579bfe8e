"""The served-vector log: every feature vector the server built from an entity, in
`served.db` under the home, which the skew check (`_skew.py`) recomputes offline.

Written off the request path: `record` queues, one thread writes in batches. The table and
its columns are those gyre has always written (no schema version: nothing has changed).
"""

from __future__ import annotations

import json
import logging
import queue
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gyre._sqlite import connect_wal
from gyre.features import ServedVector

log = logging.getLogger("gyre.monitor")

_SERVED_SCHEMA = """
CREATE TABLE IF NOT EXISTS served (
    id INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    view TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    entity TEXT NOT NULL,
    request TEXT NOT NULL,
    at_us INTEGER NOT NULL,
    watermark INTEGER NOT NULL,
    vector TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS served_by_view ON served (view, id);
"""


@dataclass(frozen=True)
class ServedRecord:
    request_id: str
    model: str
    version: int
    vector: ServedVector


class ServedLog:
    """Served vectors in `served.db` under the home. `record` never blocks a request: a
    thread writes them in batches (observability data: WAL, no fsync per batch)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _connect(path) as conn:
            conn.executescript(_SERVED_SCHEMA)
        self._queue: queue.SimpleQueue[ServedRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write, name="gyre-served-log", daemon=True)
        self._thread.start()

    def record(self, request_id: str, model: str, version: int, vector: ServedVector) -> None:
        self._queue.put(ServedRecord(request_id, model, version, vector))

    def close(self) -> None:
        """Write what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()

    def _write(self) -> None:
        conn = _connect(self.path)
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            while not self._queue.empty() and len(batch) < 1000:
                batch.append(self._queue.get())
            stopping = None in batch
            rows = [_row(record) for record in batch if record is not None]
            if not rows:
                continue
            try:
                with conn:
                    conn.executemany(
                        "INSERT INTO served (request_id, model, version, view, definition_hash,"
                        " entity, request, at_us, watermark, vector)"
                        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        rows,
                    )
            except sqlite3.Error:
                # Observability data: a full disk must not stop serving, nor grow the queue.
                log.exception("could not log %d served vectors; they are dropped", len(rows))
        conn.close()


def _connect(path: Path) -> sqlite3.Connection:
    conn = connect_wal(path, timeout_s=60.0)
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


def _row(record: ServedRecord) -> tuple[Any, ...]:
    v = record.vector
    return (
        record.request_id, record.model, record.version, v.view, v.definition_hash,
        json.dumps(v.entity), json.dumps(v.request), v.at_us, v.watermark, json.dumps(v.values),
    )  # fmt: skip


def read_served(path: Path, view: str | None = None) -> Iterator[ServedRecord]:
    """The logged vectors, oldest first (of one view, or all)."""
    if not path.exists():
        return
    conn = _connect(path)
    try:
        sql = (
            "SELECT request_id, model, version, view, definition_hash, entity, request, at_us,"
            " watermark, vector FROM served"
        )
        args: tuple[Any, ...] = ()
        if view is not None:
            sql, args = sql + " WHERE view = ?", (view,)
        for row in conn.execute(sql + " ORDER BY id", args):
            request_id, model, version, name, digest, entity, request, at, mark, vector = row
            yield ServedRecord(
                request_id, model, version,
                ServedVector(name, digest, json.loads(entity), json.loads(request), at, mark,
                             json.loads(vector)),
            )  # fmt: skip
    finally:
        conn.close()
