"""Every task the tests enqueue, and the plain functions they hand to executors.

Worker processes import them from here by path (``tests.tasks.add``), so
everything is module level and plain ``@task`` (the default alias): a test
picks its backend with ``.using(backend=alias)``. The module imports a model
at the top, as a real project's task module does: a spawned worker must have
set Django up before it can import it.

docs/scheduling.md shows the section between the ``--8<--`` markers.
"""

from __future__ import annotations

import asyncio
import builtins
import contextvars
import ctypes
import os
import re
import signal
import threading
import time
from pathlib import Path

from django.db import connections, transaction
from django.db.models import F
from django.tasks import task
from django.utils import timezone

from django_tasks_local import LocalTask, current_result_id
from django_tasks_local.executors.processes import ask_parent
from tests.models import Record

# A task held until a test lets it go gives up after this long, so that a
# failing test ends instead of leaving a worker blocked for ever.
GIVE_UP = 60.0

# A module global that tasks change in their worker process.
STATE: dict[str, object] = {}


def _wait_for_path(path: str) -> None:
    deadline = time.monotonic() + GIVE_UP
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} did not appear within {GIVE_UP}s")
        time.sleep(0.01)


# -- return values -----------------------------------------------------------


@task
def noop():
    return None


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
def return_unnormalizable():
    """Not JSON, and not picklable either."""
    return threading.Lock()


@task
def return_set():
    return {1, 2}


@task
def return_unpicklable_str():
    """A str subclass survives normalize_json but cannot be pickled back."""

    class Label(str):
        pass

    return Label("made in the worker")


# -- exceptions --------------------------------------------------------------


@task
def raise_value_error(message="boom"):
    raise ValueError(message)


@task
def raise_system_exit():
    raise SystemExit(3)


@task
def raise_keyboard_interrupt():
    raise KeyboardInterrupt


@task
def raise_in_finally():
    try:
        return "never seen"
    finally:
        raise RuntimeError("raised inside finally")


# -- what a task knows of itself ---------------------------------------------


@task
def own_result_id():
    return current_result_id.get()


@task
async def async_own_result_id():
    # Awaits something real, so the body truly runs on a running event loop.
    await asyncio.sleep(0)
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


@task(takes_context=True)
async def async_with_context(context, value):
    await asyncio.sleep(0)
    return {
        "context_id": context.task_result.id,
        "current_id": current_result_id.get(),
        "attempt": context.attempt,
        "value": value,
    }


@task
def pid():
    return os.getpid()


@task
def runs_in_worker_process():
    from django_tasks_local.executors.processes import in_worker_process

    return in_worker_process()


@task
def append_pid(path):
    """Append the pid of the process that runs it to ``path``."""
    with open(path, "a") as log:
        log.write(f"{os.getpid()}\n")


@task
def native_thread_id():
    """The operating system's id of the thread that runs the task: unique
    among the threads and processes alive, so it names one worker."""
    return threading.get_native_id()


# -- holding a worker ----------------------------------------------------------


@task
def block_until(path, started=None):
    """Hold a worker until ``path`` exists (a file: it works across processes).

    ``started``: a file to write the body's start time to first. Returns the
    worker's pid.
    """
    if started is not None:
        Path(started).write_text(timezone.now().isoformat())
    _wait_for_path(path)
    return os.getpid()


@task
def block_until_deaf_to_sigterm(path, started):
    """``block_until``, with SIGTERM ignored (as a task's own handler may)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    return block_until.func(path, started)


@task
def log_label(path, label):
    """Append ``label`` to the file at ``path``: an order log across processes."""
    with open(path, "a") as log:
        log.write(f"{label}\n")
    return label


@task
def finish_in(seconds, path):
    """Writes ``path``.started, runs ``seconds`` (a stand-in for work), writes ``path``."""
    Path(path).with_suffix(".started").write_text("started")
    threading.Event().wait(seconds)
    Path(path).write_text("finished")
    return "finished"


# Thread backends only: these events do not cross into worker processes.
# Set by wait_for_event when its body starts, and when it returns; the test
# sets the release. reset_wait_for_event() clears all three.
wait_for_event_started = threading.Event()
wait_for_event_release = threading.Event()
wait_for_event_returned = threading.Event()


def reset_wait_for_event():
    for event in (
        wait_for_event_started,
        wait_for_event_release,
        wait_for_event_returned,
    ):
        event.clear()


@task
def wait_for_event():
    wait_for_event_started.set()
    if not wait_for_event_release.wait(GIVE_UP):
        raise TimeoutError("never released")
    wait_for_event_returned.set()
    return "released"


# -- worker processes: faults, the ORM, state ----------------------------------


@task
def exit_hard(code):
    os._exit(code)


@task
def segfault():
    ctypes.string_at(0)


@task
def overrun(halfway_path, halfway):
    """Work for ``halfway`` seconds, say so by creating ``halfway_path``, go on for ever."""
    time.sleep(halfway)
    Path(halfway_path).touch()
    time.sleep(GIVE_UP)


@task
def wait_until_gone(other_pid):
    """Run until the process ``other_pid`` no longer exists."""
    deadline = time.monotonic() + GIVE_UP
    while time.monotonic() < deadline:
        try:
            os.kill(other_pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.01)
    raise TimeoutError(f"process {other_pid} still exists")


@task
def orm_roundtrip(label):
    """Write a row and read every row back, on the default (SQLite) database."""
    Record.objects.create(label=label, value=os.getpid())
    return {
        "labels": sorted(Record.objects.values_list("label", flat=True)),
        "in_atomic_block": connections["default"].in_atomic_block,
    }


@task
def count_records(label):
    return Record.objects.filter(label=label).count()


@task
def write_record(label, using):
    """On database ``using``, in one transaction: a row labelled ``label:<this
    task's result id>``, and 1 added to the value of the row labelled ``label``."""
    records = Record.objects.using(using)
    with transaction.atomic(using=using):
        records.create(label=f"{label}:{current_result_id.get()}", value=os.getpid())
        records.filter(label=label).update(value=F("value") + 1)
    return os.getpid()


@task
def postgres_backend_pid():
    """The server pid of this worker's connection to the ``postgres`` alias."""
    with connections["postgres"].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return int(cursor.fetchone()[0])


@task
def swap_global(key, value):
    """Set STATE[key] in this worker; return what it was here before."""
    before = STATE.get(key)
    STATE[key] = value
    return before


@task
def enqueue_add(alias, a, b):
    """Enqueue a task from inside a task."""
    result = add.using(backend=alias).enqueue(a, b)
    return {"id": result.id, "status": result.status, "backend": result.backend}


@task
def enqueue_from_threads(alias, path, threads, each, go):
    """Start ``threads`` threads that each enqueue ``log_label`` tasks on
    ``alias``: ``each`` at once, ``each`` more once ``go`` exists (after this
    task has returned). Each thread then writes a line to ``path``.done, and
    what it raised to ``path``.errors."""

    def enqueue_some(number):
        try:
            for n in range(2 * each):
                if n == each:
                    _wait_for_path(go)
                log_label.using(backend=alias).enqueue(path, f"{number}-{n}")
        except Exception as exc:
            with open(f"{path}.errors", "a") as errors:
                errors.write(f"{exc!r}\n")
        finally:
            with open(f"{path}.done", "a") as done:
                done.write("done\n")

    for number in range(threads):
        threading.Thread(target=enqueue_some, args=(number,)).start()
    return os.getpid()


@task
def enqueue_in_transaction(alias, label, commit):
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


@task
def enqueue_a_bad_argument_in_transaction(alias):
    """In one transaction: an enqueue with a bad argument, caught; then a good one."""
    with transaction.atomic():
        try:
            square.using(backend=alias).enqueue({1, 2})
        except TypeError as exc:
            refused = str(exc)
        good = square.using(backend=alias).enqueue(7)
    return {"refused": refused, "id": good.id}


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


# -- plain functions, for the executors on their own ---------------------------


def plain_pid():
    return os.getpid()


def plain_block_until(path):
    _wait_for_path(path)
    return os.getpid()


def plain_mark_then_block(mark, path):
    Path(mark).touch()
    return plain_block_until(path)


def plain_write_pid_then_hold(path, how):
    """Write this process's pid to ``path``, then run for ever: ``how`` is
    "sleep", or "gil": a regex that backtracks, holding the GIL all along."""
    Path(path).write_text(str(os.getpid()))
    if how == "gil":
        re.match(r"(a+)+$", "a" * 64 + "!")
    time.sleep(GIVE_UP)


def _cannot_be_read():
    raise RuntimeError("this cannot be unpickled here")


class UnreadableInTheParent:
    """Pickled in a worker; unpickling it (in the parent) raises."""

    def __reduce__(self):
        return (_cannot_be_read, ())


def plain_ask_the_unreadable():
    """Ask the parent something it cannot unpickle: what ``ask_parent`` raises."""
    try:
        ask_parent(UnreadableInTheParent())
    except Exception as exc:
        return repr(exc)
    return "no error"


def unpicklable_result():
    return threading.Lock()


def plain_note_then_block(log, path):
    """Add a line to ``log`` (one per run), then block until ``path`` exists."""
    with open(log, "a") as notes:
        notes.write("ran\n")
    return plain_block_until(path)


def touch_then_exit_hard(path):
    """Leave a mark per attempt (the file grows by a line), then die."""
    with open(path, "a") as marks:
        marks.write("attempt\n")
    os._exit(5)


# -- attempts: retries, timeouts, metadata, cancellation (issue 14) ------------
# LocalTask(func=...) rather than @task(max_attempts=...): Django 6.0's @task
# passes no extra arguments to the backend's task_class.


def local_task(**fields):
    """``@task(**fields)`` as Django 6.1 does it, on 6.0 too."""

    def wrap(func):
        return LocalTask(func=func, **fields)

    return wrap


def no_wait(exception, task_result):
    """A backoff: the next attempt at once."""
    return 0


def count_attempt(path):
    """Append a line to ``path``; return how many lines it has now."""
    with open(path, "a") as log:
        log.write(f"{os.getpid()}\n")
    return len(Path(path).read_text().splitlines())


@local_task(takes_context=True, max_attempts=3, backoff=no_wait)
def fail_times(context, path, failures, exception="ValueError"):
    """Fail (raising ``exception``, a builtin's name) the first ``failures``
    attempts; then return the attempt number that context.attempt gives."""
    attempt = count_attempt(path)
    if attempt <= failures:
        raise getattr(builtins, exception)(f"attempt {attempt}")
    return {"attempt": context.attempt, "counted": attempt}


@local_task(takes_context=True, max_attempts=3, backoff=no_wait, retry_on=[KeyError])
def fail_with_value_error_once(context, path):
    """Retried only on KeyError: its ValueError ends it."""
    if count_attempt(path) == 1:
        raise ValueError("not retried")
    return context.attempt


@task(takes_context=True)
def fail_plainly(context, path):
    """A plain @task that always fails (the alias's OPTIONS decide its retries)."""
    count_attempt(path)
    raise ValueError(f"attempt {context.attempt}")


@local_task(max_attempts=2, backoff=no_wait)
def crash_once(path):
    """Its worker process dies at the first attempt; the second returns its pid."""
    if count_attempt(path) == 1:
        os._exit(3)
    return os.getpid()


@local_task(max_attempts=2, backoff=no_wait, retry_crashed=True)
def crash_once_retried(path):
    if count_attempt(path) == 1:
        os._exit(3)
    return os.getpid()


@local_task(takes_context=True, timeout=0.5)
def block_past_timeout(context, path, release):
    """Run past a 0.5 s timeout until ``release`` exists; write ``path`` with
    what the task saw of its cancellation when it stopped."""
    count_attempt(path + ".attempts")
    deadline = time.monotonic() + GIVE_UP
    while not Path(release).exists() and time.monotonic() < deadline:
        if context.is_cancelled:
            Path(path).write_text("told to stop")
            return "stopped"
        time.sleep(0.01)
    Path(path).write_text("released")
    return "released"


@local_task(takes_context=True, timeout=0.5, max_attempts=2, backoff=no_wait)
def time_out_once(context, path):
    """Past its timeout at the first attempt (until told to stop), quick at the second."""
    attempt = count_attempt(path)
    if attempt == 1:
        deadline = time.monotonic() + GIVE_UP
        while not context.is_cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
    return context.attempt


@task(takes_context=True)
def wait_for_cancel(context, started, seen):
    """Write ``started``; wait until told to stop (thread backends), then write ``seen``."""
    Path(started).write_text(str(os.getpid()))
    deadline = time.monotonic() + GIVE_UP
    while not context.is_cancelled:
        if time.monotonic() > deadline:
            raise TimeoutError("never cancelled")
        time.sleep(0.01)
    Path(seen).write_text("cancelled")
    return "saw it"


@task(takes_context=True)
def report_progress(context, release):
    """Save progress 50 (metadata), wait for ``release``, then leave 100 unsaved."""
    context.metadata["progress"] = 50
    context.save_metadata()
    _wait_for_path(release)
    context.metadata["progress"] = 100
    return dict(context.metadata)


@task(takes_context=True)
async def async_report_progress(context, release):
    context.metadata["progress"] = 50
    await context.asave_metadata()
    await asyncio.to_thread(_wait_for_path, release)
    return context.metadata["progress"]


@task(takes_context=True)
def save_bad_metadata(context):
    context.metadata["when"] = object()
    context.save_metadata()


@task(takes_context=True)
def read_metadata(context):
    return dict(context.metadata)


# -- the database store: retries, metadata (issue 14) ---------------------------


def one_second(exception, task_result):
    """A backoff: the next attempt a second later."""
    return 1


@local_task(max_attempts=2, backoff=one_second)
def fail_first_attempt(path, go=None):
    """Fail the first attempt (counted in ``path``), once ``go`` exists if
    given; the second returns the pid of the process that ran it."""
    if count_attempt(path) == 1:
        if go is not None:
            _wait_for_path(go)
        raise ValueError("the first attempt fails")
    return os.getpid()


@local_task(takes_context=True)
def local_report_progress(context, release):
    """``report_progress`` as a LocalTask on Django 6.0 too, for
    ``using(metadata=...)``: saves progress 50, waits for ``release``, then
    leaves 100 unsaved."""
    context.metadata["progress"] = 50
    context.save_metadata()
    _wait_for_path(release)
    context.metadata["progress"] = 100
    return dict(context.metadata)


def block_first_attempt(path, release):
    """Hold the first attempt (counted in ``path``) until ``release`` exists;
    a later attempt returns the pid that ran it."""
    if count_attempt(path) == 1:
        _wait_for_path(release)
    return os.getpid()


block_first_attempt = task(block_first_attempt)
