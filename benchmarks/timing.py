"""What the benchmarks share for timing in-process work."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def best_of_two(work: Callable[[], Any]) -> tuple[float, Any]:
    """`work` run twice: the better wall time in seconds, and the last result. (The first
    run also pays what the second finds warm: caches, allocations, lazy imports.)"""
    return best_interleaved({"work": work}, rounds=2)["work"]


def best_interleaved(
    sides: dict[str, Callable[[], Any]], rounds: int = 5
) -> dict[str, tuple[float, Any]]:
    """Each side run `rounds` times, the sides taking turns (A B A B …): for each, the best
    wall time in seconds and its last result. Taking turns spreads what drifts over a run
    (another tenant of the machine, its clock, the page cache's writeback) over every side,
    where timing one side's repeats and then the other's puts it on one of them."""
    best = {name: float("inf") for name in sides}
    results: dict[str, Any] = {}
    for _ in range(rounds):
        for name, work in sides.items():
            started = time.perf_counter()
            results[name] = work()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: (best[name], results[name]) for name in sides}
