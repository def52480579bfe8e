"""Served-request records, feedback and shadow comparisons, in `<home>/feedback.db`.

Writes from the request path are buffered and flushed by one background thread every
`flush_interval_s`, so serving never waits on the disk. Reads (feedback lookups, bandit
statistics) run on the same thread, so the store needs no locks. Several server processes
share the file (SQLite WAL), which is what lets feedback reach the bandit of every worker.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gyre._numbers import parse_count
from gyre._sqlite import connect_wal
from gyre.errors import BadRequest, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS served (
    request_id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,
    prediction TEXT NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    request_id TEXT PRIMARY KEY, model TEXT NOT NULL, version INTEGER NOT NULL,
    reward REAL NOT NULL, at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_model ON feedback (model, version);
CREATE TABLE IF NOT EXISTS shadow (
    id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL, model TEXT NOT NULL,
    primary_version INTEGER NOT NULL, shadow_version INTEGER NOT NULL,
    primary_answer TEXT NOT NULL, shadow_answer TEXT NOT NULL, agree INTEGER NOT NULL,
    at REAL NOT NULL
);
"""


def parse_request_id(request_id: str) -> tuple[str, int]:
    """The model and version a gyre request id (`MODEL~VERSION~UNIQUE`) was served by."""
    parts = request_id.split("~")
    version = parse_count(parts[1]) if len(parts) == 3 else None
    if version is None:
        raise BadRequest(
            f"request_id {request_id!r} is not a gyre request id; use the Gyre-Request-Id "
            "header of the prediction's response"
        )
    return parts[0], version


class FeedbackStore:
    def __init__(self, path: Path, flush_interval_s: float = 0.2) -> None:
        self.path = path
        self.flush_interval_s = flush_interval_s
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="gyre-feedback")
        self._conn: sqlite3.Connection | None = None
        self._served: list[tuple[str, str, int, str, float]] = []
        self._shadow: list[tuple[Any, ...]] = []
        self._task: asyncio.Task[None] | None = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            self._conn = connect_wal(self.path, timeout_s=30.0, isolation_level=None)
            self._conn.executescript(_SCHEMA)
        return self._conn

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def start(self) -> None:
        self._task = asyncio.create_task(self._flush_forever(), name="gyre-feedback-flush")

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval_s)
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.flush()
        if self._conn is not None:
            await self._run(self._conn.close)
        self._thread.shutdown(wait=True)

    # -- writes from the request path (buffered) ------------------------------------------

    def record_served(self, request_id: str, model: str, version: int, prediction: Any) -> None:
        self._served.append((request_id, model, version, json.dumps(prediction), time.time()))

    def record_shadow(
        self,
        request_id: str,
        model: str,
        primary: tuple[int, Any],
        shadow: tuple[int, Any],
        agree: bool,
    ) -> None:
        self._shadow.append(
            (request_id, model, primary[0], shadow[0], json.dumps(primary[1]),
             json.dumps(shadow[1]), int(agree), time.time())
        )  # fmt: skip

    async def flush(self) -> None:
        served, self._served = self._served, []
        shadow, self._shadow = self._shadow, []
        if served or shadow:
            await self._run(self._write, served, shadow)

    def _write(self, served: list[tuple[Any, ...]], shadow: list[tuple[Any, ...]]) -> None:
        db = self._db()
        with db:
            db.execute("BEGIN")
            db.executemany("INSERT OR IGNORE INTO served VALUES (?, ?, ?, ?, ?)", served)
            db.executemany(
                "INSERT INTO shadow (request_id, model, primary_version, shadow_version,"
                " primary_answer, shadow_answer, agree, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                shadow,
            )

    # -- feedback and statistics ----------------------------------------------------------

    async def feedback(
        self, request_id: str, reward: float | None, label: Any
    ) -> tuple[str, int, float, bool]:
        """Record a reward (or a label, scored against the served prediction) for a
        request; returns (model, version, reward, newly recorded)."""
        model, version = parse_request_id(request_id)
        await self.flush()
        return await self._run(self._feedback, request_id, model, version, reward, label)  # type: ignore[no-any-return]

    def _feedback(
        self, request_id: str, model: str, version: int, reward: float | None, label: Any
    ) -> tuple[str, int, float, bool]:
        db = self._db()
        if reward is None:
            row = db.execute(
                "SELECT prediction FROM served WHERE request_id = ?", (request_id,)
            ).fetchone()
            if row is None:
                raise NotFound(
                    f"no prediction was recorded for request {request_id!r} (predictions are "
                    "recorded for bandit-routed requests); post a `reward` instead"
                )
            reward = 1.0 if json.loads(row[0]) == label else 0.0
        cursor = db.execute(
            "INSERT OR IGNORE INTO feedback VALUES (?, ?, ?, ?, ?)",
            (request_id, model, version, reward, time.time()),
        )
        return model, version, reward, cursor.rowcount == 1

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
