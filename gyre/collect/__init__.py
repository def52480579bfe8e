"""Collect: declared event types, validation, and the durable append-only fact log."""

from gyre.collect._client import EventClient
from gyre.collect._export import export_parquet
from gyre.collect._factlog import AppendResult, Fact, FactLog
from gyre.collect._ingest import Collector, IngestResult, parse_events, read_events_file
from gyre.collect._log import GroupCommitter, SQLiteFactLog
from gyre.collect._pglog import PostgresFactLog
from gyre.collect._schema import EventType, event_types, format_timestamp, parse_timestamp

__all__ = [
    "AppendResult",
    "Collector",
    "EventClient",
    "EventType",
    "Fact",
    "FactLog",
    "GroupCommitter",
    "IngestResult",
    "PostgresFactLog",
    "SQLiteFactLog",
    "event_types",
    "export_parquet",
    "format_timestamp",
    "parse_events",
    "parse_timestamp",
    "read_events_file",
]
