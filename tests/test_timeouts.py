"""Timeouts, per task (``timeout``) and per alias (``TIMEOUT``), on both backends."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.tasks import TaskResultStatus

from django_tasks_local import TaskTimeout
from tests import tasks
from tests.helpers import (
    SignalLog,
    backend_kind,
    process_exists,
    temporary_alias,
    wait_until,
    wait_until_finished,
    wait_until_running,
)

TIMED_OUT = "django_tasks_local.exceptions.TaskTimeout"


def test_task_timeout_is_a_timeout_error() -> None:
    assert issubclass(TaskTimeout, TimeoutError)


def test_a_task_past_its_timeout_fails(alias: str, tmp_path: Path) -> None:
    done, release = tmp_path / "done", tmp_path / "release"
    with SignalLog() as log:
        result = tasks.block_past_timeout.using(backend=alias).enqueue(
            str(done), str(release)
        )
        final = wait_until_finished(alias, result.id)
        wait_until(lambda: ("finished", "FAILED") in log.sent(result.id))
    assert final.status == TaskResultStatus.FAILED
    assert final.errors[0].exception_class_path == TIMED_OUT
    assert "longer than its timeout of 0.5s" in final.errors[0].traceback
    assert final.attempts == 1
    if backend_kind(alias) == "threads":
        # The thread could not be stopped: it was told, and stopped itself.
        wait_until(lambda: done.exists() and done.read_text() == "told to stop")
    else:
        # The worker process was killed: the body never wrote its end.
        pid = int(final.worker_ids[0].split(":")[1])
        wait_until(lambda: not process_exists(pid))
        release.touch()
        assert not done.exists()
    assert log.sent(result.id).count(("finished", "FAILED")) == 1


def test_a_timed_out_attempt_is_retried(alias: str, tmp_path: Path) -> None:
    result = tasks.time_out_once.using(backend=alias).enqueue(
        str(tmp_path / "attempts")
    )
    final = wait_until_finished(alias, result.id)
    assert final.status == TaskResultStatus.SUCCESSFUL, final.errors
    assert final.return_value == 2
    assert [e.exception_class_path for e in final.errors] == [TIMED_OUT]


@pytest.mark.parametrize("like", ["threads", "processes"])
def test_the_alias_timeout(like: str, tmp_path: Path) -> None:
    with temporary_alias(like, TIMEOUT=0.3) as timed:
        result = tasks.block_until.using(backend=timed).enqueue(str(tmp_path / "never"))
        final = wait_until_finished(timed, result.id)
        assert final.errors[0].exception_class_path == TIMED_OUT
        assert "timeout of 0.3s" in final.errors[0].traceback
        # Quick tasks are left alone.
        assert (
            wait_until_finished(
                timed, tasks.add.using(backend=timed).enqueue(1, 1).id
            ).return_value
            == 2
        )
        # The abandoned thread of the first (blocked until "never") holds a
        # worker; the others run.
        (tmp_path / "never").touch()


@pytest.mark.parametrize("like", ["threads", "processes"])
def test_the_timeout_counts_from_the_start(like: str, tmp_path: Path) -> None:
    # Waiting for a worker longer than the timeout is no time-out.
    release = tmp_path / "release"
    with temporary_alias(like, MAX_WORKERS=1, TIMEOUT=1.0) as timed:
        busy = tasks.block_until.using(backend=timed).enqueue(str(release))
        wait_until_running(timed, busy.id)
        waiting = tasks.add.using(backend=timed).enqueue(2, 2)
        final_busy = wait_until_finished(timed, busy.id)  # timed out after 1 s
        assert final_busy.errors[0].exception_class_path == TIMED_OUT
        release.touch()
        assert wait_until_finished(timed, waiting.id).return_value == 4
