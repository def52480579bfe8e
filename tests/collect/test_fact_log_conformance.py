"""The fact-log conformance suite: every implementation (SQLite under the home, PostgreSQL)
must behave as a plain list of facts (the reference, `Reference`) does, for any sequence of
appends; plus the edge cases a list cannot show (several writers, commit order, NUL)."""

from __future__ import annotations

import json
import multiprocessing
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyre.collect import EventType, FactLog, GroupCommitter
from gyre.config import StoreConfig
from gyre.stores import Stores

FIELDS = {"id": "string", "user": "int", "page": "string?", "at": "timestamp"}


def clicks(name: str = "clicks") -> EventType:
    return EventType(name, FIELDS, ("user",), "at", "id")


def views(name: str = "views") -> EventType:  # no id field: every fact is a new one
    return EventType(name, FIELDS, ("user",), "at", None)


@pytest.fixture
def log(stores: Stores) -> Iterator[FactLog]:
    opened = stores.open_fact_log(check_same_thread=False)
    yield opened
    opened.close()


class Reference:
    """What a fact log is: a list of the first fact of each (type, id)."""

    def __init__(self) -> None:
        self.facts: list[tuple[str, int, dict[str, Any]]] = []  # (type, event time, data)
        self.ids: set[tuple[str, str]] = set()

    def append(self, event_type: EventType, facts: list[dict[str, Any]]) -> tuple[int, int]:
        stored = 0
        for fact in facts:
            if event_type.id_field is not None:
                key = (event_type.name, str(fact[event_type.id_field]))
                if key in self.ids:
                    continue
                self.ids.add(key)
            self.facts.append((event_type.name, fact[event_type.time_field], fact))
            stored += 1
        return stored, len(facts) - stored


record = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a", "b", "c", "d", "e", "\x00", "ü"]),
        "user": st.integers(-3, 3),
        # epoch seconds: a few close together (ties), and the first and last allowed
        "at": st.integers(-20, 20) | st.sampled_from([-62_135_596_800, 253_402_300_799]),
    },
    optional={"page": st.none() | st.text(max_size=5)},
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    appends=st.lists(
        st.tuples(st.booleans(), st.lists(record, max_size=6)), min_size=1, max_size=6
    ),
    window=st.tuples(st.integers(-25, 25), st.integers(-25, 25)),
)
def test_the_log_is_the_reference_list(
    log: FactLog, appends: list[tuple[bool, list[dict[str, Any]]]], window: tuple[int, int]
) -> None:
    # Types of their own per example: the database outlives the examples.
    suffix = uuid.uuid4().hex[:8]
    with_id, without_id = clicks(f"c{suffix}"), views(f"v{suffix}")
    reference = Reference()
    start = log.watermark()
    for has_id, facts in appends:
        event_type = with_id if has_id else without_id
        validated = [event_type.validate(f) for f in facts]
        (result,) = log.append([(event_type, validated)])
        assert (result.stored, result.duplicates) == reference.append(event_type, validated)
        assert result.watermark == log.watermark()
    for event_type in (with_id, without_id):
        mine = [f for t, _, f in reference.facts if t == event_type.name]
        # scan: event-time order (stable: ties in log order), chunked or not
        expected = sorted(mine, key=lambda f: f["at"])
        assert [f.data for f in log.scan(event_type.name)] == expected
        assert [f.data for f in log.scan(event_type.name, chunk=2)] == expected
        low, high = sorted(w * 1_000_000 for w in window)
        inside = [f for f in expected if low <= f["at"] < high]
        assert [f.data for f in log.scan(event_type.name, low, high, chunk=1)] == inside
        assert log.count(event_type.name) == len(mine)
        assert [f.data for f in log.tail(event_type.name, 3)] == mine[-3:]
        # payloads: the facts of the type after a position, in log order, as JSON text
        table = log.payloads(event_type.name, start, log.watermark())
        assert [json.loads(text) for text in table.column("payload").to_pylist()] == mine
        assert table.column("_time").to_pylist() == [f["at"] for f in mine]
        positions = table.column("_seq").to_pylist()
        assert positions == sorted(positions) and all(start < p for p in positions)
        if positions:
            middle = positions[len(positions) // 2]
            later = log.payloads(event_type.name, middle, log.watermark())
            assert later.column("_seq").to_pylist() == [p for p in positions if p > middle]
            up_to = log.payloads(event_type.name, start, middle)
            assert up_to.column("_seq").to_pylist() == [p for p in positions if p <= middle]
    # since: every fact after a position, in log order, as a follower reads them
    seen: list[dict[str, Any]] = []
    position = start
    while True:
        facts, reached = log.since(position, [with_id.name, without_id.name], limit=2)
        if reached == position:
            break
        assert all(position < f.seq <= reached for f in facts)
        seen += [f.data for f in facts]
        position = reached
    assert seen == [f for _, _, f in reference.facts]
    assert position == log.watermark()


def test_positions_only_grow_and_up_to_seq_fixes_a_view(log: FactLog) -> None:
    kind = clicks()
    first = log.append([(kind, [kind.validate({"id": "1", "user": 1, "at": 10})])])[0]
    mark = first.watermark
    log.append([(kind, [kind.validate({"id": "2", "user": 1, "at": 5})])])
    assert [f.data["id"] for f in log.scan("clicks", up_to_seq=mark)] == ["1"]
    assert [f.data["id"] for f in log.scan("clicks")] == ["2", "1"]  # event-time order
    assert log.count("clicks", up_to_seq=mark) == 1
    assert log.watermark() > mark
    (stats,) = log.stats()
    assert stats == {"type": "clicks", "facts": 2, "first_event_time": 5_000_000,
                     "last_event_time": 10_000_000, "last_seq": log.watermark()}  # fmt: skip


def test_the_identity_holds_while_the_log_does_and_differs_for_a_new_one(
    stores: Stores, tmp_path: Path
) -> None:
    kind = clicks(f"c{uuid.uuid4().hex[:8]}")
    log = stores.open_fact_log()
    try:
        log.append([(kind, [kind.validate({"id": "1", "user": 1, "at": 10})])])
        identity = log.identity()
        assert identity
        log.append([(kind, [kind.validate({"id": "2", "user": 1, "at": 11})])])
        assert log.identity() == identity
    finally:
        log.close()
    reopened = stores.open_fact_log()
    try:
        assert reopened.identity() == identity
    finally:
        reopened.close()
    other = Stores(tmp_path / "other", StoreConfig()).open_fact_log()
    try:
        assert other.identity() == ""  # an empty log has none yet
        other.append([(kind, [kind.validate({"id": "1", "user": 1, "at": 10})])])
        assert other.identity() not in ("", identity)
    finally:
        other.close()


def test_a_batch_in_one_append_is_stored_or_refused_whole(log: FactLog) -> None:
    kind = clicks()
    good = kind.validate({"id": "1", "user": 1, "at": 1})
    with pytest.raises(KeyError):  # a fact without its time field: nothing of the append
        log.append([(kind, [good]), (kind, [{"id": "2", "user": 1}])])
    assert log.watermark() == 0 and log.count("clicks") == 0
    results = log.append([(kind, [good, good]), (kind, [good])])
    assert [(r.stored, r.duplicates) for r in results] == [(1, 1), (0, 1)]


def test_concurrent_appends_commit_in_position_order(stores: Stores) -> None:
    """Writers on several threads (each with its own log, as servers are) while a follower
    reads `since`: the follower sees every fact exactly once, positions only growing. A
    position that committed after a higher one would be skipped for good."""
    kind = clicks()
    writers = [stores.open_fact_log(check_same_thread=False) for _ in range(4)]
    follower = stores.open_fact_log(check_same_thread=False)
    done = threading.Event()

    def write(number: int) -> None:
        for batch in range(25):
            facts = [
                kind.validate({"id": f"{number}-{batch}-{i}", "user": i, "at": i}) for i in range(5)
            ]
            writers[number].append([(kind, facts)])

    seen: list[int] = []

    def follow() -> None:
        position = 0
        while True:
            finished = done.is_set()
            facts, position = follower.since(position, ["clicks"])
            seen.extend(f.seq for f in facts)
            if finished and not facts:
                return

    reader = threading.Thread(target=follow)
    reader.start()
    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    reader.join()
    assert len(seen) == 4 * 25 * 5 == len(set(seen))
    assert seen == sorted(seen)
    for each in [*writers, follower]:
        each.close()


def _append_many(config: StoreConfig, home: str, number: int) -> None:
    log = Stores(Path(home), config).open_fact_log()
    kind = clicks()
    for batch in range(10):
        facts = [kind.validate({"id": f"{batch}-{i}", "user": number, "at": i}) for i in range(10)]
        log.append([(kind, facts)])  # the same ids from every process: stored once
    log.close()


def test_processes_appending_the_same_ids_store_each_once(stores: Stores) -> None:
    ctx = multiprocessing.get_context("spawn")
    workers = [
        ctx.Process(target=_append_many, args=(stores.config, str(stores.home), n))
        for n in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    log = stores.open_fact_log()
    ids = [f.data["id"] for f in log.scan("clicks")]
    log.close()
    assert sorted(ids) == sorted({f"{b}-{i}" for b in range(10) for i in range(10)})


def test_group_commits_share_one_transaction(stores: Stores) -> None:
    kind = clicks()
    committer = GroupCommitter(stores.fact_log_opener(), max_wait_ms=20.0)
    results = []

    def send(i: int) -> None:
        facts = [kind.validate({"id": f"{i}-{j}", "user": j, "at": j}) for j in range(10)]
        results.append(committer.append(kind, facts))

    threads = [threading.Thread(target=send, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    committer.close()
    assert sum(r.stored for r in results) == 160
    assert committer.commits < 16
    log = stores.open_fact_log()
    assert log.count("clicks") == 160
    log.close()


def test_an_id_too_long_for_an_index_is_refused_per_record(stores: Stores) -> None:
    from gyre.collect import Collector

    collector = Collector(stores, {"clicks": clicks()})
    try:
        result = collector.ingest("clicks", [
            {"id": "x" * 257, "user": 1, "at": 1}, {"id": "y" * 256, "user": 1, "at": 1},
        ])  # fmt: skip
    finally:
        collector.close()
    assert result.accepted == 1
    assert result.rejected == [{"index": 0, "reason": (
        "field `id`: an event id has at most 256 characters, this one 257; send a shorter id "
        "(a hash of a long one)"
    )}]  # fmt: skip


def test_a_caller_whose_facts_the_log_refuses_does_not_fail_the_others(stores: Stores) -> None:
    """Callers share one commit: when the log refuses it for one caller's facts (here a
    fact without its time field, which validation would have caught), the others are
    stored and only that caller gets the error."""
    kind = clicks()
    committer = GroupCommitter(stores.fact_log_opener(), max_wait_ms=50.0)
    outcomes: dict[int, str] = {}

    def send(i: int) -> None:
        fact = {"id": f"{i}", "user": 1} if i == 3 else kind.validate(
            {"id": f"{i}", "user": 1, "at": i}
        )  # fmt: skip
        try:
            committer.append(kind, [fact])
            outcomes[i] = "stored"
        except KeyError:
            outcomes[i] = "refused"

    for _ in range(2):  # the second round arrives together, after a shared commit
        threads = [threading.Thread(target=send, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    committer.close()
    assert outcomes == {i: "refused" if i == 3 else "stored" for i in range(8)}
    log = stores.open_fact_log()
    assert log.count("clicks") == 7
    log.close()


def test_payloads_reads_a_fact_longer_than_a_csv_block(log: FactLog) -> None:
    """Arrow's CSV reader splits its input in 1 MB blocks; one fact may be longer."""
    kind = clicks(f"c{uuid.uuid4().hex[:8]}")
    page = 'é\t"x",' * 500_000  # 3.5 MB of text with tabs, quotes and commas
    facts = [kind.validate({"id": str(i), "user": i, "page": page, "at": i}) for i in range(3)]
    log.append([(kind, facts)])
    table = log.payloads(kind.name, 0, log.watermark())
    assert [json.loads(t)["page"] for t in table.column("payload").to_pylist()] == [page] * 3
