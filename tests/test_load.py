"""Load: many tasks from many threads at once; none lost, all right, memory flat."""

from __future__ import annotations

import logging
import os
import threading
from contextlib import suppress
from pathlib import Path
from statistics import median

import pytest
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.tasks.signals import task_finished

from tests.helpers import temporary_alias
from tests.tasks import square

PRODUCERS = 16
MAX_RESULTS = 100
# Tasks waiting or running at most: producers block beyond it, so the run
# reaches a steady state whose memory can be compared from start to end.
BACKLOG = 2_000
# How much the resident memory of the last third of the run may exceed that
# of the first third. Keeping every result (no MAX_RESULTS) grows it by
# about 1 KiB a task: over 60 MiB for 100,000 tasks.
MEMORY_SLACK = 24 * 2**20

STATM = Path("/proc/self/statm")


def resident_bytes():
    return int(STATM.read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(autouse=True)
def _quiet_task_logs():
    """Django logs every task's start and end at INFO: 200,000 records that
    pytest would keep in memory (distorting the measure) for no one to read."""
    logger = logging.getLogger("django.tasks")
    level = logger.level
    logger.setLevel(logging.WARNING)
    yield
    logger.setLevel(level)


def run_load(kind, total, max_workers):
    seen = bytearray(total)  # how many times each task finished
    # Each task's result id (32 hex digits), as 16 bytes at 16 * n: made
    # before the run, so that keeping them does not grow the memory measured.
    ids = bytearray(16 * total)
    wrong = []  # (n, what it returned), for any wrong return value
    samples = []  # resident memory, every 1% of the tasks
    room = threading.BoundedSemaphore(BACKLOG)
    every = total // 100

    # MAX_WORKERS and MAX_RESULTS replace those of the alias ``kind``.
    with temporary_alias(
        kind, MAX_WORKERS=max_workers, MAX_RESULTS=MAX_RESULTS
    ) as alias:

        def on_finished(sender, task_result, **kwargs):
            if task_result.backend != alias:
                return
            (n,) = task_result.args
            seen[n] += 1
            ids[16 * n : 16 * (n + 1)] = bytes.fromhex(task_result.id)
            if task_result.status != TaskResultStatus.SUCCESSFUL or (
                task_result.return_value != n * n
            ):
                wrong.append((n, task_result.status))
            if n % every == 0:
                samples.append(resident_bytes())
            room.release()

        task_finished.connect(on_finished, weak=False)
        try:
            target = square.using(backend=alias)
            stalled = []

            def produce(start):
                for n in range(start, total, PRODUCERS):
                    # Room comes back as tasks finish: none does for a minute,
                    # and tasks were lost (or the workers are stuck).
                    if not room.acquire(timeout=60):
                        stalled.append(n)
                        return
                    target.enqueue(n)

            producers = [
                threading.Thread(target=produce, args=(start,))
                for start in range(PRODUCERS)
            ]
            for producer in producers:
                producer.start()
            for producer in producers:
                producer.join()
            backend = task_backends[alias]
            # Idle: nothing unfinished is left, waiting or running.
            backend.wait_until_idle(timeout=300)
        finally:
            task_finished.disconnect(on_finished)

        # None lost, none twice, every return value right.
        assert not stalled
        assert not wrong
        assert seen.count(1) == total
        # The store kept only MAX_RESULTS of them, all finished and right,
        # and the newest: a producer's first task is long gone.
        stored = {}
        for n in range(total):
            result_id = ids[16 * n : 16 * (n + 1)].hex()
            with suppress(TaskResultDoesNotExist):
                stored[n] = backend.get_result(result_id)
        assert len(stored) == MAX_RESULTS
        for n, result in stored.items():
            assert result.status == TaskResultStatus.SUCCESSFUL
            assert result.return_value == n * n
        assert not set(range(PRODUCERS)) & set(stored)

    third = len(samples) // 3
    first, last = median(samples[:third]), median(samples[-third:])
    assert last - first < MEMORY_SLACK, (
        f"resident memory grew from {first / 2**20:.1f} MiB to {last / 2**20:.1f} MiB"
    )


pytestmark = [
    pytest.mark.slow,
    # Well beyond the usual run (under a minute each on 2 busy cores).
    pytest.mark.timeout(600),
    pytest.mark.skipif(not STATM.exists(), reason="measures memory through /proc"),
]


def test_100_000_tasks_from_16_threads_on_the_thread_backend():
    run_load("threads", 100_000, max_workers=4)


def test_20_000_tasks_from_16_threads_on_the_process_backend():
    run_load("processes", 20_000, max_workers=2)
