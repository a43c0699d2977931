"""The database store across real processes: crashes, restarts, readers, bounds,
transactions (issue 13); metadata, retries and cancellation in the rows (issue 14).

Each test runs on an alias of its own (``store_alias``): the alias is the
``backend`` column of the rows and of the leases, and recovery is per alias,
so no test sees another's rows. A child process (``spawn``) configures the
same alias on the same test databases (tests.settings names them from
DJANGO_TASKS_LOCAL_TEST_RUN, which children inherit), enqueues, reports what
it did in a JSON file, and is then killed, or exits, as the test says. This
process, or other children, then open the store of that alias and take the
tasks over.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.tasks import task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone

from django_tasks_local import (
    CannotCancel,
    LocalTask,
    TaskCancelled,
    await_result,
    task_retrying,
    wait,
)
from django_tasks_local.database_store import _Turns
from django_tasks_local.models import FinishedCount, Lease, StoredResult
from tests import tasks
from tests.helpers import (
    DEADLINE,
    SignalLog,
    read_log,
    run_and_wait,
    start_code,
    temporary_alias,
    wait_until,
    wait_until_running,
)

#: RECOVERY_TIMEOUT of every alias here: a lease lasts 1 s, renewed each 0.25 s.
RECOVERY = 1.5
#: Within this long after a process is killed, another settles its tasks
#: (the store promises 2/3 + 1/6 of RECOVERY_TIMEOUT after the last renewal).
SETTLED_WITHIN = 10 * RECOVERY

PROCESS_LOST = "django_tasks_local.exceptions.ProcessLost"

THREAD_STORES = [
    "threads-sqlite",
    pytest.param("threads-postgres", marks=pytest.mark.postgres),
]
ALL_STORES = [
    *THREAD_STORES,
    "processes-sqlite",
    pytest.param("processes-postgres", marks=pytest.mark.postgres),
]


# -- aliases and children ----------------------------------------------------


@contextmanager
def store_alias(like: str, **options: Any) -> Iterator[str]:
    """A new alias on the database store of ``like``, with a short RECOVERY_TIMEOUT."""
    with temporary_alias(like, RECOVERY_TIMEOUT=RECOVERY, **options) as alias:
        yield alias


def rows(alias: str) -> Any:
    """The StoredResult rows of ``alias``, read from this process."""
    database = task_backends[alias].settings["DATABASE"]
    return StoredResult.objects.using(database).filter(backend=alias)


def leases(alias: str) -> Any:
    database = task_backends[alias].settings["DATABASE"]
    return Lease.objects.using(database).filter(backend=alias)


#: What every child runs first: Django on tests.settings with the test's
#: alias added, then the helpers its body uses.
PRELUDE = """
import json
import os
import sys
import time
from pathlib import Path

import django
from django.conf import settings

config = json.loads(sys.argv[1])
settings.TASKS = {**settings.TASKS, **config["tasks"]}
django.setup()

from django.tasks import task_backends

from tests import tasks

alias = config["alias"]
backend = task_backends[alias]
here = Path(config["dir"])
release = str(here / "release")
log = str(here / "log")


def until(condition):
    deadline = time.monotonic() + 60
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the child waited in vain")
        time.sleep(0.01)


def stored_status(result_id):
    return backend.runtime.load(result_id).status


def report(**values):
    path = here / (config["name"] + ".json")
    path.with_suffix(".tmp").write_text(json.dumps({"pid": os.getpid(), **values}))
    path.with_suffix(".tmp").rename(path)
"""


class Child:
    """A process on tests.settings with the test's alias, running ``PRELUDE + body``."""

    def __init__(self, directory: Path, name: str, body: str, alias: str) -> None:
        self.name = name
        self.output = directory / f"{name}.out"
        self._report = directory / f"{name}.json"
        config = {
            "alias": alias,
            "tasks": {alias: settings.TASKS[alias]},
            "dir": str(directory),
            "name": name,
        }
        self.process: subprocess.Popen[bytes] = start_code(
            PRELUDE + body, json.dumps(config), output=self.output
        )
        self.pid = self.process.pid

    def report(self) -> dict[str, Any]:
        """What the child reported once it got where the test waits for it."""
        wait_until(
            lambda: self._report.exists() or self.process.poll() is not None,
            message=f"child {self.name} reporting",
        )
        if not self._report.exists():
            pytest.fail(
                f"child {self.name} exited ({self.process.returncode}) without "
                f"reporting:\n{self.output.read_text()}"
            )
        return json.loads(self._report.read_text())

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(DEADLINE)

    def exit_code(self) -> int:
        code = self.process.wait(DEADLINE)
        assert code == 0, self.output.read_text()
        return code


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str, str, str], Child]]:
    """Start children; after the test, those still running are killed, and
    the tasks that killed ones left blocked (in orphaned workers) let go."""
    children: list[Child] = []

    def spawn(name: str, body: str, alias: str) -> Child:
        child = Child(tmp_path, name, body, alias)
        children.append(child)
        return child

    yield spawn
    (tmp_path / "release").touch()
    for child in children:
        if child.process.poll() is None:
            child.kill()


def settled(alias: str, result_ids: list[str]) -> Callable[[], bool]:
    """Whether the store records the end of each (as every process reads it)."""
    ended = rows(alias).filter(id__in=result_ids, finished_at__isnull=False)
    return lambda: ended.count() == len(result_ids)


def assert_lost(alias: str, result_id: str, owner: str, pid: int) -> None:
    """FAILED with ProcessLost, naming the lost process (its lease and pid)."""
    result = task_backends[alias].get_result(result_id)
    assert result.status == "FAILED"
    [error] = result.errors
    assert error.exception_class_path == PROCESS_LOST
    assert owner in error.traceback
    assert f":{pid}:" in owner


# -- restarts and crashes ----------------------------------------------------

#: Two tasks RUNNING (held on a file), three READY behind them; then it waits
#: to be killed.
TASKS_THEN_KILLED = """
running = [tasks.block_until.using(backend=alias).enqueue(release) for _ in range(2)]
ready = [
    tasks.log_label.using(backend=alias).enqueue(log, f"ready-{number}")
    for number in range(3)
]
until(lambda: all(stored_status(result.id) == "RUNNING" for result in running))
report(running=[result.id for result in running], ready=[result.id for result in ready])
time.sleep(600)  # until the test kills it
"""


@pytest.mark.parametrize("like", ALL_STORES)
def test_a_killed_process_tasks_are_settled_by_the_next_one(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    with store_alias(like, MAX_WORKERS=2) as alias:
        backend = task_backends[alias]
        child = spawn("killed", TASKS_THEN_KILLED, alias)
        report = child.report()
        running, ready = report["running"], report["ready"]
        owner = rows(alias).get(id=running[0]).owner
        assert f":{child.pid}:" in owner
        assert {(row.id, row.status, row.owner) for row in rows(alias)} == {
            *((i, "RUNNING", owner) for i in running),
            *((i, "READY", owner) for i in ready),
        }

        child.kill()
        with SignalLog() as signals:
            backend.runtime.open_store()
            wait_until(
                settled(alias, running),
                timeout=SETTLED_WITHIN,
                message="the killed process's running tasks failed",
            )
            wait_until(settled(alias, ready), message="the READY tasks run here")
            wait_until(
                lambda: all(
                    signals.sent(i) == [("finished", "FAILED")] for i in running
                ),
                message="task_finished of the lost tasks",
            )

        for result_id in running:
            assert_lost(alias, result_id, owner, child.pid)
        for result_id in ready:
            # Held here, where the end is applied just after the store has it.
            result = backend.wait_for_result(result_id, DEADLINE)
            assert result.status == "SUCCESSFUL", result.errors
            # Run here, by the process that took it over.
            assert result.worker_ids[0].split(":")[1] != str(child.pid)
        # Each READY task ran once, and no task that may have started ran again.
        assert sorted(read_log(tmp_path / "log")) == ["ready-0", "ready-1", "ready-2"]
        assert rows(alias).filter(status__in=["READY", "RUNNING"]).count() == 0


#: One task RUNNING, three READY behind it; then the main thread ends: the
#: exit gives the READY ones up and waits for the running one.
TASKS_THEN_EXIT = """
running = tasks.block_until.using(backend=alias).enqueue(release)
ready = [
    tasks.log_label.using(backend=alias).enqueue(log, f"ready-{number}")
    for number in range(3)
]
until(lambda: stored_status(running.id) == "RUNNING")
report(running=running.id, ready=[result.id for result in ready])
"""


@pytest.mark.parametrize(
    "like",
    [
        "threads-sqlite",
        "processes-sqlite",
        pytest.param("threads-postgres", marks=pytest.mark.postgres),
    ],
)
def test_a_clean_exit_leaves_unstarted_tasks_to_another_process(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    with store_alias(like, MAX_WORKERS=1, SHUTDOWN_TIMEOUT=DEADLINE) as alias:
        backend = task_backends[alias]
        child = spawn("exiting", TASKS_THEN_EXIT, alias)
        report = child.report()
        running, ready = report["running"], report["ready"]

        # The exit gives the unstarted tasks up while the running one runs on.
        wait_until(
            lambda: (
                set(rows(alias).filter(owner="").values_list("id", flat=True))
                == set(ready)
            ),
            message="the unstarted tasks given up",
        )
        assert rows(alias).get(id=running).status == "RUNNING"
        (tmp_path / "release").touch()
        child.exit_code()

        # Its lease is gone; what it finished survives it, readable from here.
        assert not leases(alias).exists()
        finished = backend.get_result(running)
        assert finished.status == "SUCCESSFUL"
        assert finished.worker_ids[0].split(":")[1] == str(finished.return_value)
        assert {
            (row.id, row.status, row.owner, row.dispatched) for row in rows(alias)
        } == {
            (running, "SUCCESSFUL", rows(alias).get(id=running).owner, True),
            *((i, "READY", "", False) for i in ready),
        }
        assert read_log(tmp_path / "log") == []

        # The next process to open the store runs them, once each.
        backend.runtime.open_store()
        wait_until(settled(alias, ready), message="the given-up tasks run here")
        for result_id in ready:
            # Held here, where the end is applied just after the store has it.
            assert backend.wait_for_result(result_id, DEADLINE).status == "SUCCESSFUL"
        assert sorted(read_log(tmp_path / "log")) == ["ready-0", "ready-1", "ready-2"]


#: Leave a lease and stay up (taking part in recovery) until told to stop.
TAKE_PART = """
backend.runtime.open_store()
report()
until(lambda: (here / "stop").exists())
"""

#: One task RUNNING, many READY behind it, then killed.
MANY_THEN_KILLED = """
running = tasks.block_until.using(backend=alias).enqueue(release)
ready = [
    tasks.log_label.using(backend=alias).enqueue(log, f"ready-{number}")
    for number in range(20)
]
until(lambda: stored_status(running.id) == "RUNNING")
report(running=running.id, ready=[result.id for result in ready])
time.sleep(600)  # until the test kills it
"""


@pytest.mark.parametrize("like", THREAD_STORES)
def test_two_processes_recovering_at_once_run_each_task_once(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    with store_alias(like, MAX_WORKERS=1) as alias:
        lost = spawn("lost", MANY_THEN_KILLED, alias)
        takers = [spawn(f"taker-{n}", TAKE_PART, alias) for n in range(2)]
        report = lost.report()
        for taker in takers:
            taker.report()
        # All three hold a lease: both takers see the lease run out together.
        assert leases(alias).count() == 3
        owner = rows(alias).get(id=report["running"]).owner

        lost.kill()
        wait_until(
            lambda: not rows(alias).filter(status__in=["READY", "RUNNING"]).exists(),
            message="every task settled",
        )
        (tmp_path / "stop").touch()
        for taker in takers:
            taker.exit_code()

        assert_lost(alias, report["running"], owner, lost.pid)
        ready = rows(alias).filter(id__in=report["ready"])
        assert {row.status for row in ready} == {"SUCCESSFUL"}
        taker_pids = {str(taker.pid) for taker in takers}
        assert {row.worker_ids[0].split(":")[1] for row in ready} <= taker_pids
        labels = read_log(tmp_path / "log")
        assert sorted(labels) == sorted(f"ready-{number}" for number in range(20))


# -- reading from anywhere ---------------------------------------------------

#: One task, held on a file; the child waits for it, then exits.
ONE_TASK = """
result = tasks.block_until.using(backend=alias).enqueue(release)
report(id=result.id)
backend.wait_for_result(result.id, timeout=60)
"""


@pytest.mark.parametrize("like", THREAD_STORES)
def test_another_process_reads_and_waits_for_a_result(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    with store_alias(like) as alias:
        backend = task_backends[alias]
        child = spawn("runner", ONE_TASK, alias)
        result_id = child.report()["id"]

        running = wait_until_running(alias, result_id)
        assert running.worker_ids[0].split(":")[1] == str(child.pid)
        assert asyncio.run(backend.aget_result(result_id)).status == "RUNNING"
        with pytest.raises(TimeoutError, match="RUNNING"):
            backend.wait_for_result(result_id, timeout=0.05)
        with pytest.raises(TimeoutError):
            wait(running, timeout=0.05)
        with pytest.raises(TimeoutError):
            asyncio.run(await_result(running, timeout=0.05))

        with ThreadPoolExecutor(3) as pool:
            waits = [
                pool.submit(backend.wait_for_result, result_id, DEADLINE),
                pool.submit(wait, running, DEADLINE),
                pool.submit(asyncio.run, await_result(running, DEADLINE)),
            ]
            assert not any(future.done() for future in waits)
            (tmp_path / "release").touch()
            finished = [future.result(timeout=DEADLINE) for future in waits]
        child.exit_code()

        for result in finished:
            assert result.status == "SUCCESSFUL"
            assert result.return_value == child.pid
        running.refresh()
        assert running.status == "SUCCESSFUL"
        assert running.return_value == child.pid
        fetched = asyncio.run(backend.aget_result(result_id))
        assert (fetched.status, fetched.return_value) == ("SUCCESSFUL", child.pid)
        # And after the process that ran it has gone.
        assert backend.get_result(result_id).return_value == child.pid


@pytest.mark.parametrize("like", THREAD_STORES)
def test_an_unknown_id_raises_in_every_reader(like: str) -> None:
    with store_alias(like) as alias:
        backend = task_backends[alias]
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result("no-such-id")
        with pytest.raises(TaskResultDoesNotExist):
            asyncio.run(backend.aget_result("no-such-id"))
        with pytest.raises(TaskResultDoesNotExist):
            backend.wait_for_result("no-such-id", timeout=DEADLINE)


# -- MAX_RESULTS -------------------------------------------------------------


@pytest.mark.parametrize("like", THREAD_STORES)
def test_max_results_bounds_the_finished_rows_of_its_alias(
    like: str, tmp_path: Path
) -> None:
    release = str(tmp_path / "release")
    with (
        store_alias(like, MAX_RESULTS=5, MAX_WORKERS=2) as alias,
        store_alias(like) as other,
    ):
        backend = task_backends[alias]
        others = [run_and_wait(other, tasks.noop).id for _ in range(2)]
        running = tasks.block_until.using(backend=alias).enqueue(release)
        wait_until_running(alias, running.id)
        later = tasks.noop.using(
            backend=alias, run_after=timezone.now() + timedelta(hours=1)
        ).enqueue()
        done = [run_and_wait(alias, tasks.noop).id for _ in range(12)]

        finished = rows(alias).filter(finished_at__isnull=False)
        assert set(finished.values_list("id", flat=True)) == set(done[-5:])
        # Unfinished rows are never pruned, nor another alias's rows.
        assert rows(alias).get(id=running.id).status == "RUNNING"
        assert rows(alias).get(id=later.id).status == "READY"
        assert set(rows(other).values_list("id", flat=True)) == set(others)

        Path(release).touch()
        assert backend.wait_for_result(running.id, DEADLINE).status == "SUCCESSFUL"
        finished = rows(alias).filter(finished_at__isnull=False)
        assert set(finished.values_list("id", flat=True)) == {*done[-4:], running.id}
        assert rows(alias).get(id=later.id).status == "READY"


@pytest.mark.parametrize("like", THREAD_STORES)
def test_past_the_bound_the_oldest_tenth_goes_at_once(like: str) -> None:
    # MAX_RESULTS 20: past it, the finished rows go down to 18 (a tenth less),
    # the newest kept; the bound itself is never passed.
    with store_alias(like, MAX_RESULTS=20, MAX_WORKERS=1) as alias:
        done = []
        counts = []
        for _ in range(45):
            done.append(run_and_wait(alias, tasks.noop).id)
            counts.append(rows(alias).filter(finished_at__isnull=False).count())
        kept = set(rows(alias).values_list("id", flat=True))
    assert counts[:20] == list(range(1, 21))
    assert max(counts) == 20
    assert 18 in counts[20:]
    assert kept == set(done[-counts[-1] :])


def finished_count(alias: str) -> int:
    """The alias's count of finished rows, as the database's triggers keep it."""
    database = task_backends[alias].settings["DATABASE"]
    count = FinishedCount.objects.using(database).filter(backend=alias).first()
    return 0 if count is None else count.finished


def finished_rows(alias: str) -> int:
    return rows(alias).filter(finished_at__isnull=False).count()


@pytest.mark.parametrize("like", THREAD_STORES)
def test_the_count_of_finished_rows_follows_every_write(like: str) -> None:
    # A task's end reads the count to check MAX_RESULTS: whatever writes
    # the rows, the task's end, a cancel, a prune, or a write by hand.
    with (
        store_alias(like, MAX_RESULTS=10, MAX_WORKERS=1) as alias,
        store_alias(like) as other,
    ):
        backend = task_backends[alias]
        for _ in range(3):
            run_and_wait(alias, tasks.noop)
        assert finished_count(alias) == finished_rows(alias) == 3
        later = tasks.noop.using(
            backend=alias, run_after=timezone.now() + timedelta(hours=1)
        ).enqueue()
        assert finished_count(alias) == 3
        backend.cancel(later.id)
        assert finished_count(alias) == finished_rows(alias) == 4

        oldest, second, third = rows(alias).order_by("finished_at")[:3]
        oldest.delete()
        assert finished_count(alias) == 3
        rows(alias).filter(id=second.id).update(finished_at=None)
        assert finished_count(alias) == 2
        rows(alias).filter(id=third.id).update(backend=other)
        assert finished_count(alias) == finished_rows(alias) == 1
        assert finished_count(other) == finished_rows(other) == 1
        rows(alias).filter(id=second.id).update(finished_at=timezone.now())
        assert finished_count(alias) == finished_rows(alias) == 2

        # Past the bound: the prune's deletes are counted too.
        for _ in range(12):
            run_and_wait(alias, tasks.noop)
            assert finished_count(alias) == finished_rows(alias) <= 10


@pytest.mark.parametrize("like", THREAD_STORES)
def test_a_count_that_drifted_is_right_again_after_one_prune(like: str) -> None:
    # As a TRUNCATE of the results table would leave it (no trigger fires).
    with store_alias(like, MAX_RESULTS=10, MAX_WORKERS=1) as alias:
        for _ in range(4):
            run_and_wait(alias, tasks.noop)
        database = task_backends[alias].settings["DATABASE"]
        FinishedCount.objects.using(database).filter(backend=alias).update(
            finished=1000
        )
        run_and_wait(alias, tasks.noop)
        assert finished_count(alias) == finished_rows(alias) == 5
        for _ in range(3):
            run_and_wait(alias, tasks.noop)
        assert finished_count(alias) == finished_rows(alias) == 8


# -- transactions ------------------------------------------------------------


class RollBack(Exception):
    pass


def visible_elsewhere(alias: str, result_id: str) -> StoredResult | None:
    """The row as another connection (another thread's) sees it, or None."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: rows(alias).filter(id=result_id).first()).result()


@pytest.mark.parametrize("like", THREAD_STORES)
def test_an_enqueue_in_the_store_database_transaction_is_part_of_it(
    like: str, tmp_path: Path
) -> None:
    log = str(tmp_path / "log")
    with store_alias(like) as alias:
        backend = task_backends[alias]
        database = backend.settings["DATABASE"]

        with pytest.raises(RollBack), transaction.atomic(using=database):
            rolled_back = tasks.log_label.using(backend=alias).enqueue(log, "rolled")
            assert rows(alias).filter(id=rolled_back.id).exists()
            assert visible_elsewhere(alias, rolled_back.id) is None
            raise RollBack
        assert not rows(alias).filter(id=rolled_back.id).exists()
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(rolled_back.id)

        with transaction.atomic(using=database):
            committed = tasks.log_label.using(backend=alias).enqueue(log, "committed")
            assert visible_elsewhere(alias, committed.id) is None
            assert backend.get_result(committed.id).status == "READY"
        assert backend.wait_for_result(committed.id, DEADLINE).status == "SUCCESSFUL"

        backend.wait_until_idle(DEADLINE)
        assert read_log(tmp_path / "log") == ["committed"]


@pytest.mark.parametrize("like", THREAD_STORES)
def test_an_enqueue_in_another_database_transaction_is_held_until_it_commits(
    like: str, tmp_path: Path
) -> None:
    log = str(tmp_path / "log")
    with store_alias(like) as alias:
        backend = task_backends[alias]

        with transaction.atomic(using="default"):
            committed = tasks.log_label.using(backend=alias).enqueue(log, "committed")
            row = visible_elsewhere(alias, committed.id)
            assert row is not None
            assert (row.status, row.held) == ("READY", True)
        assert backend.wait_for_result(committed.id, DEADLINE).status == "SUCCESSFUL"
        assert rows(alias).get(id=committed.id).held is False

        with pytest.raises(RollBack), transaction.atomic(using="default"):
            rolled_back = tasks.log_label.using(backend=alias).enqueue(log, "rolled")
            assert visible_elsewhere(alias, rolled_back.id).held is True
            raise RollBack
        # Deleted at once, not at the next recovery.
        assert visible_elsewhere(alias, rolled_back.id) is None
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(rolled_back.id)

        backend.wait_until_idle(DEADLINE)
        assert read_log(tmp_path / "log") == ["committed"]


#: A task RUNNING, a witness READY behind it, and an enqueue held for a
#: transaction of "default" that never ends: killed inside it.
HELD_THEN_KILLED = """
from django.db import transaction

running = tasks.block_until.using(backend=alias).enqueue(release)
witness = tasks.log_label.using(backend=alias).enqueue(log, "witness")
until(lambda: stored_status(running.id) == "RUNNING")
with transaction.atomic():
    held = tasks.log_label.using(backend=alias).enqueue(log, "held")
    report(running=running.id, witness=witness.id, held=held.id)
    time.sleep(600)  # until the test kills it
"""


@pytest.mark.parametrize("like", THREAD_STORES)
def test_a_row_held_by_a_killed_process_is_deleted_not_run(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    with store_alias(like, MAX_WORKERS=1) as alias:
        backend = task_backends[alias]
        child = spawn("holding", HELD_THEN_KILLED, alias)
        report = child.report()
        held = rows(alias).get(id=report["held"])
        assert (held.status, held.held) == ("READY", True)

        child.kill()
        backend.runtime.open_store()
        wait_until(
            settled(alias, [report["running"], report["witness"]]),
            timeout=SETTLED_WITHIN,
            message="the killed process's tasks settled",
        )

        assert_lost(alias, report["running"], held.owner, child.pid)
        witness = backend.wait_for_result(report["witness"], DEADLINE)
        assert witness.status == "SUCCESSFUL"
        assert not rows(alias).filter(id=report["held"]).exists()
        with pytest.raises(TaskResultDoesNotExist):
            backend.get_result(report["held"])
        assert read_log(tmp_path / "log") == ["witness"]


# -- metadata, retries, cancellation (issue 14) --------------------------------

CANCELLED = "django_tasks_local.exceptions.TaskCancelled"


def assert_cancelled(result: Any) -> None:
    assert result.status == "FAILED"
    assert result.errors[-1].exception_class_path == CANCELLED
    assert "was cancelled" in result.errors[-1].traceback


@pytest.mark.parametrize("like", ALL_STORES)
def test_metadata_is_in_the_row_from_the_enqueue_to_the_end(
    like: str, tmp_path: Path
) -> None:
    release = tmp_path / "release"
    with store_alias(like) as alias:
        backend = task_backends[alias]
        # At enqueue: a task that waits an hour keeps the row as written.
        later = tasks.local_report_progress.using(
            backend=alias,
            run_after=timezone.now() + timedelta(hours=1),
            metadata={"source": "enqueue"},
        ).enqueue(str(release))
        assert rows(alias).get(id=later.id).metadata == {"source": "enqueue"}
        assert backend.runtime.load(later.id).metadata == {"source": "enqueue"}

        result = tasks.local_report_progress.using(
            backend=alias, metadata={"source": "test"}
        ).enqueue(str(release))
        assert result.metadata == {"source": "test"}
        saved = {"source": "test", "progress": 50}
        # Saved by the running task (a thread, or a worker process through
        # its parent): in the row, for every process to read, while it runs.
        wait_until(
            lambda: rows(alias).get(id=result.id).metadata == saved,
            message="the saved progress in the row",
        )
        read = backend.runtime.load(result.id)  # from the database
        assert (read.status, read.metadata) == ("RUNNING", saved)

        release.touch()
        final = backend.wait_for_result(result.id, DEADLINE)
        # What the task left unsaved in context.metadata is written with its end.
        ended = {"source": "test", "progress": 100}
        assert (final.status, final.metadata) == ("SUCCESSFUL", ended)
        assert rows(alias).get(id=result.id).metadata == ended
        assert backend.runtime.load(result.id).metadata == ended

        # Cancelled (here, where it waits): its metadata stays.
        assert_cancelled(backend.cancel(later.id))
        assert rows(alias).get(id=later.id).metadata == {"source": "enqueue"}


@pytest.mark.parametrize("like", ALL_STORES)
def test_between_attempts_the_row_is_ready_until_its_next_turn(
    like: str, tmp_path: Path
) -> None:
    attempts = tmp_path / "attempts"
    with store_alias(like) as alias:
        backend = task_backends[alias]
        database = backend.settings["DATABASE"]
        between: list[StoredResult] = []

        def look(sender: type, task_result: Any, **kwargs: Any) -> None:
            # Sent once the retry is recorded, before the next attempt waits
            # for its turn: the row as every process then reads it.
            if task_result.backend == alias:
                between.append(
                    StoredResult.objects.using(database).get(id=task_result.id)
                )

        task_retrying.connect(look, weak=False)
        try:
            result = tasks.fail_first_attempt.using(backend=alias).enqueue(
                str(attempts)
            )
            final = backend.wait_for_result(result.id, DEADLINE)
        finally:
            task_retrying.disconnect(look)

        [row] = between
        assert (row.status, row.dispatched, row.finished_at) == ("READY", False, None)
        assert row.owner == backend.runtime._store.lease_id
        [error] = row.errors
        assert error["exception_class_path"] == "builtins.ValueError"
        assert "the first attempt fails" in error["traceback"]
        assert len(row.worker_ids) == 1
        assert row.started_at is not None
        # Its next attempt waits the backoff (1 s) past the failed one.
        assert row.run_after >= row.last_attempted_at + timedelta(seconds=1)

        assert final.status == "SUCCESSFUL", final.errors
        assert final.attempts == 2
        assert final.worker_ids[0] == row.worker_ids[0]
        assert [asdict(e) for e in final.errors] == [error]
        assert final.last_attempted_at >= row.run_after
        ended = rows(alias).get(id=result.id)
        assert (ended.status, ended.worker_ids, ended.errors) == (
            "SUCCESSFUL",
            final.worker_ids,
            [error],
        )
        assert len(attempts.read_text().splitlines()) == 2


#: MAX_WORKERS 1: a task fails its first attempt once a blocker waits behind
#: it; the blocker then takes the worker, and the retry waits READY behind it
#: until the process is killed.
RETRY_THEN_KILLED = """
attempts, go = str(here / "attempts"), str(here / "go")
flaky = tasks.fail_first_attempt.using(backend=alias).enqueue(attempts, go)
until(lambda: stored_status(flaky.id) == "RUNNING")
blocker = tasks.block_until.using(backend=alias).enqueue(release)
Path(go).touch()
until(lambda: stored_status(blocker.id) == "RUNNING")
report(flaky=flaky.id, blocker=blocker.id)
time.sleep(600)  # until the test kills it
"""


@pytest.mark.parametrize("like", ALL_STORES)
def test_a_retry_waiting_for_its_turn_survives_a_crash(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    with store_alias(like, MAX_WORKERS=1) as alias:
        backend = task_backends[alias]
        child = spawn("retrying", RETRY_THEN_KILLED, alias)
        report = child.report()
        flaky, blocker = report["flaky"], report["blocker"]
        waiting = rows(alias).get(id=flaky)
        assert (waiting.status, waiting.dispatched) == ("READY", False)
        assert (len(waiting.errors), len(waiting.worker_ids)) == (1, 1)
        assert f":{child.pid}:" in waiting.owner

        child.kill()
        backend.runtime.open_store()
        wait_until(
            settled(alias, [blocker]),
            timeout=SETTLED_WITHIN,
            message="the killed process's running task failed",
        )
        assert_lost(alias, blocker, waiting.owner, child.pid)
        # Claimed here with its task's retry fields, and run at its turn.
        final = backend.wait_for_result(flaky, DEADLINE)
        assert final.status == "SUCCESSFUL", final.errors
        assert final.attempts == 2
        assert final.worker_ids[0] == waiting.worker_ids[0]
        # The second attempt ran here (a thread of this process, or a worker
        # process of its pool), no sooner than its turn.
        assert final.worker_ids[1].split(":")[1] == str(final.return_value)
        assert final.return_value != child.pid
        assert final.last_attempted_at >= waiting.run_after
        assert [asdict(e) for e in final.errors] == waiting.errors
        assert len((tmp_path / "attempts").read_text().splitlines()) == 2


#: A task RUNNING, one READY for an hour; then killed.
DEFERRED_THEN_KILLED = """
from datetime import timedelta

from django.utils import timezone

running = tasks.block_until.using(backend=alias).enqueue(release)
later = tasks.log_label.using(
    backend=alias, run_after=timezone.now() + timedelta(hours=1)
).enqueue(log, "later")
until(lambda: stored_status(running.id) == "RUNNING")
report(running=running.id, later=later.id)
time.sleep(600)  # until the test kills it
"""


@pytest.mark.parametrize("like", THREAD_STORES)
def test_cancel_a_task_of_a_lost_process(like: str, spawn: Any, tmp_path: Path) -> None:
    with store_alias(like) as alias:
        backend = task_backends[alias]
        child = spawn("lost", DEFERRED_THEN_KILLED, alias)
        report = child.report()
        running, later = report["running"], report["later"]
        owner = rows(alias).get(id=later).owner
        child.kill()

        with SignalLog() as signals:
            cancelled = backend.cancel(later)
        assert_cancelled(cancelled)
        assert cancelled.worker_ids == []
        # Announced here: its owner never will.
        assert signals.sent(later) == [("finished", "FAILED")]
        row = rows(alias).get(id=later)
        assert (row.status, row.owner) == ("FAILED", owner)
        assert row.finished_at is not None
        # What every process reads.
        assert_cancelled(backend.runtime.load(later))

        # Running in the lost process (until recovery says so): refused.
        with pytest.raises(CannotCancel) as refused:
            backend.cancel(running)
        message = str(refused.value)
        assert running in message and owner in message
        assert "cancel it from that process" in message

        with SignalLog() as recovery:
            backend.runtime.open_store()
            wait_until(
                settled(alias, [running]),
                timeout=SETTLED_WITHIN,
                message="the lost process's running task failed",
            )
            # Announced by the process that found it lost, from its signal
            # thread, once the row is written.
            wait_until(
                lambda: recovery.sent(running) == [("finished", "FAILED")],
                message="the lost task's end announced",
            )
        assert recovery.sent(later) == []
        assert_lost(alias, running, owner, child.pid)
        # The cancelled task was not taken over: it never runs.
        assert backend.runtime.get_held(later) is None
        assert read_log(tmp_path / "log") == []
        # Finished either way: returned as it is, nothing sent.
        with SignalLog() as signals:
            assert_cancelled(backend.cancel(later))
            again = backend.cancel(running)
        assert again.errors[-1].exception_class_path == PROCESS_LOST
        assert signals.sent(later) == signals.sent(running) == []


#: MAX_WORKERS 1: a task RUNNING, one READY behind it. Once the test has
#: cancelled the READY one and released the running one, it waits for both,
#: enqueues one more, and says what it saw (after.json).
READY_BEHIND_A_RUNNING_ONE = """
from django.tasks.signals import task_finished, task_started

seen = []


def note(sender, task_result, **kwargs):
    seen.append([task_result.id, task_result.status])


task_started.connect(note, weak=False)
task_finished.connect(note, weak=False)

running = tasks.block_until.using(backend=alias).enqueue(release)
waiting = tasks.log_label.using(backend=alias).enqueue(log, "cancelled")
until(lambda: stored_status(running.id) == "RUNNING")
report(running=running.id, waiting=waiting.id)

finished = backend.wait_for_result(waiting.id, timeout=60)
after = tasks.log_label.using(backend=alias).enqueue(log, "after")
(here / "after.json").write_text(json.dumps({
    "running": backend.wait_for_result(running.id, timeout=60).status,
    "waiting": [finished.status, finished.errors[-1].exception_class_path],
    "held": backend.runtime.get_held(waiting.id) is not None,
    "signals": [status for result_id, status in seen if result_id == waiting.id],
    "after": backend.wait_for_result(after.id, timeout=60).status,
}))
"""


@pytest.mark.parametrize("like", ALL_STORES)
def test_cancel_a_waiting_task_of_a_live_process(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    with store_alias(like, MAX_WORKERS=1) as alias:
        backend = task_backends[alias]
        child = spawn("owner", READY_BEHIND_A_RUNNING_ONE, alias)
        report = child.report()
        running, waiting = report["running"], report["waiting"]

        with pytest.raises(CannotCancel, match="RUNNING in another process"):
            backend.cancel(running)
        assert rows(alias).get(id=running).status == "RUNNING"

        with SignalLog() as signals:
            cancelled = backend.cancel(waiting)
        assert_cancelled(cancelled)
        assert signals.sent(waiting) == [("finished", "FAILED")]

        # Its owner's worker comes to it: the start is refused, and the owner
        # forgets it; nothing of it runs, nor is sent, there.
        (tmp_path / "release").touch()
        child.exit_code()
        after = json.loads((tmp_path / "after.json").read_text())
        assert after == {
            "running": "SUCCESSFUL",
            "waiting": ["FAILED", CANCELLED],
            "held": False,
            "signals": [],
            "after": "SUCCESSFUL",
        }
        assert read_log(tmp_path / "log") == ["after"]
        row = rows(alias).get(id=waiting)
        assert (row.status, row.worker_ids, len(row.errors)) == ("FAILED", [], 1)


# -- the store's new writes, on rows made by hand --------------------------------

ELSEWHERE = "elsewhere:1:0000"


def row_id(alias: str, name: str) -> str:
    """Ids are unique across aliases (and a database may outlive a test run)."""
    return f"{alias}:{name}"


def make_row(alias: str, name: str, **fields: Any) -> StoredResult:
    """A row of ``alias`` as another process (ELSEWHERE) would write it; its
    id is ``name`` in ``alias`` (``row_id``)."""
    values = {
        "id": row_id(alias, name),
        "backend": alias,
        "task_path": "tests.tasks.fail_first_attempt",
        "queue_name": "default",
        "args": ["path"],
        "status": "READY",
        "enqueued_at": timezone.now(),
        "owner": ELSEWHERE,
        **fields,
    }
    database = task_backends[alias].settings["DATABASE"]
    return StoredResult.objects.using(database).create(**values)


@pytest.mark.parametrize("like", THREAD_STORES)
def test_cancel_elsewhere_by_the_state_of_the_row(like: str) -> None:
    first = {"exception_class_path": "builtins.ValueError", "traceback": "first\n"}
    attempted = timezone.now() - timedelta(minutes=1)
    with store_alias(like) as alias:
        backend = task_backends[alias]
        store = backend.runtime._store
        retry = make_row(
            alias,
            "retry",
            errors=[first],
            worker_ids=["w:1"],
            started_at=attempted,
            last_attempted_at=attempted,
            run_after=timezone.now() + timedelta(hours=1),
            metadata={"progress": 10},
        ).id
        given_up = make_row(alias, "given-up", owner="").id
        dispatched = make_row(alias, "dispatched", dispatched=True).id
        running = make_row(alias, "running", status="RUNNING", worker_ids=["w:1"]).id
        done = make_row(alias, "done", status="SUCCESSFUL", finished_at=timezone.now())

        # READY, and no worker has it: FAILED, the earlier attempt's error kept.
        result, now = store.cancel_elsewhere(retry, TaskCancelled("stop"))
        assert now is True
        assert result.status == "FAILED"
        assert [e.exception_class_path for e in result.errors] == [
            "builtins.ValueError",
            CANCELLED,
        ]
        assert result.errors[1].traceback == f"{CANCELLED}: stop\n"
        assert (result.worker_ids, result.metadata) == (["w:1"], {"progress": 10})
        assert result.finished_at is not None
        assert rows(alias).get(id=retry).owner == ELSEWHERE
        # Its task as its module defines it: a LocalTask, with its retry fields.
        assert isinstance(result.task, LocalTask)
        assert (result.task.max_attempts, result.task.backoff) == (
            2,
            tasks.one_second,
        )
        assert store.cancel_elsewhere(given_up, TaskCancelled("stop"))[1] is True

        # Once finished, as it is.
        again, now = store.cancel_elsewhere(retry, TaskCancelled("again"))
        assert now is False
        assert [e.exception_class_path for e in again.errors][-1] == CANCELLED
        assert again.errors[-1].traceback.endswith("stop\n")
        unchanged, now = store.cancel_elsewhere(done.id, TaskCancelled("stop"))
        assert (unchanged.status, unchanged.finished_at, now) == (
            "SUCCESSFUL",
            done.finished_at,
            False,
        )

        for result_id, state in [
            (dispatched, "handed to a worker"),
            (running, "RUNNING"),
        ]:
            with pytest.raises(CannotCancel, match=f"is {state} in another process"):
                store.cancel_elsewhere(result_id, TaskCancelled("stop"))
            assert rows(alias).get(id=result_id).finished_at is None

        with pytest.raises(TaskResultDoesNotExist, match="database store"):
            store.cancel_elsewhere("no-such-id", TaskCancelled("stop"))
        with pytest.raises(TaskResultDoesNotExist):
            backend.cancel("no-such-id")


@pytest.mark.parametrize("like", THREAD_STORES)
def test_metadata_and_retries_are_written_only_by_the_owner(
    like: str, caplog: pytest.LogCaptureFixture
) -> None:
    with store_alias(like) as alias:
        store = task_backends[alias].runtime._store
        mine = store.lease_id
        running = make_row(alias, "running", status="RUNNING", owner=mine).id
        ready = make_row(alias, "ready", owner=mine).id
        taken = make_row(alias, "taken", status="RUNNING", owner=ELSEWHERE).id
        for result_id in (running, ready, taken):
            store.save_metadata(result_id, {"progress": 1})
        assert {row.id: row.metadata for row in rows(alias)} == {
            running: {"progress": 1},
            ready: {},
            taken: {},
        }

        # A retry of a task that another process took over is not written.
        result = store.load(taken)
        object.__setattr__(result, "status", "READY")
        store.save_retrying(result)
        assert rows(alias).get(id=taken).status == "RUNNING"
        assert "its retry was not recorded" in caplog.text


@pytest.mark.parametrize("like", THREAD_STORES)
def test_a_held_task_cancelled_from_elsewhere_never_runs(
    like: str, tmp_path: Path
) -> None:
    # Its enqueue waits for a transaction on "default": cancelled meanwhile
    # (as another process would: in the store, not in this process's memory).
    log = str(tmp_path / "log")
    with store_alias(like) as alias:
        backend = task_backends[alias]
        store = backend.runtime._store
        with transaction.atomic(using="default"):
            committed = tasks.log_label.using(backend=alias).enqueue(log, "committed")
            store.cancel_elsewhere(committed.id, TaskCancelled("it was cancelled"))
        # Its start is refused here: this process forgets it, and reads the store.
        assert_cancelled(backend.wait_for_result(committed.id, DEADLINE))
        wait_until(lambda: backend.runtime.get_held(committed.id) is None)

        with pytest.raises(RollBack), transaction.atomic(using="default"):
            rolled_back = tasks.log_label.using(backend=alias).enqueue(log, "rolled")
            store.cancel_elsewhere(rolled_back.id, TaskCancelled("it was cancelled"))
            raise RollBack
        # Rolled back: no trace of it, cancelled or not.
        assert not rows(alias).filter(id=rolled_back.id).exists()

        after = run_and_wait(alias, tasks.log_label, log, "after")
        assert after.status == "SUCCESSFUL"
        assert read_log(tmp_path / "log") == ["after"]


#: A task RUNNING, its first attempt's body held; then killed.
RUNNING_THEN_KILLED = """
running = tasks.block_first_attempt.using(backend=alias).enqueue(
    str(here / "attempts"), release
)
# Its body has begun (the start is recorded before the body runs).
until(lambda: (here / "attempts").exists())
report(running=running.id)
time.sleep(600)  # until the test kills it
"""


@pytest.mark.parametrize("like", ALL_STORES)
def test_a_lost_process_running_task_is_retried_when_asked(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    # RETRY_CRASHED: a task that may have run in part is tried again, here.
    with store_alias(
        like, MAX_ATTEMPTS=2, BACKOFF="tests.tasks.no_wait", RETRY_CRASHED=True
    ) as alias:
        backend = task_backends[alias]
        child = spawn("lost-retried", RUNNING_THEN_KILLED, alias)
        result_id = child.report()["running"]
        owner = rows(alias).get(id=result_id).owner
        child.kill()
        with SignalLog() as signals:
            backend.runtime.open_store()
            final = backend.wait_for_result(result_id, DEADLINE)
            wait_until(lambda: ("finished", "SUCCESSFUL") in signals.sent(result_id))
        assert final.status == "SUCCESSFUL", final.errors
        assert final.attempts == 2
        [error] = final.errors
        assert error.exception_class_path == PROCESS_LOST
        assert owner in error.traceback
        assert final.return_value != child.pid
        assert signals.sent(result_id)[0] == ("retrying", "READY")


@pytest.mark.parametrize("like", THREAD_STORES)
def test_a_lost_process_running_task_is_not_retried_by_default(
    like: str, spawn: Any, tmp_path: Path
) -> None:
    with store_alias(like, MAX_ATTEMPTS=3, BACKOFF="tests.tasks.no_wait") as alias:
        backend = task_backends[alias]
        child = spawn("lost-failed", RUNNING_THEN_KILLED, alias)
        result_id = child.report()["running"]
        owner = rows(alias).get(id=result_id).owner
        child.kill()
        backend.runtime.open_store()
        wait_until(settled(alias, [result_id]), timeout=SETTLED_WITHIN)
        assert_lost(alias, result_id, owner, child.pid)


# -- the writers' turns (SQLite) -------------------------------------------------


def test_a_first_writer_goes_before_the_others_waiting() -> None:
    turns = _Turns()
    turns.take(first=False)  # Held: both below must wait.
    order: list[str] = []

    def write(name: str, first: bool) -> None:
        turns.take(first=first)
        order.append(name)
        turns.give()

    with ThreadPoolExecutor(2) as pool:
        other = pool.submit(write, "other", False)
        wait_until(lambda: len(turns._others._waiters) == 1, message="other waits")
        enqueue = pool.submit(write, "first", True)
        wait_until(lambda: turns._firsts_waiting == 1, message="first waits")
        turns.give()
        other.result(DEADLINE)
        enqueue.result(DEADLINE)
    assert order == ["first", "other"]


def test_writers_take_turns_one_at_a_time_and_every_waiter_gets_one() -> None:
    # Each give() wakes one waiter: none may be left waiting, firsts and
    # others mixed, and never two writers in at once.
    turns = _Turns()
    turns.take(first=False)
    inside: set[int] = set()
    overlaps: list[set[int]] = []
    done: list[int] = []

    def write(number: int) -> None:
        turns.take(first=number % 3 == 0)
        inside.add(number)
        time.sleep(0)  # Lets the others run, and try to take the turn.
        if inside != {number}:
            overlaps.append(set(inside))
        inside.discard(number)
        done.append(number)
        turns.give()

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(write, number) for number in range(40)]
        wait_until(
            lambda: len(turns._others._waiters) + turns._firsts_waiting == 8,
            message="eight writers wait",
        )
        turns.give()
        for future in futures:
            future.result(DEADLINE)
    assert sorted(done) == list(range(40))
    assert overlaps == []


def test_a_waiter_interrupted_once_woken_passes_its_turn_on() -> None:
    turns = _Turns()
    turns.take(first=False)
    other_took = threading.Event()

    def other() -> None:
        turns.take(first=False)
        other_took.set()
        turns.give()

    real_wait = turns._firsts.wait

    def interrupted_wait() -> bool:
        real_wait()
        raise KeyboardInterrupt

    turns._firsts.wait = interrupted_wait  # type: ignore[method-assign]
    with ThreadPoolExecutor(2) as pool:
        waiting_other = pool.submit(other)
        wait_until(lambda: len(turns._others._waiters) == 1, message="other waits")
        first = pool.submit(turns.take, first=True)
        wait_until(lambda: turns._firsts_waiting == 1, message="first waits")
        turns.give()  # Wakes the first, which is interrupted.
        with pytest.raises(KeyboardInterrupt):
            first.result(DEADLINE)
        assert other_took.wait(DEADLINE), "the other writer was never woken"
        waiting_other.result(DEADLINE)
    assert turns._firsts_waiting == 0
    assert not turns._taken


# -- the statements' values ------------------------------------------------------


@pytest.mark.parametrize("like", THREAD_STORES)
def test_json_and_dates_are_stored_as_the_orm_stores_them(like: str) -> None:
    """Empty lists and dicts (adapted once for all), falsy JSON values that
    are not containers, nested values, and the dates, read back by the ORM."""
    with store_alias(like) as alias:
        # A day ahead: the row stays as the enqueue wrote it.
        run_after = timezone.now() + timedelta(days=1)
        result = tasks.echo.using(backend=alias, run_after=run_after).enqueue(
            [], {}, 0, "", False, None, [[]], {"a": {}}, k=[]
        )
        row = rows(alias).get(id=result.id)
        assert row.args == [[], {}, 0, "", False, None, [[]], {"a": {}}]
        assert row.kwargs == {"k": []}
        assert (row.errors, row.worker_ids, row.metadata) == ([], [], {})
        assert row.run_after == run_after
        assert row.enqueued_at == result.enqueued_at
