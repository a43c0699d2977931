"""``LocalTask``: Django's ``Task`` with retries, a timeout and metadata.

The backends' ``task_class``. On Django 6.1, ``@task(...)`` passes its extra
arguments here (``@task(max_attempts=3, timeout=30)``); on 6.0 it passes none,
and the alias-wide ``OPTIONS`` are the way in. The shapes are those Django
proposes: django/new-features#141 (metadata), #142 (retries) and #144
(timeouts).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from django.tasks import Task
from django.tasks.base import (
    DEFAULT_TASK_BACKEND_ALIAS,
    DEFAULT_TASK_PRIORITY,
    DEFAULT_TASK_QUEUE_NAME,
)
from django.tasks.exceptions import InvalidTask

from .options import (
    exception_classes,
    optional_boolean,
    optional_callable,
    optional_finite_positive_number,
    optional_positive_int,
)
from .results import normalize_metadata
from .retries import Backoff


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalTask(Task):  # type: ignore[type-arg]
    """A task, with what this package's backends add. None: the alias's OPTIONS."""

    # Django 6.1's defaults, for Django 6.0 too (whose Task has none), so
    # that LocalTask(func=...) works on both.
    priority: int = DEFAULT_TASK_PRIORITY
    backend: str = DEFAULT_TASK_BACKEND_ALIAS
    queue_name: str = DEFAULT_TASK_QUEUE_NAME
    run_after: datetime | None = None

    #: Attempts in all, the first included (OPTIONS MAX_ATTEMPTS; default 1).
    max_attempts: int | None = None
    #: The wait before each next attempt (OPTIONS BACKOFF).
    backoff: Backoff | None = None
    #: The exceptions that are retried (OPTIONS RETRY_ON; default Exception).
    retry_on: tuple[type[BaseException], ...] | None = None
    #: Whether a crashed worker process (or a lost one) is retried too
    #: (OPTIONS RETRY_CRASHED; default False: the task may have done its work).
    retry_crashed: bool | None = None
    #: Seconds an attempt may run (OPTIONS TIMEOUT).
    timeout: float | None = None
    #: What a result of this task starts with (``using(metadata=...)``).
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        _validate(self)
        Task.__post_init__(self)

    def using(
        self,
        *,
        priority: int | None = None,
        queue_name: str | None = None,
        run_after: datetime | None = None,
        backend: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> LocalTask:
        """Django's ``using()``, and the ``metadata`` its results start with."""
        task: LocalTask = Task.using(  # type: ignore[assignment]
            self,
            priority=priority,
            queue_name=queue_name,
            run_after=run_after,
            backend=backend,
        )
        if metadata is not None:
            task = replace(task, metadata=metadata)
        return task


def _validate(task: LocalTask) -> None:
    """Raise InvalidTask for a bad value of a field of ours, naming it."""
    problems = {
        "max_attempts": optional_positive_int(task.max_attempts),
        "backoff": optional_callable(task.backoff),
        "retry_crashed": optional_boolean(task.retry_crashed),
        "timeout": optional_finite_positive_number(task.timeout),
    }
    retry_on: Any = task.retry_on
    if retry_on is not None:
        if isinstance(retry_on, list):
            object.__setattr__(task, "retry_on", tuple(retry_on))
        problems["retry_on"] = exception_classes(retry_on, imports=False)
    for name, problem in problems.items():
        if problem is not None:
            raise InvalidTask(f"Task {task.module_path!r}: {name} {problem}.")
    if task.metadata is not None:
        try:
            metadata = normalize_metadata(task.metadata)
        except (TypeError, ValueError) as exc:
            raise InvalidTask(f"Task {task.module_path!r}: {exc}") from exc
        object.__setattr__(task, "metadata", metadata)
