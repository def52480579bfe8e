"""The fact log's interface: what every implementation (SQLite under the home, PostgreSQL)
does, and what the conformance suite (`tests/collect/test_fact_log_conformance.py`) checks.

A fact is stored once per (type, id): a retried event with the same id is a duplicate, not
a second fact. There is no update and no delete. Every fact gets a log position (`seq`)
that only grows, in the order appends commit: a follower that has read up to position p
never later finds a fact below p (positions may have gaps).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gyre.collect._schema import EventType


@dataclass(frozen=True)
class Fact:
    seq: int
    type: str
    event_time: int
    data: dict[str, Any]


@dataclass(frozen=True)
class AppendResult:
    stored: int
    duplicates: int
    watermark: int


class FactLog(Protocol):
    """An append-only, durable, idempotent log of facts."""

    # Where it is, for people: a file's path or a URL without its password.
    where: str

    def append(
        self, batches: Sequence[tuple[EventType, Sequence[Mapping[str, Any]]]]
    ) -> list[AppendResult]:
        """Store validated facts, one result per batch, in one durable transaction: when
        it returns, they survive a crash of this process and of the machine."""
        ...

    def watermark(self) -> int:
        """The log position of the latest fact (0 for an empty log)."""
        ...

    def scan(
        self,
        event_type: str,
        start: int | None = None,
        end: int | None = None,
        *,
        up_to_seq: int | None = None,
        chunk: int = 10_000,
    ) -> Iterator[Fact]:
        """Facts of one type with start <= event time < end (microseconds) stored up to
        position `up_to_seq`, in (event time, position) order, streamed in chunks."""
        ...

    def payloads(self, event_type: str, after_seq: int, up_to_seq: int) -> Any:
        """The facts of one type stored in (after_seq, up_to_seq], in log order, as an
        Arrow table: `_seq`, `_time` (event time, µs) and `payload` (the fact as JSON)."""
        ...

    def identity(self) -> str:
        """A value that differs between this log and another one made later in its
        place (empty while the log is empty): derived copies of the facts check it."""
        ...

    def since(self, seq: int, types: Sequence[str], limit: int = 10_000) -> tuple[list[Fact], int]:
        """The facts of `types` among the next `limit` facts after position `seq`, in log
        order, and the position read up to (past facts of other types too)."""
        ...

    def count(self, event_type: str, up_to_seq: int | None = None) -> int: ...

    def tail(self, event_type: str, count: int = 10) -> list[Fact]:
        """The latest `count` facts of a type, oldest first."""
        ...

    def stats(self) -> list[dict[str, Any]]:
        """Per type: facts, first and last event time, last position."""
        ...

    def close(self) -> None: ...


def payload_lines(text: bytes, *, csv_quoted: bool = False) -> Any:
    """`payloads`' Arrow table from lines of `seq TAB event_time TAB payload` (or of
    quoted CSV, as PostgreSQL's COPY writes it)."""
    import pyarrow as pa
    import pyarrow.csv as csv

    names = ["_seq", "_time", "payload"]
    types = {"_seq": pa.int64(), "_time": pa.int64(), "payload": pa.string()}
    if not text:
        return pa.table({n: pa.array([], t) for n, t in types.items()})
    parse = (
        csv.ParseOptions()
        if csv_quoted
        else csv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False)
    )
    return csv.read_csv(
        io.BytesIO(text),
        # One block for the whole text: a fact may be longer than Arrow's 1 MB default.
        read_options=csv.ReadOptions(column_names=names, block_size=min(len(text) + 1, 2**31 - 1)),
        parse_options=parse,
        convert_options=csv.ConvertOptions(column_types=types),
    )
