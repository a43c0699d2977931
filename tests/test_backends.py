"""Django's Tasks contract, on every backend: the two shipped, and two a user writes.

Each test runs on ThreadPoolBackend, ProcessPoolBackend and the two custom
``ExecutorBackend`` subclasses of tests/helpers.py, which put the same core on
a stdlib ``concurrent.futures`` executor in a dozen lines each.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.conf import settings
from django.tasks import TaskResultStatus, task_backends
from django.tasks.exceptions import TaskResultDoesNotExist, TaskResultMismatch
from django.test import override_settings
from django.utils import timezone

from django_tasks_local import ExecutorBackend
from tests import tasks
from tests.conftest import BACKEND_ALIASES
from tests.helpers import (
    CUSTOM_ALIASES,
    DEADLINE,
    SignalLog,
    backend_kind,
    run_and_wait,
    temporary_alias,
    wait_until,
    worker_is_alive,
)

READY = TaskResultStatus.READY
RUNNING = TaskResultStatus.RUNNING
SUCCESSFUL = TaskResultStatus.SUCCESSFUL
FAILED = TaskResultStatus.FAILED

# Backends whose workers report a task's start as it happens.
LIVE_START = {"threads", "processes", "custom_threads"}
IN_PROCESS = {"threads", "custom_threads"}


@pytest.fixture(params=[*BACKEND_ALIASES, *CUSTOM_ALIASES])
def alias(request: pytest.FixtureRequest):
    """Overrides conftest's: the contract holds for the custom backends too."""
    with override_settings(TASKS={**settings.TASKS, **CUSTOM_ALIASES}):
        yield request.param


@pytest.fixture
def backend(alias: str) -> ExecutorBackend:
    return task_backends[alias]


@pytest.fixture
def signals():
    with SignalLog() as log:
        yield log


# -- enqueue ---------------------------------------------------------------------


def test_enqueue_returns_a_ready_result(backend, signals):
    before = timezone.now()
    result = tasks.argument_types.using(backend=backend.alias).enqueue(
        (1, 2), "text", key=(3,)
    )
    after = timezone.now()

    assert result.status == READY
    assert isinstance(result.id, str) and result.id
    assert result.backend == backend.alias
    assert result.args == [[1, 2], "text"]
    assert result.kwargs == {"key": [3]}
    assert before <= result.enqueued_at <= after
    assert result.started_at is result.last_attempted_at is result.finished_at is None
    assert (result.errors, result.worker_ids) == ([], [])
    # task_enqueued was sent before enqueue() returned.
    assert signals.sent(result.id)[0] == ("enqueued", READY)


def test_the_task_receives_the_normalized_arguments(backend):
    result = run_and_wait(backend, tasks.argument_types, (1, 2), "text", key=(3,))

    assert result.status == SUCCESSFUL
    assert result.return_value == {"args": ["list", "str"], "kwargs": {"key": "list"}}


# -- start -----------------------------------------------------------------------


def test_started_at_is_when_the_body_started(alias, signals, tmp_path: Path):
    # An alias of its own: no other test's task may hold one of its workers.
    with temporary_alias(alias) as own:
        check_start_times(
            task_backends[own],
            alias,
            backend_kind(alias) in LIVE_START,
            signals,
            tmp_path,
        )


def check_start_times(backend, kind, live_start, signals, tmp_path):
    alias = backend.alias
    workers = backend.settings["MAX_WORKERS"]
    release = tmp_path / "release"
    blockers = [
        tasks.block_until.using(backend=alias).enqueue(
            str(release), started=str(tmp_path / f"blocker{n}.started")
        )
        for n in range(workers)
    ]
    wait_until(
        lambda: all((tmp_path / f"blocker{n}.started").exists() for n in range(workers))
    )

    # Every worker is busy: this one must wait for a blocker to end.
    late = tasks.noop.using(backend=alias).enqueue()
    assert backend.get_result(late.id).status == READY

    if live_start:
        running = [backend.get_result(blocker.id) for blocker in blockers]
        for result in running:
            assert result.status == RUNNING
            assert result.enqueued_at <= result.started_at == result.last_attempted_at
            assert result.finished_at is None
            assert result.attempts == 1
            expected = [("enqueued", READY), ("started", RUNNING)]
            if backend_kind(kind) in IN_PROCESS:
                # Sent in the worker's thread, before the body started.
                assert signals.sent(result.id) == expected
            else:
                # From a worker process: once the web process hears of it.
                wait_until(
                    lambda result=result, expected=expected: (
                        signals.sent(result.id) == expected
                    )
                )
        # One blocker per worker.
        assert len({result.worker_ids[0] for result in running}) == workers
    else:
        # The stdlib pool tells nothing until the outcome arrives.
        assert {backend.get_result(b.id).status for b in blockers} == {READY}

    released_at = timezone.now()
    release.touch()

    late = backend.wait_for_result(late.id, timeout=DEADLINE)
    assert late.enqueued_at <= released_at <= late.started_at == late.last_attempted_at
    assert late.attempts == 1
    for n, blocker in enumerate(blockers):
        blocker = backend.wait_for_result(blocker.id, timeout=DEADLINE)
        body_started = datetime.fromisoformat(
            (tmp_path / f"blocker{n}.started").read_text()
        )
        assert (
            blocker.enqueued_at
            <= blocker.started_at
            <= body_started
            <= blocker.finished_at
        )
        assert blocker.started_at == blocker.last_attempted_at
        assert len(blocker.worker_ids) == 1
        assert signals.sent(blocker.id) == [
            ("enqueued", READY),
            ("started", RUNNING),
            ("finished", SUCCESSFUL),
        ]


# -- outcomes ------------------------------------------------------------------------


def test_return_value_is_json_normalized(backend):
    result = run_and_wait(backend, tasks.nested_tuple)

    assert result.status == SUCCESSFUL
    assert result.return_value == [1, [2, 3], {"key": [4]}]
    assert result.errors == []
    assert result.started_at <= result.finished_at


@pytest.mark.parametrize("task", [tasks.return_datetime, tasks.return_unnormalizable])
def test_a_return_value_that_is_not_json_fails_the_task(backend, task):
    result = run_and_wait(backend, task)

    assert result.status == FAILED
    error = result.errors[-1]
    assert error.exception_class is TypeError
    assert "Unsupported type" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        _ = result.return_value


def test_an_exception_is_captured_with_the_tasks_traceback(backend):
    result = run_and_wait(backend, tasks.raise_value_error, "the task's own message")

    assert result.status == FAILED
    assert result.attempts == 1
    assert result.started_at <= result.finished_at
    [error] = result.errors
    assert error.exception_class_path == "builtins.ValueError"
    assert error.exception_class is ValueError
    # Formatted where the task ran: its own frame is in it.
    assert "tests/tasks.py" in error.traceback
    assert "in raise_value_error" in error.traceback
    assert "ValueError: the task's own message" in error.traceback


def test_system_exit_fails_only_its_task(alias):
    # One worker, of an alias of its own: every task runs on that worker.
    with temporary_alias(alias, MAX_WORKERS=1) as own:
        before = run_and_wait(own, tasks.native_thread_id)

        # Nothing escapes into the caller of enqueue().
        result = run_and_wait(own, tasks.raise_system_exit)

        assert result.status == FAILED
        assert result.errors[-1].exception_class is SystemExit
        assert "in raise_system_exit" in result.errors[-1].traceback
        assert worker_is_alive(result.worker_ids[0])
        # Later tasks still run, on the same worker of the same pool: not on
        # a thread or process that replaced it.
        after = run_and_wait(own, tasks.native_thread_id)
        assert after.status == SUCCESSFUL
        assert after.return_value == before.return_value
        assert after.worker_ids == result.worker_ids == before.worker_ids


@pytest.mark.parametrize(
    ("task", "class_path"),
    [
        (tasks.raise_value_error, "builtins.ValueError"),
        (tasks.raise_system_exit, "builtins.SystemExit"),
        (tasks.raise_keyboard_interrupt, "builtins.KeyboardInterrupt"),
    ],
)
def test_every_exception_is_recorded_as_its_own_class(backend, task, class_path):
    args = ["message"] if task is tasks.raise_value_error else []
    [error] = run_and_wait(backend, task, *args).errors
    assert error.exception_class_path == class_path


def test_a_failed_tasks_log_line_carries_its_exception_and_traceback(backend, caplog):
    # As under ImmediateBackend: Django's receiver logs sys.exc_info(), so
    # task_finished is sent with the exception in hand.
    with caplog.at_level("INFO", logger="django.tasks"):
        result = run_and_wait(backend, tasks.raise_value_error, "the logged message")
    [record] = [
        record
        for record in caplog.records
        if record.name == "django.tasks"
        and f"id={result.id}" in record.getMessage()
        and "state=FAILED" in record.getMessage()
    ]
    assert record.levelname == "ERROR"
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    logged = logging.Formatter().formatException(record.exc_info)
    # The task's own frame, formatted where it ran (a worker process's too).
    assert "in raise_value_error" in logged
    assert logged.endswith("ValueError: the logged message")


def test_an_async_task_runs(backend):
    result = run_and_wait(backend, tasks.async_own_result_id)

    assert result.status == SUCCESSFUL
    assert result.return_value == result.id


# -- signals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "final"),
    [
        (tasks.nested_tuple, SUCCESSFUL),
        (tasks.raise_value_error, FAILED),
    ],
)
def test_each_signal_is_sent_once_in_this_process(backend, signals, task, final):
    args = ("boom",) if final == FAILED else ()
    result = run_and_wait(backend, task, *args)

    assert signals.sent(result.id) == [
        ("enqueued", READY),
        ("started", RUNNING),
        ("finished", final),
    ]
    assert signals.senders(result.id) == {type(backend)}
    [finished] = signals.results(result.id, "finished")
    assert finished.finished_at == result.finished_at
    assert finished.worker_ids == result.worker_ids


def observed(result, signals):
    """What the contract lets a caller see of a finished result."""
    if result.status == SUCCESSFUL:
        outcome = result.return_value
    else:
        outcome = [error.exception_class_path for error in result.errors]
    return {
        "status": result.status,
        "outcome": outcome,
        "args": result.args,
        "kwargs": result.kwargs,
        "attempts": result.attempts,
        "signals": signals.sent(result.id),
        "times in order": result.enqueued_at <= result.started_at <= result.finished_at,
    }


@pytest.mark.parametrize(
    ("task", "args", "kwargs"),
    [
        (tasks.argument_types, ((1, 2), "text"), {"key": (3,)}),
        (tasks.argument_types, ({1: b"bytes"}, [True, None, 1.5]), {"k": {}}),
        (tasks.nested_tuple, (), {}),
        (tasks.return_datetime, (), {}),
        (tasks.raise_value_error, ("boom",), {}),
        (tasks.raise_system_exit, (), {}),
    ],
)
def test_results_look_as_django_immediate_backend_makes_them(
    backend, signals, task, args, kwargs
):
    immediate = {"BACKEND": "django.tasks.backends.immediate.ImmediateBackend"}
    with override_settings(TASKS={**settings.TASKS, "immediate": immediate}):
        expected = task.using(backend="immediate").enqueue(*args, **kwargs)
        result = run_and_wait(backend, task, *args, **kwargs)

    assert observed(result, signals) == observed(expected, signals)


# -- context -------------------------------------------------------------------------


def test_a_task_taking_context_gets_its_result(backend):
    result = run_and_wait(backend, tasks.context_of_task, "value")

    assert result.status == SUCCESSFUL
    assert result.return_value == {
        "id": result.id,
        "attempt": 1,
        "status": RUNNING,
        "worker_ids": result.worker_ids,
        "value": "value",
    }


# -- reading results ---------------------------------------------------------------------


def test_get_result_returns_a_copy(backend):
    result = run_and_wait(backend, tasks.nested_dict)
    stored = backend.get_result(result.id)

    copy = backend.get_result(result.id)
    copy.args.append("added")
    copy.kwargs["added"] = True
    copy.worker_ids.append("another worker")
    copy.errors.append("an error")
    copy.return_value["items"].append(3)
    copy.return_value["inner"]["key"] = "changed"

    again = backend.get_result(result.id)
    assert (again.args, again.kwargs) == ([], {})
    assert again.worker_ids == stored.worker_ids and len(again.worker_ids) == 1
    assert again.errors == []
    assert again.return_value == {"items": [1, 2], "inner": {"key": "value"}}


def test_a_copy_of_the_arguments_is_independent(backend):
    result = tasks.argument_types.using(backend=backend.alias).enqueue(
        [1, [2]], key={"a": [3]}
    )
    result.args[0][1].append("changed")
    result.kwargs["key"]["a"].append("changed")

    stored = backend.get_result(result.id)
    assert stored.args == [[1, [2]]]
    assert stored.kwargs == {"key": {"a": [3]}}


def test_what_the_task_does_to_its_arguments_stays_in_the_task(backend):
    result = run_and_wait(backend, tasks.mutate_arguments, [1], {"a": [2]})

    assert result.return_value == [
        [1, "added by the task"],
        {"a": [2], "added": "by the task"},
    ]
    assert (result.args, result.kwargs) == ([[1], {"a": [2]}], {})


def test_refresh_and_arefresh(backend):
    task = tasks.nested_tuple.using(backend=backend.alias)
    first, second = task.enqueue(), task.enqueue()
    backend.wait_for_result(first.id, timeout=DEADLINE)
    backend.wait_for_result(second.id, timeout=DEADLINE)

    first.refresh()
    async_to_sync(second.arefresh)()

    for result in (first, second):
        assert result.status == SUCCESSFUL
        assert result.return_value == [1, [2, 3], {"key": [4]}]
        assert result.finished_at is not None and len(result.worker_ids) == 1


def test_aenqueue_and_aget_result(backend):
    task = tasks.argument_types.using(backend=backend.alias)

    async def enqueue_wait_and_fetch():
        enqueued = await task.aenqueue((1,))
        await sync_to_async(backend.wait_for_result)(enqueued.id, DEADLINE)
        return enqueued, await task.aget_result(enqueued.id)

    enqueued, fetched = async_to_sync(enqueue_wait_and_fetch)()

    assert enqueued.status == READY and enqueued.backend == backend.alias
    assert fetched.id == enqueued.id
    assert fetched.status == SUCCESSFUL
    assert fetched.return_value == {"args": ["list"], "kwargs": {}}


def test_another_tasks_result_is_a_mismatch(backend):
    result = run_and_wait(backend, tasks.noop)
    other = tasks.own_result_id.using(backend=backend.alias)

    assert tasks.noop.using(backend=backend.alias).get_result(result.id).id == result.id
    with pytest.raises(TaskResultMismatch):
        other.get_result(result.id)
    with pytest.raises(TaskResultMismatch):
        async_to_sync(other.aget_result)(result.id)


def test_an_unknown_id_does_not_exist(backend):
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result("no-such-id")
    with pytest.raises(TaskResultDoesNotExist):
        backend.get_result(12345)
    with pytest.raises(TaskResultDoesNotExist):
        tasks.noop.using(backend=backend.alias).get_result("no-such-id")
    with pytest.raises(TaskResultDoesNotExist):
        async_to_sync(backend.aget_result)("no-such-id")


def test_results_belong_to_their_alias(backend):
    other_alias = "processes" if backend.alias == "threads" else "threads"
    result = run_and_wait(backend, tasks.noop)

    with pytest.raises(TaskResultDoesNotExist):
        task_backends[other_alias].get_result(result.id)


# -- time zones --------------------------------------------------------------------------


def timestamps(result):
    return [
        result.enqueued_at,
        result.started_at,
        result.last_attempted_at,
        result.finished_at,
    ]


def test_timestamps_are_aware_with_use_tz(backend):
    result = run_and_wait(backend, tasks.noop)

    assert all(timezone.is_aware(moment) for moment in timestamps(result))


@override_settings(USE_TZ=False)
def test_timestamps_are_naive_without_use_tz(backend):
    if backend_kind(backend.alias) not in IN_PROCESS:
        pytest.skip("override_settings does not reach a worker process")
    result = run_and_wait(backend, tasks.noop)

    assert all(timezone.is_naive(moment) for moment in timestamps(result))
    assert result.enqueued_at <= result.started_at <= result.finished_at


# -- backend instances -------------------------------------------------------------------


def test_instances_of_one_alias_share_one_runtime(backend):
    in_thread = {}

    def enqueue_in_another_thread():
        other = task_backends[backend.alias]
        in_thread["backend"] = other
        in_thread["result"] = tasks.noop.using(backend=backend.alias).enqueue()

    thread = threading.Thread(target=enqueue_in_another_thread)
    thread.start()
    thread.join()

    other = in_thread["backend"]
    assert other is not backend
    assert other.runtime is backend.runtime
    result = backend.wait_for_result(in_thread["result"].id, timeout=DEADLINE)
    assert backend.get_result(result.id).status == SUCCESSFUL


def test_changed_settings_give_a_new_runtime(backend, tmp_path: Path):
    alias = backend.alias
    before = backend.runtime
    changed = {**settings.TASKS[alias], "OPTIONS": {"MAX_WORKERS": 1, "MAX_RESULTS": 1}}

    with override_settings(TASKS={**settings.TASKS, alias: changed}):
        narrow = task_backends[alias]
        assert narrow.runtime is not before
        assert (narrow.settings["MAX_WORKERS"], narrow.settings["MAX_RESULTS"]) == (
            1,
            1,
        )
        release = str(tmp_path / "release")
        first = tasks.block_until.using(backend=alias).enqueue(
            release, started=str(tmp_path / "first.started")
        )
        second = tasks.block_until.using(backend=alias).enqueue(release)
        wait_until((tmp_path / "first.started").exists)
        # One worker: the second waits.
        assert narrow.get_result(second.id).status == READY
        (tmp_path / "release").touch()
        assert narrow.wait_for_result(second.id, timeout=DEADLINE).status == SUCCESSFUL
        # One result kept: the first is gone.
        with pytest.raises(TaskResultDoesNotExist):
            narrow.get_result(first.id)

    assert task_backends[alias].runtime is before


# -- the custom executors ----------------------------------------------------------------


@pytest.mark.parametrize("alias", ["custom_threads", "custom_processes"], indirect=True)
def test_a_custom_backend_runs_tasks_on_its_own_executor(backend):
    result = run_and_wait(backend, tasks.noop)

    [worker_id] = result.worker_ids
    _host, pid, *thread = worker_id.split(":")
    if backend.alias == "custom_threads":
        # A thread of this process, named by the project's own pool.
        assert int(pid) == os.getpid()
        assert thread[0].startswith("project-pool")
    else:
        # A child process that the stdlib pool started.
        assert int(pid) != os.getpid() and not thread
    assert worker_is_alive(worker_id)
