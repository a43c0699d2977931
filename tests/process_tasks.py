"""Tasks and plain functions for the ProcessPool and ProcessPoolBackend tests.

Worker processes import this module by path, so everything here is module
level. It imports a model at the top, as a real project's task module does:
a spawned worker must have run django.setup() before it can import it.
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from pathlib import Path

from django.db import connections, transaction
from django.tasks import task

from tests.models import Record

# Tasks wait on files the test creates; a generous deadline so a failing test
# ends instead of leaving a worker blocked for ever.
DEADLINE = 60.0

# A module global that tasks change in their worker process.
STATE: dict[str, object] = {}


def wait_for_path(path: str, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)


# -- tasks -----------------------------------------------------------------


@task
def pid() -> int:
    return os.getpid()


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def block_until(path: str) -> int:
    """Run until the test creates ``path``; return this worker's pid."""
    wait_for_path(path)
    return os.getpid()


@task
def exit_hard(code: int) -> None:
    os._exit(code)


@task
def segfault() -> None:
    ctypes.string_at(0)


@task
def overrun(halfway_path: str, halfway: float) -> None:
    """Work for ``halfway`` seconds, say so by creating ``halfway_path``, go on for ever."""
    time.sleep(halfway)
    Path(halfway_path).touch()
    time.sleep(DEADLINE)


@task
def wait_until_gone(other_pid: int) -> bool:
    """Run until the process ``other_pid`` no longer exists."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        try:
            os.kill(other_pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    raise TimeoutError(f"process {other_pid} still exists")


@task
def orm_roundtrip(label: str) -> dict[str, object]:
    """Write a row and read every row back, on the default (SQLite) database."""
    Record.objects.create(label=label, value=os.getpid())
    return {
        "labels": sorted(Record.objects.values_list("label", flat=True)),
        "in_atomic_block": connections["default"].in_atomic_block,
    }


@task
def count_records(label: str) -> int:
    return Record.objects.filter(label=label).count()


@task
def postgres_backend_pid() -> int:
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@task
def swap_global(key: str, value: str) -> object:
    """Set STATE[key] in this worker; return what it was here before."""
    before = STATE.get(key)
    STATE[key] = value
    return before


@task
def enqueue_add(alias: str, a: int, b: int) -> dict[str, object]:
    """Enqueue a task from inside a task."""
    result = add.using(backend=alias).enqueue(a, b)
    return {"id": result.id, "status": result.status, "backend": result.backend}


@task
def enqueue_in_transaction(alias: str, label: str, commit: bool) -> str:
    """Save a row and enqueue a task reading it, in one transaction; roll back unless ``commit``."""
    enqueued = []

    class RollBack(Exception):
        pass

    try:
        with transaction.atomic():
            Record.objects.create(label=label)
            enqueued.append(count_records.using(backend=alias).enqueue(label))
            if not commit:
                raise RollBack
    except RollBack:
        pass
    return enqueued[0].id


# -- plain functions for ProcessPool itself ----------------------------------


def plain_pid() -> int:
    return os.getpid()


def plain_block_until(path: str) -> int:
    wait_for_path(path)
    return os.getpid()


def plain_exit_hard(code: int) -> None:
    os._exit(code)


def unpicklable_result() -> object:
    return threading.Lock()


def touch_then_exit_hard(path: str) -> None:
    """Leave a mark per attempt (the file grows by a line), then die."""
    with open(path, "a") as marks:
        marks.write("attempt\n")
    os._exit(5)


def plain_mark_then_block(mark: str, path: str) -> int:
    Path(mark).touch()
    return plain_block_until(path)
