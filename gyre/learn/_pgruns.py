"""Runs in PostgreSQL (the `postgres` extra): the queries of `_runstore.py`.

No store-wide lock: a write to a run holds that run's row lock (the UPDATE of its point
count takes it) until it commits, so writers of one run take turns and writers of
different runs, in any process on any host, never wait on each other. Reads take no lock
and see one snapshot (REPEATABLE READ) for all the queries of one call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from gyre._postgres import Database
from gyre.learn._runs import MetricPoint
from gyre.learn._runstore import PG_DDL, SCHEMA_VERSION, SQLRunStore, migration


class PostgresRunStore(SQLRunStore):
    """The run store in one PostgreSQL database; safe to share between threads."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.where = database.url.shown
        database.migrate("runs", SCHEMA_VERSION, lambda version: migration(version, PG_DDL))

    def __repr__(self) -> str:
        return f"PostgresRunStore({self.where!r})"

    def close(self) -> None:
        """Nothing to close: the connections belong to the process's pool."""

    @contextmanager
    def _read(self) -> Iterator[Any]:
        with self.database.connection() as conn, conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            yield conn

    @contextmanager
    def _write(self) -> Iterator[Any]:
        with self.database.transaction() as conn:
            yield conn

    def _rows(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        from psycopg.rows import dict_row

        with conn.cursor(row_factory=dict_row) as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description is not None else []

    def _run(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
        cursor = conn.execute(sql.replace("?", "%s"), params)
        return int(cursor.rowcount)

    def _many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(sql.replace("?", "%s"), rows)

    def _insert_points(
        self, conn: Any, rid: int, points: Sequence[MetricPoint], first: int
    ) -> None:
        # One statement for the whole batch: arrays, unnested by the server.
        keys = [p.key for p in points]
        steps = [p.step for p in points]
        seqs = list(range(first, first + len(points)))
        values = [float(p.value) for p in points]
        ats = [float(p.at) for p in points]
        conn.execute(
            "INSERT INTO run_metrics (rid, key, step, seq, value, at)"
            " SELECT %s, k, s, q, v, a FROM unnest(%s::text[], %s::bigint[], %s::bigint[],"
            " %s::float8[], %s::float8[]) AS t(k, s, q, v, a)",
            (rid, keys, steps, seqs, values, ats),
        )
