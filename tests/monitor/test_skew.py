"""The skew check beyond the end-to-end tests of tests/serve/test_features.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyre.collect import SQLiteFactLog
from gyre.features import ServedVector, _offline
from gyre.monitor import ServedLog, _skew, check_skew
from tests.features.test_conformance import MINUTE, ORDERS, VIEW, order


def test_the_skew_check_reads_each_views_facts_once_and_defers_later_vectors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [order(i, i) for i in range(5)])])
    served = ServedLog(tmp_path / "served.db")
    for mark in range(1, 6):
        served.record(f"r{mark}", "m", 1, ServedVector(
            VIEW.name, VIEW.definition_hash, {"shop": 1}, {"basket": 1.0}, 10 * MINUTE, mark,
            {**dict.fromkeys(VIEW.features), "count_events_1h": mark, "basket": 1.0,
             "hour": 0}))  # fmt: skip
    served.record("r9", "m", 1, ServedVector(VIEW.name, VIEW.definition_hash, {"shop": 1},
                                             {"basket": 1.0}, 10 * MINUTE, 9, {}))  # fmt: skip
    served.close()
    reads = []
    real = _offline._register_facts
    monkeypatch.setattr(_offline, "_register_facts", lambda *a: reads.append(1) or real(*a))
    monkeypatch.setattr(_skew, "CHUNK", 2)  # three batches
    (report,) = check_skew(log, {VIEW.name: VIEW}, tmp_path / "served.db")
    assert len(reads) == 1
    assert report.checked == 5 and report.later == 1  # position 9 is past the log's 5
    assert report.mismatches["count_events_1h"] == 0
