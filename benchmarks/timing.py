"""What the benchmarks share for timing in-process work."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of_two(work: Callable[[], Any]) -> tuple[float, Any]:
    """`work` run twice: the better wall time in seconds, and the last result. (The first
    run also pays what the second finds warm: caches, allocations, lazy imports.)"""
    best, result = float("inf"), None
    for _ in range(2):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result
