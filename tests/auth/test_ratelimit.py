"""Token buckets: the arithmetic on a fake clock, and the file that a server's processes
share, with real processes (one of them killed with the lock held)."""

from __future__ import annotations

import fcntl
import math
import multiprocessing
import os
import signal
import threading
from pathlib import Path
from typing import Any

from gyre.auth._ratelimit import LocalRateLimits, SharedRateLimits, take

LIMITS = {"app": (2.0, 5.0)}  # 2 requests a second, bursts of 5


def test_a_bucket_gives_its_burst_then_its_rate() -> None:
    limits = LocalRateLimits(LIMITS, now=100.0)
    assert [limits.take("app", 100.0) for _ in range(5)] == [0.0] * 5
    assert limits.take("app", 100.0) == 0.5  # the next token comes in half a second
    assert limits.take("app", 100.5) == 0.0
    assert limits.take("app", 100.5) == 0.5
    assert [limits.take("app", 1000.0) for _ in range(6)] == [0.0] * 5 + [0.5]  # full: 5


def test_a_bucket_survives_a_clock_that_started_again_and_bad_values() -> None:
    assert take(3.0, updated=500.0, now=10.0, rate_per_s=2.0, burst=5.0) == (2.0, 10.0, 0.0)
    for tokens in (math.nan, -1.0, 1e9):
        assert take(tokens, 10.0, 10.0, 2.0, 5.0) == (4.0, 10.0, 0.0)  # read as full
    assert take(0.0, math.nan, 10.0, 2.0, 5.0) == (0.0, 10.0, 0.5)


def test_handles_on_one_file_share_its_buckets(tmp_path: Path) -> None:
    path = tmp_path / "run" / "rate-limits.bin"
    first = SharedRateLimits(path, LIMITS, now=100.0)
    second = SharedRateLimits(path, LIMITS, now=100.0)  # the file is there: not reset
    assert [first.take("app", 100.0) for _ in range(3)] == [0.0] * 3
    assert [second.take("app", 100.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert first.take("app", 100.0) == 0.5
    # Other consumers (a changed config): laid out again, every bucket full, never smaller.
    size = path.stat().st_size
    other = SharedRateLimits(path, {"app": (2.0, 5.0), "batch": (1.0, 1.0)}, now=100.0)
    assert other.take("app", 100.0) == 0.0 and other.take("batch", 100.0) == 0.0
    assert other.take("batch", 100.0) == 1.0
    SharedRateLimits(path, LIMITS, now=100.0)
    assert path.stat().st_size > size
    for limits in (first, second, other):
        limits.close()


def _take_many(path: Path, tries: int, taken: Any) -> None:
    limits = SharedRateLimits(path, {"app": (1.0, 40.0)}, now=100.0)
    taken.put(sum(limits.take("app", 100.0) == 0.0 for _ in range(tries)))


def test_processes_together_get_one_bucket_not_one_each(tmp_path: Path) -> None:
    path = tmp_path / "rate-limits.bin"
    SharedRateLimits(path, {"app": (1.0, 40.0)}, now=100.0).close()
    context = multiprocessing.get_context("spawn")
    taken = context.Queue()
    workers = [context.Process(target=_take_many, args=(path, 30, taken)) for _ in range(3)]
    for worker in workers:
        worker.start()
    counts = [taken.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    # The clock stands still: 90 tries in all, and exactly the 40 tokens of one bucket.
    assert sum(counts) == 40, counts


def _hold_the_lock(path: Path, ready: Any) -> None:
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ready.set()
    threading.Event().wait()  # until killed


def test_a_process_killed_holding_the_lock_wedges_nobody(tmp_path: Path) -> None:
    path = tmp_path / "rate-limits.bin"
    limits = SharedRateLimits(path, LIMITS, now=100.0)
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    holder = context.Process(target=_hold_the_lock, args=(path, ready))
    holder.start()
    assert ready.wait(timeout=60)
    answers: list[float] = []
    waiting = threading.Thread(target=lambda: answers.append(limits.take("app", 100.0)))
    waiting.start()
    waiting.join(timeout=0.2)
    assert answers == []  # the lock is held
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=60)
    waiting.join(timeout=60)
    assert answers == [0.0]  # the kernel let go of a dead process's lock
    limits.close()
