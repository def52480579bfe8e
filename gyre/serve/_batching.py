"""The adaptive batch-size policy: pure, with time passed in (no clock, no I/O).

It fits batch latency as `intercept + slope * rows` by least squares over the most recent
batch timings, and picks the largest batch predicted to finish before the earliest
deadline in the queue. An AIMD cap keeps it honest where the fit is wrong: a batch that
misses its deadline multiplies the cap by `backoff_factor`; one that meets it while the cap
limited its size grows the cap by `increase_rows`. When the model slows down, new timings
move the fit, and the batches it picks shrink.
"""

from __future__ import annotations

import math
from collections import deque


class AdaptiveBatchPolicy:
    """Chooses batch sizes under deadlines; `record` feeds it what each batch cost."""

    def __init__(
        self,
        max_batch_size: int,
        *,
        backoff_factor: float = 0.5,
        increase_rows: int = 4,
        samples: int = 64,
        adaptive: bool = True,
    ) -> None:
        self.max_batch_size = max(1, max_batch_size)
        self.backoff_factor = backoff_factor
        self.increase_rows = max(1, increase_rows)
        self.adaptive = adaptive
        self.cap = self.max_batch_size if not adaptive else 1
        self._timings: deque[tuple[int, float]] = deque(maxlen=max(2, samples))
        self.intercept_s = 0.0
        self.slope_s = 0.0

    # -- learning ---------------------------------------------------------------------------

    def record(self, rows: int, seconds: float, *, met_deadline: bool, cap_limited: bool) -> None:
        """One batch of `rows` took `seconds`; it met (or missed) its earliest deadline, and
        was (or was not) cut short by the cap while more rows were waiting."""
        self._timings.append((rows, seconds))
        self._fit()
        if not self.adaptive:
            return
        if not met_deadline:
            self.cap = max(1, math.floor(self.cap * self.backoff_factor))
        elif cap_limited:
            self.cap = min(self.max_batch_size, self.cap + self.increase_rows)

    def _fit(self) -> None:
        n = len(self._timings)
        mean_rows = sum(r for r, _ in self._timings) / n
        mean_s = sum(s for _, s in self._timings) / n
        spread = sum((r - mean_rows) ** 2 for r, _ in self._timings)
        if spread == 0.0:
            # One batch size seen so far: latency proportional to rows is the safe guess.
            self.intercept_s, self.slope_s = 0.0, mean_s / max(mean_rows, 1.0)
            return
        slope = sum((r - mean_rows) * (s - mean_s) for r, s in self._timings) / spread
        slope = max(slope, 0.0)
        self.slope_s = slope
        self.intercept_s = max(mean_s - slope * mean_rows, 0.0)

    # -- deciding ---------------------------------------------------------------------------

    @property
    def calibrated(self) -> bool:
        return bool(self._timings)

    def predict_s(self, rows: int) -> float:
        """Predicted seconds for one batch of `rows`; 0 before any timing."""
        return self.intercept_s + self.slope_s * rows

    def batch_size(self, now: float, earliest_deadline: float) -> int:
        """The largest batch (at least 1) predicted to finish by `earliest_deadline`."""
        limit = min(self.cap, self.max_batch_size)
        if not self.adaptive or self.slope_s == 0.0:
            return limit
        budget = earliest_deadline - now - self.intercept_s
        fits = math.floor(budget / self.slope_s) if budget > 0 else 0
        return max(1, min(limit, fits))

    def drain_s(self, rows: int) -> float:
        """Predicted seconds to serve `rows` queued rows in batches of the current cap."""
        if rows <= 0:
            return 0.0
        size = max(1, min(self.cap, self.max_batch_size))
        full, rest = divmod(rows, size)
        return full * self.predict_s(size) + (self.predict_s(rest) if rest else 0.0)
