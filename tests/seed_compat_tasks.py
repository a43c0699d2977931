"""Tasks for tests/test_seed_compat.py (worker processes import them from here).

Written as code against django-tasks-local 2.0's documentation writes them:
plain module-level functions, some with no arguments at all.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.tasks import task

from django_tasks_local import current_result_id

# A held task gives up after this long, so a failing test ends instead of
# leaving a worker blocked for ever.
DEADLINE = 60.0


@task
def answer():
    return 42


@task
def add(a, b):
    return a + b


@task
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@task
def own_result_id():
    return current_result_id.get()


@task
def worker_pid():
    return os.getpid()


@task
def hold(release_path):
    """Run until the test creates ``release_path`` (a file: it works across processes)."""
    release = Path(release_path)
    deadline = time.monotonic() + DEADLINE
    while not release.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{release_path} did not appear within {DEADLINE}s")
        time.sleep(0.01)
    return release.name
