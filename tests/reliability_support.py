"""Helpers for the reliability tests: a backend alias of its own per test."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.conf import settings
from django.tasks import task_backends
from django.test import override_settings

from django_tasks_local import ThreadPoolBackend
from django_tasks_local.executors.threads import ThreadPool

BACKENDS = {
    "threads": "django_tasks_local.ThreadPoolBackend",
    "processes": "django_tasks_local.ProcessPoolBackend",
}

_numbers = itertools.count()


class _UnstoppablePool(ThreadPool):
    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        raise RuntimeError("this executor cannot shut down")


class BrokenShutdownBackend(ThreadPoolBackend):
    """A backend whose executor raises on shutdown (for the exit tests)."""

    def create_executor(self) -> ThreadPool:
        return _UnstoppablePool(1)


@contextmanager
def own_backend(kind: str, **options: Any) -> Iterator[str]:
    """A new alias (so a runtime of its own, which the test may close), closed after."""
    alias = f"reliability-{kind}-{next(_numbers)}"
    tasks = {**settings.TASKS, alias: {"BACKEND": BACKENDS[kind], "OPTIONS": options}}
    with override_settings(TASKS=tasks):
        try:
            yield alias
        finally:
            backend = task_backends[alias]
            # A backend configured wrongly (a test of that) has nothing to close.
            if not backend.check():
                backend.close(timeout=30)


def wait_until(
    condition: Any, timeout: float = 30.0, message: str = "condition"
) -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{message} did not hold within {timeout}s")
        time.sleep(0.02)


def wait_until_running(alias: str, result_id: str) -> None:
    backend = task_backends[alias]
    wait_until(
        lambda: backend.get_result(result_id).status == "RUNNING",
        message=f"task {result_id} running",
    )
