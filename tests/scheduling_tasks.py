"""Tasks for the scheduling tests and docs/scheduling.md (worker processes import them from here)."""

import asyncio
import threading
import time
from pathlib import Path

from django.tasks import task

from django_tasks_local import current_result_id
from tests.models import Record


@task
def wait_for_file(path, timeout=60):
    """Hold a worker until ``path`` exists: a gate that a test opens from any process."""
    deadline = time.monotonic() + timeout
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {timeout}s.")
        time.sleep(0.01)
    return path


@task
def log_label(path, label):
    """Append ``label`` to the file at ``path``: an order log across processes."""
    with open(path, "a") as log:
        log.write(f"{label}\n")
    return label


# --8<-- [start:docs]
# In memory: these examples use the thread backend.
NOTES = []  # what ran, in order
PERMITS = threading.Semaphore(0)  # each one lets a hold_worker task finish


@task
def hold_worker():
    if not PERMITS.acquire(timeout=60):
        raise TimeoutError("No permit came.")


@task
def note(label):
    NOTES.append(label)
    return label


@task
def stamp():
    """The time (POSIX seconds) at which the task body ran."""
    return time.time()


@task
def square(number):
    return number * number


@task
def read_record(label, using="default"):
    """The value of the Record with ``label``, or None when the task cannot see it."""
    record = Record.objects.using(using).filter(label=label).first()
    return None if record is None else record.value


@task
async def greet(name):
    await asyncio.sleep(0.01)  # e.g. an HTTP call with an async client
    return f"Hello, {name}! (result {current_result_id.get()})"


# --8<-- [end:docs]


@task
async def async_identity():
    # Awaits something real, so the body truly runs on a running event loop.
    await asyncio.sleep(0)
    return current_result_id.get()


@task(takes_context=True)
async def async_with_context(context, value):
    await asyncio.sleep(0)
    return {
        "context_id": context.task_result.id,
        "current_id": current_result_id.get(),
        "attempt": context.attempt,
        "value": value,
    }
