"""What happens inside the worker: ``run_task``, the envelope it receives and the outcome it returns.

``run_task`` is a module-level function so that a process pool can pickle a
reference to it. It never raises: every outcome of the task, good or bad
(``KeyboardInterrupt`` and ``SystemExit`` included), comes back as an
``Outcome``. It knows nothing of the result store: the runtime applies the
outcome.
"""

from __future__ import annotations

import contextlib
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
from .exceptions import RemoteTaskError
from .results import normalize
from .states import RUNNING

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
    # The exception itself, for task_finished's receivers (Django's log line
    # reads sys.exc_info()). From another process, a copy without its
    # traceback, or None if it could not be pickled.
    exception: BaseException | None = field(default=None, compare=False)

    def __reduce__(self) -> tuple[Any, ...]:
        return (
            _rebuild_outcome,
            (
                self.worker_id,
                self.started_at,
                self.finished_at,
                self.return_value,
                self.error,
                None if self.exception is None else _pickle_or_none(self.exception),
            ),
        )

    def exception_in_hand(self) -> BaseException | None:
        """The exception to have in hand while task_finished is sent.

        One raised in another process (no traceback of its own here) carries
        the worker's traceback as its cause, as concurrent.futures does.
        """
        if self.error is None:
            return None
        exception = self.exception
        if exception is None:
            exception = RemoteTaskError(
                f"{self.error.exception_class_path} (the exception itself could "
                "not be sent from the worker process)"
            )
        if exception.__traceback__ is None and exception.__cause__ is None:
            exception.__cause__ = _RemoteTraceback(self.error.traceback)
        return exception


class _RemoteTraceback(Exception):
    def __init__(self, traceback: str) -> None:
        self.traceback = traceback

    def __str__(self) -> str:
        return f'\n"""\n{self.traceback}"""'


def _pickle_or_none(value: Any) -> bytes | None:
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None


def _rebuild_outcome(
    worker_id: str | None,
    started_at: datetime | None,
    finished_at: datetime,
    return_value: Any,
    error: TaskError | None,
    pickled_exception: bytes | None,
) -> Outcome:
    exception = None
    if pickled_exception is not None:
        # An exception class whose __init__ takes other arguments than it
        # passes to Exception cannot be rebuilt: the error strings remain.
        with contextlib.suppress(Exception):
            exception = pickle.loads(pickled_exception)
    return Outcome(worker_id, started_at, finished_at, return_value, error, exception)


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
        try:
            report(envelope.result_id, worker_id, started_at)
        except Exception as exc:
            # Its start could not be recorded (a durable store that refused
            # it, or could not be reached): the body does not run.
            return failed_outcome(exc)
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
            return_value = normalize(value, "the return value")
        finally:
            close_old_connections()
    except BaseException as exc:
        # KeyboardInterrupt and SystemExit too: raised by a task (signals
        # reach the main thread, never a worker), they are the task's errors.
        return failed_outcome(exc, worker_id, started_at)
    return Outcome(worker_id, started_at, timezone.now(), return_value)


def failed_outcome(
    exc: BaseException,
    worker_id: str | None = None,
    started_at: datetime | None = None,
) -> Outcome:
    """The outcome of a run that raised ``exc`` (or never started, with no worker)."""
    return Outcome(
        worker_id, started_at, timezone.now(), error=capture_error(exc), exception=exc
    )


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
