"""Features at serving time: online state that follows the fact log, and the vectors it
builds (`ServedVector`), which the server logs (`gyre.monitor.ServedLog`) and `gyre
features skew` later recomputes offline.

Each server process follows the log itself (facts stored after the position it has seen),
so an event acknowledged by any process, or written by `gyre events ingest`, counts in the
next lookup of every process. The position a vector was computed at is logged with it:
the offline engine recomputes it from exactly the facts the server had.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from gyre._json import MALFORMED
from gyre.collect import FactLog, SQLiteFactLog
from gyre.errors import InvalidFeatureInput
from gyre.features._definitions import FeatureView, find_view
from gyre.features._online import OnlineStore

log = logging.getLogger("gyre.features")

SNAPSHOT_FORMAT = 1

# How often a follower drops facts older than every window of its views (None: never,
# for lookups at times long past).
EVICT_INTERVAL_S = 60.0


@dataclass(frozen=True)
class ServedVector:
    """One vector a model was given: whose, when, from which log position, and what."""

    view: str
    definition_hash: str
    entity: dict[str, Any]
    request: dict[str, Any]
    at_us: int
    watermark: int
    values: dict[str, Any]


class OnlineFeatures:
    """The declared views' online state in one server process, fed by the fact log."""

    def __init__(
        self,
        views: Mapping[str, FeatureView],
        facts: FactLog | Path,
        *,
        evict_interval_s: float | None = EVICT_INTERVAL_S,
    ) -> None:
        self.views = dict(views)
        self._stores = {name: OnlineStore(view) for name, view in self.views.items()}
        self._types = sorted({view.source.name for view in self.views.values()})
        # A path: the SQLite log there, used under this object's lock from any thread, and
        # closed with it; a log given is the caller's to close.
        self._owns_log = isinstance(facts, Path)
        self._log: FactLog = (
            SQLiteFactLog(facts, check_same_thread=False) if isinstance(facts, Path) else facts
        )
        self._lock = threading.Lock()
        self._watermark = 0
        self._evict_interval_s = evict_interval_s
        self._evicted_at = time.monotonic()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def follow(
        self, interval_s: float, snapshot: Path | None = None, snapshot_interval_s: float = 0.0
    ) -> None:
        """Apply new facts every `interval_s` on a thread, so a lookup rarely has more
        than a few facts to apply first (it still applies them: read-your-writes); with
        `snapshot`, also save the state there every `snapshot_interval_s`."""

        def run() -> None:
            saved_at = time.monotonic()
            while not self._stop.wait(interval_s):
                try:
                    self.refresh()
                    if snapshot and time.monotonic() - saved_at > snapshot_interval_s:
                        self.save_snapshot(snapshot)
                        saved_at = time.monotonic()
                except Exception:  # a busy or broken log or disk: keep going, retry later
                    log.exception("following the fact log failed; retrying")

        self._follower = threading.Thread(target=run, name="gyre-features-follow", daemon=True)
        self._follower.start()

    def close(self) -> None:
        self._stop.set()
        if self._follower is not None:
            self._follower.join()
        if self._owns_log:
            self._log.close()

    def save_snapshot(self, path: Path) -> int:
        """Write the online state and the log position it reflects (atomically: a reader
        sees the old snapshot or the new one); returns that position."""
        with self._lock:  # a copy of the lists; stored rows are never changed in place
            watermark = self._watermark
            views = {
                name: {"hash": store.view.definition_hash, "entities": store.dump()}
                for name, store in self._stores.items()
            }
        state = {"format": SNAPSHOT_FORMAT, "watermark": watermark, "views": views}
        data = msgspec.msgpack.encode(state)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        partial.write_bytes(data)
        partial.replace(path)
        return watermark

    def load_snapshot(self, path: Path) -> bool:
        """Start from a snapshot instead of an empty state, when it holds exactly these
        views' definitions and the log still reaches its position; the log is read from
        there on. Returns whether it was used."""
        try:
            state = msgspec.msgpack.decode(path.read_bytes())
        except FileNotFoundError:
            return False
        except MALFORMED as exc:  # a snapshot cut short or damaged on disk
            log.warning("ignoring the online snapshot %s: %s", path, exc)
            return False
        except OSError as exc:
            log.warning("ignoring the online snapshot %s: %s", path, exc)
            return False
        try:
            views = state["views"]
            usable = (
                state["format"] == SNAPSHOT_FORMAT
                and set(views) == set(self._stores)
                and all(views[n]["hash"] == s.view.definition_hash for n, s in self._stores.items())
                and state["watermark"] <= self._log.watermark()
            )
        except (KeyError, TypeError):
            usable = False
        if not usable:
            log.info("the online snapshot %s does not match these views or this log", path)
            return False
        with self._lock:
            for name, store in self._stores.items():
                store.load(views[name]["entities"])
            self._watermark = int(state["watermark"])
        return True

    def refresh(self) -> int:
        """Apply the facts stored since the last call; returns the log position reached."""
        while True:
            # One chunk per turn of the lock: lookups interleave with a long catch-up.
            with self._lock:
                facts, position = self._log.since(self._watermark, self._types)
                if position == self._watermark:
                    break
                for store in self._stores.values():
                    source = store.view.source.name
                    store.update(f for f in facts if f.type == source)
                self._watermark = position
        interval = self._evict_interval_s
        if interval is not None and time.monotonic() - self._evicted_at > interval:
            self.evict(time.time_ns() // 1000)
        return self._watermark

    def evict(self, now_us: int) -> None:
        """Forget facts too old for any window at `now_us`."""
        with self._lock:
            for store in self._stores.values():
                store.evict(now_us)
            self._evicted_at = time.monotonic()

    def vectors(
        self,
        view_name: str,
        entities: Sequence[Any],
        request: Sequence[Mapping[str, Any]],
        at_us: int | None = None,
    ) -> list[ServedVector]:
        """The feature vectors of `entities` now (or at `at_us`), with the request-time
        values each request sent; InvalidFeatureInput when one is missing or mistyped."""
        view = find_view(self.views, view_name)
        at = time.time_ns() // 1000 if at_us is None else at_us
        self.refresh()
        store = self._stores[view_name]
        served = []
        for i, (given, sent) in enumerate(zip(entities, request, strict=True)):
            try:
                entity = view.source.entity_of(given)
                values = view.request_values(sent, at)
            except ValueError as exc:
                where = f"entity {i}: " if len(entities) > 1 else ""
                raise InvalidFeatureInput(f"feature view `{view_name}`: {where}{exc}") from None
            with self._lock:
                # Facts are applied a chunk and its position at a time under this lock, so
                # the lookup saw exactly the facts up to the position read with it.
                aggregates = store.lookup(entity, at)
                watermark = self._watermark
            # Only the declared request values: what the offline engine needs to recompute.
            kept = {name: sent[name] for name in view.request if name in sent}
            served.append(
                ServedVector(
                    view_name, view.definition_hash, entity, kept, at, watermark,
                    {**aggregates, **values},
                )
            )  # fmt: skip
        return served
