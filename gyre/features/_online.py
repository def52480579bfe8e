"""The online engine: per-entity state updated as facts arrive, answering lookups fast.

Each entity keeps its facts (with the view's row transforms computed once, on arrival)
within the view's longest window, sorted by (event time, arrival), so late (out-of-order)
facts land in place. A lookup at time t aggregates the
facts in (t - window, t] for every aggregation. The fact log is the truth: `rebuild`
replays it after a restart.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from typing import Any

from gyre.collect import Fact, FactLog
from gyre.features._definitions import FeatureView


class OnlineStore:
    def __init__(self, view: FeatureView) -> None:
        self.view = view
        self._state: dict[tuple[Any, ...], list[tuple[int, int, Mapping[str, Any]]]] = {}
        self._longest_us = max(a.window_us for a in view.aggregations)

    def _key(self, data: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(data[k] for k in self.view.entity)

    def update(self, facts: Iterable[Fact]) -> None:
        for fact in facts:
            row = self.view.derive(fact.data) if self.view.transforms else fact.data
            rows = self._state.setdefault(self._key(row), [])
            bisect.insort(rows, (fact.event_time, fact.seq, row), key=_order)

    def dump(self) -> list[list[Any]]:
        """The state as plain data (entity key, then its facts as [time, seq, row])."""
        return [[list(key), [list(fact) for fact in rows]] for key, rows in self._state.items()]

    def load(self, state: list[list[Any]]) -> None:
        """Replace the state with one from `dump`."""
        # Facts stay [time, seq, row] lists: they are only indexed, like the tuples.
        self._state = {tuple(key): rows for key, rows in state}

    def rebuild(self, log: FactLog) -> int:
        """Replay the view's source from the log; returns the watermark replayed up to."""
        self._state.clear()
        watermark = log.watermark()
        self.update(log.scan(self.view.source.name, up_to_seq=watermark))
        return watermark

    def evict(self, now_us: int) -> None:
        """Forget facts too old for any window at `now_us` (lookups before it are then not
        served)."""
        horizon = now_us - self._longest_us
        for key, rows in list(self._state.items()):
            cut = bisect.bisect_right(rows, horizon, key=lambda r: r[0])
            if cut:
                del rows[:cut]
            if not rows:
                del self._state[key]

    def lookup(self, entity: Mapping[str, Any], at_us: int) -> dict[str, Any]:
        """The aggregations of `entity` at time `at_us`."""
        rows = self._state.get(self._key(entity), [])
        end = bisect.bisect_right(rows, at_us, key=lambda r: r[0])
        vector: dict[str, Any] = {}
        for agg in self.view.aggregations:
            start = bisect.bisect_right(rows, at_us - agg.window_us, key=lambda r: r[0])
            window = rows[start:end]
            vector[agg.name] = _aggregate(agg.function, agg.column, window)
        return vector


def _aggregate(function: str, column: str | None, window: list[tuple[int, int, Any]]) -> Any:
    if function == "count":
        return len(window)
    values = [row[2][column] for row in window if row[2].get(column) is not None]
    if function == "last":
        return values[-1] if values else None
    if function == "distinct_count":
        return len(set(values))
    if not values:
        return 0 if function == "sum" else None
    if function == "sum":
        return sum(values)
    if function == "mean":
        return sum(values) / len(values)
    return min(values) if function == "min" else max(values)


def _order(fact: Any) -> tuple[int, int]:
    """A stored fact's place: (event time, arrival). Facts are tuples, or lists when
    restored from a snapshot; the key is a tuple either way, so they compare."""
    return (fact[0], fact[1])
