"""Faults and logging: a fault stays with its own task, and is logged once."""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import pytest
from django.tasks import TaskResultStatus, task_backends
from django.tasks.signals import task_enqueued, task_finished, task_started

from tests.helpers import (
    DEADLINE,
    temporary_alias,
    wait_until,
    wait_until_running,
)
from tests.tasks import (
    block_until,
    overrun,
    raise_in_finally,
    raise_value_error,
    return_unnormalizable,
    square,
)


def enqueue_squares(alias, numbers):
    return [(n, square.using(backend=alias).enqueue(n)) for n in numbers]


def assert_squares(alias, enqueued):
    backend = task_backends[alias]
    for n, result in enqueued:
        finished = backend.wait_for_result(result.id, timeout=DEADLINE)
        assert finished.status == TaskResultStatus.SUCCESSFUL
        assert finished.return_value == n * n


def records_about(caplog, result_id, level=logging.WARNING):
    return [
        record
        for record in caplog.records
        if record.levelno >= level and result_id in record.getMessage()
    ]


@pytest.fixture
def raising_receiver():
    """Connects to a signal a receiver that raises for the square of one number."""
    connected = []

    def connect(signal, number):
        def explode(sender, task_result, **kwargs):
            if task_result.task.name == "square" and task_result.args == [number]:
                raise RuntimeError(f"receiver failed for {task_result.id}")

        signal.connect(explode, weak=False)
        connected.append((signal, explode))

    yield connect
    for signal, receiver in connected:
        signal.disconnect(receiver)


@pytest.mark.parametrize(
    "signal", [task_started, task_finished], ids=["started", "finished"]
)
def test_a_raising_receiver_loses_nothing_and_is_logged_once(
    alias, signal, raising_receiver, caplog
):
    raising_receiver(signal, 12)
    before = enqueue_squares(alias, range(5))
    with caplog.at_level(logging.INFO):
        faulty = square.using(backend=alias).enqueue(12)
        finished = task_backends[alias].wait_for_result(faulty.id, timeout=DEADLINE)
    after = enqueue_squares(alias, range(5, 10))
    assert_squares(alias, before + after)
    # The task itself is unharmed.
    assert finished.status == TaskResultStatus.SUCCESSFUL
    assert finished.return_value == 144
    failures = [r for r in caplog.records if r.name == "django.dispatch"]
    assert [r.getMessage() for r in failures] == [
        "Error calling raising_receiver.<locals>.connect.<locals>.explode in "
        "Signal.send_robust() "
        f"(receiver failed for {faulty.id})"
    ]
    assert not [r for r in caplog.records if r.name.startswith("django_tasks_local")]


@pytest.mark.parametrize(
    ("task", "exception_class_path", "message"),
    [
        (raise_in_finally, "builtins.RuntimeError", "raised inside finally"),
        (
            return_unnormalizable,
            "builtins.TypeError",
            "Unsupported type: <class '_thread.lock'>",
        ),
        (raise_value_error, "builtins.ValueError", "boom"),
    ],
    ids=["raise-in-finally", "unnormalizable-return", "raises"],
)
def test_a_failing_task_loses_nothing_else_and_is_logged_once(
    alias, task, exception_class_path, message, caplog
):
    before = enqueue_squares(alias, range(5))
    with caplog.at_level(logging.DEBUG):
        failed = task.using(backend=alias).enqueue()
        finished = task_backends[alias].wait_for_result(failed.id, timeout=DEADLINE)
    after = enqueue_squares(alias, range(5, 10))
    assert_squares(alias, before + after)

    assert finished.status == TaskResultStatus.FAILED
    [error] = finished.errors
    assert error.exception_class_path == exception_class_path
    assert message in error.traceback
    # Django's own receiver logs the failure; the package does not repeat it.
    [logged] = records_about(caplog, failed.id)
    assert (logged.name, logged.levelname) == ("django.tasks", "ERROR")
    assert not [r for r in caplog.records if r.name.startswith("django_tasks_local")]


# -- hostile and slow receivers --------------------------------------------------


@pytest.mark.parametrize("exception", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize(
    "signal", [task_started, task_finished], ids=["started", "finished"]
)
def test_a_receiver_raising_system_exit_stops_nothing(alias, signal, exception, caplog):
    # send_robust catches only Exception: what passes it must stop neither the
    # worker nor the pool, and the task and those after it are unharmed.
    def hostile(sender, task_result, **kwargs):
        if task_result.args == [13]:
            raise exception(f"raised by a receiver for {task_result.id}")

    signal.connect(hostile, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="django_tasks_local"):
            faulty = square.using(backend=alias).enqueue(13)
            finished = task_backends[alias].wait_for_result(faulty.id, DEADLINE)
        assert_squares(alias, enqueue_squares(alias, range(2 * 4)))
    finally:
        signal.disconnect(hostile)
    assert (finished.status, finished.return_value) == ("SUCCESSFUL", 169)
    [logged] = [r for r in caplog.records if r.name == "django_tasks_local"]
    assert logged.getMessage() == (
        f"A receiver of a task signal raised {exception.__name__} for task "
        f"{faulty.id}; it was ignored."
    )


def test_ctrl_c_in_a_task_enqueued_receiver_still_hands_the_task_on(alias):
    # In the enqueuing (main) thread, Ctrl-C is the user's: it reaches the
    # caller, and the stored task still runs rather than stay READY for ever.
    enqueued = []

    def interrupted(sender, task_result, **kwargs):
        enqueued.append(task_result.id)
        raise KeyboardInterrupt

    task_enqueued.connect(interrupted, weak=False)
    try:
        with pytest.raises(KeyboardInterrupt):
            square.using(backend=alias).enqueue(7)
    finally:
        task_enqueued.disconnect(interrupted)
    [result_id] = enqueued
    done = task_backends[alias].wait_for_result(result_id, DEADLINE)
    assert (done.status, done.return_value) == ("SUCCESSFUL", 49)


def test_a_slow_receiver_holds_up_no_process_task_nor_its_timeout(tmp_path):
    # The first task's task_finished receiver blocks; meanwhile the pool goes
    # on: a quick task runs on the free worker, and a task past TIMEOUT is
    # killed on time (both recorded, their own signals queued behind).
    receiving, release = threading.Event(), threading.Event()

    def slow(sender, task_result, **kwargs):
        if task_result.args == [1]:
            receiving.set()
            release.wait(2 * DEADLINE)

    task_finished.connect(slow, weak=False)
    try:
        with temporary_alias("processes", MAX_WORKERS=2, TIMEOUT=1.0) as alias:
            backend = task_backends[alias]
            square.using(backend=alias).enqueue(1)
            try:
                assert receiving.wait(DEADLINE)
                late = overrun.using(backend=alias).enqueue(
                    str(tmp_path / "halfway"), 0.0
                )
                quick = square.using(backend=alias).enqueue(2)
                wait_until(
                    lambda: (
                        backend.get_result(quick.id).status == "SUCCESSFUL"
                        and backend.get_result(late.id).status == "FAILED"
                    ),
                    timeout=DEADLINE / 2,
                    message="both ended while the receiver still ran",
                )
                [error] = backend.get_result(late.id).errors
                assert error.exception_class_path.endswith(".TaskTimeout")
            finally:
                release.set()
    finally:
        task_finished.disconnect(slow)


def test_close_is_not_held_up_by_a_slow_receiver_of_the_dropped_tasks(alias):
    # close() drops the waiting tasks; their task_finished go to a receiver
    # that blocks: close() still returns within its timeout.
    release = threading.Event()

    def slow(sender, task_result, **kwargs):
        if task_result.status == "FAILED":
            release.wait(2 * DEADLINE)

    with temporary_alias(alias, MAX_WORKERS=1) as own:
        backend = task_backends[own]
        gate = Path(tempfile.mkdtemp()) / "gate"
        blocker = block_until.using(backend=own).enqueue(str(gate))
        wait_until_running(backend, blocker.id)
        for n in range(10):
            square.using(backend=own).enqueue(n)
        task_finished.connect(slow, weak=False)
        try:
            closer = threading.Thread(target=backend.close, kwargs={"timeout": 0.1})
            closer.start()
            closer.join(DEADLINE / 2)
            assert not closer.is_alive()
        finally:
            task_finished.disconnect(slow)
            release.set()
            gate.touch()
