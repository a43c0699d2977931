"""Our backends as Django's ImmediateBackend tests expect to find them.

Django's tests/tasks/ name ``django.tasks.backends.immediate.ImmediateBackend``
in ``TASKS`` (class and method ``override_settings``, and inline ones).
``install()`` makes Django's backend handler build one of the classes below
instead whenever a setting names it, so the tests run unchanged.

ImmediateBackend runs a task inside ``enqueue()``; ours return a READY result
at once. The classes here wait, after each enqueue, for the result to finish
and return it as it then is, so a test reads the same finished result.
Inside ``transaction.atomic()`` (with ENQUEUE_ON_COMMIT on) the task only
starts at commit: there the READY result is returned without waiting.

The ``-database`` names run the same classes on the database store
(``OPTIONS`` ``STORE`` ``"database"``, on the ``tasks_store`` alias that
suite_settings defines for those runs): ``install()`` adds those options to
the settings of every swapped backend.
"""

from __future__ import annotations

import os
from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.tasks import Task, TaskBackendHandler, TaskResult

from django_tasks_local import ExecutorBackend, ProcessPoolBackend, ThreadPoolBackend

IMMEDIATE = "django.tasks.backends.immediate.ImmediateBackend"

# Seconds a test waits for one task: far above what any of Django's test
# tasks takes, so that a task that never finishes fails its test, not the run.
WAIT_TIMEOUT = float(os.environ.get("DJANGO_SUITE_WAIT_TIMEOUT", "30"))


class WaitingMixin:
    """``enqueue()`` returns the result once it has finished."""

    def enqueue(
        self, task: Task[..., Any], args: list[Any], kwargs: dict[str, Any]
    ) -> TaskResult[..., Any]:
        backend: Any = self
        result = super().enqueue(task, args, kwargs)  # type: ignore[misc]
        if _waits_for_commit(backend):
            return result
        return backend.wait_for_result(result.id, timeout=WAIT_TIMEOUT)


class WaitingThreadPoolBackend(WaitingMixin, ThreadPoolBackend):
    pass


class WaitingProcessPoolBackend(WaitingMixin, ProcessPoolBackend):
    pass


BACKENDS: dict[str, type[ExecutorBackend]] = {
    "thread": WaitingThreadPoolBackend,
    "process": WaitingProcessPoolBackend,
    "thread-database": WaitingThreadPoolBackend,
    "process-database": WaitingProcessPoolBackend,
}

#: The database alias of the database store (suite_settings.STORE_DATABASE).
STORE_DATABASE = "tasks_store"


def store_options(name: str) -> dict[str, Any]:
    """The OPTIONS that the backend ``name`` adds to each swapped backend's."""
    if name.endswith("-database"):
        return {"STORE": "database", "DATABASE": STORE_DATABASE}
    return {}


def _waits_for_commit(backend: Any) -> bool:
    """Whether this enqueue was held until the open transaction commits."""
    setting = getattr(backend, "settings", {}).get("ENQUEUE_ON_COMMIT", True)
    if setting is False:
        return False
    alias = DEFAULT_DB_ALIAS if setting is True else setting
    return bool(connections[alias].in_atomic_block)


def install(name: str) -> type[ExecutorBackend]:
    """Make every ``TASKS`` entry naming ImmediateBackend build ``BACKENDS[name]``."""
    backend_class = BACKENDS[name]
    extra_options = store_options(name)
    original = TaskBackendHandler.create_connection

    def create_connection(self: TaskBackendHandler, alias: str) -> Any:
        params = self.settings[alias]
        if params["BACKEND"] == IMMEDIATE:
            if extra_options:
                options = {**params.get("OPTIONS", {}), **extra_options}
                params = {**params, "OPTIONS": options}
            return backend_class(alias=alias, params=params)
        return original(self, alias)

    TaskBackendHandler.create_connection = create_connection  # type: ignore[method-assign]
    return backend_class
