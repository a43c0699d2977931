"""What happens inside the worker: ``run_task`` and the envelope it receives.

``run_task`` is a module-level function so that a process pool can pickle a
reference to it. It never raises (but for ``KeyboardInterrupt``): every
outcome of the task, good or bad, comes back as an ``Outcome``.
"""

from __future__ import annotations

import os
import pickle
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from traceback import format_exception
from typing import Any

from django.db import close_old_connections
from django.tasks import Task, TaskContext, TaskResult
from django.tasks.base import TaskError
from django.utils import timezone
from django.utils.module_loading import import_string

from .context import bound_result_id
from .states import RUNNING
from .store import normalize

#: Called in the worker when a task body is about to start:
#: ``report_started(result_id, worker_id, started_at)``.
StartReporter = Callable[[str, str, datetime], None]

HOSTNAME = socket.gethostname()

# Set in a worker process by its pool, so that tasks arriving there (whose
# envelopes cannot carry a callback across the process boundary) can still
# report their start to the parent as it happens.
_process_start_reporter: StartReporter | None = None


def set_process_start_reporter(reporter: StartReporter | None) -> None:
    global _process_start_reporter
    _process_start_reporter = reporter


@dataclass(frozen=True, slots=True)
class TaskReference:
    """What a worker in another process needs to rebuild a ``Task``.

    Django 6.0's ``Task`` cannot be pickled (its function is shadowed in its
    module by the ``Task`` the decorator returns), so the task travels by path.
    """

    module_path: str
    priority: int
    queue_name: str
    backend: str
    run_after: datetime | None
    takes_context: bool

    @classmethod
    def from_task(cls, task: Task[..., Any]) -> TaskReference:
        return cls(
            module_path=task.module_path,
            priority=task.priority,
            queue_name=task.queue_name,
            backend=task.backend,
            run_after=task.run_after,
            takes_context=task.takes_context,
        )

    def resolve(self) -> Task[..., Any]:
        target = import_string(self.module_path)
        func = target.func if isinstance(target, Task) else target
        # Built without Task.__post_init__: the parent validated this task
        # against its own settings, which a worker process may not share
        # (override_settings, for one, never reaches a spawned child).
        task = object.__new__(Task)
        values = {
            "func": func,
            "priority": self.priority,
            "queue_name": self.queue_name,
            "backend": self.backend,
            "run_after": self.run_after,
            "takes_context": self.takes_context,
        }
        for name, value in values.items():
            object.__setattr__(task, name, value)
        return task

    # Envelope, TaskReference and Outcome cross the pipe to a worker process
    # with every task. Pickled by position: the default for a slotted
    # dataclass calls dataclasses.fields() each time, a third of the cost.
    def __reduce__(self) -> tuple[Any, ...]:
        return (
            TaskReference,
            (
                self.module_path,
                self.priority,
                self.queue_name,
                self.backend,
                self.run_after,
                self.takes_context,
            ),
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """One task as handed to an executor."""

    result_id: str
    task: Task[..., Any] | TaskReference
    args: list[Any]
    kwargs: dict[str, Any]
    enqueued_at: datetime | None
    # A direct callback when the worker shares our process; None across a
    # process boundary, where the pool's own channel reports the start.
    report_started: StartReporter | None = field(default=None, compare=False)
    # This envelope already pickled (by the check at enqueue()): pickling it
    # again, for the worker process, only copies these bytes.
    pickled: bytes | None = field(default=None, compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        if self.pickled is not None:
            return (pickle.loads, (self.pickled,))
        return (
            Envelope,
            (
                self.result_id,
                self.task,
                self.args,
                self.kwargs,
                self.enqueued_at,
                self.report_started,
            ),
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one run of a task ended, as the worker saw it."""

    worker_id: str | None
    started_at: datetime | None
    finished_at: datetime
    return_value: Any = None
    error: TaskError | None = None

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            Outcome,
            (
                self.worker_id,
                self.started_at,
                self.finished_at,
                self.return_value,
                self.error,
            ),
        )


def current_worker_id() -> str:
    """Names the worker: host and process, and the thread unless it is the main one."""
    thread = threading.current_thread()
    if thread is threading.main_thread():
        return f"{HOSTNAME}:{os.getpid()}"
    return f"{HOSTNAME}:{os.getpid()}:{thread.name}"


def capture_error(exc: BaseException) -> TaskError:
    """An exception as Django stores it: class path and formatted traceback."""
    exc_type = type(exc)
    return TaskError(
        exception_class_path=f"{exc_type.__module__}.{exc_type.__qualname__}",
        traceback="".join(format_exception(exc)),
    )


def run_task(envelope: Envelope) -> Outcome:
    """Run one task in this worker and report how it ended."""
    worker_id = current_worker_id()
    started_at = timezone.now()
    report = envelope.report_started or _process_start_reporter
    if report is not None:
        report(envelope.result_id, worker_id, started_at)
    return run_started_task(envelope, worker_id, started_at)


def run_started_task(
    envelope: Envelope, worker_id: str, started_at: datetime
) -> Outcome:
    """Run one task whose start has been reported already."""
    try:
        # As Django does around a request: drop connections that are past
        # CONN_MAX_AGE or broken before the task, and after it.
        close_old_connections()
        try:
            with bound_result_id(envelope.result_id):
                value = _call(envelope, worker_id, started_at)
            return_value = normalize(value)
        finally:
            close_old_connections()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:
        return Outcome(worker_id, started_at, timezone.now(), error=capture_error(exc))
    return Outcome(worker_id, started_at, timezone.now(), return_value)


def _call(envelope: Envelope, worker_id: str, started_at: datetime) -> Any:
    task = envelope.task
    if isinstance(task, TaskReference):
        task = task.resolve()
    if not task.takes_context:
        return task.call(*envelope.args, **envelope.kwargs)
    running = TaskResult(
        task=task,
        id=envelope.result_id,
        status=RUNNING,
        enqueued_at=envelope.enqueued_at,
        started_at=started_at,
        last_attempted_at=started_at,
        finished_at=None,
        args=envelope.args,
        kwargs=envelope.kwargs,
        backend=task.backend,
        errors=[],
        worker_ids=[worker_id],
    )
    return task.call(
        TaskContext(task_result=running), *envelope.args, **envelope.kwargs
    )
