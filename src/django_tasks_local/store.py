"""The in-memory result store.

It is a plain data structure: the runtime that owns it holds its lock around
every call. Callers outside get copies (``snapshot``), never a stored result.
"""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

from django.tasks import TaskResult
from django.tasks.exceptions import TaskResultDoesNotExist


def copy_json(value: Any) -> Any:
    """Copy JSON-normalized data: only lists and dicts are mutable in it."""
    if type(value) is list:
        return [copy_json(item) for item in value]
    if type(value) is dict:
        return {key: copy_json(item) for key, item in value.items()}
    return value


def snapshot(result: TaskResult) -> TaskResult:
    """A copy of ``result`` that shares nothing mutable with it."""
    clone = copy.copy(result)
    object.__setattr__(clone, "args", copy_json(result.args))
    object.__setattr__(clone, "kwargs", copy_json(result.kwargs))
    object.__setattr__(clone, "errors", list(result.errors))
    object.__setattr__(clone, "worker_ids", list(result.worker_ids))
    object.__setattr__(clone, "_return_value", copy_json(result._return_value))
    return clone


class ResultStore:
    """Results by id; finished ones beyond ``max_results`` are evicted oldest first.

    READY and RUNNING results are never evicted: they leave only by finishing
    (and then ageing out) or by ``discard``.
    """

    def __init__(self, max_results: int) -> None:
        self.max_results = max_results
        self._results: dict[str, TaskResult] = {}
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

    def add(self, result: TaskResult) -> None:
        self._results[result.id] = result

    def get(self, result_id: str) -> TaskResult:
        """The stored result itself, for the owner to change."""
        try:
            return self._results[result_id]
        except KeyError:
            raise TaskResultDoesNotExist(result_id) from None

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
