"""Registry metadata in PostgreSQL (the `postgres` extra): the queries of `_store.py`, with
writes serialized by one advisory lock per database.

The lock makes version allocation and change positions safe across processes and hosts:
two publishers never read the same "next version" number, and a change with a lower
position never commits after one with a higher position (which a poller would miss).
Writes are rare next to reads, and reads take no lock.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from gyre._postgres import Database
from gyre.registry._schema import PG_DDL, SCHEMA_VERSION, migration
from gyre.registry._store import SQLMetadataStore

# pg_advisory_xact_lock keys ("gyre" "regi" in hex).
_WRITE_LOCK = 0x6779_7265_7265_6769


class PostgresMetadataStore(SQLMetadataStore):
    """The metadata store in one PostgreSQL database; safe to share between threads."""

    null_safe_equal = "IS NOT DISTINCT FROM"

    def __init__(self, database: Database) -> None:
        self.database = database
        self.where = database.url.shown
        database.migrate("registry", SCHEMA_VERSION, lambda version: migration(version, PG_DDL))

    def __repr__(self) -> str:
        return f"PostgresMetadataStore({self.where!r})"

    def close(self) -> None:
        """Nothing to close: the connections belong to the process's pool."""

    @contextmanager
    def _read(self) -> Iterator[Any]:
        # REPEATABLE READ: every query of one read sees the same committed state.
        with self.database.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self.database.transaction(_WRITE_LOCK) as conn:
            yield conn

    def _rows(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        from psycopg.rows import dict_row

        with conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description is not None else []

    def _run(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = conn.execute(sql.replace("?", "%s"), params)
        return int(cursor.rowcount)
