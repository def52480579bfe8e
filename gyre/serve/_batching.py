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
        self._samples = max(2, samples)
        self._timings: deque[tuple[int, float]] = deque()
        # Running sums over the timings window: n, Σrows, Σs, Σrows², Σrows·s.
        self._sums = [0.0, 0.0, 0.0, 0.0, 0.0]
        self.intercept_s = 0.0
        self.slope_s = 0.0

    # -- learning ---------------------------------------------------------------------------

    def record(self, rows: int, seconds: float, *, met_deadline: bool, cap_limited: bool) -> None:
        """One batch of `rows` took `seconds`; it met (or missed) its earliest deadline, and
        was (or was not) cut short by the cap while more rows were waiting."""
        self._add(rows, seconds, 1.0)
        self._timings.append((rows, seconds))
        if len(self._timings) > self._samples:
            self._add(*self._timings.popleft(), -1.0)
        self._fit()
        if not self.adaptive:
            return
        if not met_deadline:
            self.cap = max(1, math.floor(self.cap * self.backoff_factor))
        elif cap_limited:
            self.cap = min(self.max_batch_size, self.cap + self.increase_rows)

    def _add(self, rows: int, seconds: float, sign: float) -> None:
        sums = self._sums
        sums[0] += sign
        sums[1] += sign * rows
        sums[2] += sign * seconds
        sums[3] += sign * rows * rows
        sums[4] += sign * rows * seconds

    def _fit(self) -> None:
        n, sum_rows, sum_s, sum_rows2, sum_rows_s = self._sums
        mean_rows, mean_s = sum_rows / n, sum_s / n
        spread = sum_rows2 - n * mean_rows * mean_rows
        if spread <= 1e-9 * max(sum_rows2, 1.0):
            # One batch size seen so far: latency proportional to rows is the safe guess.
            self.intercept_s, self.slope_s = 0.0, mean_s / max(mean_rows, 1.0)
            return
        slope = max((sum_rows_s - n * mean_rows * mean_s) / spread, 0.0)
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
