"""Event types: typed fields, entity key(s), the event-time field, an optional id field.

Field types: `int`, `float`, `bool`, `string`, `timestamp`; a `?` suffix makes a field
optional (absent or null). Timestamps are RFC 3339 strings with a zone
(`2026-11-26T08:00:00Z`, `…+01:00`) or numbers of seconds since the epoch, and are stored as
integer microseconds since the epoch, UTC.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gyre.config import EventTypeConfig
from gyre.errors import ConfigError, shown

FIELD_TYPES = ("int", "float", "bool", "string", "timestamp")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


# Epoch seconds of 0001-01-01 and of 10000-01-01: the range of an RFC 3339 timestamp.
_FIRST_S, _END_S = -62_135_596_800, 253_402_300_800


# A number's unit, as its count per second: events are in seconds; a query file may say
# otherwise (`gyre features build --ts-unit`).
TIME_UNITS = {"s": 1, "ms": 1_000, "us": 1_000_000}
_UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds"}


def parse_timestamp(value: Any, unit: str = "s") -> int:
    """Microseconds since the epoch (UTC); ValueError with the reason when not a timestamp.

    One rule wherever gyre reads a time: an RFC 3339 string with a zone (`T` or a space
    between date and time), or a number of `unit`s since the epoch (seconds unless said)."""
    if isinstance(value, bool):
        raise ValueError("expected a timestamp, got a boolean")
    if isinstance(value, (int, float)):
        per_s = TIME_UNITS[unit]
        if not _FIRST_S * per_s <= value < _END_S * per_s:  # NaN and infinities fail too
            raise ValueError(
                f"timestamp {shown(value)} is not epoch {_UNIT_NAMES[unit]} of the years 1 to 9999 "
                "(finite, as an RFC 3339 string can be)"
            )
        if isinstance(value, int):
            return value * (1_000_000 // per_s)
        return round(value * (1_000_000 / per_s))
    if not isinstance(value, str):
        raise ValueError(
            f"expected a timestamp (RFC 3339 string or epoch seconds), got {shown(value)}"
        )
    try:
        parsed = datetime.datetime.fromisoformat(
            value.replace("Z", "+00:00").replace("z", "+00:00")
        )
    except ValueError:
        raise ValueError(f"{shown(value)} is not an RFC 3339 timestamp") from None
    if parsed.tzinfo is None:
        raise ValueError(
            f"timestamp {shown(value)} has no time zone; add Z or an offset like +01:00"
        )
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def format_timestamp(micros: int) -> str:
    moment = _EPOCH + datetime.timedelta(microseconds=micros)
    return moment.isoformat().replace("+00:00", "Z")


# An event id is an index key in every backend (PostgreSQL's index entries are bounded);
# ids are names, not data, so a bound well above any UUID or hash is no loss.
MAX_ID_CHARS = 256


@dataclass(frozen=True)
class EventType:
    """A declared event type; `validate` turns a JSON record into a clean fact."""

    name: str
    fields: Mapping[str, str]
    entity: tuple[str, ...]
    time_field: str
    id_field: str | None = None
    unknown_fields: str = "reject"
    _required: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def __post_init__(self) -> None:
        where = f"event type `{self.name}`"
        if not _NAME.match(self.name):
            raise ConfigError(f"{where}: the name must be letters, digits and '_'")
        for name, kind in self.fields.items():
            if not _NAME.match(name):
                raise ConfigError(f"{where}: field name {name!r} must be letters, digits and '_'")
            if kind.rstrip("?") not in FIELD_TYPES:
                raise ConfigError(
                    f"{where}: field `{name}` has type {kind!r}; use one of "
                    f"{', '.join(FIELD_TYPES)} (with ? for optional)"
                )
        if not self.entity:
            raise ConfigError(
                f'{where}: declare its entity key field(s), e.g. entity = ["user_id"]'
            )
        for key in (*self.entity, self.time_field, *([self.id_field] if self.id_field else [])):
            if key not in self.fields:
                raise ConfigError(f"{where}: `{key}` is not one of its fields")
            if self.fields[key].endswith("?"):
                raise ConfigError(f"{where}: key field `{key}` cannot be optional")
        if self.fields[self.time_field] != "timestamp":
            raise ConfigError(f"{where}: the time field `{self.time_field}` must be a timestamp")
        if self.unknown_fields not in ("reject", "ignore"):
            raise ConfigError(f'{where}: unknown_fields must be "reject" or "ignore"')
        required = frozenset(n for n, k in self.fields.items() if not k.endswith("?"))
        object.__setattr__(self, "_required", required)

    @classmethod
    def from_config(cls, name: str, config: EventTypeConfig) -> EventType:
        return cls(
            name=name,
            fields=dict(config.fields),
            entity=tuple(config.entity),
            time_field=config.time,
            id_field=config.id,
            unknown_fields=config.unknown_fields,
        )

    @property
    def definition_hash(self) -> str:
        canonical = json.dumps(
            [self.name, dict(self.fields), self.entity, self.time_field, self.id_field,
             self.unknown_fields], sort_keys=True,
        )  # fmt: skip
        return hashlib.sha256(canonical.encode()).hexdigest()

    def validate(self, record: Any) -> dict[str, Any]:
        """The record with typed values (timestamps as epoch microseconds); ValueError with
        the reason when it does not fit the type."""
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        unknown = [k for k in record if k not in self.fields]
        if unknown and self.unknown_fields == "reject":
            raise ValueError(
                f"unknown field(s) {', '.join(sorted(unknown))}; `{self.name}` has "
                f"{', '.join(self.fields)}"
            )
        missing = sorted(k for k in self._required if record.get(k) is None)
        if missing:
            raise ValueError(f"missing field(s) {', '.join(missing)}")
        clean: dict[str, Any] = {}
        for name, kind in self.fields.items():
            value = record.get(name)
            if value is None:
                clean[name] = None
                continue
            try:
                clean[name] = _coerce(kind.rstrip("?"), value)
            except ValueError as exc:
                raise ValueError(f"field `{name}`: {exc}") from None
        if self.id_field is not None and len(str(clean[self.id_field])) > MAX_ID_CHARS:
            raise ValueError(
                f"field `{self.id_field}`: an event id has at most {MAX_ID_CHARS} characters, "
                f"this one {len(str(clean[self.id_field]))}; send a shorter id (a hash of a "
                "long one)"
            )
        return clean

    def entity_of(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """The entity key fields of `given`, typed as the facts store them; ValueError with
        the reason when one is missing or of the wrong type."""
        if not isinstance(given, Mapping):
            raise ValueError(f"an entity must be an object naming {', '.join(self.entity)}")
        key: dict[str, Any] = {}
        for name in self.entity:
            value = given.get(name)
            if value is None:
                raise ValueError(f"entity key `{name}` is missing; `{self.name}` is keyed by "
                                 f"{', '.join(self.entity)}")  # fmt: skip
            try:
                key[name] = _coerce(self.fields[name], value)
            except ValueError as exc:
                raise ValueError(f"entity key `{name}`: {exc}") from None
        return key

    def entity_key(self, fact: Mapping[str, Any]) -> str:
        return json.dumps([fact[k] for k in self.entity])


def _coerce(kind: str, value: Any) -> Any:
    if kind == "timestamp":
        return parse_timestamp(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
    elif kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            if -(2**63) <= value < 2**63:
                return value
            raise ValueError(f"{value} does not fit in 64 bits")
    elif kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer of hundreds of digits
                raise ValueError(
                    f"an integer of {int(value).bit_length()} bits is too large for a float"
                ) from None
    elif kind == "string" and isinstance(value, str):
        return value
    raise ValueError(f"expected {kind}, got {type(value).__name__} {shown(value)}")


# Event types gyre itself writes to the fact log (`gyre.monitor`'s alerts): a declared type
# of the same name would mix its facts with them, and let clients post forged alerts.
RESERVED_EVENT_TYPES = ("gyre_alert",)


def event_types(configs: Mapping[str, EventTypeConfig]) -> dict[str, EventType]:
    taken = [name for name in configs if name in RESERVED_EVENT_TYPES]
    if taken:
        raise ConfigError(
            f"event type `{taken[0]}` is gyre's own (its monitor's alerts are stored under "
            "it); give yours another name"
        )
    return {name: EventType.from_config(name, config) for name, config in configs.items()}
