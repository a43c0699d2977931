"""What the benchmarks run: plain functions for the raw executors, and Tasks on them.

The functions stay plain (the Tasks are built beside them, not by decorating
them) so that a raw ProcessPoolExecutor can pickle them by name, and a worker
process of ours finds them by the Task's ``module_path``.
"""

import time

from django.tasks import task


def add(a, b):
    """The no-op task: two small arguments, and a result that proves it ran."""
    return a + b


def body_started():
    """When the body started, on the monotonic clock.

    On Linux ``perf_counter`` reads CLOCK_MONOTONIC, one clock for every
    process, so a worker process's reading compares with the parent's.
    """
    return time.perf_counter()


def burn(n):
    """CPU-bound pure Python: holds the GIL for as long as it runs."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


# How long save_progress runs on after its save: far longer than the save
# takes to reach the reader, so that what the reader sees is the save.
METADATA_HOLD = 0.05  # seconds


def save_progress(context):
    """Save the time of the save in the result's metadata, then run on a while."""
    context.metadata["saved_at"] = time.perf_counter()
    context.save_metadata()
    time.sleep(METADATA_HOLD)


add_task = task(add)
body_started_task = task(body_started)
burn_task = task(burn)
save_progress_task = task(takes_context=True)(save_progress)


# The database store section: a worker in another process (django-tasks-db's
# db_worker) imports a task by its module_path, so these are decorated in place.
@task
def add_by_path(a, b):
    return a + b


@task
def body_started_by_path():
    return time.perf_counter()


# Threads of the diagnostics wait on these (store_breakdown.py), by name.
EVENTS: dict = {}


@task
def wait_for_event(name):
    EVENTS[name].wait(60)
