"""Feature views: window aggregations over an event type, declared once.

A view names its source event type (whose entity key it is keyed by) and aggregations
`FUNCTION(column) over WINDOW`. The value at time t aggregates the facts of the entity
with event time in (t - window, t]: facts after t never count (point-in-time correct), and
facts at exactly t do. Both engines, offline (DuckDB) and online (incremental), compute
exactly this definition.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from gyre.collect import EventType
from gyre.errors import ConfigError

FUNCTIONS = ("count", "sum", "mean", "min", "max", "last", "distinct_count")
_UNITS_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
_WINDOW = re.compile(r"^(\d+)([smhd])$")


def window_us(text: str) -> int:
    """`10m`, `1h`, `1d`, `7d` (also `s`) in microseconds."""
    match = _WINDOW.match(text)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"window {text!r} must be a positive number and s, m, h or d, e.g. 1h")
    return int(match.group(1)) * _UNITS_US[match.group(2)]


@dataclass(frozen=True)
class Aggregation:
    function: str
    column: str | None
    window: str

    @property
    def name(self) -> str:
        return f"{self.function}_{self.column or 'events'}_{self.window}"

    @property
    def window_us(self) -> int:
        return window_us(self.window)


@dataclass(frozen=True)
class FeatureView:
    """Aggregations of one event type per entity; `features` lists the output names."""

    name: str
    source: EventType
    aggregations: tuple[Aggregation, ...]

    def __post_init__(self) -> None:
        where = f"feature view `{self.name}`"
        if not self.aggregations:
            raise ConfigError(f"{where} declares no aggregation")
        numeric = {"int", "float"}
        for agg in self.aggregations:
            if agg.function not in FUNCTIONS:
                raise ConfigError(f"{where}: unknown function {agg.function!r}; use {FUNCTIONS}")
            agg.window_us  # noqa: B018  (validates the window)
            if agg.function == "count":
                continue
            kind = self.source.fields.get(agg.column or "", "").rstrip("?")
            if not kind:
                raise ConfigError(f"{where}: `{agg.column}` is not a field of `{self.source.name}`")
            if agg.function in ("sum", "mean") and kind not in numeric:
                raise ConfigError(
                    f"{where}: {agg.function} needs a number, `{agg.column}` is {kind}"
                )
        names = [a.name for a in self.aggregations]
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: two aggregations have the same name")

    @property
    def entity(self) -> tuple[str, ...]:
        return self.source.entity

    @property
    def features(self) -> list[str]:
        return [a.name for a in self.aggregations]

    @property
    def definition_hash(self) -> str:
        canonical = json.dumps(
            [self.name, self.source.definition_hash,
             [[a.function, a.column, a.window] for a in self.aggregations]]
        )  # fmt: skip
        return hashlib.sha256(canonical.encode()).hexdigest()
