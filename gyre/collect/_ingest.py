"""Ingestion: parse a body of events, validate each record, store the good ones durably."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from gyre._json import MALFORMED, reason
from gyre.collect._log import GroupCommitter
from gyre.collect._schema import EventType
from gyre.errors import InvalidEvents, UnknownEventType
from gyre.stores import Stores

_decode = msgspec.json.decode


@dataclass
class IngestResult:
    """What happened to a batch: facts stored, retried ids seen before, rejected records."""

    accepted: int
    duplicates: int
    rejected: list[dict[str, Any]] = field(default_factory=list)
    watermark: int = 0

    def as_json(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "watermark": self.watermark,
        }


def parse_events(body: bytes) -> list[Any]:
    """A JSON array of records, or NDJSON (one record a line). In NDJSON a line that is not
    JSON becomes a record that validation rejects, so the good lines are kept."""
    text = body.strip()
    if not text:
        return []
    if text.startswith(b"["):
        try:
            records = _decode(text)
        except MALFORMED as exc:
            raise InvalidEvents(f"body is not a valid JSON array: {reason(exc)}") from None
        return list(records)
    records = []
    for number, line in enumerate(text.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(_decode(line))
        except MALFORMED as exc:
            records.append(_Unparsed(f"line {number} is not JSON: {reason(exc)}"))
    return records


class _Unparsed:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Collector:
    """Declared event types over a durable fact log."""

    def __init__(
        self, home: Path | Stores, types: Mapping[str, EventType], max_wait_ms: float = 2.0
    ) -> None:
        """Over the fact log of a home (SQLite), or of `Stores.from_config(config)`."""
        self.types = dict(types)
        self.stores = home if isinstance(home, Stores) else Stores(home)
        self._log = GroupCommitter(self.stores.fact_log_opener(), max_wait_ms)

    def event_type(self, name: str) -> EventType:
        found = self.types.get(name)
        if found is None:
            declared = ", ".join(sorted(self.types)) or "none"
            raise UnknownEventType(
                f"unknown event type `{name}`; declared: {declared} (see [collect.events])"
            )
        return found

    def ingest(self, type_name: str, records: list[Any]) -> IngestResult:
        """Validate and store; returns after the accepted facts are durable."""
        event_type = self.event_type(type_name)
        facts, rejected = [], []
        for index, record in enumerate(records):
            if isinstance(record, _Unparsed):
                rejected.append({"index": index, "reason": record.reason})
                continue
            try:
                facts.append(event_type.validate(record))
            except ValueError as exc:
                rejected.append({"index": index, "reason": str(exc)})
        if not facts:
            return IngestResult(0, 0, rejected)
        stored = self._log.append(event_type, facts)
        return IngestResult(stored.stored, stored.duplicates, rejected, stored.watermark)

    def close(self) -> None:
        self._log.close()


def read_events_file(path: Path) -> list[Any]:
    try:
        return parse_events(path.read_bytes())
    except FileNotFoundError:
        raise InvalidEvents(f"events file {path} does not exist") from None
