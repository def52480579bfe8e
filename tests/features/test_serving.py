"""Online features in a server process: snapshots of their state."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_snapshot_restores_the_online_state_and_the_log_goes_on_from_it(
    tmp_path: Path,
) -> None:
    from gyre.collect import SQLiteFactLog
    from gyre.features import OnlineFeatures
    from tests.features.test_conformance import MINUTE, ORDERS, VIEW, order

    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [order(i, i, amount=float(i)) for i in range(30)])])
    snapshot = tmp_path / "online.snapshot"
    views = {VIEW.name: VIEW}
    first = OnlineFeatures(views, log.path, evict_interval_s=None)
    first.refresh()
    assert first.save_snapshot(snapshot) == 30
    first.close()
    log.append([(ORDERS, [order(100, 29.5, amount=100.0)])])  # stored after the snapshot

    def count(online: OnlineFeatures) -> int:
        with online._lock:
            store = online._stores[VIEW.name]
            return int(store.lookup({"shop": 1}, 40 * MINUTE)["count_events_1h"])

    def values(online: OnlineFeatures) -> dict:
        ask = {"basket": 1.0}
        return online.vectors(VIEW.name, [{"shop": 1}], [ask], at_us=40 * MINUTE)[0].values

    restored = OnlineFeatures(views, log.path, evict_interval_s=None)
    assert restored.load_snapshot(snapshot)
    assert count(restored) == 30  # the snapshot's state, before reading the log on
    assert restored.refresh() == 31
    replayed = OnlineFeatures(views, log.path, evict_interval_s=None)
    replayed.refresh()
    assert values(restored) == values(replayed)
    assert count(restored) == 31
    restored.close()
    replayed.close()


def test_a_snapshot_that_does_not_fit_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from gyre.collect import SQLiteFactLog
    from gyre.features import Aggregation, FeatureView, OnlineFeatures
    from tests.features.test_conformance import ORDERS, VIEW, order

    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [order(i, i) for i in range(5)])])
    snapshot = tmp_path / "online.snapshot"
    online = OnlineFeatures({VIEW.name: VIEW}, log.path)
    online.refresh()
    online.save_snapshot(snapshot)
    online.close()
    other = FeatureView(VIEW.name, ORDERS, (Aggregation("count", None, "2h"),))
    changed = OnlineFeatures({other.name: other}, log.path)
    assert not changed.load_snapshot(snapshot)  # another definition of the view
    changed.close()
    elsewhere = OnlineFeatures({VIEW.name: VIEW}, tmp_path / "new" / "facts.db")
    assert not elsewhere.load_snapshot(snapshot)  # a log that does not reach its position
    elsewhere.close()
    online = OnlineFeatures({VIEW.name: VIEW}, log.path)
    # Damaged on disk: msgpack's decoder raises UnicodeDecodeError for invalid UTF-8 in a
    # string and RecursionError past its nesting limit, which once stopped the start.
    for damaged in (b"\x00garbage", b"\xa2\xff\xfe", b"\x91" * 100_000):
        snapshot.write_bytes(damaged)
        assert not online.load_snapshot(snapshot)
    assert "ignoring the online snapshot" in caplog.text
    assert not online.load_snapshot(tmp_path / "missing.snapshot")
    online.close()
