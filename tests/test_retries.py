"""Retries (retries.py, and the runtime's retry path): on every backend and store."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import django
import pytest
from django.tasks import TaskResultStatus, task
from django.tasks.base import TaskError
from django.utils import timezone

from django_tasks_local import LocalTask, exponential_backoff
from django_tasks_local.exceptions import (
    NotStarted,
    ProcessLost,
    TaskCancelled,
    TaskTimeout,
    WorkerCrashed,
)
from django_tasks_local.results import new_result
from django_tasks_local.retries import AttemptPolicy, default_backoff
from tests import tasks
from tests.helpers import (
    SignalLog,
    temporary_alias,
    wait_until,
    wait_until_finished,
)

# -- the policy alone -----------------------------------------------------------


def failed_result(task, attempts: int, error: type[BaseException] = ValueError):
    path = f"{error.__module__}.{error.__qualname__}"
    return new_result(
        task=task,
        id="r",
        status=TaskResultStatus.FAILED,
        enqueued_at=None,
        started_at=None,
        last_attempted_at=None,
        finished_at=None,
        args=[],
        kwargs={},
        backend="default",
        errors=[TaskError(exception_class_path=path, traceback="")] * attempts,
        worker_ids=["w"] * attempts,
    )


def plain(exception, task_result):
    return 7


class TestPolicy:
    def test_one_attempt_by_default(self) -> None:
        assert (
            AttemptPolicy().retry_delay(failed_result(tasks.noop, 1), ValueError())
            is None
        )

    def test_attempts_left(self) -> None:
        policy = AttemptPolicy(max_attempts=3, backoff=plain)
        assert policy.retry_delay(failed_result(tasks.noop, 1), ValueError()) == 7
        assert policy.retry_delay(failed_result(tasks.noop, 2), ValueError()) == 7
        assert policy.retry_delay(failed_result(tasks.noop, 3), ValueError()) is None

    def test_the_task_overrides_the_alias(self) -> None:
        policy = AttemptPolicy(max_attempts=1)
        task = tasks.fail_times  # max_attempts=3, backoff=no_wait
        assert policy.retry_delay(failed_result(task, 1), ValueError()) == 0
        assert policy.retry_delay(failed_result(task, 3), ValueError()) is None

    @pytest.mark.parametrize("error", [TaskCancelled, NotStarted])
    def test_never_retried(self, error: type[Exception]) -> None:
        policy = AttemptPolicy(max_attempts=5, backoff=plain)
        assert policy.retry_delay(failed_result(tasks.noop, 1, error), error()) is None

    @pytest.mark.parametrize("error", [WorkerCrashed, ProcessLost])
    def test_crashes_only_when_asked(self, error: type[Exception]) -> None:
        result = failed_result(tasks.noop, 1, error)
        assert (
            AttemptPolicy(max_attempts=5, backoff=plain).retry_delay(result, error())
            is None
        )
        asked = AttemptPolicy(max_attempts=5, backoff=plain, retry_crashed=True)
        assert asked.retry_delay(result, error()) == 7

    def test_retry_on(self) -> None:
        policy = AttemptPolicy(max_attempts=5, backoff=plain, retry_on=(KeyError,))
        assert (
            policy.retry_delay(failed_result(tasks.noop, 1, KeyError), KeyError()) == 7
        )
        assert policy.retry_delay(failed_result(tasks.noop, 1), ValueError()) is None
        # A timeout is a TimeoutError: retried under the default (Exception).
        timeout = failed_result(tasks.noop, 1, TaskTimeout)
        assert (
            AttemptPolicy(max_attempts=2, backoff=plain).retry_delay(
                timeout, TaskTimeout()
            )
            == 7
        )

    def test_the_recorded_class_decides_for_an_exception_that_did_not_come_back(
        self,
    ) -> None:
        # From a worker process, an unpicklable exception arrives as a stand-in.
        from django_tasks_local.exceptions import RemoteTaskError

        policy = AttemptPolicy(max_attempts=5, backoff=plain, retry_on=(KeyError,))
        result = failed_result(tasks.noop, 1, KeyError)
        assert policy.retry_delay(result, RemoteTaskError("stand-in")) == 7

    @pytest.mark.parametrize(
        ("returned", "delay"),
        [(None, None), (timedelta(seconds=3), 3.0), (2, 2.0), (0, 0.0)],
    )
    def test_what_backoff_returns(self, returned: object, delay: float | None) -> None:
        policy = AttemptPolicy(max_attempts=2, backoff=lambda e, r: returned)
        assert policy.retry_delay(failed_result(tasks.noop, 1), ValueError()) == delay

    @pytest.mark.parametrize("returned", [-1, float("inf"), float("nan"), "3", True])
    def test_a_bad_backoff_value_ends_the_retries(
        self, returned: object, caplog: pytest.LogCaptureFixture
    ) -> None:
        policy = AttemptPolicy(max_attempts=2, backoff=lambda e, r: returned)
        assert policy.retry_delay(failed_result(tasks.noop, 1), ValueError()) is None
        assert "not a number of seconds" in caplog.text

    def test_a_backoff_that_raises_ends_the_retries(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(exception, task_result):
            raise RuntimeError("broken backoff")

        policy = AttemptPolicy(max_attempts=2, backoff=broken)
        assert policy.retry_delay(failed_result(tasks.noop, 1), ValueError()) is None
        assert "broken backoff" in caplog.text

    def test_the_backoff_sees_the_exception_and_the_failed_result(self) -> None:
        seen = []
        policy = AttemptPolicy(
            max_attempts=3, backoff=lambda e, r: seen.append((e, r)) or 1
        )
        exception = ValueError("this one")
        policy.retry_delay(failed_result(tasks.noop, 2), exception)
        assert seen[0][0] is exception
        assert seen[0][1].status == TaskResultStatus.FAILED
        assert seen[0][1].attempts == 2


def test_exponential_backoff() -> None:
    backoff = exponential_backoff(base=1, factor=2, cap=10, jitter=0.5)
    for attempts, full in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 10), (60, 10)]:
        delay = backoff(ValueError(), failed_result(tasks.noop, attempts))
        assert full / 2 <= delay <= full
    no_jitter = exponential_backoff(base=3, jitter=0)
    assert no_jitter(ValueError(), failed_result(tasks.noop, 3)) == 12
    assert 0.5 <= default_backoff(ValueError(), failed_result(tasks.noop, 1)) <= 1


# -- retries on every backend and store -------------------------------------------


def test_a_failed_attempt_is_retried(alias: str, tmp_path: Path) -> None:
    path = str(tmp_path / "attempts")
    with SignalLog() as log:
        result = tasks.fail_times.using(backend=alias).enqueue(path, 1)
        final = wait_until_finished(alias, result.id)
    assert final.status == TaskResultStatus.SUCCESSFUL, final.errors
    # context.attempt counts this attempt; the file saw both.
    assert final.return_value == {"attempt": 2, "counted": 2}
    assert final.attempts == 2 and len(final.worker_ids) == 2
    # started_at is the first attempt's start; last_attempted_at the second's.
    assert final.started_at < final.last_attempted_at
    assert [e.exception_class_path for e in final.errors] == ["builtins.ValueError"]
    assert "attempt 1" in final.errors[0].traceback
    wait_until(lambda: ("finished", "SUCCESSFUL") in log.sent(result.id))
    assert log.sent(result.id) == [
        ("enqueued", "READY"),
        ("started", "RUNNING"),
        ("retrying", "READY"),
        ("started", "RUNNING"),
        ("finished", "SUCCESSFUL"),
    ]
    retrying = log.results(result.id, "retrying")[0]
    assert len(retrying.errors) == 1 and retrying.attempts == 1


def test_the_last_attempt_fails_for_good(alias: str, tmp_path: Path) -> None:
    path = str(tmp_path / "attempts")
    with SignalLog() as log:
        result = tasks.fail_times.using(backend=alias).enqueue(path, 5)
        final = wait_until_finished(alias, result.id)
    assert final.status == TaskResultStatus.FAILED
    assert final.attempts == 3
    assert [e.traceback.strip().rsplit("\n", 1)[-1] for e in final.errors] == [
        "ValueError: attempt 1",
        "ValueError: attempt 2",
        "ValueError: attempt 3",
    ]
    wait_until(lambda: ("finished", "FAILED") in log.sent(result.id))
    names = [name for name, _ in log.sent(result.id)]
    assert names.count("started") == 3
    assert names.count("retrying") == 2
    assert names.count("finished") == 1


def test_an_error_not_in_retry_on_is_not_retried(alias: str, tmp_path: Path) -> None:
    path = str(tmp_path / "attempts")
    result = tasks.fail_with_value_error_once.using(backend=alias).enqueue(path)
    final = wait_until_finished(alias, result.id)
    assert final.status == TaskResultStatus.FAILED
    assert final.attempts == 1


def test_between_attempts_the_result_is_ready_with_its_next_start(
    alias: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "attempts")
    later = LocalTask(
        func=tasks.fail_times.func,
        backend=alias,
        takes_context=True,
        max_attempts=2,
        backoff=lambda exception, task_result: 3600,
    )
    before = timezone.now()
    result = later.enqueue(path, 1)
    backend = later.get_backend()

    def waiting_again() -> bool:
        current = backend.get_result(result.id)
        return current.status == TaskResultStatus.READY and len(current.errors) == 1

    wait_until(waiting_again, message="READY after the first attempt")
    current = backend.get_result(result.id)
    assert current.attempts == 1
    assert current.task.run_after is not None
    assert current.task.run_after >= before + timedelta(seconds=3590)
    assert not current.is_finished
    # Cancelled while it waits: it never runs again.
    cancelled = backend.cancel(result.id)
    assert cancelled.status == TaskResultStatus.FAILED
    assert cancelled.errors[-1].exception_class_path.endswith(".TaskCancelled")
    assert Path(path).read_text().count("\n") == 1


def test_the_alias_options_retry_a_plain_task(alias: str, tmp_path: Path) -> None:
    path = str(tmp_path / "attempts")
    with temporary_alias(
        alias, MAX_ATTEMPTS=2, BACKOFF="tests.tasks.no_wait"
    ) as retrying:
        result = tasks.fail_plainly.using(backend=retrying).enqueue(path)
        final = wait_until_finished(retrying, result.id)
    assert final.status == TaskResultStatus.FAILED
    assert final.attempts == 2
    assert Path(path).read_text().count("\n") == 2


def test_retry_on_in_options(tmp_path: Path) -> None:
    path = str(tmp_path / "attempts")
    with temporary_alias(
        "threads", MAX_ATTEMPTS=3, BACKOFF=tasks.no_wait, RETRY_ON=["builtins.KeyError"]
    ) as retrying:
        result = tasks.fail_plainly.using(backend=retrying).enqueue(path)
        final = wait_until_finished(retrying, result.id)
    assert final.attempts == 1  # a ValueError: not retried


@pytest.mark.skipif(
    django.VERSION < (6, 1), reason="Django 6.0's @task takes no extra arguments"
)
def test_the_decorator_takes_the_fields_on_django_6_1() -> None:
    made = task(max_attempts=4, timeout=2)(tasks.noop.func)
    assert isinstance(made, LocalTask)
    assert (made.max_attempts, made.timeout) == (4, 2)


# -- crashed worker processes ---------------------------------------------------


@pytest.mark.parametrize("alias", ["processes", "processes-sqlite"])
def test_a_crashed_worker_is_not_retried_unless_asked(
    alias: str, tmp_path: Path
) -> None:
    path = str(tmp_path / "attempts")
    result = tasks.crash_once.using(backend=alias).enqueue(path)
    final = wait_until_finished(alias, result.id)
    assert final.status == TaskResultStatus.FAILED
    assert final.errors[-1].exception_class_path.endswith(".WorkerCrashed")
    assert final.attempts == 1


@pytest.mark.parametrize("alias", ["processes", "processes-sqlite"])
def test_a_crashed_worker_is_retried_when_asked(alias: str, tmp_path: Path) -> None:
    path = str(tmp_path / "attempts")
    result = tasks.crash_once_retried.using(backend=alias).enqueue(path)
    final = wait_until_finished(alias, result.id)
    assert final.status == TaskResultStatus.SUCCESSFUL, final.errors
    assert final.attempts == 2
    assert final.errors[0].exception_class_path.endswith(".WorkerCrashed")


# -- custom executors --------------------------------------------------------------


@pytest.mark.parametrize(
    "like",
    [
        "tests.helpers.PrefixedThreadPoolBackend",
        "tests.helpers.StdlibProcessPoolBackend",
    ],
)
def test_retries_on_a_custom_executor(like: str, tmp_path: Path) -> None:
    path = str(tmp_path / "attempts")
    with temporary_alias(like, MAX_WORKERS=2) as custom:
        result = tasks.fail_times.using(backend=custom).enqueue(path, 2)
        final = wait_until_finished(custom, result.id)
    assert final.status == TaskResultStatus.SUCCESSFUL, final.errors
    assert final.return_value == {"attempt": 3, "counted": 3}
    assert len(final.errors) == 2
