"""The waiting line: tasks that are enqueued but not yet handed to a worker.

A plain data structure; the runtime that owns it holds its lock around every
call. Tasks start highest priority first, first in first out among equals, and
never before their ``run_after``.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any


class WaitingLine[Item]:
    def __init__(self) -> None:
        # (-priority, sequence, item): heapq pops the smallest, so the highest
        # priority first and, among equals, the one enqueued first.
        self._startable: list[tuple[int, int, Item]] = []
        # (run_after as a POSIX timestamp, -priority, sequence, item).
        self._deferred: list[tuple[float, int, int, Item]] = []
        self._sequence = itertools.count()

    def __len__(self) -> int:
        return len(self._startable) + len(self._deferred)

    def push(self, item: Item, priority: int, run_after: datetime | None) -> None:
        sequence = next(self._sequence)
        # An aware datetime converts exactly; a naive one (USE_TZ = False) is
        # local time, like django.utils.timezone.now() then.
        if run_after is not None and run_after.timestamp() > time.time():
            heapq.heappush(
                self._deferred, (run_after.timestamp(), -priority, sequence, item)
            )
        else:
            heapq.heappush(self._startable, (-priority, sequence, item))

    def pop(self) -> Item | None:
        """The next task that may start now, or None."""
        self.promote_due()
        if self._startable:
            return heapq.heappop(self._startable)[2]
        return None

    def next_due(self) -> float | None:
        """When the earliest deferred task becomes startable (POSIX time)."""
        return self._deferred[0][0] if self._deferred else None

    def remove(self, match: Callable[[Item], bool]) -> Item | None:
        """Take out the first item ``match`` accepts (a cancelled task), if any."""
        found = _take_out(self._startable, match)
        return found if found is not None else _take_out(self._deferred, match)

    def drain(self) -> list[Item]:
        """Remove and return everything waiting."""
        items = [entry[-1] for entry in self._startable + self._deferred]
        self._startable.clear()
        self._deferred.clear()
        return items

    def promote_due(self) -> None:
        """Move the deferred tasks whose run_after has come among the startable ones.

        ``pop`` does it too; a timer calls it when no worker is free, so that
        ``next_due`` moves on to the next run_after still ahead.
        """
        now = time.time()
        while self._deferred and self._deferred[0][0] <= now:
            _, negative_priority, sequence, item = heapq.heappop(self._deferred)
            heapq.heappush(self._startable, (negative_priority, sequence, item))


def _take_out[Item](
    heap: list[tuple[Any, ...]], match: Callable[[Item], bool]
) -> Item | None:
    """Take the first entry whose item (its last field) ``match`` accepts out
    of ``heap``, keeping it a heap; its item, or None."""
    for index, entry in enumerate(heap):
        item: Item = entry[-1]
        if match(item):
            heap.pop(index)
            heapq.heapify(heap)
            return item
    return None
