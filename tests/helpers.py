"""Helpers shared by the test modules: waiting with a deadline, temporary aliases, the signal log."""

from __future__ import annotations

import itertools
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.tasks import TaskResult, task_backends
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.test import override_settings

#: Seconds a test waits for what should happen at once: a deadline, never
#: reached unless something is broken.
DEADLINE = 30.0

BACKENDS = {
    "threads": "django_tasks_local.ThreadPoolBackend",
    "processes": "django_tasks_local.ProcessPoolBackend",
}

_numbers = itertools.count()


def wait_until(
    condition: Callable[[], object],
    timeout: float = DEADLINE,
    message: str = "condition",
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{message} did not hold within {timeout}s")
        time.sleep(0.01)


def wait_until_running(backend: Any, result_id: str) -> None:
    """Wait until the task has started (``backend``: an alias or a backend)."""
    if isinstance(backend, str):
        backend = task_backends[backend]
    wait_until(
        lambda: backend.get_result(result_id).status == "RUNNING",
        message=f"task {result_id} running",
    )


def wait_until_finished(backend: Any, result_id: str) -> TaskResult:
    """Wait until the task has finished, by polling (not by the backend's own wait)."""
    if isinstance(backend, str):
        backend = task_backends[backend]
    wait_until(
        lambda: backend.get_result(result_id).is_finished,
        message=f"task {result_id} finished",
    )
    return backend.get_result(result_id)


@contextmanager
def temporary_alias(like: str, **options: Any) -> Iterator[str]:
    """A new alias with the backend of ``like`` and these OPTIONS added: a
    runtime of its own, closed after.

    ``like``: a key of BACKENDS, a backend's dotted path, or an alias of TASKS.
    """
    if like in BACKENDS:
        base: dict[str, Any] = {"BACKEND": BACKENDS[like]}
    elif "." in like:
        base = {"BACKEND": like}
    else:
        base = settings.TASKS[like]
    alias = f"temporary-{like.rpartition('.')[2]}-{next(_numbers)}"
    params = {
        "BACKEND": base["BACKEND"],
        "OPTIONS": {**base.get("OPTIONS", {}), **options},
    }
    with override_settings(TASKS={**settings.TASKS, alias: params}):
        try:
            yield alias
        finally:
            backend = task_backends[alias]
            # A backend configured wrongly (a test of that) has nothing to close.
            if not backend.check():
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
