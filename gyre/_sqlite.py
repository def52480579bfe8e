"""Opening the embedded SQLite files that several processes share (registry, fact log,
feedback, served vectors)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any


def connect_wal(path: Path, *, timeout_s: float, **options: Any) -> sqlite3.Connection:
    """A connection to `path` in WAL mode, waiting up to `timeout_s` for locks.

    Switching a new file to WAL takes a lock that SQLite does not wait for through its busy
    timeout: when several processes open the same new file at once (server workers that
    start together), the loser gets "database is locked" at once. The switch is retried
    here until `timeout_s` has passed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn: sqlite3.Connection = sqlite3.connect(path, timeout=timeout_s, **options)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                conn.close()
                raise
            time.sleep(0.01)
