"""Runs in SQLite (WAL), the embedded default: the queries of `_runstore.py` on one file
under the home, shared by the processes of one host. BEGIN IMMEDIATE takes the file's one
write lock up front, so writers take turns; readers never wait (WAL)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gyre._sqlite import connect_wal
from gyre.errors import StoreError, StoreUnavailable
from gyre.learn._runstore import SCHEMA_VERSION, SQLITE_DDL, SQLRunStore, migration


class SQLiteRunStore(SQLRunStore):
    """Runs in one SQLite file, shared by the processes of one host (one connection per
    instance, which its threads take turns on). Commits are durable (synchronous=FULL)."""

    def __init__(self, path: Path, *, timeout_s: float = 30.0) -> None:
        self.path = path
        self.where = str(path)
        self._conn = connect_wal(
            path, timeout_s=timeout_s, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA synchronous=FULL")
        self._lock = threading.RLock()
        self._migrate()

    def __repr__(self) -> str:
        return f"SQLiteRunStore({self.where!r})"

    def _migrate(self) -> None:
        # A store at this version is only read: opening one never waits for a writer.
        if self._conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        with self._write() as conn:
            found = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            while found < SCHEMA_VERSION and (found > 0 or tables == 0):
                for statement in migration(found, SQLITE_DDL):
                    conn.execute(statement)
                found += 1
                conn.execute(f"PRAGMA user_version = {found}")
        if found != SCHEMA_VERSION:
            self._conn.close()
            raise StoreError(
                f"runs store {self.path} has schema version {found}; this gyre reads version "
                f"{SCHEMA_VERSION}: use the gyre version that wrote it"
            )

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the file's write lock (for every process) up front; a lock
        # held past the busy timeout is an outage to retry, not a broken store.
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if "locked" in str(exc) or "busy" in str(exc):
                    raise StoreUnavailable(
                        f"runs store {self.path} is locked by another writer ({exc}); retry"
                    ) from None
                raise
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(
        self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()
    ) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = conn.execute(sql, params).fetchall()
        return rows

    def _run(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> int:
        return conn.execute(sql, params).rowcount

    def _many(self, conn: sqlite3.Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(sql, rows)
