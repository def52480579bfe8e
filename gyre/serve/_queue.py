"""The per-version request queue, ordered by deadline (earliest first, then arrival)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class DeadlineQueue(Generic[T]):
    """A heap of items by deadline, with a running count of the rows they hold."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int, T]] = []
        self._order = itertools.count()
        self.rows = 0

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[T]:
        return (item for *_, item in self._heap)

    def push(self, deadline: float, rows: int, item: T) -> None:
        heapq.heappush(self._heap, (deadline, next(self._order), rows, item))
        self.rows += rows

    def earliest_deadline(self) -> float:
        return self._heap[0][0]

    def peek(self) -> T:
        return self._heap[0][3]

    def pop(self) -> T:
        _, _, rows, item = heapq.heappop(self._heap)
        self.rows -= rows
        return item

    def take(self, max_rows: int, fits: Callable[[T, T], bool]) -> list[T]:
        """The earliest item, then later ones that `fits` it, while the rows stay within
        `max_rows` (the first item is taken even when it alone is larger)."""
        _, _, rows, first = heapq.heappop(self._heap)
        self.rows -= rows
        batch: list[T] = [first]
        skipped = []
        while self._heap and rows < max_rows:
            entry = heapq.heappop(self._heap)
            item_rows, item = entry[2], entry[3]
            if rows + item_rows <= max_rows and fits(first, item):
                batch.append(item)
                rows += item_rows
                self.rows -= item_rows
            else:
                skipped.append(entry)
                if rows + item_rows > max_rows:
                    break
        for entry in skipped:
            heapq.heappush(self._heap, entry)
        return batch
