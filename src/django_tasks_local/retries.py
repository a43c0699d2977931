"""Attempts: how many a task gets, which errors retry, the wait between, the timeout.

``AttemptPolicy`` holds an alias's ``OPTIONS``; a ``LocalTask``'s own fields
override them. ``retry_delay`` decides, after a failed attempt, whether there
is another, and when.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.tasks import Task, TaskResult
from django.utils.module_loading import import_string

from .exceptions import NotOwned, NotStarted, ProcessLost, TaskCancelled, WorkerCrashed

logger = logging.getLogger("django_tasks_local")

#: ``backoff(exception, task_result)``: seconds (or a timedelta) until the
#: next attempt, or None for no more attempts.
Backoff = Callable[[BaseException, "TaskResult[..., Any]"], float | timedelta | None]

#: Never retried: the task was stopped on purpose, or never ran here.
NEVER_RETRIED = (TaskCancelled, NotStarted, NotOwned)
#: Retried only with ``retry_crashed``: the task may have done its work.
CRASHES = (WorkerCrashed, ProcessLost)


def exponential_backoff(
    base: float = 1.0, factor: float = 2.0, cap: float = 300.0, jitter: float = 0.5
) -> Backoff:
    """A backoff: ``base`` seconds after the first attempt, ``factor`` times
    more after each next one, at most ``cap``; each wait shortened by a random
    share of up to ``jitter``, so that tasks that failed together do not all
    come back at once."""

    def backoff(exception: BaseException, task_result: TaskResult[..., Any]) -> float:
        # attempts counts the one that just failed: 1 after the first.
        exponent = min(task_result.attempts - 1, 64)
        delay = min(cap, base * factor**exponent)
        return delay * (1 - jitter * random.random())

    return backoff


#: The default backoff: about 1 s, 2 s, 4 s... up to 5 minutes, with jitter.
default_backoff = exponential_backoff()


@dataclass(frozen=True, slots=True)
class AttemptPolicy:
    """An alias's defaults for the attempts of its tasks (its OPTIONS)."""

    max_attempts: int = 1
    backoff: Backoff = default_backoff
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    retry_crashed: bool = False
    timeout: float | None = None

    def timeout_of(self, task: Task[..., Any]) -> float | None:
        own = getattr(task, "timeout", None)
        return self.timeout if own is None else float(own)

    def _of(self, task: Task[..., Any], name: str) -> Any:
        own = getattr(task, name, None)
        return getattr(self, name) if own is None else own

    def retry_delay(
        self, failed: TaskResult[..., Any], exception: BaseException
    ) -> float | None:
        """Seconds until the next attempt of ``failed`` (the result as this
        failed attempt left it, FAILED), or None if there is none."""
        task = failed.task
        if failed.attempts >= self._of(task, "max_attempts"):
            return None
        kind = _error_class(failed, exception)
        if issubclass(kind, NEVER_RETRIED):
            return None
        if issubclass(kind, CRASHES):
            if not self._of(task, "retry_crashed"):
                return None
        elif not issubclass(kind, self._of(task, "retry_on")):
            return None
        backoff = self._of(task, "backoff")
        try:
            delay = backoff(exception, failed)
        except Exception:
            logger.exception(
                "Task %s: its backoff %r raised, so it is not retried.",
                failed.id,
                backoff,
            )
            return None
        if delay is None:
            return None
        if isinstance(delay, timedelta):
            delay = delay.total_seconds()
        if (
            isinstance(delay, bool)
            or not isinstance(delay, int | float)
            or not (0 <= delay < math.inf)
        ):
            logger.error(
                "Task %s: its backoff %r returned %r, not a number of seconds "
                "(0 or more), a timedelta or None; it is not retried.",
                failed.id,
                backoff,
                delay,
            )
            return None
        return float(delay)


def _error_class(
    failed: TaskResult[..., Any], exception: BaseException
) -> type[BaseException]:
    """The class of the attempt's error: the exception's own, or, for one
    that could not come back from a worker process, the recorded class."""
    path = failed.errors[-1].exception_class_path if failed.errors else ""
    if f"{type(exception).__module__}.{type(exception).__qualname__}" == path:
        return type(exception)
    try:
        recorded = import_string(path)
    except ImportError:
        return type(exception)
    if isinstance(recorded, type) and issubclass(recorded, BaseException):
        return recorded
    return type(exception)
