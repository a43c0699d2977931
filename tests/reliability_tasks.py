"""Tasks for the reliability tests: faults, shutdown, load, connections, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

from django.db import connections
from django.tasks import task

# Set by `hang` when it starts (in the process that runs it).
hang_started = threading.Event()
# Never set: what `hang` waits on.
_forever = threading.Event()


@task
def square(n):
    return n * n


@task
def hang():
    """A task that never ends by itself."""
    hang_started.set()
    _forever.wait()


@task
def hang_then_write(path):
    """Writes ``path`` once started, then never ends."""
    Path(path).write_text("started")
    _forever.wait()


@task
def finish_in(seconds, path):
    """Writes ``path``.started, runs ``seconds`` (a stand-in for work), writes ``path``."""
    Path(path).with_suffix(".started").write_text("started")
    threading.Event().wait(seconds)
    Path(path).write_text("finished")
    return "finished"


@task
def raise_in_finally():
    try:
        return "never seen"
    finally:
        raise RuntimeError("raised inside finally")


@task
def return_unnormalizable():
    return threading.Lock()


@task
def return_set():
    return {1, 2}


@task
def postgres_backend_pid():
    """The server pid of this worker's connection to the ``postgres`` alias."""
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]
