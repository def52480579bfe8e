"""Training data: labels strictly after the row's time, open windows left out, a
time-ordered split with purging, and leakage refused with the rows that show it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gyre.collect import event_types
from gyre.config import Config
from gyre.errors import LeakageError
from gyre.features import feature_views
from gyre.learn import parse_spec
from gyre.learn._check import resolve
from gyre.learn._data import build, labelled_rows
from gyre.stores import Stores
from tests.learn.world import HOUR_US, MINUTE_US, SPEC, START_US, facts, fill, write_world


def _append(config: Config, visits: list[dict], purchases: list[dict]) -> None:
    types = event_types(config.collect.events)
    log = Stores.from_config(config).open_fact_log()
    log.append(
        [
            (types["visits"], facts(types["visits"], visits)),
            (types["purchases"], facts(types["purchases"], purchases)),
        ]
    )
    log.close()


def _visit(i: int, user: int, at: int, pages: int = 3) -> dict:
    return {"visit": f"v{i}", "user": user, "pages": pages, "at": at}


def _buy(i: int, user: int, at: int, amount: float = 10.0) -> dict:
    return {"order": f"o{i}", "user": user, "amount": amount, "at": at}


def _rows(config: Config, spec_text: str = SPEC):
    spec = parse_spec(spec_text, config.home.parent / "buyers.toml")
    view = feature_views(config.features.views, event_types(config.collect.events))["activity"]
    log = Stores.from_config(config).open_fact_log()
    try:
        mark = log.watermark()
        rows = labelled_rows(spec, log, resolve(spec, config), mark)
        return spec, view, log, mark, rows
    except BaseException:
        log.close()
        raise


def test_a_label_is_the_first_event_strictly_after_the_row_within_its_window(
    tmp_path: Path,
) -> None:
    config = write_world(tmp_path)
    t = START_US
    _append(
        config,
        [
            _visit(0, 1, t),  # a purchase at the same moment: not after, not its label
            _visit(1, 2, t),  # bought exactly at the end of the window: counts
            _visit(2, 3, t),  # bought a microsecond too late: 0
            _visit(3, 4, t + 10 * HOUR_US),  # the window is still open and nothing came: pending
            _visit(4, 5, t + 10 * HOUR_US),  # the window is open but the purchase came: known, 1
        ],
        [
            _buy(0, 1, t),
            _buy(1, 2, t + HOUR_US),
            _buy(2, 3, t + HOUR_US + 1),
            _buy(3, 5, t + 10 * HOUR_US + MINUTE_US),
        ],
    )
    _, _, log, _, rows = _rows(config)
    log.close()
    found = {
        q["user"]: label for q, label in zip(rows.queries.to_pylist(), rows.labels, strict=True)
    }
    assert found == {1: 0, 2: 1, 3: 0, 5: 1}
    assert rows.counts["label_pending"] == 1
    assert all({"user", "ts", "pages"} <= set(q) for q in rows.queries.to_pylist())
    known = dict(zip((q["user"] for q in rows.queries.to_pylist()), rows.known_at, strict=True))
    assert known[2] == t + HOUR_US and known[1] == t + HOUR_US  # 0 is known when the window ends


def test_a_field_label_drops_rows_without_an_outcome_unless_told(tmp_path: Path) -> None:
    config = write_world(tmp_path)
    t = START_US
    _append(
        config,
        [_visit(0, 1, t), _visit(1, 2, t)],
        [_buy(0, 1, t + MINUTE_US, 42.5), _buy(1, 9, t + 5 * HOUR_US)],
    )
    field = SPEC.replace('within = "1h"', 'within = "1h"\nfield = "amount"')
    _, _, log, _, rows = _rows(config, field)
    log.close()
    assert rows.labels == [42.5] and rows.counts["label_missing"] == 1
    _, _, log, _, rows = _rows(
        config, field.replace('field = "amount"', 'field = "amount"\nmissing = 0')
    )
    log.close()
    assert sorted(rows.labels) == [0, 42.5]


def test_the_split_is_in_time_order_and_purges_labels_known_after_the_next_part(
    tmp_path: Path,
) -> None:
    config = write_world(tmp_path)
    fill(config, users=40, hours=48)
    spec, view, log, mark, rows = _rows(config)
    try:
        data = build(spec, rows, log, [view], mark)
    finally:
        log.close()
    ts = data.ts
    assert (
        ts[data.train].max()
        < ts[data.validation].min()
        <= ts[data.validation].max()
        < ts[data.holdout].min()
    )
    assert abs(len(data.holdout) - 0.2 * len(ts)) < 0.02 * len(ts)
    # Every training label was known before the first validation row's time.
    order = np.argsort([q["ts"] for q in rows.queries.to_pylist()], kind="stable")
    known = np.asarray(rows.known_at)[order]
    assert known[data.train].max() < ts[data.validation].min()
    assert data.counts["purged_train"] > 0  # an hour's window reaches across the cut
    assert data.feature_names == ("count_events_1d", "mean_pages_1d", "pages")
    assert data.x.dtype == np.float32 and data.x.shape == (len(ts), 3)
    assert set(np.unique(data.y)) == {0, 1}


def test_the_training_set_hash_is_stable_and_follows_the_data(tmp_path: Path) -> None:
    config = write_world(tmp_path)
    fill(config, users=20, hours=24)
    hashes = []
    for _ in range(2):
        spec, view, log, mark, rows = _rows(config)
        hashes.append(build(spec, rows, log, [view], mark).sha256)
        log.close()
    assert hashes[0] == hashes[1]
    _append(config, [_visit(99_999, 1, START_US + 30 * HOUR_US)], [])
    spec, view, log, mark, rows = _rows(config)
    assert build(spec, rows, log, [view], mark).sha256 != hashes[0]
    log.close()


def test_a_table_label_known_before_its_row_is_leakage(tmp_path: Path) -> None:
    config = write_world(tmp_path)
    t = START_US // 1_000_000
    table = pa.table(
        {
            "user": [1, 2, 3],
            "ts": [t, t + 60, t + 120],
            "y": [1, 0, 1],
            "seen": [t + 30, t + 60, t + 100],
            "pages": [1, 2, 3],
        }
    )
    pq.write_table(table, tmp_path / "labels.parquet")
    text = (
        SPEC.split("[rows]")[0]
        + """
[rows]
table = "labels.parquet"

[label]
column = "y"
known_at_column = "seen"
"""
    )
    with pytest.raises(LeakageError) as raised:
        _rows(config, text.replace('request = {pages = "int"}', ""))
    message = str(raised.value)
    assert "2 rows have a label known at or before their own time" in message
    assert "row 1:" in message and "row 2:" in message and "row 0:" not in message


def test_a_feature_that_equals_the_label_is_leakage(tmp_path: Path) -> None:
    config = write_world(tmp_path)
    t = START_US // 1_000_000
    n = 60
    table = pa.table(
        {
            "user": list(range(n)),
            "ts": [t + 60 * i for i in range(n)],
            "y": [i % 2 for i in range(n)],
            "outcome": [float(i % 2) for i in range(n)],
            "noise": [float(i % 7) for i in range(n)],
        }
    )
    pq.write_table(table, tmp_path / "labels.parquet")
    text = (
        SPEC.split("[features]")[0]
        + """
[features]
columns = ["noise", "outcome"]

[rows]
table = "labels.parquet"

[label]
column = "y"
"""
    )
    spec, _, log, mark, rows = _rows(config, text)
    try:
        with pytest.raises(LeakageError, match="feature `outcome` equals the label on all"):
            build(spec, rows, log, [], mark)
    finally:
        log.close()
