"""The demo's tasks: one I/O-bound, one CPU-bound, one that can fail.

Each keeps its progress in its result's metadata (``report_progress``), where
the status view reads it back from the backend. The process pool's workers
(and db_worker) import this module by its path, ``jobs.tasks``.
"""

import time

from django.tasks import TaskContext, task

from django_tasks_local import LocalTaskContext


def report_progress(context: TaskContext, done: int, total: int) -> None:
    """Save how far the task is, for ``get_result(id).metadata`` to read now.

    Only django-tasks-local's backends give a context with metadata. Under
    ImmediateBackend and django-tasks-db, Django's plain ``TaskContext`` has
    nowhere to keep it: the task runs the same, and the page shows no numbers.
    """
    if isinstance(context, LocalTaskContext):
        context.metadata["progress"] = {"done": done, "total": total}
        context.save_metadata()


@task(backend="io", takes_context=True)
def fetch_pages(
    context: TaskContext, pages: int, seconds_per_page: float = 0.2
) -> dict:
    """Download some pages: mostly waiting, the work a thread pool suits."""
    size = 0
    for page in range(1, pages + 1):
        time.sleep(seconds_per_page)  # Stands for the wait on the network.
        size += 2_000 + page * 37 % 1_000
        report_progress(context, page, pages)
    return {"pages": pages, "bytes": size}


@task(backend="cpu", takes_context=True)
def count_primes(context: TaskContext, limit: int) -> dict:
    """Count the primes below ``limit`` the slow way: CPU work, for a process pool."""
    every = max(limit // 50, 1)
    found = 0
    for number in range(limit):
        found += is_prime(number)
        if number % every == 0:
            report_progress(context, number, limit)
    report_progress(context, limit, limit)
    return {"limit": limit, "primes": found}


@task(backend="io", takes_context=True)
def add_up_records(
    context: TaskContext, records: list[str], seconds_per_record: float = 0.2
) -> int:
    """Read and add up numbers; a record that is not one fails the job.

    The progress saved before the failure stays with the failed result.
    """
    total = 0
    for done, record in enumerate(records, start=1):
        time.sleep(seconds_per_record)  # Stands for reading the record.
        total += int(record)
        report_progress(context, done, len(records))
    return total


def is_prime(number: int) -> bool:
    if number < 2:
        return False
    divisor = 2
    while divisor * divisor <= number:
        if number % divisor == 0:
            return False
        divisor += 1
    return True
