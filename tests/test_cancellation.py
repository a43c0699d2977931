"""Cancellation (``backend.cancel()``): of a waiting, a deferred, an uncommitted and a running task."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import transaction
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist
from django.utils import timezone

from tests import tasks
from tests.helpers import (
    SignalLog,
    process_exists,
    temporary_alias,
    wait_until,
    wait_until_finished,
    wait_until_running,
)

CANCELLED = "django_tasks_local.exceptions.TaskCancelled"


def assert_cancelled(result) -> None:
    assert result.status == TaskResultStatus.FAILED
    assert result.errors[-1].exception_class_path == CANCELLED
    assert "was cancelled" in result.errors[-1].traceback


def assert_only_later_tasks_ran(alias: str, log: Path) -> None:
    """A task enqueued now runs, and its label is the only one in ``log``:
    the cancelled task (labelled "ran") never did."""
    after = tasks.log_label.using(backend=alias).enqueue(str(log), "after")
    wait_until_finished(alias, after.id)
    assert log.read_text() == "after\n"


def test_a_waiting_task_never_starts(alias: str, tmp_path: Path) -> None:
    release = tmp_path / "release"
    with temporary_alias(alias, MAX_WORKERS=1) as one:
        backend = task_backends[one]
        busy = tasks.block_until.using(backend=one).enqueue(str(release))
        wait_until_running(one, busy.id)
        with SignalLog() as log:
            waiting = tasks.log_label.using(backend=one).enqueue(
                str(tmp_path / "log"), "ran"
            )
            cancelled = backend.cancel(waiting.id)
            assert_cancelled(cancelled)
            assert cancelled.worker_ids == []
            assert log.sent(waiting.id) == [
                ("enqueued", "READY"),
                ("finished", "FAILED"),
            ]
        release.touch()
        wait_until_finished(one, busy.id)
        assert_only_later_tasks_ran(one, tmp_path / "log")


def test_a_deferred_task_never_starts(alias: str, tmp_path: Path) -> None:
    later = timezone.now() + timedelta(hours=1)
    task = tasks.log_label.using(backend=alias, run_after=later)
    result = task.enqueue(str(tmp_path / "log"), "ran")
    assert_cancelled(task_backends[alias].cancel(result.id))
    assert_cancelled(task_backends[alias].get_result(result.id))


@pytest.mark.parametrize("alias", ["threads", "processes"])
def test_a_task_waiting_for_its_commit_never_starts(alias: str, tmp_path: Path) -> None:
    backend = task_backends[alias]
    with transaction.atomic():
        result = tasks.log_label.using(backend=alias).enqueue(
            str(tmp_path / "log"), "ran"
        )
        assert_cancelled(backend.cancel(result.id))
    assert_only_later_tasks_ran(alias, tmp_path / "log")
    assert_cancelled(backend.get_result(result.id))


@pytest.mark.parametrize("alias", ["processes", "processes-sqlite"])
def test_a_running_task_in_a_worker_process_is_killed(
    alias: str, tmp_path: Path
) -> None:
    backend = task_backends[alias]
    started = tmp_path / "started"
    result = tasks.block_until.using(backend=alias).enqueue(
        str(tmp_path / "never"), str(started)
    )
    wait_until_running(alias, result.id)
    pid = int(backend.get_result(result.id).worker_ids[0].split(":")[1])
    cancelled = backend.cancel(result.id)
    assert_cancelled(cancelled)
    wait_until(lambda: not process_exists(pid), message="the worker process killed")
    # The pool goes on.
    assert (
        wait_until_finished(
            alias, tasks.add.using(backend=alias).enqueue(2, 3).id
        ).return_value
        == 5
    )


@pytest.mark.parametrize("alias", ["threads", "threads-sqlite"])
def test_a_running_thread_is_told_and_abandoned(alias: str, tmp_path: Path) -> None:
    started, seen = tmp_path / "started", tmp_path / "seen"
    with temporary_alias(alias, MAX_WORKERS=1) as one:
        backend = task_backends[one]
        with SignalLog() as log:
            result = tasks.wait_for_cancel.using(backend=one).enqueue(
                str(started), str(seen)
            )
            wait_until(started.exists)
            # Final at once; the thread sees it, and stops on its own.
            assert_cancelled(backend.cancel(result.id))
            wait_until(seen.exists, message="the task saw its cancellation")
            wait_until(lambda: ("finished", "FAILED") in log.sent(result.id))
        # What the body returned afterwards changes nothing.
        next_one = tasks.add.using(backend=one).enqueue(1, 1)
        assert wait_until_finished(one, next_one.id).return_value == 2
        assert_cancelled(backend.get_result(result.id))
        assert log.sent(result.id).count(("finished", "FAILED")) == 1


def test_an_abandoned_thread_keeps_its_worker_until_it_returns(tmp_path: Path) -> None:
    release = tmp_path / "release"
    with temporary_alias("threads", MAX_WORKERS=1) as one:
        backend = task_backends[one]
        # block_until ignores its cancellation: it holds its thread until released.
        stuck = tasks.block_until.using(backend=one).enqueue(str(release))
        wait_until_running(one, stuck.id)
        assert_cancelled(backend.cancel(stuck.id))
        waiting = tasks.add.using(backend=one).enqueue(1, 2)
        # MAX_WORKERS 1: no second thread while the first still runs.
        assert backend.get_result(waiting.id).status == TaskResultStatus.READY
        release.touch()
        assert wait_until_finished(one, waiting.id).return_value == 3


def test_a_finished_result_is_returned_as_it_is(alias: str) -> None:
    result = tasks.add.using(backend=alias).enqueue(1, 2)
    final = wait_until_finished(alias, result.id)
    again = task_backends[alias].cancel(result.id)
    assert again.status == TaskResultStatus.SUCCESSFUL
    assert again.return_value == 3
    assert again.errors == final.errors == []


def test_an_unknown_id(alias: str) -> None:
    with pytest.raises(TaskResultDoesNotExist):
        task_backends[alias].cancel("0" * 32)
    with pytest.raises(TaskResultDoesNotExist, match="not a task result id"):
        task_backends[alias].cancel(42)  # type: ignore[arg-type]


def test_acancel(tmp_path: Path) -> None:
    later = timezone.now() + timedelta(hours=1)
    result = tasks.noop.using(backend="threads", run_after=later).enqueue()
    assert_cancelled(asyncio.run(task_backends["threads"].acancel(result.id)))


def test_a_task_cancelled_before_a_worker_process_reports_its_start(
    tmp_path: Path,
) -> None:
    # Handed to the pool, not started yet (its worker still starting): the
    # call is taken back, and it never runs.
    with temporary_alias("processes", MAX_WORKERS=1) as fresh:
        backend = task_backends[fresh]
        result = tasks.log_label.using(backend=fresh).enqueue(
            str(tmp_path / "log"), "ran"
        )
        assert_cancelled(backend.cancel(result.id))
        assert_only_later_tasks_ran(fresh, tmp_path / "log")
