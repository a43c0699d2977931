"""What ProcessPoolBackend adds to the process pool: Django in each worker, and tasks that enqueue tasks.

In a worker process, ``set_up`` (the pool's initializer) sets Django up, has
each task report its start to the parent, and forwards every enqueue to the
parent. In the web process, ``answer`` (the pool's request handler) enqueues a
forwarded task on that process's backend, which runs it and keeps its result.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.tasks import Task, TaskResult
from django.utils import timezone

from .. import runner
from ..executors import processes
from ..result_ids import new_result_id
from ..results import ready_result
from ..runner import Envelope, TaskReference
from ..runtime import open_transaction
from . import base

# Connections inherited through fork belong to the parent: a child must never
# close them (closing sends the server a goodbye on the parent's socket), and
# must not let them be garbage-collected either, which closes them too.
_inherited_connections: list[Any] = []


def set_up() -> None:
    """In a new worker process: start reports, enqueues to the parent, Django."""
    runner.set_process_start_reporter(processes.report_started)
    runner.set_process_metadata_saver(_save_metadata_in_parent)
    # Before Django: an AppConfig.ready() may enqueue (or start a scheduler
    # that does) while django.setup() runs.
    base.forward_enqueues(_enqueue_in_parent)
    _prepare_django()


def answer(request: tuple[Any, ...]) -> Any:
    """In the web process: what a worker's task asks of ``alias``'s backend:
    run a task it enqueued, or keep the metadata it saved."""
    kind, alias = request[0], request[1]
    from django.tasks import task_backends

    backend = task_backends[alias]
    if not isinstance(backend, base.ExecutorBackend):
        raise TypeError(
            f"Task backend {alias!r} is not a django-tasks-local backend here."
        )
    if kind == "metadata":
        _, _, result_id, attempt, metadata = request
        backend.runtime.save_metadata(result_id, attempt, metadata)
        return None
    envelope = request[2]
    task = envelope.task
    if isinstance(task, TaskReference):
        task = task.resolve()
    backend.validate_task(task)
    result = backend.runtime.enqueue(
        task, envelope.args, envelope.kwargs, result_id=envelope.result_id
    )
    return result.enqueued_at


def _save_metadata_in_parent(
    alias: str, result_id: str, attempt: int, metadata: dict[str, Any]
) -> None:
    """``context.save_metadata()`` in a worker process: kept by the parent,
    which holds the result."""
    processes.ask_parent(("metadata", alias, result_id, attempt, metadata))


def _enqueue_in_parent(
    backend: base.ExecutorBackend,
    task: Task[..., Any],
    args: list[Any],
    kwargs: dict[str, Any],
) -> TaskResult[..., Any]:
    """Enqueue from a worker process: the parent's backend runs and stores the task.

    Inside ``transaction.atomic()`` on the backend's commit database, the task
    reaches the parent when the transaction commits, and never if it rolls back.
    """
    result_id = new_result_id()
    # Normalized here, before any commit hook: a bad argument raises in the
    # task that enqueued it, as it would in the parent.
    ready = ready_result(task, result_id, backend.alias, args, kwargs, timezone.now())
    envelope = Envelope(
        result_id,
        TaskReference.from_task(task),
        ready.args,
        ready.kwargs,
        ready.enqueued_at,
    )
    request = ("enqueue", backend.alias, envelope)
    connection = open_transaction(backend.commit_database)
    if connection is not None:
        connection.on_commit(lambda: processes.ask_parent(request))
        return ready
    enqueued_at = processes.ask_parent(request)
    return ready_result(task, result_id, backend.alias, args, kwargs, enqueued_at)


def _require_settings() -> None:
    """Say why a worker that starts afresh has no settings, and what to do.

    The web process cannot tell beforehand: a script that configures its
    settings at the top (not under ``if __name__ == "__main__"``) does so
    again in a spawned worker, which imports it.
    """
    from django.conf import ENVIRONMENT_VARIABLE, settings

    if settings.configured or os.environ.get(ENVIRONMENT_VARIABLE):
        return
    raise ImproperlyConfigured(
        "A worker process that starts afresh (MP_CONTEXT 'spawn' or "
        "'forkserver') has no Django settings: DJANGO_SETTINGS_MODULE is not "
        "set, and settings.configure() in the web process does not reach it. "
        "Set DJANGO_SETTINGS_MODULE to your settings module, or use "
        "MP_CONTEXT 'fork', whose workers copy the settings of the web process."
    )


def _prepare_django() -> None:
    """Set Django up in a new child; in a forked one, let go of the parent's connections."""
    import django
    from django.apps import apps
    from django.db import connections

    if not apps.ready:
        _require_settings()
        django.setup()
        return
    _inherited_connections.extend(connections.all(initialized_only=True))
    from asgiref.local import Local

    connections._connections = Local(connections.thread_critical)  # type: ignore[attr-defined]
