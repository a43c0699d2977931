"""Faults and logging: a fault stays with its own task, and is logged once."""

from __future__ import annotations

import logging

import pytest
from django.tasks import TaskResultStatus, task_backends
from django.tasks.signals import task_finished, task_started

from tests.helpers import DEADLINE
from tests.tasks import (
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
