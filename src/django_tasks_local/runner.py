"""What happens inside the worker: ``run_task``, the envelope it receives and the outcome it returns.

``run_task`` is a module-level function so that a process pool can pickle a
reference to it. It never raises: every outcome of the task, good or bad
(``KeyboardInterrupt`` and ``SystemExit`` included), comes back as an
``Outcome``. It knows nothing of the result store: the runtime applies the
outcome.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from traceback import format_exception
from typing import Any

from django.db import close_old_connections
from django.tasks import Task
from django.tasks.base import TaskError
from django.utils import timezone
from django.utils.module_loading import import_string

from .context import bound_result_id
from .exceptions import RemoteTaskError
from .results import copy_json, new_result, normalize, normalize_metadata
from .states import RUNNING
from .task_context import LocalTaskContext

logger = logging.getLogger("django_tasks_local")

#: Called in the worker when a task body is about to start:
#: ``report_started(result_id, worker_id, started_at)``. The runtime's own
#: (``Runtime.link``) also has ``save_metadata(result_id, attempt, metadata)``
#: and ``is_cancelled(result_id, attempt)``, for a worker in its process.
StartReporter = Callable[[str, str, datetime], None]

HOSTNAME = socket.gethostname()

# Set in a worker process by its pool, so that tasks arriving there (whose
# envelopes cannot carry a callback across the process boundary) can still
# report their start to the parent as it happens.
_process_start_reporter: StartReporter | None = None
# Likewise, how a task there saves its metadata: through the parent.
_process_metadata_saver: Callable[[str, str, int, dict[str, Any]], None] | None = None


def set_process_start_reporter(reporter: StartReporter | None) -> None:
    global _process_start_reporter
    _process_start_reporter = reporter


def set_process_metadata_saver(
    saver: Callable[[str, str, int, dict[str, Any]], None] | None,
) -> None:
    """``saver(alias, result_id, attempt, metadata)``, in a worker process."""
    global _process_metadata_saver
    _process_metadata_saver = saver


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
        # (override_settings, for one, never reaches a spawned child). Of
        # the module's task's class (LocalTask), with what it adds (retries,
        # timeout); its metadata went to the result at enqueue.
        task = object.__new__(type(target) if isinstance(target, Task) else Task)
        if isinstance(target, Task):
            for name in target.__dataclass_fields__:
                object.__setattr__(task, name, getattr(target, name))
        values = {
            "func": func,
            "priority": self.priority,
            "queue_name": self.queue_name,
            "backend": self.backend,
            "run_after": self.run_after,
            "takes_context": self.takes_context,
        }
        if hasattr(task, "metadata"):
            values["metadata"] = None
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
    # What the earlier attempts left, for the running task's context: its
    # workers (this attempt is the next), its errors, and its metadata.
    worker_ids: list[str] = field(default_factory=list)
    errors: list[TaskError] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

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
                None,
                self.worker_ids,
                self.errors,
                self.metadata,
            ),
        )

    @property
    def attempt(self) -> int:
        """Which attempt this envelope runs: 1 for the first."""
        return len(self.worker_ids) + 1


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
    # The task's metadata as it left it, if it changed it; else None.
    metadata: dict[str, Any] | None = None

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
                self.metadata,
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
    metadata: dict[str, Any] | None,
) -> Outcome:
    exception = None
    if pickled_exception is not None:
        # An exception class whose __init__ takes other arguments than it
        # passes to Exception cannot be rebuilt: the error strings remain.
        with contextlib.suppress(Exception):
            exception = pickle.loads(pickled_exception)
    return Outcome(
        worker_id, started_at, finished_at, return_value, error, exception, metadata
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
    # The task's own copy of its metadata (context.metadata), if it takes
    # a context: what it leaves there is saved with its end.
    metadata: dict[str, Any] | None = None
    try:
        # As Django does around a request: drop connections that are past
        # CONN_MAX_AGE or broken before the task, and after it.
        close_old_connections()
        try:
            with bound_result_id(envelope.result_id):
                task = envelope.task
                if isinstance(task, TaskReference):
                    task = task.resolve()
                if task.takes_context:
                    metadata = copy_json(envelope.metadata)
                    context = _context(envelope, task, worker_id, started_at, metadata)
                    value = task.call(context, *envelope.args, **envelope.kwargs)
                else:
                    value = task.call(*envelope.args, **envelope.kwargs)
            return_value = normalize(value, "the return value")
        finally:
            close_old_connections()
    except BaseException as exc:
        # KeyboardInterrupt and SystemExit too: raised by a task (signals
        # reach the main thread, never a worker), they are the task's errors.
        outcome = failed_outcome(exc, worker_id, started_at)
        return _with_metadata(outcome, envelope, metadata)
    outcome = Outcome(worker_id, started_at, timezone.now(), return_value)
    return _with_metadata(outcome, envelope, metadata)


def _with_metadata(
    outcome: Outcome, envelope: Envelope, metadata: dict[str, Any] | None
) -> Outcome:
    """The outcome, with the task's metadata if it changed it."""
    if metadata is None or metadata == envelope.metadata:
        return outcome
    try:
        saved = normalize_metadata(metadata, "context.metadata")
    except (TypeError, ValueError) as exc:
        # The body's own outcome stands; its last save_metadata() (if any)
        # is what the result keeps.
        logger.error("Task %s: its metadata was not saved: %s", envelope.result_id, exc)
        return outcome
    return replace(outcome, metadata=saved)


def failed_outcome(
    exc: BaseException,
    worker_id: str | None = None,
    started_at: datetime | None = None,
) -> Outcome:
    """The outcome of a run that raised ``exc`` (or never started, with no worker)."""
    return Outcome(
        worker_id, started_at, timezone.now(), error=capture_error(exc), exception=exc
    )


def _context(
    envelope: Envelope,
    task: Task[..., Any],
    worker_id: str,
    started_at: datetime,
    metadata: dict[str, Any],
) -> LocalTaskContext:
    running = new_result(
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
        errors=list(envelope.errors),
        worker_ids=[*envelope.worker_ids, worker_id],
        metadata=metadata,
    )
    link = envelope.report_started
    result_id, attempt = envelope.result_id, envelope.attempt
    save_metadata = getattr(link, "save_metadata", None)
    save: Callable[[dict[str, Any]], None]
    if save_metadata is not None:
        save = partial(save_metadata, result_id, attempt)
    elif _process_metadata_saver is not None:
        save = partial(_process_metadata_saver, task.backend, result_id, attempt)
    else:
        save = _cannot_save
    is_cancelled = getattr(link, "is_cancelled", None)
    cancelled = (
        partial(is_cancelled, result_id, attempt)
        if is_cancelled is not None
        else _never
    )
    return LocalTaskContext(task_result=running, saver=save, cancelled=cancelled)


_warned_cannot_save = False


def _cannot_save(metadata: dict[str, Any]) -> None:
    """A worker with no way back to the process that holds the result (a
    custom executor's worker process: loky, Dask, the stdlib pools): the
    metadata goes with the task's end instead. Said once per process."""
    global _warned_cannot_save
    if not _warned_cannot_save:
        _warned_cannot_save = True
        logger.warning(
            "save_metadata() does nothing in this worker process: its executor "
            "has no channel back to the process that holds the result. The "
            "task's metadata is saved with its end."
        )


def _never() -> bool:
    return False
