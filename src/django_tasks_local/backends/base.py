"""The core backend: Django's task backend API on any ``concurrent.futures.Executor``."""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from concurrent.futures import Executor
from typing import Any, ClassVar, ParamSpec, TypeVar, cast

from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.db import DEFAULT_DB_ALIAS
from django.tasks import Task, TaskResult
from django.tasks.backends.base import BaseTaskBackend

from ..options import (
    Option,
    boolean_or_database,
    non_negative_number,
    optional_positive_int,
    parse_options,
    positive_int,
)
from ..runtime import Execution, Runtime, RuntimeConfig, runtime_for
from ..serialization import CopySerializer, Serializer

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
    # Results can be read from any thread of this process (never another one).
    supports_get_result = True
    # When every worker is busy, waiting tasks start highest priority first.
    supports_priority = True

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
    }

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.settings, self._option_errors = parse_options(
            alias, self.declared_options, self.options
        )
        if self.settings["MAX_WORKERS"] is None:
            self.settings["MAX_WORKERS"] = self.default_max_workers
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
        # Reading the store takes a lock for microseconds: no thread needed.
        return self.get_result(result_id)

    def wait_for_result(
        self, result_id: str, timeout: float | None = None
    ) -> TaskResult[..., Any]:
        """Block until the result has finished, and return it.

        Raises TimeoutError after ``timeout`` seconds, TaskResultDoesNotExist
        for an unknown (or evicted) id.
        """
        return self.runtime.wait_for_result(result_id, timeout)

    def wait_until_idle(self, timeout: float | None = None) -> None:
        """Block until no task is waiting or running (TimeoutError after ``timeout``)."""
        self.runtime.wait_until_idle(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Drop the waiting tasks; give running ones ``timeout`` seconds
        (default SHUTDOWN_TIMEOUT); stop the workers. The next enqueue starts
        fresh ones."""
        self.runtime.close(timeout)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        return [*super().check(**kwargs), *self._option_errors]


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
