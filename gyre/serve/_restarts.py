"""When the supervisor starts a new server process in a slot whose process died: the
policy, kept apart from the processes (pure: time is passed in, tested on a fake clock).

A budget of restarts is a rate, not a count: a server that runs for months loses a
process now and then (the OOM killer, a segfault in a native library, an operator's
`kill`), and each of those deserves a replacement however many came before. What a
budget must stop is a slot that crashes as fast as it is started, burning the cores the
healthy processes serve on. So, per slot:

- a process that died after it became ready is replaced at once, as long as the slot was
  started fewer than `restarts_per_min` times in the last 60 s; past that, the start
  waits until the oldest of those leaves the window (a crash loop after readiness, such
  as a request that kills whoever answers it, runs at that rate and no faster);
- a process that died before it became ready (a failed start: a corrupt store, a port
  or memory it cannot get) is replaced after `backoff_s`, doubled per consecutive failed
  start up to `backoff_max_s`, and within the rate too; a start that reaches readiness
  resets the doubling.

Slots are independent: one slot's deaths never delay another's starts, and nothing here
stops a healthy process.
"""

from __future__ import annotations

from collections import deque

WINDOW_S = 60.0


class RestartPolicy:
    """The restart schedule of one worker slot."""

    def __init__(self, restarts_per_min: int, backoff_s: float, backoff_max_s: float) -> None:
        self.restarts_per_min = restarts_per_min
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.failed_starts = 0  # consecutive, since the last start that became ready
        self._starts: deque[float] = deque()  # when this slot's recent processes started

    def started(self, now: float) -> None:
        """A process was started in this slot at `now`."""
        self._starts.append(now)
        while self._starts and self._starts[0] <= now - WINDOW_S:
            self._starts.popleft()

    def died(self, now: float, *, was_ready: bool) -> float:
        """The slot's process died at `now`; the time to start the next one."""
        if was_ready:
            self.failed_starts = 0
            at = now
        else:
            self.failed_starts += 1
            doublings = min(self.failed_starts - 1, 32)
            at = now + min(self.backoff_s * 2.0**doublings, self.backoff_max_s)
        if len(self._starts) >= self.restarts_per_min:
            # The start restarts_per_min back from the newest must leave the window first.
            at = max(at, self._starts[-self.restarts_per_min] + WINDOW_S)
        return at
