"""The feedback store: records shared by processes, one feedback per answer, the schema's
migration from before request ids were signed."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from gyre.errors import ServeError
from gyre.monitor import FeedbackStore
from gyre.monitor._feedback import SCHEMA_VERSION

# The tables as gyre wrote them before request ids were signed (schema version 0).
VERSION_0 = """
CREATE TABLE served (request_id TEXT PRIMARY KEY, model TEXT NOT NULL,
    version INTEGER NOT NULL, prediction TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE feedback (request_id TEXT PRIMARY KEY, model TEXT NOT NULL,
    version INTEGER NOT NULL, reward REAL NOT NULL, at REAL NOT NULL);
CREATE INDEX feedback_by_model ON feedback (model, version);
CREATE TABLE shadow (id INTEGER PRIMARY KEY AUTOINCREMENT, request_id TEXT NOT NULL,
    model TEXT NOT NULL, primary_version INTEGER NOT NULL, shadow_version INTEGER NOT NULL,
    primary_answer TEXT NOT NULL, shadow_answer TEXT NOT NULL, agree INTEGER NOT NULL,
    at REAL NOT NULL);
INSERT INTO served VALUES ('iris~1~0a1b2c3d0', 'iris', 1, '0', 1.0);
INSERT INTO feedback VALUES ('iris~1~0a1b2c3d0', 'iris', 1, 1.0, 2.0);
INSERT INTO feedback VALUES ('iris~2~0a1b2c3d7', 'iris', 2, 1.0, 3.0);
INSERT INTO feedback VALUES ('iris~2~forged', 'iris', 2, 1.0, 4.0);
"""


def test_a_record_written_by_another_process_later_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    # Two workers of one server: one gives the answer, the other takes its feedback.
    giver = FeedbackStore.open(path)
    taker = FeedbackStore.open(path, record_wait_s=5.0)

    async def scenario() -> None:
        request_id = giver.ids.issue("iris", 2, takes_feedback=True)
        giver.record_served(request_id, "iris", 2, 1)

        async def flush_later() -> None:
            await asyncio.sleep(0.3)
            await giver.flush()

        flushing = asyncio.create_task(flush_later())
        served = await taker.served(request_id)
        await flushing
        assert served is not None and (served.model, served.version) == ("iris", 2)
        assert served.score(1) == 1.0 and served.score(2) == 0.0
        assert await taker.add_feedback(served, 1.0, "app") is True
        assert await giver.add_feedback(served, 0.0, "other") is False  # once per answer
        assert await giver.bandit_stats(["iris"]) == {"iris": {2: (1, 1.0)}}
        await giver.close()
        await taker.close()

    asyncio.run(scenario())


def test_ids_that_take_no_feedback_or_were_never_recorded_find_nothing(tmp_path: Path) -> None:
    store = FeedbackStore.open(tmp_path / "feedback.db", record_wait_s=0.3)

    async def scenario() -> None:
        pinned = store.ids.issue("iris", 2, takes_feedback=False)
        store.record_served(pinned, "iris", 2, 1)  # even if it were recorded
        assert await store.served(pinned) is None
        # The giving process died before it wrote its record: after the wait, nothing.
        lost = store.ids.issue("iris", 2, takes_feedback=True)
        assert await store.served(lost) is None
        assert await store.served("iris~2~" + "0" * 64) is None
        await store.close()

    asyncio.run(scenario())


def test_stores_on_one_file_share_the_request_id_key(tmp_path: Path) -> None:
    first = FeedbackStore.open(tmp_path / "feedback.db")
    second = FeedbackStore.open(tmp_path / "feedback.db")
    elsewhere = FeedbackStore.open(tmp_path / "other" / "feedback.db")
    issued = first.ids.issue("iris", 1, takes_feedback=True)
    assert second.ids.verify(issued) is not None
    assert elsewhere.ids.verify(issued) is None


def test_a_file_from_before_signed_ids_keeps_only_the_rewards_of_recorded_answers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "feedback.db"
    with sqlite3.connect(path) as db:
        db.executescript(VERSION_0)
    store = FeedbackStore.open(path)
    FeedbackStore.open(path)  # a second opener finds the migrated file as it is
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT request_id, model, version, reward, consumer FROM feedback")\
            .fetchall() == [("iris~1~0a1b2c3d0", "iris", 1, 1.0, None)]  # fmt: skip
        assert db.execute("SELECT COUNT(*) FROM feedback_v0").fetchone() == (3,)

    async def scenario() -> None:
        assert await store.bandit_stats(["iris"]) == {"iris": {1: (1, 1.0)}}
        await store.close()

    asyncio.run(scenario())


def test_a_file_from_a_newer_gyre_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "feedback.db"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(
        ServeError,
        match=f"schema version {SCHEMA_VERSION + 1}, this gyre reads version {SCHEMA_VERSION}",
    ):
        FeedbackStore.open(path)
