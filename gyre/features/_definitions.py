"""Feature views: row transforms, window aggregations and request-time features over an
event type, declared once.

A view names its source event type (whose entity key it is keyed by), row transforms
(derived numeric columns, see `_expressions`), aggregations `FUNCTION(column) over WINDOW`
over the source's fields and transforms, and request-time features taken from the request
itself. The aggregate at time t covers the entity's facts with event time in
(t - window, t]: facts after t never count (point-in-time correct), facts at exactly t do.
Both engines, offline (DuckDB) and online (incremental), compute exactly this definition.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gyre.collect import EventType
from gyre.config import FeatureViewConfig
from gyre.errors import ConfigError, UnknownFeatureView
from gyre.features._expressions import Expression, compile_expression

FUNCTIONS = ("count", "sum", "mean", "min", "max", "last", "distinct_count")
# Request-time features: a value the caller sends (int, float, bool), or one derived from
# the moment of the request (UTC).
REQUEST_KINDS = ("int", "float", "bool", "hour_of_day", "day_of_week")
_UNITS_US = {"s": 1_000_000, "m": 60_000_000, "h": 3_600_000_000, "d": 86_400_000_000}
# ASCII digits only (`\d` also takes "٣"), at most nine of them (a window past 27 years of
# seconds is a typo), and nothing after the unit (`$` would let a newline through).
_WINDOW = re.compile(r"([0-9]{1,9})([smhd])")
_AGGREGATION = re.compile(r"^\s*(\w+)\(\s*(\w*)\s*\)\s+over\s+(\w+)\s*$")
_NUMERIC = {"int", "float"}
_HOUR_US = 3_600_000_000
_DAY_US = 86_400_000_000
# The longest window: 10,000 years, longer than any span of timestamps (years 1 to 9999), and
# short enough that a time minus it stays an int64 (999999999d did not: an OverflowError).
MAX_WINDOW_US = 3_650_000 * _DAY_US


def window_us(text: str) -> int:
    """`10m`, `1h`, `1d`, `7d` (also `s`) in microseconds."""
    match = _WINDOW.fullmatch(text)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"window {text!r} must be a positive number and s, m, h or d, e.g. 1h")
    found = int(match.group(1)) * _UNITS_US[match.group(2)]
    if found > MAX_WINDOW_US:
        raise ConfigError(
            f"window {text!r} is longer than 10,000 years (3650000d); a window that long "
            "already covers every fact"
        )
    return found


@dataclass(frozen=True)
class Aggregation:
    function: str
    column: str | None
    window: str

    @classmethod
    def parse(cls, text: str) -> Aggregation:
        """`count() over 1h`, `mean(amount) over 7d`."""
        match = _AGGREGATION.match(text)
        if not match:
            raise ConfigError(
                f"aggregation {text!r} must read FUNCTION(column) over WINDOW, "
                "e.g. 'mean(amount) over 7d' or 'count() over 1h'"
            )
        function, column, window = match.groups()
        return cls(function, column or None, window)

    @property
    def name(self) -> str:
        return f"{self.function}_{self.column or 'events'}_{self.window}"

    @property
    def window_us(self) -> int:
        return window_us(self.window)

    def __str__(self) -> str:
        return f"{self.function}({self.column or ''}) over {self.window}"


@dataclass(frozen=True)
class FeatureView:
    """Features of one entity over one event type; `features` lists the output names in
    the order a model takes them: aggregations, then request-time features."""

    name: str
    source: EventType
    aggregations: tuple[Aggregation, ...]
    transforms: Mapping[str, str] = field(default_factory=dict)
    request: Mapping[str, str] = field(default_factory=dict)
    _compiled: dict[str, Expression] = field(default_factory=dict, repr=False, compare=False)
    _kinds: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"feature view `{self.name}`"
        if not self.aggregations:
            raise ConfigError(f"{where} declares no aggregation")
        kinds = {name: kind.rstrip("?") for name, kind in self.source.fields.items()}
        for name, text in self.transforms.items():
            if name in kinds:
                raise ConfigError(f"{where}: transform `{name}` shadows a field of the source")
            numeric = frozenset(n for n, k in kinds.items() if k in _NUMERIC)
            self._compiled[name] = compile_expression(text, numeric, f"{where}, transform {name}")
            kinds[name] = "float"
        for agg in self.aggregations:
            if agg.function not in FUNCTIONS:
                raise ConfigError(f"{where}: unknown function {agg.function!r}; use {FUNCTIONS}")
            agg.window_us  # noqa: B018  (validates the window)
            if agg.function == "count":
                continue
            kind = kinds.get(agg.column or "", "")
            if not kind:
                raise ConfigError(f"{where}: `{agg.column}` is not a field of `{self.source.name}`")
            if agg.function in ("sum", "mean") and kind not in _NUMERIC:
                raise ConfigError(
                    f"{where}: {agg.function} needs a number, `{agg.column}` is {kind}"
                )
        for name, kind in self.request.items():
            if name in (*self.entity, "ts"):
                raise ConfigError(
                    f"{where}: request feature `{name}` clashes with the entity key or `ts`"
                )
            if kind not in REQUEST_KINDS:
                raise ConfigError(
                    f"{where}: request feature `{name}` has kind {kind!r}; "
                    f"use one of {', '.join(REQUEST_KINDS)}"
                )
        names = self.features
        if len(set(names)) != len(names):
            raise ConfigError(f"{where}: two features have the same name")
        self._kinds.update(kinds)

    @classmethod
    def from_config(
        cls, name: str, config: FeatureViewConfig, types: Mapping[str, EventType]
    ) -> FeatureView:
        source = types.get(config.source)
        if source is None:
            declared = ", ".join(sorted(types)) or "none"
            raise ConfigError(
                f"[features.views.{name}] source `{config.source}` is not a declared event "
                f"type; declared: {declared} (see [collect.events])"
            )
        return cls(
            name=name,
            source=source,
            aggregations=tuple(Aggregation.parse(text) for text in config.aggregations),
            transforms=dict(config.transforms),
            request=dict(config.request),
        )

    @property
    def entity(self) -> tuple[str, ...]:
        return self.source.entity

    @property
    def features(self) -> list[str]:
        return [a.name for a in self.aggregations] + list(self.request)

    @property
    def transform_expressions(self) -> Mapping[str, Expression]:
        return self._compiled

    def feature_kind(self, name: str) -> str:
        """`int`, `float`, `bool` or `string`: what a feature's values are."""
        if name in self.request:
            kind = self.request[name]
            return "int" if kind in ("hour_of_day", "day_of_week") else kind
        agg = next(a for a in self.aggregations if a.name == name)
        if agg.function in ("count", "distinct_count"):
            return "int"
        if agg.function == "mean":
            return "float"
        kind = self._kinds[agg.column or ""]
        return "int" if kind == "timestamp" else kind

    @property
    def definition_hash(self) -> str:
        canonical = json.dumps(
            [self.name, self.source.definition_hash,
             [[a.function, a.column, a.window] for a in self.aggregations],
             list(self.transforms.items()), list(self.request.items())]
        )  # fmt: skip
        return hashlib.sha256(canonical.encode()).hexdigest()

    def derive(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """A fact's fields plus its transforms, each computed from the ones before."""
        row = dict(data)
        for name, expression in self._compiled.items():
            row[name] = expression.evaluate(row)
        return row

    def request_values(self, given: Mapping[str, Any], at_us: int) -> dict[str, Any]:
        """The request-time features of a request made at `at_us` that sent `given`;
        ValueError with the reason when a sent value is missing or of the wrong type."""
        values: dict[str, Any] = {}
        for name, kind in self.request.items():
            if kind == "hour_of_day":
                values[name] = at_us // _HOUR_US % 24
            elif kind == "day_of_week":  # Monday 0; 1970-01-01 was a Thursday (3)
                values[name] = (at_us // _DAY_US + 3) % 7
            else:
                values[name] = _request_value(name, kind, given.get(name))
        return values

    def matrix(self, rows: Sequence[Mapping[str, Any]] | Any) -> np.ndarray:
        """The features of `rows` (dicts, or an Arrow table) as the float32 table a model
        takes, missing values as NaN: the same conversion for training and for serving."""
        names = self.features
        for name in names:
            if self.feature_kind(name) == "string":
                raise ConfigError(
                    f"feature view `{self.name}`: feature `{name}` holds strings; a model "
                    "input must be numeric (aggregate it with count or distinct_count)"
                )
        table = np.empty((len(rows), len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            # One C loop per column: None (null) becomes NaN, booleans 1 and 0.
            if hasattr(rows, "column"):
                import pyarrow as pa

                column = rows.column(name).cast(pa.float64()).fill_null(np.nan)
                table[:, j] = column.to_numpy()
            else:
                table[:, j] = np.array([row[name] for row in rows], dtype=np.float64)
        return table


def _request_value(name: str, kind: str, value: Any) -> Any:
    if value is None:
        raise ValueError(f"request feature `{name}` ({kind}) is missing")
    if kind == "bool" and isinstance(value, bool):
        return value
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "float" and number and math.isfinite(value):
        return float(value)
    raise ValueError(f"request feature `{name}` must be a finite {kind}, got {value!r}")


def find_view(views: Mapping[str, FeatureView], name: str) -> FeatureView:
    """The declared view `name`, or UnknownFeatureView naming the declared ones."""
    found = views.get(name)
    if found is None:
        declared = ", ".join(sorted(views)) or "none"
        raise UnknownFeatureView(
            f"unknown feature view `{name}`; declared: {declared} (see [features.views])"
        )
    return found


def feature_views(
    configs: Mapping[str, FeatureViewConfig], types: Mapping[str, EventType]
) -> dict[str, FeatureView]:
    """The views declared in `[features.views]`, over the declared event types."""
    return {name: FeatureView.from_config(name, config, types) for name, config in configs.items()}
