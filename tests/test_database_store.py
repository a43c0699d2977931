"""The database store across real processes: crashes, restarts, readers, bounds,
transactions (issue 13).

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
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction
from django.tasks import task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone

from django_tasks_local import await_result, wait
from django_tasks_local.models import Lease, StoredResult
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
