"""When a model is retrained: triggers, and the limits that keep the loop from thrashing.

A trigger (data drift, a quality drop, a stale model, the schedule) asks for a retrain; the
policy says yes or no, with the reason, from what it has started before:

- never two at once: a retrain runs until `finished` is called for it;
- at most `per_day` starts in any 24 hours (a sliding window, not a calendar day);
- a `cool_down_s` after each finished retrain before the next trigger counts (the new
  model needs time to be judged on live feedback before it is judged again);
- the schedule: `due()` gives a `schedule` trigger once `every_s` has passed since the
  last start (or since the policy began).

The policy is pure and its clock is injected (`clock`, seconds), so every rule is tested
on a fake clock. `RetrainPolicy.resume` rebuilds it from the decisions it made, so a
restarted process keeps its limits.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from gyre.errors import MonitorError

DAY_S = 86_400.0
TRIGGERS = ("drift", "quality", "staleness", "schedule")


@dataclass(frozen=True)
class RetrainLimits:
    per_day: int = 4
    cool_down_s: float = 3_600.0
    every_s: float | None = None  # the schedule (None: no scheduled retrains)

    def __post_init__(self) -> None:
        if not (isinstance(self.per_day, int) and self.per_day >= 1):
            raise MonitorError(f"retrain `per_day` must be an integer >= 1, not {self.per_day!r}")
        if not (math.isfinite(self.cool_down_s) and self.cool_down_s >= 0):
            raise MonitorError(f"retrain `cool_down_s` must be >= 0, not {self.cool_down_s!r}")
        if self.every_s is not None and not (math.isfinite(self.every_s) and self.every_s > 0):
            raise MonitorError(f"retrain `every_s` must be > 0, not {self.every_s!r}")


@dataclass(frozen=True)
class Trigger:
    kind: str  # drift, quality, staleness, schedule
    reason: str  # what the detector saw, in words

    def __post_init__(self) -> None:
        if self.kind not in TRIGGERS:
            raise MonitorError(
                f"a retrain trigger is one of {', '.join(TRIGGERS)}, not {self.kind!r}"
            )


@dataclass(frozen=True)
class RetrainDecision:
    at: float
    trigger: Trigger
    start: bool
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "trigger": self.trigger.kind, "evidence": self.trigger.reason,
                "start": self.start, "reason": self.reason}  # fmt: skip


class RetrainPolicy:
    """Whether a trigger starts a retrain now (see the module docstring)."""

    def __init__(self, limits: RetrainLimits, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._began = clock()
        self._starts: deque[float] = deque()  # within the last day
        self._last_start: float | None = None
        self._running = False
        self._finished_at: float | None = None

    @classmethod
    def resume(
        cls,
        limits: RetrainLimits,
        clock: Callable[[], float],
        decisions: Iterable[RetrainDecision],
        finished: Iterable[float] = (),
    ) -> RetrainPolicy:
        """The policy as it stood after `decisions` (oldest first) and the retrains that
        `finished` at those times; a start with no finish after it is still running."""
        policy = cls(limits, clock)
        ends = sorted(finished)
        for decision in decisions:
            if decision.start:
                policy._record_start(decision.at)
        if policy._last_start is not None:
            done = [t for t in ends if t >= policy._last_start]
            policy._running = not done
            policy._finished_at = done[0] if done else None
        return policy

    def _record_start(self, at: float) -> None:
        self._starts.append(at)
        self._last_start = at
        self._running = True

    def consider(self, trigger: Trigger) -> RetrainDecision:
        """Start a retrain for `trigger` now, or say why not."""
        now = self._clock()
        while self._starts and self._starts[0] <= now - DAY_S:
            self._starts.popleft()

        def decide(start: bool, reason: str) -> RetrainDecision:
            if start:
                self._record_start(now)
            return RetrainDecision(now, trigger, start, reason)

        if self._running:
            return decide(False, "a retrain is running; never two at once")
        if len(self._starts) >= self.limits.per_day:
            wait = self._starts[0] + DAY_S - now
            return decide(
                False, f"{self.limits.per_day} retrains in the last 24 h; next in {wait:.0f} s"
            )
        if self._finished_at is not None and now - self._finished_at < self.limits.cool_down_s:
            wait = self._finished_at + self.limits.cool_down_s - now
            return decide(False, f"cooling down after the last retrain; {wait:.0f} s left")
        return decide(True, f"{trigger.kind}: {trigger.reason}")

    def finished(self) -> None:
        """The running retrain ended (whatever its outcome): the cool-down starts now."""
        if not self._running:
            raise MonitorError("no retrain is running")
        self._running = False
        self._finished_at = self._clock()

    def due(self) -> Trigger | None:
        """The schedule's trigger, when `every_s` has passed since the last start."""
        if self.limits.every_s is None:
            return None
        since = self._last_start if self._last_start is not None else self._began
        elapsed = self._clock() - since
        if elapsed < self.limits.every_s:
            return None
        return Trigger(
            "schedule", f"{elapsed:.0f} s since the last retrain (every {self.limits.every_s:g} s)"
        )
