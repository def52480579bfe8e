"""The embedded fact log, in SQLite (WAL) under the home, and `GroupCommitter`, which
shares one commit of any fact log among concurrent callers.

Each append is one transaction committed with `synchronous=FULL` (fsync). The interface
and its guarantees are in `_factlog.py`; PostgreSQL's implementation is `_pglog.py`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from gyre._sqlite import connect_wal
from gyre.collect._factlog import AppendResult, Fact, FactLog, payload_lines
from gyre.collect._schema import EventType
from gyre.errors import StoreUnavailable

logger = logging.getLogger("gyre.collect")

_PAYLOAD_CHUNK = 100_000  # facts per query of `payloads`: about 10 MB of text

_SCHEMA = """
CREATE TABLE IF NOT EXISTS facts (
    -- Facts are never deleted, so the rowid only grows: a plain key is a gapless position.
    seq INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    event_id TEXT,
    entity TEXT NOT NULL,
    event_time INTEGER NOT NULL,
    payload TEXT NOT NULL,
    ingested_at REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS facts_by_id ON facts (type, event_id)
    WHERE event_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS facts_by_time ON facts (type, event_time, seq);
"""


class SQLiteFactLog:
    """The embedded fact log. Use one instance per thread (SQLite connections are not
    shared across threads) unless the caller serializes its use and says so with
    `check_same_thread=False`; many processes may append to the same file."""

    def __init__(self, path: Path, *, check_same_thread: bool = True) -> None:
        self.path = path
        self.where = str(path)
        self._conn = connect_wal(
            path, timeout_s=60.0, isolation_level=None, check_same_thread=check_same_thread
        )
        self._conn.execute("PRAGMA synchronous=FULL")
        self._conn.executescript(_SCHEMA)

    def close(self) -> None:
        self._conn.close()

    def append(
        self, batches: Sequence[tuple[EventType, Sequence[Mapping[str, Any]]]]
    ) -> list[AppendResult]:
        """Store validated facts, one result per batch, in one durable transaction."""
        now = time.time()
        conn = self._conn
        results = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for event_type, facts in batches:
                rows = [
                    (
                        event_type.name,
                        None if event_type.id_field is None else str(fact[event_type.id_field]),
                        event_type.entity_key(fact),
                        fact[event_type.time_field],
                        json.dumps(fact, separators=(",", ":")),
                        now,
                    )
                    for fact in facts
                ]
                before = conn.total_changes
                conn.executemany(
                    "INSERT OR IGNORE INTO facts (type, event_id, entity, event_time, payload,"
                    " ingested_at) VALUES (?, ?, ?, ?, ?, ?)",
                    rows,
                )
                stored = conn.total_changes - before
                results.append((stored, len(rows) - stored))
            (watermark,) = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM facts").fetchone()
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return [AppendResult(s, d, int(watermark)) for s, d in results]

    def identity(self) -> str:
        """Its first fact's type, event time and time of storage: what tells this log from
        another one made later at the same path."""
        row = self._conn.execute(
            "SELECT type, event_time, ingested_at FROM facts ORDER BY seq LIMIT 1"
        ).fetchone()
        return "" if row is None else json.dumps(list(row))

    def watermark(self) -> int:
        """The log position of the latest fact; later steps record it as lineage."""
        (seq,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM facts").fetchone()
        return int(seq)

    def scan(
        self,
        event_type: str,
        start: int | None = None,
        end: int | None = None,
        *,
        up_to_seq: int | None = None,
        chunk: int = 10_000,
    ) -> Iterator[Fact]:
        """Facts of one type with start <= event time < end (microseconds), in event-time
        order, streamed in chunks (constant memory)."""
        last_time, last_seq = (start if start is not None else -(2**63)), -1
        stop = end if end is not None else 2**63 - 1
        limit_seq = up_to_seq if up_to_seq is not None else 2**63 - 1
        while True:
            rows = self._conn.execute(
                "SELECT seq, event_time, payload FROM facts WHERE type = ?"
                " AND (event_time > ? OR (event_time = ? AND seq > ?))"
                " AND event_time < ? AND seq <= ? ORDER BY event_time, seq LIMIT ?",
                (event_type, last_time, last_time, last_seq, stop, limit_seq, chunk),
            ).fetchall()
            for seq, event_time, payload in rows:
                yield Fact(seq, event_type, event_time, json.loads(payload))
            if len(rows) < chunk:
                return
            last_seq, last_time = rows[-1][0], rows[-1][1]

    def payloads(self, event_type: str, after_seq: int, up_to_seq: int) -> Any:
        """The facts of one type stored in (after_seq, up_to_seq], in log order, as an Arrow
        table (`_seq`, `_time`, `payload`: the fact as JSON text), for the offline engine.

        SQLite joins each chunk into one tab-separated text (a JSON payload holds no tab
        or newline: `json.dumps` escapes them) that Arrow's CSV reader splits in C: five
        times faster than a Python tuple per fact."""
        import pyarrow as pa

        parts, after = [], after_seq
        while after < up_to_seq:
            text, last, count = self._conn.execute(
                "SELECT group_concat(line, char(10)), max(seq), count(*) FROM (SELECT seq,"
                " seq || char(9) || event_time || char(9) || payload AS line"
                " FROM facts NOT INDEXED WHERE seq > ? AND seq <= ? AND type = ?"
                " ORDER BY seq LIMIT ?)",
                (after, up_to_seq, event_type, _PAYLOAD_CHUNK),
            ).fetchone()
            if not count:
                break
            parts.append(payload_lines(text.encode()))
            after = last
        return pa.concat_tables(parts) if parts else payload_lines(b"")

    def since(self, seq: int, types: Sequence[str], limit: int = 10_000) -> tuple[list[Fact], int]:
        """The facts of `types` among the next `limit` facts stored after log position
        `seq`, in log order, and the position read up to: what a follower of the log has
        not seen yet, and where to go on from (past facts of other types too)."""
        rows = self._conn.execute(
            "SELECT seq, type, event_time, payload FROM facts WHERE seq > ? ORDER BY seq LIMIT ?",
            (seq, limit),
        ).fetchall()
        wanted = set(types)
        facts = [Fact(s, t, e, json.loads(p)) for s, t, e, p in rows if t in wanted]
        return facts, (rows[-1][0] if rows else seq)

    def count(self, event_type: str, up_to_seq: int | None = None) -> int:
        """How many facts of `event_type` were stored up to log position `up_to_seq`."""
        (found,) = self._conn.execute(
            "SELECT COUNT(*) FROM facts WHERE type = ? AND seq <= ?",
            (event_type, up_to_seq if up_to_seq is not None else 2**63 - 1),
        ).fetchone()
        return int(found)

    def tail(self, event_type: str, count: int = 10) -> list[Fact]:
        rows = self._conn.execute(
            "SELECT seq, event_time, payload FROM facts WHERE type = ? ORDER BY seq DESC LIMIT ?",
            (event_type, count),
        ).fetchall()
        return [Fact(s, event_type, t, json.loads(p)) for s, t, p in reversed(rows)]

    def stats(self) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            "SELECT type, COUNT(*), MIN(event_time), MAX(event_time), MAX(seq) FROM facts"
            " GROUP BY type ORDER BY type"
        ).fetchall()
        return [
            {"type": t, "facts": n, "first_event_time": lo, "last_event_time": hi, "last_seq": s}
            for t, n, lo, hi, s in rows
        ]


class GroupCommitter:
    """Appends from many threads or coroutines, committed together: each caller blocks
    until its facts are durable, and callers that arrive while a commit runs share the
    next one (one fsync for all of them). `open_log` opens the log on the committer's own
    thread."""

    def __init__(self, open_log: Callable[[], FactLog], max_wait_ms: float = 2.0) -> None:
        self._open_log = open_log
        self.max_wait_s = max_wait_ms / 1000.0
        self._lock = threading.Condition()
        self._pending: list[tuple[EventType, Sequence[Mapping[str, Any]], _Slot]] = []
        self._closed = False
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="gyre-fact-log", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            raise self._error

    def append(self, event_type: EventType, facts: Sequence[Mapping[str, Any]]) -> AppendResult:
        """Store `facts` durably; returns once they are on disk."""
        slot = _Slot()
        with self._lock:
            if self._closed:
                raise RuntimeError("the fact log is closed")
            self._pending.append((event_type, facts, slot))
            self._lock.notify()
        return slot.wait()

    def _run(self) -> None:
        try:
            fact_log = self._open_log()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        last_batch = 0
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if not self._pending and self._closed:
                    break
            if self.max_wait_s > 0 and last_batch > 1:
                # Callers have been arriving together: let the others join this commit.
                # A lone caller is not made to wait.
                time.sleep(self.max_wait_s)
            with self._lock:
                batch, self._pending = self._pending, []
            try:
                results = fact_log.append([(t, f) for t, f, _ in batch])
            except StoreUnavailable as exc:  # an outage: every caller is told, none stored
                for _, _, slot in batch:
                    slot.fail(exc)
                continue
            except BaseException as exc:
                if len(batch) == 1:
                    batch[0][2].fail(exc)
                    continue
                # One caller's facts may be what the log refused: each on its own, so that
                # the others are stored and only that caller gets the error.
                logger.info("a shared commit failed (%s); committing its callers one by one", exc)
                for event_type, facts, slot in batch:
                    try:
                        slot.done(fact_log.append([(event_type, facts)])[0])
                    except BaseException as alone:
                        slot.fail(alone)
                continue
            self.commits += 1
            last_batch = len(batch)
            for (_, _, slot), result in zip(batch, results, strict=True):
                slot.done(result)
        fact_log.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join()


class _Slot:
    __slots__ = ("_error", "_event", "_result")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._result: AppendResult | None = None
        self._error: BaseException | None = None

    def done(self, result: AppendResult) -> None:
        self._result = result
        self._event.set()

    def fail(self, error: BaseException) -> None:
        self._error = error
        self._event.set()

    def wait(self) -> AppendResult:
        self._event.wait()
        if self._error is not None:
            raise self._error
        assert self._result is not None
        return self._result
