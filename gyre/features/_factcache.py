"""The facts of one event type as typed Arrow columns, for the offline engine, and a copy of
them kept as Parquet under the home so that each fact is decoded from the log once.

The log stores each fact as JSON text; decoding a million of them in Python costs seconds.
`decode` has DuckDB parse the JSON in C, into the types the event declares, once it has
checked that every value already has its field's JSON type; a table that fails the check
(facts stored before their type changed) or that DuckDB cannot read is decoded by Python's
`json`, the reference: the same values either way.

`FactCache` keeps what it decoded as parts `FROM-TO.parquet`, each holding the facts
stored in the log positions (FROM, TO]. Facts are never changed and positions only grow
in commit order (`gyre.collect.FactLog`), so the parts chained from position 0 hold every
fact up to their last TO, and only the facts stored since come from the log, after which
they become one more part. The folder of parts is named for the event type, its fields
and the log's identity: a log made anew at the same path, or a changed event type, starts
a new copy. The copy is derived: a part that cannot be read, or a folder that cannot be
written, costs a read from the log and a warning, never an error or a wrong row. Delete
the folder any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gyre.collect import EventType, FactLog
from gyre.errors import FeatureError

logger = logging.getLogger("gyre.features")

_DUCKDB_TYPES = {"int": "BIGINT", "float": "DOUBLE", "bool": "BOOLEAN", "string": "VARCHAR",
                 "timestamp": "BIGINT"}  # fmt: skip
_ARROW_TYPES = {"int": "int64", "float": "float64", "bool": "bool_", "string": "string",
                "timestamp": "int64"}  # fmt: skip
# The JSON types a stored value of each kind may have (null aside).
_JSON_TYPES = {"int": "'NULL', 'BIGINT', 'UBIGINT'", "timestamp": "'NULL', 'BIGINT', 'UBIGINT'",
               "float": "'NULL', 'DOUBLE', 'BIGINT', 'UBIGINT'", "bool": "'NULL', 'BOOLEAN'",
               "string": "'NULL', 'VARCHAR'"}  # fmt: skip
_FORMAT = 2  # bump when a part's layout changes: older parts are then left unread
_MAX_PARTS = 16  # past this, the parts are merged into one


def schema(event_type: EventType) -> Any:
    """The Arrow schema of `decode`'s tables: every field, `_time` and `_seq`."""
    import pyarrow as pa

    fields = [
        pa.field(name, getattr(pa, _ARROW_TYPES[kind.rstrip("?")])())
        for name, kind in event_type.fields.items()
    ]
    return pa.schema([*fields, pa.field("_time", pa.int64()), pa.field("_seq", pa.int64())])


def decode(payloads: Any, event_type: EventType) -> Any:
    """The facts of `payloads` (`FactLog.payloads`' table) as typed columns."""
    import duckdb

    target = schema(event_type)
    if payloads.num_rows == 0:
        return target.empty_table()
    kinds = {name: kind.rstrip("?") for name, kind in event_type.fields.items()}
    # DuckDB casts what it can (1.5 to the integer 2, true to 1): a fact stored before its
    # type changed would come out altered, so those tables take the Python path.
    paths = ", ".join(f"'$.{name}'" for name in kinds)  # names are identifiers
    other = " OR ".join(
        f"coalesce(t[{i}], 'NULL') NOT IN ({_JSON_TYPES[kind]})"
        for i, kind in enumerate(kinds.values(), start=1)
    )
    structure = json.dumps({name: _DUCKDB_TYPES[kind] for name, kind in kinds.items()})
    connection = duckdb.connect()
    try:
        connection.register("payloads", payloads)
        ((altered,),) = connection.execute(
            f"WITH types AS MATERIALIZED (SELECT json_type(payload, [{paths}]) AS t "
            f"FROM payloads) SELECT count(*) FROM types WHERE {other}"
        ).fetchall()
        if altered:
            return _decode_in_python(payloads, event_type)
        decoded = connection.sql(
            f"SELECT unnest(json_transform(payload, '{structure}')), _time, _seq FROM payloads"
        ).to_arrow_table()
        return decoded.rename_columns(target.names).cast(target)
    except duckdb.Error:  # JSON DuckDB does not read: Python's reader is the reference
        return _decode_in_python(payloads, event_type)
    finally:
        connection.close()


def _decode_in_python(payloads: Any, event_type: EventType) -> Any:
    import pyarrow as pa

    facts = [json.loads(text) for text in payloads.column("payload").to_pylist()]
    columns: dict[str, Any] = {}
    for name, kind in event_type.fields.items():
        values = columns[name] = [f.get(name) for f in facts]
        fits = _FITS[kind.rstrip("?")]
        wrong = next((v for v in values if v is not None and not fits(v)), None)
        if wrong is not None:
            raise FeatureError(
                f"facts of `{event_type.name}` in the log do not fit the fields declared "
                f"for it now: field `{name}` is {kind} but a stored fact has {wrong!r}. Facts "
                "stored before a field's type changed keep their values: declare a new "
                "field (or event type) for the new values, or change the field back"
            )
    columns["_time"] = payloads.column("_time")
    columns["_seq"] = payloads.column("_seq")
    return pa.Table.from_pydict(columns, schema=schema(event_type))


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value: Any) -> bool:
    return isinstance(value, float) or _integer(value)


def _boolean(value: Any) -> bool:
    return isinstance(value, bool)


def _text(value: Any) -> bool:
    return isinstance(value, str)


_FITS: dict[str, Callable[[Any], bool]] = {
    "int": _integer,
    "timestamp": _integer,
    "float": _real,
    "bool": _boolean,
    "string": _text,
}


class FactCache:
    """Decoded facts per event type, kept under `folder` (None: decoded every time)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder

    @classmethod
    def under(cls, home: Path) -> FactCache:
        """The copy training and `gyre features build` keep: `HOME/cache/facts`."""
        return cls(home / "cache" / "facts")

    def facts(self, log: FactLog, event_type: EventType, watermark: int) -> Any:
        """Every fact of `event_type` stored up to log position `watermark`, decoded."""
        identity = log.identity() if self.folder is not None else ""
        if self.folder is None or not identity or watermark <= 0:
            return decode(log.payloads(event_type.name, 0, watermark), event_type)
        import pyarrow as pa

        # A part never claims positions the log has not reached: facts stored there later
        # would be missing from it.
        watermark = min(watermark, log.watermark())
        folder = self.folder / _key(event_type, identity)
        chain = _chain(folder, watermark)
        try:
            kept = [_read(path) for _, path in chain]
            marker = _newest_marker(kept)
            if marker is not None and not _holds(log, event_type, marker):
                raise ValueError(f"the log no longer holds fact {marker[0]} as the copy does")
        except Exception as exc:
            logger.warning("dropping the unreadable fact copy %s (%s)", folder, exc)
            shutil.rmtree(folder, ignore_errors=True)
            chain, kept, marker = [], [], None
        covered = chain[-1][0] if chain else 0
        payloads = log.payloads(event_type.name, covered, watermark)
        recent = decode(payloads, event_type)
        table = pa.concat_tables([*kept, recent]) if kept else recent
        if covered < watermark:
            newest = _marker(payloads) or marker
            if len(chain) + 1 > _MAX_PARTS:
                replaced = [path for _, path in chain]
                _write(folder, 0, watermark, table, newest, replacing=replaced)
            else:
                _write(folder, covered, watermark, recent, newest)
        return table


def _marker(payloads: Any) -> tuple[int, str] | None:
    """The last fact of `payloads`: its position and the sha256 of its text."""
    if payloads.num_rows == 0:
        return None
    last = payloads.num_rows - 1
    text = payloads.column("payload")[last].as_py()
    return int(payloads.column("_seq")[last].as_py()), hashlib.sha256(text.encode()).hexdigest()


def _newest_marker(parts: list[Any]) -> tuple[int, str] | None:
    for part in reversed(parts):
        stored = (part.schema.metadata or {}).get(b"gyre.last")
        if stored:
            seq, digest = json.loads(stored)
            return int(seq), str(digest)
    return None


def _holds(log: FactLog, event_type: EventType, marker: tuple[int, str]) -> bool:
    """Whether the log still holds, at the marker's position, the fact the copy ends with
    (a log restored from a backup and written on would not)."""
    found = _marker(log.payloads(event_type.name, marker[0] - 1, marker[0]))
    return found == marker


def _key(event_type: EventType, identity: str) -> str:
    described = json.dumps([_FORMAT, event_type.name, dict(event_type.fields), identity])
    return f"{event_type.name[:40]}-{hashlib.sha256(described.encode()).hexdigest()[:16]}"


def _chain(folder: Path, watermark: int) -> list[tuple[int, Path]]:
    """The parts that follow one another from position 0 without a gap, each reaching as
    far as it can without passing `watermark`: (TO, path) in order."""
    reaching: dict[int, list[tuple[int, Path]]] = {}
    try:
        paths = list(folder.glob("*.parquet"))
    except OSError:
        return []
    for path in paths:
        start, _, end = path.stem.partition("-")
        if start.isdigit() and end.isdigit() and int(start) < int(end) <= watermark:
            reaching.setdefault(int(start), []).append((int(end), path))
    chain: list[tuple[int, Path]] = []
    position = 0
    while position in reaching:
        chain.append(max(reaching[position]))
        position = chain[-1][0]
    return chain


def _read(path: Path) -> Any:
    import pyarrow.parquet as pq

    return pq.read_table(path)


def _write(
    folder: Path,
    start: int,
    end: int,
    table: Any,
    marker: tuple[int, str] | None,
    replacing: list[Path] | None = None,
) -> None:
    """Keep `table` as the part (start, end], written whole or not at all, with the
    marker of the newest fact the copy holds so far."""
    import pyarrow.parquet as pq

    if marker is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[b"gyre.last"] = json.dumps(list(marker)).encode()
        table = table.replace_schema_metadata(metadata)

    target = folder / f"{start:020d}-{end:020d}.parquet"
    scratch = folder / f".{uuid.uuid4().hex}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, scratch)
        os.replace(scratch, target)
    except OSError as exc:
        logger.warning("cannot keep decoded facts in %s (%s); they are read from the log "
                       "each time", folder, exc)  # fmt: skip
        with contextlib.suppress(OSError):
            scratch.unlink(missing_ok=True)
        return
    for path in replacing or []:
        if path != target:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
