"""The offline engine beyond the conformance suite: watermarks, Parquet output, bad rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from gyre.collect import SQLiteFactLog, export_parquet
from gyre.errors import InvalidFeatureInput
from gyre.features import ServedVector, recompute, training_set, write_training_set
from tests.features.test_conformance import MINUTE, ORDERS, VIEW, order


def test_a_training_set_is_reproducible_at_a_watermark_and_streams_to_parquet(
    tmp_path: Path,
) -> None:
    import pyarrow.parquet as pq

    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [order(i, i) for i in range(10)])])
    mark = log.watermark()
    log.append([(ORDERS, [order(99, 0, amount=9.0)])])  # a late fact, stored after the mark
    queries = [{"shop": 1, "ts": 9 * MINUTE, "basket": 1.0, "label": 1}]
    then = training_set(log, VIEW, queries, watermark=mark)
    now = training_set(log, VIEW, queries)
    assert then[0]["count_events_1h"] == 10 and now[0]["count_events_1h"] == 11
    written = write_training_set(log, VIEW, queries, tmp_path / "train.parquet", watermark=mark)
    assert written == 1
    assert pq.read_table(tmp_path / "train.parquet").to_pylist() == then


def test_recompute_uses_each_vectors_own_watermark(tmp_path: Path) -> None:
    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [order(i, i) for i in range(3)])])
    log.append([(ORDERS, [order(3, 1)])])
    vectors = [
        ServedVector(VIEW.name, VIEW.definition_hash, {"shop": 1}, {"basket": 1.0},
                     5 * MINUTE, mark, {})
        for mark in (2, 3, 4)
    ]  # fmt: skip
    counts = [row["count_events_1h"] for row in recompute(log, VIEW, vectors)]
    assert counts == [2, 3, 4]


def test_a_query_row_without_its_request_values_is_refused(tmp_path: Path) -> None:
    log = SQLiteFactLog(tmp_path / "facts.db")
    with pytest.raises(InvalidFeatureInput, match="query row 1: request feature `basket`"):
        training_set(log, VIEW, [{"shop": 1, "ts": 0, "basket": 1}, {"shop": 1, "ts": 0}])


def test_the_engine_reads_a_parquet_export_plus_what_the_log_stored_since(
    tmp_path: Path,
) -> None:
    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [order(i, i * 30) for i in range(10)])])  # one every 30 minutes
    export = tmp_path / "export"
    export_parquet(log, ORDERS, export)
    export_parquet(log, ORDERS, export)  # exported twice: the facts count once
    log.append([(ORDERS, [order(50, 250, amount=5.0), order(51, 10)])])  # after the export
    queries = [{"shop": 1, "ts": t * MINUTE, "basket": 0, "label": t} for t in (20, 260, 300)]
    assert training_set(log, VIEW, queries, export=export) == training_set(log, VIEW, queries)
    mark = 5
    at_mark = training_set(log, VIEW, queries, export=export, watermark=mark)
    assert at_mark == training_set(log, VIEW, queries, watermark=mark)


def test_an_incomplete_export_is_refused(tmp_path: Path) -> None:
    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [order(i, i * 30) for i in range(10)])])
    export = tmp_path / "export"
    export_parquet(log, ORDERS, export, start=100 * MINUTE)  # a time range only
    with pytest.raises(InvalidFeatureInput, match="holds 6 of the 10 facts"):
        training_set(log, VIEW, [{"shop": 1, "ts": 0, "basket": 0}], export=export)
    with pytest.raises(InvalidFeatureInput, match="no Parquet export of `orders`"):
        training_set(log, VIEW, [{"shop": 1, "ts": 0, "basket": 0}], export=tmp_path / "none")


def test_the_cli_builds_a_training_set_from_a_query_file(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    import pyarrow.parquet as pq

    config_file = tmp_path / "gyre.toml"
    config_file.write_text(
        '[collect.events.orders]\nfields = {id = "string", shop = "int", amount = "float", '
        'at = "timestamp"}\nentity = ["shop"]\ntime = "at"\nid = "id"\n'
        '[features.views.spend]\nsource = "orders"\naggregations = ["sum(amount) over 1h"]\n'
    )
    cli = [sys.executable, "-m", "gyre", "--home", str(tmp_path), "--config", str(config_file)]
    events = tmp_path / "orders.ndjson"
    events.write_text(
        '{"id": "a", "shop": 1, "amount": 2.5, "at": "2026-11-26T08:00:00Z"}\n'
        '{"id": "b", "shop": 1, "amount": 4.0, "at": "2026-11-26T08:30:00Z"}\n'
    )
    subprocess.run([*cli, "events", "ingest", "orders", str(events)], check=True)
    queries = tmp_path / "queries.csv"
    queries.write_text(
        "shop,ts,label\n1,2026-11-26T08:15:00Z,0\n1,2026-11-26T08:45:00+00:00,1\n2,0,0\n"
    )
    out = tmp_path / "[run1]" / "train.parquet"  # a folder to create; brackets are not markup
    built = subprocess.run(
        [*cli, "features", "build", "spend", str(queries), "--out", str(out)],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "500"},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert f"{out}: 3 rows of view `spend`" in built.stdout
    rows = pq.read_table(out).to_pylist()
    assert [r["sum_amount_1h"] for r in rows] == [2.5, 6.5, 0.0]
    export = tmp_path / "export"
    subprocess.run([*cli, "events", "export", "orders", "--out", str(export)], check=True)
    again = tmp_path / "again.parquet"
    subprocess.run(
        [*cli, "features", "build", "spend", str(queries), "--out", str(again), "--export",
         str(export)], check=True, capture_output=True,
    )  # fmt: skip
    assert pq.read_table(again).to_pylist() == rows
    bad = tmp_path / "bad.ndjson"
    bad.write_text('{"shop": 1}\n')
    refused = subprocess.run(
        [*cli, "features", "build", "spend", str(bad), "--out", str(out)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 1 and "query row 0 has no `ts`" in refused.stderr

    # Epoch seconds, as events take them, were read as microseconds: every row fell in 1970
    # and saw no facts, and the build succeeded without a word.
    def build(queries: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*cli, "features", "build", "spend", str(queries), "--out", str(out), *extra],
            capture_output=True, text=True, env={**os.environ, "COLUMNS": "500"},
        )  # fmt: skip

    def sums() -> list[float]:
        return [r["sum_amount_1h"] for r in pq.read_table(out).to_pylist()]

    at_815 = 1_795_680_900  # 2026-11-26T08:15:00Z
    seconds = tmp_path / "seconds.csv"
    seconds.write_text(f"shop,ts\n1,{at_815}\n1,{at_815 + 1800}.0\n")
    built = build(seconds)
    assert built.returncode == 0 and "warning" not in built.stderr, built.stderr
    assert sums() == [2.5, 6.5]
    micros = tmp_path / "micros.csv"
    micros.write_text(f"shop,ts\n1,{at_815 * 10**6}\n")
    refused = build(micros)  # microseconds read as seconds: past the year 9999
    assert refused.returncode == 1 and "--ts-unit" in refused.stderr, refused.stderr
    built = build(micros, "--ts-unit", "us")
    assert built.returncode == 0 and sums() == [2.5], built.stderr
    # Seconds read as milliseconds fall in 1970, a valid time: outside the facts' time
    # range the build warns with the counts.
    built = build(seconds, "--ts-unit", "ms")
    assert built.returncode == 0, built.stderr
    assert "warning: 2 of 2 query rows are before the first fact" in built.stderr, built.stderr


@pytest.mark.parametrize(
    ("ts", "unit", "micros"),
    [
        (1_795_680_900, "s", 1_795_680_900_000_000),
        (1_795_680_900.25, "s", 1_795_680_900_250_000),
        ("1795680900", "s", 1_795_680_900_000_000),
        (1_795_680_900_123, "ms", 1_795_680_900_123_000),
        (1_795_680_900_123_456, "us", 1_795_680_900_123_456),
        ("2026-11-26T08:15:00Z", "us", 1_795_680_900_000_000),
        ("2026-11-26 08:15:00+00:00", "s", 1_795_680_900_000_000),
    ],
)
def test_query_times_are_read_as_event_times_in_the_unit_named(
    tmp_path: Path, ts: object, unit: str, micros: int
) -> None:
    import json

    from gyre.features._queries import read_queries

    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"shop": 1, "ts": ts}]))
    assert read_queries(path, unit)[0]["ts"] == micros


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", r"empty\.csv cannot be read as \.csv: Empty CSV file"),
        ("bad.parquet", b"not parquet", r"cannot be read as \.parquet: .*magic bytes"),
        ("cut.json", b'[{"shop": 1', r"cannot be read as \.json: .*not a valid JSON array"),
        ("cut.ndjson", b'{"shop": 1, "ts": 0}\n{"shop', "query row 1: line 2 is not JSON"),
        ("scalars.json", b"[1, 2]", "query row 0: expected an object, got int"),
        # str.isdigit() took "²" for microseconds, and int() then raised a ValueError.
        ("digits.csv", "shop,ts\n1,\u00b2\n".encode(), "`ts` '\u00b2' is not an RFC 3339"),
        # A number of 5,000 digits: int() raised past Python's limit, outside the check.
        ("long.json", b'[{"shop": 1, "ts": "' + b"9" * 5000 + b'"}]', r"'99999.*… \(5002 char"),
    ],
)
def test_unreadable_query_files_are_refused_with_the_reason(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    from gyre.features._queries import read_queries, read_query_table

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidFeatureInput, match=message):
        read_queries(path)
    with pytest.raises(InvalidFeatureInput, match=message):
        read_query_table(path)


@pytest.mark.parametrize("unit", ["s", "ms", "us"])
def test_a_query_table_holds_what_the_query_rows_hold(tmp_path: Path, unit: str) -> None:
    """Training reads its table by column: the same times, as the rows give them."""
    import datetime

    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from gyre.features._queries import read_queries, read_query_table

    per_s = {"s": 1, "ms": 1_000, "us": 1_000_000}[unit]
    utc = datetime.UTC
    columns = {
        "shop": [1, 2, 3],
        "at": pa.array([0, 1_700_000_000 * per_s, -62_135_596_800 * per_s], pa.int64()),
        "seen": pa.array([None, 5 * per_s, 7 * per_s], pa.int32()),
        "when": pa.array(
            [datetime.datetime(2024, 5, 1, 12, 30, 1, 250, tzinfo=utc)] * 3,
            pa.timestamp("ms", "UTC"),
        ),
        "text": ["2024-05-01T00:00:00Z", "2024-05-01T00:00:00.5+02:00", "1970-01-01 00:00:01Z"],
        "ts": [9, 9, 9],  # replaced by the time column's, as the rows have it
    }
    pq.write_table(pa.table(columns), tmp_path / "q.parquet")
    pcsv.write_csv(pa.table(columns).drop_columns(["when"]), tmp_path / "q.csv")
    for name in ("q.parquet", "q.csv"):
        for time_column, also in (("at", ("seen",)), ("when", ()), ("text", ("at",))):
            path = tmp_path / name
            if time_column == "when" and name == "q.csv":
                continue
            rows = read_queries(path, unit, time_column=time_column, also_times=also)
            table = read_query_table(path, unit, time_column=time_column, also_times=also)
            assert table.to_pylist() == rows, (name, time_column)
    bad = pa.table({"shop": [1, 2], "ts": pa.array([0, 10**18], pa.int64())})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(InvalidFeatureInput, match="query row 1: `ts` timestamp"):
        read_query_table(tmp_path / "bad.parquet", unit)


def test_the_training_set_goes_where_asked_creating_its_folder(tmp_path: Path) -> None:
    from gyre.errors import FeatureError

    log = SQLiteFactLog(tmp_path / "facts.db")
    queries = [{"shop": 1, "ts": 0, "basket": 1.0}]
    out = tmp_path / "new" / "folder" / "train.parquet"
    assert write_training_set(log, VIEW, queries, out) == 1 and out.is_file()
    (tmp_path / "file").write_text("")
    with pytest.raises(FeatureError, match="cannot write the training set to"):
        write_training_set(log, VIEW, queries, tmp_path / "file" / "train.parquet")


def test_an_unreadable_export_is_refused_with_what_to_do(tmp_path: Path) -> None:
    log = SQLiteFactLog(tmp_path / "facts.db")
    log.append([(ORDERS, [order(0, 0)])])
    broken = tmp_path / "export" / "type=orders" / "day=1970-01-01"
    broken.mkdir(parents=True)
    (broken / "part-1-0.parquet").write_bytes(b"not parquet")
    with pytest.raises(InvalidFeatureInput, match="export it again with `gyre events export"):
        training_set(log, VIEW, [{"shop": 1, "ts": 0, "basket": 0}], export=tmp_path / "export")
