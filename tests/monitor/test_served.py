"""The served-vector log keeps going when its storage fails."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from gyre.features import ServedVector
from gyre.monitor import ServedLog, read_served

VECTOR = ServedVector("v", "h", {"shop": 1}, {}, 0, 0, {"count_events_1h": 1})


def test_a_failing_served_log_drops_the_batch_says_why_and_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "served.db"
    served = ServedLog(path)
    with sqlite3.connect(path) as db:  # the storage breaks under the writer
        db.execute("ALTER TABLE served RENAME TO broken")
    served.record("r1", "m", 1, VECTOR)
    deadline = time.monotonic() + 10
    while "could not log 1 served vectors" not in caplog.text:
        assert time.monotonic() < deadline, "the failure was not reported"
        time.sleep(0.01)
    with sqlite3.connect(path) as db:  # repaired
        db.execute("ALTER TABLE broken RENAME TO served")
    served.record("r2", "m", 1, VECTOR)
    served.close()  # returns: the writer survived the failure
    assert [record.request_id for record in read_served(path)] == ["r2"]
