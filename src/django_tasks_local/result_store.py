"""The in-memory result store.

A plain data structure: the runtime that owns it holds its lock around every
call, and hands callers copies, never a stored result.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Any

from django.tasks import TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist


def _missing(result_id: str) -> str:
    """Why a result id is not here, saying what a user can act on."""
    shown = (
        result_id
        if len(result_id) <= 64
        else f"{result_id[:64]}... ({len(result_id)} characters)"
    )
    return (
        f"{shown}: no such task result in this process (pid {os.getpid()}). "
        "Results are kept in the memory of the process that enqueued the "
        "task, until MAX_RESULTS newer finished ones push them out."
    )


class ResultStore:
    """Results by id; finished ones beyond ``max_results`` are evicted oldest first.

    READY and RUNNING results are never evicted: they leave only by finishing
    (and then ageing out) or by ``discard``.
    """

    def __init__(self, max_results: int) -> None:
        self.max_results = max_results
        self._results: dict[str, TaskResult[..., Any]] = {}
        # Ids of finished results, oldest first: the eviction order.
        self._finished: deque[str] = deque()

    def __len__(self) -> int:
        return len(self._results)

    @property
    def finished_count(self) -> int:
        return len(self._finished)

    @property
    def unfinished_count(self) -> int:
        return len(self._results) - len(self._finished)

    def add(self, result: TaskResult[..., Any]) -> None:
        self._results[result.id] = result

    def get(self, result_id: str) -> TaskResult[..., Any]:
        """The stored result itself, for the owner to change."""
        try:
            return self._results[result_id]
        except KeyError:
            raise TaskResultDoesNotExist(_missing(result_id)) from None

    def __contains__(self, result_id: object) -> bool:
        return result_id in self._results

    def discard(self, result_id: str) -> None:
        """Forget an unfinished result (a rolled-back enqueue)."""
        self._results.pop(result_id, None)

    def finished(self, result_id: str) -> None:
        """Record that a result finished, and evict what is now over the bound."""
        self._finished.append(result_id)
        while len(self._finished) > self.max_results:
            del self._results[self._finished.popleft()]
