"""ProcessPool on its own: true starts, crashes, timeouts, kills, shutdown, start-up failures.

Most pools here fork (a forked child is ready at once); the spawn test is the
one about a child that cannot set Django up.
"""

from __future__ import annotations

import math
import os
import queue
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError, Future
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
from django.db import connections

from django_tasks_local.backends.worker_process import set_up
from django_tasks_local.exceptions import (
    TaskCancelled,
    TaskTimeout,
    WorkerCrashed,
    WorkerError,
)
from django_tasks_local.executors.processes import ProcessPool
from django_tasks_local.runner import Envelope, Outcome, TaskReference, run_task
from tests import tasks
from tests.helpers import (
    DEADLINE,
    postgres_pid,
    process_exists,
    run_script,
    wait_until,
    write_script,
)

pytestmark = pytest.mark.filterwarnings(
    # The test process has threads (other pools' supervisors) when it forks.
    "ignore:This process .* is multi-threaded:DeprecationWarning"
)


def envelope(task: Any, *args: Any) -> Envelope:
    return Envelope(
        secrets.token_hex(8), TaskReference.from_task(task), list(args), {}, None
    )


class Starts:
    """Collects the starts a pool reports, for tests to wait on."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[str, str]] = queue.Queue()

    def __call__(self, result_id: str, worker_id: str, started_at: Any) -> None:
        self.queue.put((result_id, worker_id))

    def next(self) -> tuple[str, str]:
        return self.queue.get(timeout=DEADLINE)


@pytest.fixture
def starts() -> Starts:
    return Starts()


@pytest.fixture
def make_pool(starts: Starts) -> Iterator[Any]:
    pools: list[ProcessPool] = []

    def make(max_workers: int = 2, **options: Any) -> ProcessPool:
        options.setdefault("mp_context", "fork")
        options.setdefault("initializer", set_up)
        pool = ProcessPool(max_workers, on_started=starts, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.terminate()
        pool.shutdown(wait=True)


def test_runs_calls_in_children(make_pool: Any) -> None:
    pool = make_pool()
    assert pool.submit(pow, 2, 10).result(DEADLINE) == 1024
    child_pid = pool.submit(tasks.plain_pid).result(DEADLINE)
    assert child_pid != os.getpid()
    assert child_pid in pool.worker_pids
    with pytest.raises(WorkerError, match="ZeroDivisionError"):
        pool.submit(divmod, 1, 0).result(DEADLINE)


def test_concurrent_submits_all_complete(make_pool: Any) -> None:
    # Many threads submit while the supervisor hands calls out and reaps.
    pool = make_pool()
    results: dict[int, Any] = {}

    def submit_some(start: int) -> None:
        futures = {n: pool.submit(pow, n, 2) for n in range(start, start + 50)}
        for n, future in futures.items():
            results[n] = future.result(DEADLINE)

    threads = [threading.Thread(target=submit_some, args=(i * 50,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    assert results == {n: n * n for n in range(200)}


def test_start_is_reported_when_a_child_starts_the_task(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=1)
    release = tmp_path / "release"
    first = envelope(tasks.block_until, str(release))
    second = envelope(tasks.add, 1, 2)
    first_future = pool.submit(run_task, first)
    second_future = pool.submit(run_task, second)
    result_id, worker_id = starts.next()
    assert result_id == first.result_id
    # The only child is busy: the second call waits, not started.
    assert starts.queue.empty()
    assert not second_future.running()
    release.touch()
    assert starts.next()[0] == second.result_id
    outcome: Outcome = first_future.result(DEADLINE)
    assert worker_id == outcome.worker_id
    assert worker_id.endswith(f":{outcome.return_value}")
    assert second_future.result(DEADLINE).return_value == 3


def test_a_crash_fails_the_started_call_and_the_waiting_one_runs(
    make_pool: Any, starts: Starts
) -> None:
    pool = make_pool(max_workers=1)
    crash = pool.submit(run_task, envelope(tasks.exit_hard, 1))
    waiting = pool.submit(run_task, envelope(tasks.pid))
    with pytest.raises(WorkerCrashed, match="exited with code 1"):
        crash.result(DEADLINE)
    crashed_pid = int(starts.next()[1].rsplit(":", 1)[1])
    assert waiting.result(DEADLINE).return_value != crashed_pid
    assert pool.submit(pow, 3, 3).result(DEADLINE) == 27


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (tasks.segfault, "signal SIGSEGV"),
        (tasks.block_until, "signal SIGKILL"),
    ],
    ids=["segfault", "sigkill"],
)
def test_a_child_killed_by_a_signal(
    make_pool: Any, starts: Starts, tmp_path: Path, task: Any, message: str
) -> None:
    pool = make_pool()
    args = [str(tmp_path / "never")] if task is tasks.block_until else []
    future = pool.submit(run_task, envelope(task, *args))
    worker_pid = int(starts.next()[1].rsplit(":", 1)[1])
    if task is tasks.block_until:
        os.kill(worker_pid, signal.SIGKILL)  # as the OOM killer does
    with pytest.raises(WorkerCrashed, match=message) as caught:
        future.result(DEADLINE)
    assert f"pid {worker_pid}" in str(caught.value)
    assert pool.submit(pow, 2, 5).result(DEADLINE) == 32


def test_a_call_not_started_when_its_child_died_goes_to_another_child_once(
    make_pool: Any, tmp_path: Path
) -> None:
    # A plain function never reports its start: each death is before it.
    marks = tmp_path / "marks"
    pool = make_pool(max_workers=1)
    future = pool.submit(tasks.touch_then_exit_hard, str(marks))
    with pytest.raises(WorkerCrashed, match="exited with code 5"):
        future.result(DEADLINE)
    assert marks.read_text().count("attempt") == 2
    assert pool.submit(pow, 2, 2).result(DEADLINE) == 4


def test_an_idle_child_that_dies_is_replaced(make_pool: Any) -> None:
    pool = make_pool(max_workers=1)
    first = pool.submit(tasks.plain_pid).result(DEADLINE)
    os.kill(first, signal.SIGKILL)
    second = pool.submit(tasks.plain_pid).result(DEADLINE)
    assert second != first


def test_timeout_kills_the_child_and_the_pool_goes_on(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=1, timeout=0.5)
    future = pool.submit(run_task, envelope(tasks.block_until, str(tmp_path / "never")))
    with pytest.raises(TaskTimeout, match=r"timeout of 0\.5s"):
        future.result(DEADLINE)
    killed_pid = int(starts.next()[1].rsplit(":", 1)[1])
    assert pool.submit(run_task, envelope(tasks.pid)).result(DEADLINE).return_value != (
        killed_pid
    )


def started_pid(starts: Starts) -> int:
    """The pid of the child that reports the next start."""
    return int(starts.next()[1].rsplit(":", 1)[1])


def test_kill_ends_a_running_call_with_the_error_and_the_pool_goes_on(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=1)
    future = pool.submit(run_task, envelope(tasks.block_until, str(tmp_path / "never")))
    killed_pid = started_pid(starts)
    error = TaskCancelled("cancelled")
    pool.kill(future, error)
    # The very error: not WorkerCrashed, nor TaskTimeout.
    assert future.exception(DEADLINE) is error
    wait_until(lambda: not process_exists(killed_pid), message="the child killed")
    outcome = pool.submit(run_task, envelope(tasks.pid)).result(DEADLINE)
    assert outcome.return_value != killed_pid


def test_kill_ends_a_call_sent_but_not_started_and_hands_it_to_no_other_child(
    make_pool: Any, tmp_path: Path
) -> None:
    # A plain function reports no start: to the pool it never started, and a
    # child that dies before the start would hand it on.
    notes = tmp_path / "notes"
    pool = make_pool(max_workers=1)
    future = pool.submit(
        tasks.plain_note_then_block, str(notes), str(tmp_path / "never")
    )
    wait_until(notes.exists, message="the call runs")
    error = TaskTimeout("too long")
    pool.kill(future, error)
    assert future.exception(DEADLINE) is error
    assert pool.submit(pow, 2, 3).result(DEADLINE) == 8
    assert notes.read_text() == "ran\n"


def test_kill_takes_out_a_waiting_call_which_never_runs(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=1)
    release, mark = tmp_path / "release", tmp_path / "mark"
    busy = pool.submit(run_task, envelope(tasks.block_until, str(release)))
    busy_pid = started_pid(starts)
    # tmp_path exists: were it run, it would leave its mark and return.
    waiting = pool.submit(tasks.plain_mark_then_block, str(mark), str(tmp_path))
    error = TaskCancelled("cancelled")
    pool.kill(waiting, error)
    assert waiting.exception(DEADLINE) is error
    assert not busy.done()
    release.touch()
    assert busy.result(DEADLINE).error is None
    # The busy child was spared, and the calls after run there.
    assert pool.submit(tasks.plain_pid).result(DEADLINE) == busy_pid
    assert not mark.exists()


def test_kill_of_a_call_waiting_for_a_starting_child_spares_the_child(
    make_pool: Any, tmp_path: Path
) -> None:
    # Calls are sent to ready children only: the call waits in the parent,
    # and the child started for it serves the next one.
    release = tmp_path / "release"
    pool = make_pool(
        max_workers=1, initializer=tasks.plain_block_until, initargs=(str(release),)
    )
    future = pool.submit(pow, 2, 2)
    wait_until(lambda: pool.worker_pids, message="a child starts")
    [starting_pid] = pool.worker_pids
    error = TaskCancelled("cancelled")
    pool.kill(future, error)
    assert future.exception(DEADLINE) is error
    release.touch()
    assert pool.submit(tasks.plain_pid).result(DEADLINE) == starting_pid


def test_kill_after_the_call_ended_leaves_its_result(make_pool: Any) -> None:
    pool = make_pool(max_workers=1)
    future = pool.submit(tasks.plain_pid)
    child_pid = future.result(DEADLINE)
    pool.kill(future, TaskCancelled("too late"))
    assert future.result(0) == child_pid
    # The child was spared.
    assert pool.submit(tasks.plain_pid).result(DEADLINE) == child_pid


def test_kill_of_a_future_not_of_the_pool_does_nothing(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool, other = make_pool(max_workers=1), make_pool(max_workers=1)
    release = tmp_path / "release"
    running = other.submit(run_task, envelope(tasks.block_until, str(release)))
    starts.next()
    child_pid = pool.submit(tasks.plain_pid).result(DEADLINE)
    stranger: Future[Any] = Future()
    pool.kill(stranger, TaskCancelled("not mine"))
    pool.kill(running, TaskCancelled("not mine"))
    # Kills are done before the next call is handed out: this one runs after.
    assert pool.submit(tasks.plain_pid).result(DEADLINE) == child_pid
    assert not stranger.done()
    release.touch()
    assert running.result(DEADLINE).error is None


def test_kills_from_several_threads_end_their_calls_alone(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=4)
    release = tmp_path / "release"
    futures = [
        pool.submit(run_task, envelope(tasks.block_until, str(release)))
        for _ in range(8)
    ]
    for _ in range(4):
        starts.next()
    # Two running calls, and two waiting ones (the last four wait).
    killed = {futures[n]: TaskCancelled(f"cancelled {n}") for n in (0, 2, 5, 7)}
    barrier = threading.Barrier(len(killed))

    def kill(future: Future[Any], error: BaseException) -> None:
        barrier.wait(DEADLINE)
        pool.kill(future, error)

    threads = [threading.Thread(target=kill, args=item) for item in killed.items()]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE)
    for future, error in killed.items():
        assert future.exception(DEADLINE) is error
    release.touch()
    for future in futures:
        if future not in killed:
            assert future.result(DEADLINE).error is None


def test_killed_calls_do_not_count_as_failed_starts(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=1)
    never = str(tmp_path / "never")
    for n in range(3):
        future = pool.submit(run_task, envelope(tasks.block_until, never))
        starts.next()
        error = TaskCancelled(f"cancelled {n}")
        pool.kill(future, error)
        assert future.exception(DEADLINE) is error
    assert pool.submit(pow, 2, 5).result(DEADLINE) == 32


def test_a_result_that_cannot_be_pickled_back_fails_the_call(make_pool: Any) -> None:
    pool = make_pool(max_workers=1)
    child_pid = pool.submit(tasks.plain_pid).result(DEADLINE)
    with pytest.raises(WorkerError, match="could not be sent back"):
        pool.submit(tasks.unpicklable_result).result(DEADLINE)
    # The same child goes on.
    assert pool.submit(tasks.plain_pid).result(DEADLINE) == child_pid


def test_arguments_that_cannot_be_pickled_fail_the_call(make_pool: Any) -> None:
    pool = make_pool(max_workers=1)
    future = pool.submit(print, threading.Lock())
    with pytest.raises(WorkerError, match="cannot be sent to a worker process"):
        future.result(DEADLINE)
    assert pool.submit(pow, 2, 3).result(DEADLINE) == 8


def test_a_request_the_parent_cannot_read_fails_in_the_asker_alone(
    make_pool: Any,
) -> None:
    pool = make_pool(max_workers=1, handle_request=lambda payload: payload)
    asked = pool.submit(tasks.plain_ask_the_unreadable).result(DEADLINE)
    assert asked == "RuntimeError('this cannot be unpickled here')"
    assert pool.submit(pow, 2, 5).result(DEADLINE) == 32


def test_shutdown_lets_busy_children_finish(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=1)
    release = tmp_path / "release"
    busy = pool.submit(run_task, envelope(tasks.block_until, str(release)))
    waiting = pool.submit(pow, 2, 4)
    starts.next()
    pool.shutdown(wait=False)  # while the only child is busy
    release.touch()
    pool.shutdown(wait=True)
    assert busy.result(0).error is None
    assert waiting.result(0) == 16
    assert pool.worker_pids == []
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(pow, 2, 2)


def test_shutdown_can_cancel_the_waiting_calls(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=1)
    release = tmp_path / "release"
    busy = pool.submit(run_task, envelope(tasks.block_until, str(release)))
    waiting = [pool.submit(pow, 2, n) for n in range(3)]
    starts.next()
    pool.shutdown(wait=False, cancel_futures=True)
    release.touch()
    assert busy.result(DEADLINE).error is None
    for future in waiting:
        with pytest.raises(CancelledError):
            future.result(DEADLINE)


def test_shutdown_cancelling_spares_the_calls_that_free_children_take(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    pool = make_pool(max_workers=2)
    release = tmp_path / "release"
    busy = pool.submit(run_task, envelope(tasks.block_until, str(release)))
    starts.next()
    # One child is busy and one place is free: the first waiting call takes it.
    spared = pool.submit(pow, 2, 5)
    cancelled = pool.submit(pow, 2, 6)
    pool.shutdown(wait=False, cancel_futures=True)
    assert spared.result(DEADLINE) == 32
    with pytest.raises(CancelledError):
        cancelled.result(DEADLINE)
    release.touch()
    assert busy.result(DEADLINE).error is None


def test_a_child_gets_its_next_call_before_the_last_ones_callbacks_run(
    make_pool: Any, tmp_path: Path
) -> None:
    # A future's callbacks (the runtime's bookkeeping and signals) run in the
    # supervisor thread: the child does not wait for them to get its next call.
    pool = make_pool(max_workers=1)
    release, mark = tmp_path / "release", tmp_path / "mark"
    first = pool.submit(tasks.plain_block_until, str(release))
    called_back = threading.Event()
    next_ran_meanwhile = []

    def wait_for_the_next_call(_: Any) -> None:
        # Ten seconds: what a child held by the callbacks would wait for.
        deadline = time.monotonic() + 10
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        next_ran_meanwhile.append(mark.exists())
        called_back.set()

    first.add_done_callback(wait_for_the_next_call)
    # tmp_path exists: the second call leaves its mark and returns.
    second = pool.submit(tasks.plain_mark_then_block, str(mark), str(tmp_path))
    release.touch()
    assert called_back.wait(DEADLINE)
    assert next_ran_meanwhile == [True]
    assert second.result(DEADLINE) == first.result(0)


def test_max_tasks_per_child_cannot_be_used_with_fork() -> None:
    with pytest.raises(ValueError, match="'fork' start method"):
        ProcessPool(1, mp_context="fork", max_tasks_per_child=3)


def test_a_child_that_cannot_start_fails_the_waiting_calls(
    make_pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A spawned child loads the settings afresh: broken ones stop it in
    # django.setup(), before it takes any call.
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "tests.no_such_settings")
    pool = make_pool(max_workers=1, mp_context="spawn")
    future = pool.submit(pow, 2, 2)
    with pytest.raises(WorkerError, match="could not start") as caught:
        future.result(DEADLINE)
    assert "No module named 'tests.no_such_settings'" in str(caught.value)
    # Not broken for good: a child started with working settings takes calls.
    monkeypatch.undo()
    assert pool.submit(pow, 2, 3).result(DEADLINE) == 8


def kill_starting_children(
    pool: ProcessPool, count: int, waiting: list[Future[Any]]
) -> set[int]:
    """SIGKILL (as the OOM killer does) each new child of the pool, ``count``
    times, checking that the ``waiting`` calls still wait; the pids killed."""
    killed: set[int] = set()
    for _ in range(count):
        wait_until(
            lambda: set(pool.worker_pids) - killed or any(f.done() for f in waiting),
            message="a new child",
        )
        assert not any(future.done() for future in waiting)
        [pid] = set(pool.worker_pids) - killed
        os.kill(pid, signal.SIGKILL)
        killed.add(pid)
    return killed


def test_a_child_killed_while_it_starts_is_replaced(
    make_pool: Any, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    pool = make_pool(
        max_workers=1, initializer=tasks.plain_block_until, initargs=(str(release),)
    )
    futures = [pool.submit(pow, 2, n) for n in range(3)]
    # Killed twice in a row: a third child starts, and the calls wait for it.
    kill_starting_children(pool, 2, futures)
    release.touch()
    assert [future.result(DEADLINE) for future in futures] == [1, 2, 4]


def test_children_killed_three_times_in_a_row_while_starting_fail_the_waiting_calls(
    make_pool: Any, tmp_path: Path
) -> None:
    never = str(tmp_path / "never")
    pool = make_pool(
        max_workers=1, initializer=tasks.plain_block_until, initargs=(never,)
    )
    future = pool.submit(pow, 2, 2)
    kill_starting_children(pool, 3, [future])
    with pytest.raises(WorkerError, match="killed by signal SIGKILL") as caught:
        future.result(DEADLINE)
    assert "(3 starts in a row were killed.)" in str(caught.value)


def test_a_child_not_ready_within_start_timeout_is_killed_and_the_calls_fail(
    make_pool: Any, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    pool = make_pool(
        max_workers=1,
        initializer=tasks.plain_block_until,
        initargs=(str(release),),
        start_timeout=0.5,
    )
    futures = [pool.submit(pow, 2, n) for n in range(2)]
    for future in futures:
        with pytest.raises(WorkerError, match=r"did not start within 0\.5s") as caught:
            future.result(DEADLINE)
    assert "was killed. Check what its initializer waits for" in str(caught.value)
    release.touch()
    assert pool.submit(pow, 2, 3).result(DEADLINE) == 8


@pytest.mark.parametrize(
    "seconds", [math.inf, 1e300, 10**400], ids=["inf", "1e300", "10**400"]
)
def test_timeouts_longer_than_any_wait_work(make_pool: Any, seconds: float) -> None:
    pool = make_pool(max_workers=1, timeout=seconds, start_timeout=seconds)
    outcome = pool.submit(run_task, envelope(tasks.add, 2, 3)).result(DEADLINE)
    assert (outcome.error, outcome.return_value) == (None, 5)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_a_forked_child_lets_go_of_the_connections_it_inherits() -> None:
    # Children fork from the supervisor thread, where task_started receivers
    # run: that thread's open connection is what a new child would inherit.
    # (A persistent one: the supervisor closes the others after each event.)
    settings_dict = connections["postgres"].settings_dict
    settings_dict["CONN_MAX_AGE"] = None
    supervisor_pids: list[int] = []
    actions = [
        lambda: supervisor_pids.append(postgres_pid()),  # opens it
        lambda: None,
        lambda: supervisor_pids.append(postgres_pid()),  # is it still whole?
        lambda: connections["postgres"].close(),
    ]

    def on_started(result_id: str, worker_id: str, started_at: Any) -> None:
        actions.pop(0)()

    pool = ProcessPool(1, mp_context="fork", initializer=set_up, on_started=on_started)
    try:
        with pytest.raises(WorkerCrashed):
            pool.submit(run_task, envelope(tasks.exit_hard, 1)).result(DEADLINE)
        # A new child, forked from the thread with the open connection.
        child = pool.submit(run_task, envelope(tasks.postgres_backend_pid))
        outcome = child.result(DEADLINE)
        assert outcome.error is None, outcome.error
        assert outcome.return_value != supervisor_pids[0]
        # The child did not close the parent's connection either.
        pool.submit(run_task, envelope(tasks.add, 0, 0)).result(DEADLINE)
        assert supervisor_pids == [supervisor_pids[0]] * 2
    finally:
        pool.submit(run_task, envelope(tasks.add, 0, 0)).result(DEADLINE)
        pool.shutdown()
        settings_dict["CONN_MAX_AGE"] = 0


def test_terminate_kills_busy_children_and_retries_nothing(
    make_pool: Any, starts: Starts, tmp_path: Path
) -> None:
    mark, never = str(tmp_path / "mark"), str(tmp_path / "never")
    pool = make_pool(max_workers=2)
    busy = pool.submit(run_task, envelope(tasks.block_until, never))
    starts.next()
    # A plain function reports no start: to the pool it never started.
    unstarted = pool.submit(tasks.plain_mark_then_block, mark, never)
    wait_until(Path(mark).exists, message="the unstarted call runs")
    pool.terminate()
    with pytest.raises(WorkerCrashed, match="SIGKILL"):
        busy.result(DEADLINE)
    # Killed on purpose: not handed to a new child.
    with pytest.raises(WorkerCrashed, match="SIGKILL"):
        unstarted.result(DEADLINE)
    pool.shutdown(wait=True)
    assert pool.worker_pids == []


ORPHANED = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import django
    django.setup()
    from django_tasks_local.backends.worker_process import set_up
    from django_tasks_local.executors.processes import ProcessPool
    from tests.tasks import plain_write_pid_then_hold

    start_method, how, copy, here = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    pool = ProcessPool(1, mp_context=start_method, initializer=set_up)
    pool.submit(plain_write_pid_then_hold, str(here / "worker"), how)
    while not (here / "worker").exists():
        time.sleep(0.01)
    if copy == "copy" and os.fork() == 0:
        # A fork that outlives the process, as a gunicorn --preload master's do.
        time.sleep(120)
        os._exit(0)
    (here / "ready").touch()
    time.sleep(120)
    """
)

# Seconds a worker may take to end once its parent is killed: far less than
# the minute its call would run.
ORPHAN_DEADLINE = 15.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize(
    ("start_method", "how", "copy"),
    [
        ("fork", "gil", "alone"),
        ("fork", "sleep", "copy"),
        ("forkserver", "sleep", "copy"),
    ],
    ids=["holding-the-gil", "a-fork-of-the-parent-lives", "forkserver-a-fork-lives"],
)
def test_a_worker_ends_soon_after_its_parent_is_killed(
    tmp_path: Path, start_method: str, how: str, copy: str
) -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    parent = subprocess.Popen(
        [sys.executable, "-c", ORPHANED, start_method, how, copy, str(tmp_path)],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        # The parent, its worker and its fork in a group of their own, to clean up.
        start_new_session=True,
    )
    try:
        wait_until((tmp_path / "ready").exists, message="the worker runs")
        worker = int((tmp_path / "worker").read_text())
        parent.kill()
        parent.wait(DEADLINE)
        wait_until(
            lambda: not process_exists(worker),
            timeout=ORPHAN_DEADLINE,
            message="the orphaned worker ended",
        )
    finally:
        with suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(DEADLINE)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, databases=["default", "postgres"])
def test_connections_opened_in_the_supervisor_thread_are_closed_as_after_a_request() -> (
    None
):
    # task_started receivers run in the supervisor thread; with CONN_MAX_AGE
    # = 0 their connection must not stay open for the pool's lifetime.
    supervisor_pids: list[int] = []
    pool = ProcessPool(
        1,
        mp_context="fork",
        initializer=set_up,
        on_started=lambda *_: supervisor_pids.append(postgres_pid()),
    )
    try:
        outcome = pool.submit(run_task, envelope(tasks.add, 1, 1)).result(DEADLINE)
        assert (outcome.error, outcome.return_value) == (None, 2)
        [pid] = supervisor_pids
        deadline = time.monotonic() + DEADLINE
        while True:
            with connections["postgres"].cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid])
                if cursor.fetchone() is None:
                    break
            assert time.monotonic() < deadline, (
                "the supervisor's connection stayed open"
            )
            time.sleep(0.05)
    finally:
        pool.shutdown()


# -- children the OS refuses ---------------------------------------------------

NO_PIPE_SCRIPT = """
import logging
import os
import sys
import threading
from pathlib import Path

import django


class FirstError(logging.Handler):
    def __init__(self):
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record):
        if record.levelno >= logging.ERROR and not self.seen.is_set():
            self.text = f"{record.getMessage()} {record.exc_info[1].strerror}"
            self.seen.set()


def main(tmp):
    from django_tasks_local.executors.processes import ProcessPool
    from tests import tasks
    from tests.helpers import DEADLINE, no_file_descriptors_left, wait_until

    error = FirstError()
    logging.getLogger("django_tasks_local").addHandler(error)
    # Made now: with no descriptor left, only a rename (no open) can release.
    for name in ("first.ready", "second.ready"):
        (tmp / name).touch()
    pool = ProcessPool(2, mp_context="fork")
    running = pool.submit(tasks.plain_mark_then_block, str(tmp / "mark"), str(tmp / "first"))
    wait_until((tmp / "mark").exists)
    with no_file_descriptors_left():
        # No descriptor for a second child's pipe: the call waits for the first.
        waiting = pool.submit(pow, 2, 5)
        assert error.seen.wait(DEADLINE)
        print(error.text)
        os.rename(tmp / "first.ready", tmp / "first")
        print("running:", running.result(DEADLINE) == pool.worker_pids[0])
        print("waiting:", waiting.result(DEADLINE))
    # Two calls at once: the pool starts its second child now.
    both = [
        pool.submit(tasks.plain_mark_then_block, str(tmp / f"mark{n}"), str(tmp / "second"))
        for n in range(2)
    ]
    wait_until(lambda: all((tmp / f"mark{n}").exists() for n in range(2)))
    os.rename(tmp / "second.ready", tmp / "second")
    print("children:", len({future.result(DEADLINE) for future in both}))
    pool.shutdown()


if __name__ == "__main__":
    django.setup()
    main(Path(sys.argv[1]))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="reads /proc")
def test_no_file_descriptor_for_a_new_child_spares_the_running_one(
    tmp_path: Path,
) -> None:
    done = run_script(tmp_path, NO_PIPE_SCRIPT, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "A worker process could not be started. Too many open files\nrunning: True\nwaiting: 32\nchildren: 2\n"
    ), done.stderr


# -- Ctrl-C --------------------------------------------------------------------

CTRL_C_SCRIPT = """
import multiprocessing.util
import signal
import sys
import time
from pathlib import Path

import django


def hold(started, release):
    # A new child waits here, before _child_main: a Ctrl-C now used to kill it.
    with open(started, "a") as log:
        log.write("a child starts\\n")
    deadline = time.monotonic() + 60
    while not Path(release).exists() and time.monotonic() < deadline:
        time.sleep(0.01)


# Holds a new child where it is unpickled (spawn, forkserver), or right
# after it is forked.
class Gate:
    def __init__(self, started, release):
        self.paths = (started, release)

    def __reduce__(self):
        return (hold, self.paths)

    def hold_after_fork(self):
        # A forked child has its parent's handler: this script's only keeps
        # the script going, where Python's raises KeyboardInterrupt.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        hold(*self.paths)


def initialize(gate):
    pass


def main(method, started, release):
    from django_tasks_local.executors.processes import ProcessPool

    interrupted = []
    # The parent decides what Ctrl-C does: here, nothing.
    signal.signal(signal.SIGINT, lambda *_: interrupted.append(True))
    gate = Gate(started, release)
    if method == "fork":
        multiprocessing.util.register_after_fork(gate, Gate.hold_after_fork)
    pool = ProcessPool(1, mp_context=method, initializer=initialize, initargs=(gate,))
    print(pool.submit(pow, 2, 10).result(60), interrupted)
    pool.shutdown()


if __name__ == "__main__":
    django.setup()
    main(*sys.argv[1:])
"""


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_ctrl_c_while_a_child_starts_does_not_kill_it(
    tmp_path: Path, method: str
) -> None:
    script, env = write_script(tmp_path, CTRL_C_SCRIPT)
    started, release = tmp_path / "started", tmp_path / "release"
    # A session of its own: the signal goes to its whole process group, as
    # Ctrl-C in a terminal does.
    process = subprocess.Popen(
        [sys.executable, str(script), method, str(started), str(release)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: started.exists() or process.poll() is not None,
            message="a child starts",
        )
        os.killpg(process.pid, signal.SIGINT)
        release.touch()
        out, err = process.communicate(timeout=DEADLINE)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert (process.returncode, out) == (0, "1024 [True]\n"), err
    # The same child: not killed and replaced.
    assert started.read_text() == "a child starts\n"
