"""Decoded facts: DuckDB's decoding gives what Python's `json` gives, and the Parquet copy
under the home holds exactly the log's facts however the log grows, is replaced or the
copy is damaged."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gyre.collect import EventType, FactLog
from gyre.config import StoreConfig
from gyre.errors import FeatureError
from gyre.features import FactCache
from gyre.features._factcache import decode
from gyre.stores import Stores

FIELDS = {"id": "string", "user": "int", "score": "float?", "ok": "bool?", "note": "string?",
          "at": "timestamp"}  # fmt: skip
KIND = EventType("things", FIELDS, ("user",), "at", "id")


def _open(home: Path) -> FactLog:
    return Stores(home, StoreConfig()).open_fact_log()


def _reference(log: FactLog, up_to: int) -> list[dict[str, Any]]:
    """What the log holds, read the plain way: each fact's data, time and position."""
    facts = sorted(log.scan(KIND.name, up_to_seq=up_to), key=lambda f: f.seq)
    return [{**f.data, "_time": f.event_time, "_seq": f.seq} for f in facts]


def _rows(table: Any) -> list[dict[str, Any]]:
    return sorted(table.to_pylist(), key=lambda r: r["_seq"])


def _same(found: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert len(found) == len(expected)
    for mine, theirs in zip(found, expected, strict=True):
        for name, value in theirs.items():
            if isinstance(value, float) and math.isnan(value):
                assert math.isnan(mine[name])
            else:
                assert mine[name] == value and type(mine[name]) is type(value), name


floats = st.floats(allow_nan=True, allow_infinity=True) | st.sampled_from(
    [0.1, 1 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0]
)
fact = st.fixed_dictionaries(
    {
        "id": st.text(max_size=6),
        "user": st.integers(-(2**63), 2**63 - 1),
        "at": st.integers(-62_135_596_800, 253_402_300_799),
    },
    optional={
        "score": st.none() | floats,
        "ok": st.none() | st.booleans(),
        "note": st.none() | st.text(max_size=8),
    },
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(facts=st.lists(fact, max_size=12))
def test_duckdb_decodes_what_python_json_decodes(tmp_path: Path, facts: list[dict]) -> None:
    log = _open(tmp_path / f"h{abs(hash(json.dumps(facts, default=str)))}")
    try:
        log.append([(KIND, [KIND.validate(f) for f in facts])])
        mark = log.watermark()
        _same(_rows(decode(log.payloads(KIND.name, 0, mark), KIND)), _reference(log, mark))
    finally:
        log.close()


def _things(start: int, count: int) -> list[dict[str, Any]]:
    return [
        KIND.validate({"id": f"t{i}", "user": i % 7, "score": i / 4, "ok": i % 2 == 0,
                       "note": "é\t\n" if i % 3 else None, "at": 1_700_000_000 + i})
        for i in range(start, start + count)
    ]  # fmt: skip


def test_the_copy_grows_with_the_log_one_part_per_new_range(tmp_path: Path) -> None:
    home, cache = tmp_path / "home", FactCache(tmp_path / "cache")
    log = _open(home)
    try:
        log.append([(KIND, _things(0, 50))])
        first = log.watermark()
        _same(_rows(cache.facts(log, KIND, first)), _reference(log, first))
        log.append([(KIND, _things(50, 30))])
        mark = log.watermark()
        _same(_rows(cache.facts(log, KIND, mark)), _reference(log, mark))
        (folder,) = (tmp_path / "cache").iterdir()
        parts = sorted(p.name for p in folder.glob("*.parquet"))
        assert parts == [f"{0:020d}-{first:020d}.parquet", f"{first:020d}-{mark:020d}.parquet"]
        # An older watermark reads only what was stored up to it.
        _same(_rows(cache.facts(log, KIND, first)), _reference(log, first))
        # The same rows come from the copy: the log is not read again below `mark`.
        assert cache.facts(log, KIND, mark).num_rows == 80
    finally:
        log.close()


def test_many_parts_are_merged_into_one(tmp_path: Path) -> None:
    cache = FactCache(tmp_path / "cache")
    log = _open(tmp_path / "home")
    try:
        for i in range(20):
            log.append([(KIND, _things(i * 3, 3))])
            cache.facts(log, KIND, log.watermark())
        (folder,) = (tmp_path / "cache").iterdir()
        assert len(list(folder.glob("*.parquet"))) < 17
        mark = log.watermark()
        _same(_rows(cache.facts(log, KIND, mark)), _reference(log, mark))
    finally:
        log.close()


def test_a_log_made_anew_in_the_same_place_does_not_reuse_the_copy(tmp_path: Path) -> None:
    home, cache = tmp_path / "home", FactCache(tmp_path / "cache")
    log = _open(home)
    log.append([(KIND, _things(0, 40))])
    cache.facts(log, KIND, log.watermark())
    log.close()
    (home / "facts.db").unlink()
    for extra in home.glob("facts.db-*"):
        extra.unlink()
    log = _open(home)
    try:
        log.append([(KIND, _things(100, 40))])  # the same positions, other facts
        mark = log.watermark()
        _same(_rows(cache.facts(log, KIND, mark)), _reference(log, mark))
    finally:
        log.close()


def test_a_damaged_part_or_an_unwritable_folder_costs_a_read_never_a_wrong_row(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = FactCache(tmp_path / "cache")
    log = _open(tmp_path / "home")
    try:
        log.append([(KIND, _things(0, 40))])
        mark = log.watermark()
        cache.facts(log, KIND, mark)
        (folder,) = (tmp_path / "cache").iterdir()
        (part,) = folder.glob("*.parquet")
        part.write_bytes(b"PAR1 not a parquet file")
        with caplog.at_level(logging.WARNING, "gyre.features"):
            _same(_rows(cache.facts(log, KIND, mark)), _reference(log, mark))
        assert "unreadable fact copy" in caplog.text
        blocked = tmp_path / "blocked"
        blocked.write_text("a file where the cache folder would be")
        with caplog.at_level(logging.WARNING, "gyre.features"):
            found = FactCache(blocked).facts(log, KIND, mark)
        _same(_rows(found), _reference(log, mark))
        assert "cannot keep decoded facts" in caplog.text
    finally:
        log.close()


def test_facts_stored_before_their_field_changed_type_are_refused_by_name(
    tmp_path: Path,
) -> None:
    log = _open(tmp_path / "home")
    try:
        log.append([(KIND, _things(0, 5))])
        changed = EventType("things", {**FIELDS, "score": "int?"}, ("user",), "at", "id")
        with pytest.raises(FeatureError, match="do not fit the fields declared"):
            decode(log.payloads(KIND.name, 0, log.watermark()), changed)
        widened = EventType("things", {**FIELDS, "user": "float"}, ("user",), "at", "id")
        found = decode(log.payloads(KIND.name, 0, log.watermark()), widened)
        assert found.column("user").type == pa.float64()
        assert found.column("user").to_pylist() == [float(i % 7) for i in range(5)]
    finally:
        log.close()


def test_a_watermark_past_the_log_claims_no_positions_it_has_not_reached(tmp_path: Path) -> None:
    cache = FactCache(tmp_path / "cache")
    log = _open(tmp_path / "home")
    try:
        log.append([(KIND, _things(0, 1))])
        assert cache.facts(log, KIND, 50).num_rows == 1
        log.append([(KIND, _things(1, 2))])
        _same(_rows(cache.facts(log, KIND, 50)), _reference(log, log.watermark()))
    finally:
        log.close()


def test_a_log_restored_from_a_backup_and_written_on_does_not_reuse_the_copy(
    tmp_path: Path,
) -> None:
    import shutil as files

    home, cache = tmp_path / "home", FactCache(tmp_path / "cache")
    log = _open(home)
    log.append([(KIND, _things(0, 5))])
    log.close()
    files.copytree(home, tmp_path / "backup")
    log = _open(home)
    log.append([(KIND, _things(5, 5))])
    cache.facts(log, KIND, log.watermark())
    log.close()
    files.rmtree(home)
    files.copytree(tmp_path / "backup", home)
    log = _open(home)
    try:
        log.append([(KIND, _things(100, 5))])  # the same positions again, other facts
        mark = log.watermark()
        _same(_rows(cache.facts(log, KIND, mark)), _reference(log, mark))
    finally:
        log.close()
