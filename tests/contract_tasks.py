"""Tasks for the contract tests, and the helpers those tests share.

Worker processes import the tasks from here by path, so they are module-level
and plain ``@task`` (default alias); a test picks its backend with
``.using(backend=alias)``.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from django.conf import settings
from django.tasks import TaskResult, task, task_backends
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.test import override_settings
from django.utils import timezone

from django_tasks_local import ExecutorBackend, current_result_id

#: Generous: the machine is small and shared.
DEADLINE = 60.0

# -- tasks -------------------------------------------------------------------


@task
def noop():
    return None


@task
def argument_types(*args, **kwargs):
    """The types the task body received, by name."""
    return {
        "args": [type(value).__name__ for value in args],
        "kwargs": {name: type(value).__name__ for name, value in kwargs.items()},
    }


@task
def mutate_arguments(items, mapping):
    items.append("added by the task")
    mapping["added"] = "by the task"
    return [items, mapping]


@task
def nested_tuple():
    return (1, (2, 3), {"key": (4,)})


@task
def nested_dict():
    return {"items": [1, 2], "inner": {"key": "value"}}


@task
def return_datetime():
    return timezone.now()


@task
def return_object():
    return object()


@task
def return_unpicklable_str():
    """A str subclass survives normalize_json but cannot be pickled back."""

    class Label(str):
        pass

    return Label("made in the worker")


@task
def raise_value_error(message):
    raise ValueError(message)


@task
def raise_system_exit():
    raise SystemExit(3)


@task
def raise_keyboard_interrupt():
    raise KeyboardInterrupt


@task
async def async_own_result_id():
    return current_result_id.get()


@task
def block(directory, name):
    """Say "started" with a file, then hold a worker until a release file appears."""
    folder = Path(directory)
    (folder / f"{name}.started").write_text(timezone.now().isoformat())
    release = folder / "release"
    deadline = time.monotonic() + DEADLINE
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release} never appeared.")
        time.sleep(0.01)
    return name


@task
def own_result_id():
    return current_result_id.get()


@task
def result_id_in_a_thread():
    """What a thread started by the task sees, given a copy of the task's context."""
    seen = []
    context = contextvars.copy_context()
    thread = threading.Thread(
        target=context.run, args=(lambda: seen.append(current_result_id.get()),)
    )
    thread.start()
    thread.join()
    return seen


@task(takes_context=True)
def context_of_task(context, value):
    result = context.task_result
    return {
        "id": result.id,
        "attempt": context.attempt,
        "status": result.status,
        "worker_ids": result.worker_ids,
        "value": value,
    }


# -- helpers for the tests -----------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"Still not true after {timeout}s: {predicate}")
        time.sleep(0.01)


@contextmanager
def temporary_alias(name: str, like: str, **options: Any) -> Iterator[ExecutorBackend]:
    """A TASKS alias with the backend of ``like`` and these OPTIONS, closed on exit."""
    base = settings.TASKS[like]
    params = {
        "BACKEND": base["BACKEND"],
        "OPTIONS": {**base.get("OPTIONS", {}), **options},
    }
    with override_settings(TASKS={**settings.TASKS, name: params}):
        backend = task_backends[name]
        try:
            yield backend
        finally:
            backend.close(timeout=DEADLINE)


class SignalLog:
    """Records the three task signals, by result id, as the receivers saw them."""

    signals = {
        "enqueued": task_enqueued,
        "started": task_started,
        "finished": task_finished,
    }

    def __init__(self) -> None:
        # result id -> [(signal name, status, the result sent, sender)], in order sent
        self.by_id: dict[str, list[tuple[str, str, TaskResult, type]]] = defaultdict(
            list
        )
        self._lock = threading.Lock()
        self._receivers = {name: self._receiver(name) for name in self.signals}

    def _receiver(self, name: str) -> Callable[..., None]:
        def receive(sender: type, task_result: TaskResult, **kwargs: Any) -> None:
            with self._lock:
                entry = (name, task_result.status, task_result, sender)
                self.by_id[task_result.id].append(entry)

        return receive

    def sent(self, result_id: str) -> list[tuple[str, str]]:
        """(signal name, status of the result sent) in the order they were sent."""
        with self._lock:
            return [(name, status) for name, status, _, _ in self.by_id[result_id]]

    def results(self, result_id: str, name: str) -> list[TaskResult]:
        with self._lock:
            return [
                result for sent, _, result, _ in self.by_id[result_id] if sent == name
            ]

    def senders(self, result_id: str) -> set[type]:
        with self._lock:
            return {sender for *_, sender in self.by_id[result_id]}

    def __enter__(self) -> SignalLog:
        for name, signal in self.signals.items():
            signal.connect(self._receivers[name], weak=False)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for name, signal in self.signals.items():
            signal.disconnect(self._receivers[name])
