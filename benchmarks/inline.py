"""The whole life of a task with no hand-off: the floor the breakdowns measure.

A backend whose executor runs each task inline, in the calling thread, so
that one ``enqueue()`` is a task's whole life (enqueue, run, the signals,
finish) and the thread's CPU clock counts all of it.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor, Future
from typing import Any


class InlineExecutor(Executor):
    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        future.set_result(fn(*args, **kwargs))
        return future


def inline_backend(base: type, alias: str) -> Any:
    """An instance of ``base`` (an ExecutorBackend) on an ``InlineExecutor``."""

    class InlineBackend(base):
        def create_executor(self) -> Executor:
            return InlineExecutor()

    return InlineBackend(alias, {"OPTIONS": {"MAX_RESULTS": 1000}})


def cpu_per_task(backend: Any) -> float:
    """Microseconds of this thread's CPU per no-op task: best of 5 loops of 4,000."""
    from benchmarks import tasks

    count, best = 4000, float("inf")
    for _ in range(5):
        start = time.thread_time()
        for i in range(count):
            backend.enqueue(tasks.add_task, (i, 1), {})
        best = min(best, (time.thread_time() - start) / count * 1e6)
    return best
