"""The fact-log conformance suite: every FactLog implementation must pass it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gyre.collect import Collector, EventType, GroupCommitter, SQLiteFactLog, parse_events

CLICKS = EventType("clicks", {"id": "string", "user": "int", "at": "timestamp"}, ("user",), "at",
                   "id")  # fmt: skip


def clicks(ids: range, at: int = 0) -> list[dict]:
    return [{"id": f"c{i}", "user": i % 3, "at": at + i} for i in ids]


@pytest.fixture(params=["sqlite"])
def log(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SQLiteFactLog]:
    implementation = {"sqlite": SQLiteFactLog}[request.param]
    opened = implementation(tmp_path / "facts.db")
    yield opened
    opened.close()


def test_append_counts_stored_and_duplicate_ids(log: SQLiteFactLog) -> None:
    (first,) = log.append([(CLICKS, clicks(range(5)))])
    assert (first.stored, first.duplicates, first.watermark) == (5, 0, 5)
    (again,) = log.append([(CLICKS, clicks(range(3, 8)))])
    assert (again.stored, again.duplicates, again.watermark) == (3, 2, 8)
    assert log.watermark() == 8


def test_scan_is_ordered_by_event_time_and_bounded(log: SQLiteFactLog) -> None:
    records = [{"id": f"x{i}", "user": 1, "at": t} for i, t in enumerate([30, 10, 20, 10, 40])]
    log.append([(CLICKS, records)])
    facts = list(log.scan("clicks"))
    assert [f.event_time for f in facts] == [10, 10, 20, 30, 40]
    assert [f.data["id"] for f in facts[:2]] == ["x1", "x3"]  # equal times: arrival order
    assert [f.event_time for f in log.scan("clicks", 10, 30)] == [10, 10, 20]
    assert list(log.scan("other")) == []


def test_scan_streams_in_chunks_without_losing_equal_timestamps(log: SQLiteFactLog) -> None:
    log.append([(CLICKS, [{"id": f"s{i}", "user": 1, "at": i // 7} for i in range(100)])])
    facts = list(log.scan("clicks", chunk=3))
    assert len(facts) == 100
    assert len({f.seq for f in facts}) == 100


def test_scan_up_to_a_watermark_is_repeatable(log: SQLiteFactLog) -> None:
    log.append([(CLICKS, clicks(range(5)))])
    mark = log.watermark()
    log.append([(CLICKS, clicks(range(5, 9), at=-100))])
    assert len(list(log.scan("clicks", up_to_seq=mark))) == 5


def test_tail_and_stats(log: SQLiteFactLog) -> None:
    log.append([(CLICKS, clicks(range(12)))])
    assert [f.data["id"] for f in log.tail("clicks", 3)] == ["c9", "c10", "c11"]
    (row,) = log.stats()
    assert row == {"type": "clicks", "facts": 12, "first_event_time": 0, "last_event_time": 11,
                   "last_seq": 12}  # fmt: skip


def test_facts_cannot_be_changed_through_the_log(log: SQLiteFactLog) -> None:
    assert not [name for name in dir(log) if name.startswith(("update", "delete", "remove"))]


def test_concurrent_callers_share_commits(tmp_path: Path) -> None:
    committer = GroupCommitter(lambda: SQLiteFactLog(tmp_path / "facts.db"), max_wait_ms=20.0)
    results = []

    def send(i: int) -> None:
        results.append(committer.append(CLICKS, clicks(range(i * 10, i * 10 + 10))))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committer.close()
    assert sum(r.stored for r in results) == 160
    assert committer.commits < 16  # callers shared fsyncs
    reader = SQLiteFactLog(tmp_path / "facts.db")
    assert len(list(reader.scan("clicks"))) == 160


def test_collector_keeps_good_records_and_rejects_bad_ones_with_reasons(tmp_path: Path) -> None:
    collector = Collector(tmp_path, {"clicks": CLICKS})
    body = b'{"id": "a", "user": 1, "at": 5}\n{not json\n{"id": "b", "user": "x", "at": 5}\n'
    result = collector.ingest("clicks", parse_events(body))
    collector.close()
    assert (result.accepted, result.duplicates) == (1, 0)
    assert [r["index"] for r in result.rejected] == [1, 2]
    assert "line 2 is not JSON" in result.rejected[0]["reason"]
    assert "field `user`: expected int" in result.rejected[1]["reason"]


def test_since_follows_the_log_in_storage_order(log: SQLiteFactLog) -> None:
    log.append([(CLICKS, clicks(range(3), at=100))])
    log.append([(CLICKS, clicks(range(3, 5), at=-100))])
    facts, position = log.since(0, ["clicks"])
    assert [f.seq for f in facts] == [1, 2, 3, 4, 5] and position == 5
    facts, position = log.since(3, ["clicks"], limit=1)
    assert [f.data["id"] for f in facts] == ["c3"] and position == 4
    assert log.since(5, ["clicks"]) == ([], 5)
    # Facts of other types are passed over, and the position moves past them.
    assert log.since(0, ["other"]) == ([], 5)
