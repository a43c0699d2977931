"""The core backend: Django's task backend API on any ``concurrent.futures.Executor``."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from functools import partial
from typing import Any, ClassVar, ParamSpec, TypeVar, cast

from asgiref.sync import sync_to_async
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS
from django.tasks import Task, TaskResult, task_backends
from django.tasks.backends.base import BaseTaskBackend

from ..options import (
    Option,
    boolean,
    boolean_or_database,
    callable_or_path,
    combination_error,
    exception_classes,
    finite_positive_number,
    non_negative_number,
    one_of,
    optional_positive_int,
    optional_positive_number,
    parse_options,
    positive_int,
    resolve,
    string,
)
from ..result_store import ResultStore
from ..retries import AttemptPolicy, default_backoff
from ..runtime import Execution, Runtime, RuntimeConfig, runtime_for
from ..serialization import CopySerializer, Serializer
from ..task_class import LocalTask

P = ParamSpec("P")
R = TypeVar("R")

#: Enqueues in a process whose tasks belong to another process (a worker
#: process of ProcessPoolBackend) go through this instead of the runtime.
EnqueueForwarder = Callable[
    ["ExecutorBackend", "Task[..., Any]", list[Any], dict[str, Any]],
    "TaskResult[..., Any]",
]
_forward_enqueue: EnqueueForwarder | None = None


def forward_enqueues(forwarder: EnqueueForwarder | None) -> None:
    """Have every enqueue in this process go through ``forwarder``, on every alias."""
    global _forward_enqueue
    _forward_enqueue = forwarder


class ExecutorBackend(BaseTaskBackend):
    """Runs tasks on an executor that a subclass supplies; keeps results in memory.

    A subclass supplies ``create_executor()`` and, when its workers run in other
    processes, ``serializer = PickleSerializer()``. Everything else (the result
    store, the state machine, the waiting line, signals, errors) is shared.
    """

    # run_after is honoured: the core's waiting line holds deferred tasks.
    supports_defer = True
    # async def tasks run on an event loop in the worker.
    supports_async_task = True
    # Results can be read from any thread of this process; with the database
    # store, from any process that shares the database.
    supports_get_result = True
    # When every worker is busy, waiting tasks start highest priority first.
    supports_priority = True
    # Results carry metadata, which a running task can save (as Django
    # proposes it: django/new-features#141).
    supports_metadata = True

    #: Tasks get retries, a timeout and metadata (``@task(max_attempts=...)``
    #: on Django 6.1, which passes the decorator's extra arguments here).
    task_class = LocalTask

    #: How tasks reach the workers: the task itself and copies of its
    #: arguments, for an executor in this process.
    serializer: ClassVar[Serializer] = CopySerializer()

    #: How the runtime hands tasks to the executor: one ``run_task`` call per
    #: task works with any executor; ``Execution.WORKER_LOOP`` is faster, for
    #: executors whose workers run in this process.
    execution: ClassVar[Execution] = Execution.CALL_PER_TASK

    #: The MAX_WORKERS used when OPTIONS do not set it.
    default_max_workers: ClassVar[int] = os.cpu_count() or 1

    #: The OPTIONS this backend accepts.
    declared_options: ClassVar[dict[str, Option]] = {
        "MAX_WORKERS": Option(
            default=None,
            validate=positive_int,
            help="How many tasks run at once (the size of the pool).",
        ),
        "MAX_RESULTS": Option(
            default=1000,
            validate=positive_int,
            help="How many finished results are kept before the oldest are evicted.",
        ),
        "MAX_WAITING": Option(
            # No bound by default, as in every Django backend; a waiting task
            # holds about 1.3 KB (its result and its envelope).
            default=None,
            validate=optional_positive_int,
            help=(
                "How many tasks may wait for a worker before enqueue() raises "
                "WaitingLineFull; None for no limit."
            ),
        ),
        "ENQUEUE_ON_COMMIT": Option(
            default=True,
            validate=boolean_or_database,
            help=(
                "Whether a task enqueued inside transaction.atomic() waits for "
                "the transaction to commit (and vanishes on rollback): True for "
                "the default database's transaction, a database alias for that "
                "database's, False to hand tasks to the workers at once."
            ),
        ),
        "SHUTDOWN_TIMEOUT": Option(
            # Long enough for a short task (an e-mail, a webhook) to finish;
            # well inside the grace a process manager gives before SIGKILL
            # (docker stop: 10 s; Kubernetes, gunicorn: 30 s; systemd: 90 s).
            default=5.0,
            validate=non_negative_number,
            help=(
                "Seconds that running tasks get to finish at close() and when "
                "the interpreter exits; tasks not started are dropped."
            ),
        ),
        "STORE": Option(
            default="memory",
            validate=one_of("memory", "database"),
            help=(
                "Where results are kept: 'memory' (this process only) or "
                "'database' (every process, and restarts; docs/durable-store.md)."
            ),
        ),
        "DATABASE": Option(
            default=DEFAULT_DB_ALIAS,
            validate=string,
            help="The database alias of the database store.",
        ),
        "RECOVERY_TIMEOUT": Option(
            default=30.0,
            validate=finite_positive_number,
            help=(
                "Seconds within which the tasks of a lost process are settled "
                "by another (database store)."
            ),
        ),
        "MAX_ATTEMPTS": Option(
            default=1,
            validate=positive_int,
            help="How many times a task is tried in all (1: no retries).",
        ),
        "BACKOFF": Option(
            default=default_backoff,
            validate=callable_or_path,
            help=(
                "backoff(exception, task_result): seconds until the next attempt, "
                "or None for no more (a callable, or its dotted path)."
            ),
        ),
        "RETRY_ON": Option(
            default=(Exception,),
            validate=exception_classes,
            help="The exception classes (or their dotted paths) that are retried.",
        ),
        "RETRY_CRASHED": Option(
            default=False,
            validate=boolean,
            help=(
                "Whether a task whose worker process crashed (or whose process "
                "was lost) is retried: it may have done its work already."
            ),
        ),
        "TIMEOUT": Option(
            default=None,
            validate=optional_positive_number,
            help=(
                "Seconds an attempt may run: past them its worker process is "
                "killed (a thread is abandoned) and it fails with TaskTimeout."
            ),
        ),
    }

    #: Settings the proposal for retries (django/new-features#142) puts
    #: beside BACKEND rather than in OPTIONS: read from either place.
    top_level_options: ClassVar[tuple[str, ...]] = ("MAX_ATTEMPTS", "BACKOFF")

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        given, twice = self.options, []
        top_level = {
            name: params[name] for name in self.top_level_options if name in params
        }
        if top_level and isinstance(given, dict):
            twice = [name for name in top_level if name in given]
            given = {**given, **top_level}
        self.settings, self._option_errors = parse_options(
            alias, self.declared_options, given
        )
        if self.settings["MAX_WORKERS"] is None:
            self.settings["MAX_WORKERS"] = self.default_max_workers
        for error in self._option_errors:
            for name in top_level:
                # Named where it was set.
                error.msg = error.msg.replace(
                    f"['OPTIONS'][{name!r}]", f"[{name!r}] (beside BACKEND)"
                )
        for name in twice:
            self._option_errors.append(
                combination_error(
                    alias,
                    f"{name} is set both in OPTIONS and beside BACKEND.",
                    "Set it in one place.",
                )
            )
        self._option_errors += self.check_option_combinations()
        self._runtime_key: Hashable = (type(self), alias, _freeze(params))

    def create_executor(self) -> Executor:
        """Return the executor that runs this backend's tasks."""
        raise NotImplementedError(
            f"{type(self).__qualname__} must define create_executor()."
        )

    def check_option_combinations(self) -> list[checks.CheckMessage]:
        """Errors for options that are valid one by one but not together."""
        return []

    @property
    def runtime(self) -> Runtime:
        """The state shared by every instance of this alias in this process."""
        if self._option_errors:
            error = self._option_errors[0]
            raise ImproperlyConfigured(f"{error.msg} {error.hint} ({error.id})")
        return runtime_for(self._runtime_key, self._runtime_config)

    def _runtime_config(self) -> RuntimeConfig:
        attempts = self._attempt_policy()
        return RuntimeConfig(
            alias=self.alias,
            sender=type(self),
            create_executor=self.create_executor,
            serializer=self.serializer,
            execution=self.execution,
            max_workers=self.settings["MAX_WORKERS"],
            max_results=self.settings["MAX_RESULTS"],
            max_waiting=self.settings["MAX_WAITING"],
            enqueue_on_commit=self.commit_database,
            shutdown_timeout=self.settings["SHUTDOWN_TIMEOUT"],
            # One policy for the runtime and its store (which retries a lost
            # process's tasks).
            create_store=partial(self._create_store, attempts),
            attempts=attempts,
        )

    def _attempt_policy(self) -> AttemptPolicy:
        return AttemptPolicy(
            max_attempts=self.settings["MAX_ATTEMPTS"],
            backoff=resolve(self.settings["BACKOFF"]),
            retry_on=resolve(self.settings["RETRY_ON"]),
            retry_crashed=self.settings["RETRY_CRASHED"],
            timeout=self.settings["TIMEOUT"],
        )

    def _create_store(self, attempts: AttemptPolicy) -> ResultStore:
        if self.settings["STORE"] == "memory":
            return ResultStore(self.settings["MAX_RESULTS"])
        from ..store_checks import check_database_store

        # Without the app or the database it cannot start at all; SQLite
        # settings that may fail under load (E006-E008) are the checks' to say.
        for error in check_database_store(self.alias, self.settings["DATABASE"]):
            if error.id in {"django_tasks_local.E004", "django_tasks_local.E005"}:
                raise ImproperlyConfigured(f"{error.msg} {error.hint} ({error.id})")
        from ..database_store import DatabaseStore

        return DatabaseStore(
            self.settings["MAX_RESULTS"],
            alias=self.alias,
            database=self.settings["DATABASE"],
            recovery_timeout=self.settings["RECOVERY_TIMEOUT"],
            attempts=attempts,
        )

    @property
    def commit_database(self) -> str | None:
        """The database whose transaction an enqueue waits for (None: none)."""
        enqueue_on_commit = self.settings["ENQUEUE_ON_COMMIT"]
        if enqueue_on_commit is True:
            return DEFAULT_DB_ALIAS
        if enqueue_on_commit is False:
            return None
        return cast(str, enqueue_on_commit)

    def enqueue(
        self,
        task: Task[P, R],
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> TaskResult[P, R]:
        """Enqueue ``task``; ``args`` and ``kwargs`` may be left out, as in django-tasks-local 2.0."""
        self.validate_task(task)
        args = [] if args is None else args
        kwargs = {} if kwargs is None else kwargs
        if _forward_enqueue is not None:
            return cast("TaskResult[P, R]", _forward_enqueue(self, task, args, kwargs))
        return cast("TaskResult[P, R]", self.runtime.enqueue(task, args, kwargs))

    def get_result(self, result_id: str) -> TaskResult[..., Any]:
        return self.runtime.get_result(result_id)

    async def aget_result(self, result_id: str) -> TaskResult[..., Any]:
        # Reading this process's results takes a lock for microseconds: no
        # thread needed. The database is read in a thread, as Django's ORM must.
        runtime = self.runtime
        copy = runtime.get_held(result_id)
        if copy is not None:
            return copy
        if runtime.shared:
            return await sync_to_async(runtime.load)(result_id)
        return runtime.load(result_id)

    def wait_for_result(
        self, result_id: str, timeout: float | None = None
    ) -> TaskResult[..., Any]:
        """Block until the result has finished, and return it.

        Raises TimeoutError after ``timeout`` seconds, TaskResultDoesNotExist
        for an unknown (or evicted) id.
        """
        return self.runtime.wait_for_result(result_id, timeout)

    def cancel(self, result_id: str) -> TaskResult[..., Any]:
        """Cancel a task, and return its result, FAILED with TaskCancelled.

        A task that has not started never will. A running one's worker
        process is killed; a running thread cannot be: its task sees
        ``context.is_cancelled``, and its result is final at once. A
        finished result is returned unchanged: there is nothing to cancel.
        Raises TaskResultDoesNotExist for an unknown id.
        """
        return self.runtime.cancel(result_id)

    async def acancel(self, result_id: str) -> TaskResult[..., Any]:
        """``cancel()``, for async code."""
        return await sync_to_async(self.cancel, thread_sensitive=False)(result_id)

    def wait_until_idle(self, timeout: float | None = None) -> None:
        """Block until no task is waiting or running (TimeoutError after ``timeout``)."""
        self.runtime.wait_until_idle(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drop the waiting tasks; give running ones ``timeout`` seconds
        (default SHUTDOWN_TIMEOUT); stop the workers. The next enqueue starts
        fresh ones."""
        self.runtime.close(timeout)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        messages = [*super().check(**kwargs), *self._option_errors]
        if self.settings["STORE"] == "database" and not self._option_errors:
            from ..store_checks import check_database_store

            messages += check_database_store(self.alias, self.settings["DATABASE"])
        return messages


def start_durable_backends() -> None:
    """Open the database store of every configured backend that has one.

    Called at a web process's first request: from then on it renews its
    lease, and takes over the tasks of processes that were lost or stopped.
    """
    for backend in task_backends.all():
        if isinstance(backend, ExecutorBackend) and (
            backend.settings["STORE"] == "database" and not backend._option_errors
        ):
            try:
                backend.runtime.open_store()
            except Exception:
                logging.getLogger("django_tasks_local").exception(
                    "Task backend %r could not open its database store.",
                    backend.alias,
                )


def _freeze(value: Any) -> Hashable:
    """A hashable stand-in for settings, equal for equal settings."""
    if isinstance(value, dict):
        return tuple(sorted((repr(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        items = [_freeze(item) for item in value]
        return tuple(
            sorted(items, key=repr) if isinstance(value, set | frozenset) else items
        )
    return repr(value)
