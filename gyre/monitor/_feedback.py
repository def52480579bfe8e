"""Served answers, feedback and shadow comparisons, in `<home>/feedback.db`.

Feedback steers the bandit, so it is taken only for answers this server gave and recorded:
every answer whose version a `bandit` policy chose is recorded (model, version, the first
row of its first output, time), under a request id that only this server can issue
(`_request_ids.py`). Those are the answers feedback can say something about: a reward
for an answer whose version the client named, or that a split or the champion gave, is
evidence the bandit did not ask for, and recording every answer of every model would
write a row per request for nothing. A default answer (deadline passed, worker down) is
not the version's answer, so it is not recorded either. Each recorded answer takes one
feedback post, the first; the row names the consumer who posted it.

Writes from the request path are buffered and flushed by one background thread every
`flush_interval_s`, so serving never waits on the disk. Reads (feedback lookups, bandit
statistics) run on the same thread, so the store needs no locks. Several server processes
share the file (SQLite WAL), which is what lets feedback reach the bandit of every worker,
and which means a feedback post can arrive at one process before the process that gave
the answer has flushed its record: `served` waits up to `record_wait_s` for the record of
an id that says it takes feedback.

The tables carry a schema version (`PRAGMA user_version`). Version 0 (gyre before request
ids were signed) stored rewards for any request id, with the model and version read from
the id. Opening such a file renames its `feedback` table to `feedback_v0`, untouched, and
keeps in the new `feedback` table only the rewards whose id has a served record, with the
model and version of that record and `consumer` NULL (posted before posters were named);
`DELETE FROM feedback WHERE consumer IS NULL` drops those too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gyre._sqlite import connect_wal
from gyre.errors import ServeError
from gyre.monitor._request_ids import KEY_BYTES, RequestIds

log = logging.getLogger("gyre.monitor")

SCHEMA_VERSION = 2

_TABLES = """
CREATE TABLE IF NOT EXISTS served (
    request_id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,
    prediction TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,
    reward REAL NOT NULL, consumer TEXT, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_arm ON feedback (model, version);
CREATE TABLE IF NOT EXISTS shadow (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, model TEXT NOT NULL,
    primary_version INTEGER NOT NULL, shadow_version INTEGER NOT NULL,
    primary_answer TEXT NOT NULL, shadow_answer TEXT NOT NULL, agree INTEGER NOT NULL,
    at REAL NOT NULL, mean_abs_diff REAL, max_abs_diff REAL, mean_rel_diff REAL,
    max_rel_diff REAL, mismatch TEXT
);
CREATE TABLE IF NOT EXISTS settings (name TEXT PRIMARY KEY, value BLOB NOT NULL);
"""


def _prepare(path: Path) -> bytes:
    """Create or migrate the tables, in one transaction under the write lock (the workers
    of a server open the file together); the request-id key, made by the first opener."""
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
            if found < SCHEMA_VERSION:
                old = {row[1] for row in conn.execute("PRAGMA table_info(feedback)")}
                if old and "consumer" not in old:
                    conn.execute("ALTER TABLE feedback RENAME TO feedback_v0")
                for statement in _TABLES.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                if old and "consumer" not in old:
                    _migrate_from_0(conn, path)
                _add_shadow_differences(conn)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute(
                "INSERT OR IGNORE INTO settings VALUES ('request_id_key', ?)",
                (secrets.token_bytes(KEY_BYTES),),
            )
            (key,) = conn.execute(
                "SELECT value FROM settings WHERE name = 'request_id_key'"
            ).fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    finally:
        conn.close()
    return bytes(key)


def _migrate_from_0(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute(
        "INSERT INTO feedback (request_id, model, version, reward, consumer, at)"
        " SELECT f.request_id, s.model, s.version, f.reward, NULL, f.at"
        " FROM feedback_v0 AS f JOIN served AS s ON s.request_id = f.request_id"
    )
    (kept,) = conn.execute("SELECT COUNT(*) FROM feedback").fetchone()
    (old,) = conn.execute("SELECT COUNT(*) FROM feedback_v0").fetchone()
    log.warning(
        "%s: kept %d of %d rewards stored before request ids were signed (those of recorded "
        "answers); all %d stay in table feedback_v0",
        path, kept, old, old,
    )  # fmt: skip


# Version 2 measures how far a shadow's answers are from the primary's (`_compare.py`).
_SHADOW_DIFFERENCES = {
    "mean_abs_diff": "REAL", "max_abs_diff": "REAL", "mean_rel_diff": "REAL",
    "max_rel_diff": "REAL", "mismatch": "TEXT",
}  # fmt: skip


def _add_shadow_differences(conn: sqlite3.Connection) -> None:
    """Comparisons logged before version 2 keep NULL differences."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(shadow)")}
    for column, kind in _SHADOW_DIFFERENCES.items():
        if column not in present:
            conn.execute(f"ALTER TABLE shadow ADD COLUMN {column} {kind}")


@dataclass(frozen=True, slots=True)
class Comparison:
    """How a shadow's answer compared with the primary's (computed by the server's
    `_compare.py`, logged in the `shadow` table)."""

    agree: bool
    # Over the continuous outputs' finite pairs; None when there were none.
    mean_abs_diff: float | None
    max_abs_diff: float | None
    mean_rel_diff: float | None
    max_rel_diff: float | None
    # Why the answers could not be compared element by element (a missing output, another
    # shape), or None.
    mismatch: str | None = None


@dataclass(frozen=True, slots=True)
class Served:
    """The record of one answer that takes feedback."""

    request_id: str
    model: str
    version: int
    prediction: Any  # the first row of the first output

    def score(self, label: Any) -> float:
        """A label as a reward: 1.0 when the answer was that label, else 0.0."""
        return 1.0 if self.prediction == label else 0.0


class FeedbackStore:
    def __init__(
        self,
        path: Path,
        ids: RequestIds,
        *,
        flush_interval_s: float = 0.2,
        record_wait_s: float = 2.0,
    ) -> None:
        self.path = path
        self.ids = ids
        self.flush_interval_s = flush_interval_s
        # How long a feedback post waits for a record that another process has not written
        # yet: ten of its flushes, for a process whose event loop is busy.
        self.record_wait_s = record_wait_s
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gyre-feedback")
        self._conn: sqlite3.Connection | None = None
        self._served: list[tuple[str, str, int, Any, float]] = []
        self._shadow: list[tuple[Any, ...]] = []
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def open(cls, path: Path, **options: float) -> FeedbackStore:
        """The store in `path`, its tables made or migrated, with the home's id key."""
        return cls(path, RequestIds(_prepare(path)), **options)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect_wal(self.path, timeout_s=30.0, isolation_level=None)
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="gyre-feedback-flush")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            try:
                await self.flush()
            except Exception:  # a full disk: keep serving, and keep trying
                log.exception("could not write served answers and shadow comparisons")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()
        if self._conn is not None:
            await self._run(self._conn.close)
        self._thread.shutdown(wait=True)

    # -- writes from the request path (buffered) ------------------------------------------

    def record_served(self, request_id: str, model: str, version: int, prediction: Any) -> None:
        """Keep an answer for its feedback; `prediction` is encoded off the request path."""
        self._served.append((request_id, model, version, prediction, time.time()))

    def record_shadow(
        self,
        request_id: str,
        model: str,
        primary: tuple[int, Any],
        shadow: tuple[int, Any],
        result: Comparison,
    ) -> None:
        """Log a shadow comparison; the answers are JSON values (`to_json_value`)."""
        self._shadow.append(
            (request_id, model, primary[0], shadow[0], json.dumps(primary[1]),
             json.dumps(shadow[1]), int(result.agree), time.time(), result.mean_abs_diff,
             result.max_abs_diff, result.mean_rel_diff, result.max_rel_diff, result.mismatch)
        )  # fmt: skip

    async def flush(self) -> None:
        # The swap and the hand-off to the store's one thread happen without a pause, so
        # whatever runs on that thread after a flush sees every record made before it.
        served, self._served = self._served, []
        shadow, self._shadow = self._shadow, []
        if served or shadow:
            await self._run(self._write, served, shadow)

    def _write(self, served: list[tuple[Any, ...]], shadow: list[tuple[Any, ...]]) -> None:
        db = self._db()
        with db:
            db.execute("BEGIN")
            db.executemany(
                "INSERT OR IGNORE INTO served VALUES (?, ?, ?, ?, ?)",
                [(rid, m, v, json.dumps(p, default=str), at) for rid, m, v, p, at in served],
            )
            db.executemany(
                "INSERT INTO shadow (request_id, model, primary_version, shadow_version,"
                " primary_answer, shadow_answer, agree, at, mean_abs_diff, max_abs_diff,"
                " mean_rel_diff, max_rel_diff, mismatch)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                shadow,
            )

    # -- feedback and statistics ----------------------------------------------------------

    async def served(self, request_id: str) -> Served | None:
        """The record of the answer with this id, if it takes feedback and was recorded.

        This process's records are flushed first. An id this server issued for an answer
        that takes feedback may come from another process that has not flushed yet (a
        client may post feedback a millisecond after the answer, on another connection):
        it is looked up again until `record_wait_s` has passed. Other ids are answered at
        once."""
        issued = self.ids.verify(request_id)
        if issued is None or not issued.takes_feedback:
            return None
        await self.flush()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.record_wait_s
        while True:
            found: Served | None = await self._run(self._served_row, request_id)
            if found is not None or loop.time() >= deadline:
                return found
            await asyncio.sleep(self.flush_interval_s / 4)

    def _served_row(self, request_id: str) -> Served | None:
        row = (
            self._db()
            .execute(
                "SELECT model, version, prediction FROM served WHERE request_id = ?",
                (request_id,),
            )
            .fetchone()
        )
        if row is None:
            return None
        return Served(request_id, row[0], int(row[1]), json.loads(row[2]))

    async def add_feedback(self, served: Served, reward: float, consumer: str) -> bool:
        """Store the reward for an answer, attributed to `consumer` ("" when no consumers
        are declared); False when the answer already had its feedback."""
        return await self._run(self._add, served, reward, consumer)  # type: ignore[no-any-return]

    def _add(self, served: Served, reward: float, consumer: str) -> bool:
        cursor = self._db().execute(
            "INSERT OR IGNORE INTO feedback (request_id, model, version, reward, consumer, at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (served.request_id, served.model, served.version, reward, consumer, time.time()),
        )
        return cursor.rowcount == 1

    async def bandit_stats(self, models: list[str]) -> dict[str, dict[int, tuple[int, float]]]:
        return await self._run(self._stats, models)  # type: ignore[no-any-return]

    def _stats(self, models: list[str]) -> dict[str, dict[int, tuple[int, float]]]:
        db = self._db()
        found: dict[str, dict[int, tuple[int, float]]] = {m: {} for m in models}
        for model in models:
            for version, trials, rewards in db.execute(
                "SELECT version, COUNT(*), SUM(reward) FROM feedback WHERE model = ?"
                " GROUP BY version",
                (model,),
            ):
                found[model][int(version)] = (int(trials), float(rewards))
        return found

    async def shadow_rows(self, model: str) -> list[dict[str, Any]]:
        await self.flush()
        return await self._run(self._shadow_rows, model)  # type: ignore[no-any-return]

    def _shadow_rows(self, model: str) -> list[dict[str, Any]]:
        cursor = self._db().execute("SELECT * FROM shadow WHERE model = ? ORDER BY id", (model,))
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor]

    async def shadow_summary(self, model: str) -> list[dict[str, Any]]:
        """Per (primary, shadow) pair of versions: how often they agreed, and how far apart
        their continuous outputs were (the mean of the per-request means, the max of the
        maxima; over the comparisons that measured differences)."""
        await self.flush()
        return await self._run(self._shadow_summary, model)  # type: ignore[no-any-return]

    def _shadow_summary(self, model: str) -> list[dict[str, Any]]:
        cursor = self._db().execute(
            "SELECT primary_version, shadow_version, COUNT(*) AS comparisons,"
            " SUM(agree) AS agree, COUNT(max_abs_diff) AS measured,"
            " AVG(mean_abs_diff) AS mean_abs_diff, MAX(max_abs_diff) AS max_abs_diff,"
            " AVG(mean_rel_diff) AS mean_rel_diff, MAX(max_rel_diff) AS max_rel_diff"
            " FROM shadow WHERE model = ? GROUP BY primary_version, shadow_version"
            " ORDER BY primary_version, shadow_version",
            (model,),
        )
        names = [d[0] for d in cursor.description]
        summary = []
        for row in cursor:
            pair = dict(zip(names, row, strict=True))
            pair["disagree"] = pair["comparisons"] - pair["agree"]
            pair["agree_rate"] = pair["agree"] / pair["comparisons"]
            summary.append(pair)
        return summary
