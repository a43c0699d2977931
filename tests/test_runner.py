"""``run_task``: one task run in a worker, every ending turned into an Outcome."""

from __future__ import annotations

import dataclasses

import pytest
from django.utils import timezone

from django_tasks_local import current_result_id
from django_tasks_local.runner import (
    Envelope,
    TaskReference,
    current_worker_id,
    run_task,
    set_process_start_reporter,
)
from tests import tasks


class StartRecorder:
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def __call__(self, result_id, worker_id, started_at) -> None:
        self.calls.append((result_id, worker_id, started_at))


def envelope(task, *args, report_started=None, **kwargs) -> Envelope:
    return Envelope(
        "result-id", task, list(args), kwargs, timezone.now(), report_started
    )


def test_success_reports_the_start_and_returns_the_normalized_value():
    reported = StartRecorder()
    before = timezone.now()

    outcome = run_task(envelope(tasks.nested_tuple, report_started=reported))

    assert outcome.error is None
    assert outcome.return_value == [1, [2, 3], {"key": [4]}]
    assert outcome.worker_id == current_worker_id()
    assert before <= outcome.started_at <= outcome.finished_at <= timezone.now()
    assert reported.calls == [("result-id", outcome.worker_id, outcome.started_at)]


def test_without_a_callback_the_process_reporter_hears_the_start():
    reported = StartRecorder()
    set_process_start_reporter(reported)
    try:
        outcome = run_task(envelope(tasks.noop))
    finally:
        set_process_start_reporter(None)

    assert reported.calls == [("result-id", outcome.worker_id, outcome.started_at)]


def test_an_exception_is_captured():
    outcome = run_task(envelope(tasks.raise_value_error, "the message"))

    assert outcome.return_value is None
    assert outcome.error.exception_class is ValueError
    assert outcome.error.exception_class_path == "builtins.ValueError"
    assert "in raise_value_error" in outcome.error.traceback
    assert "ValueError: the message" in outcome.error.traceback
    assert outcome.started_at <= outcome.finished_at


def test_system_exit_is_captured():
    outcome = run_task(envelope(tasks.raise_system_exit))

    assert outcome.error.exception_class is SystemExit
    assert "SystemExit: 3" in outcome.error.traceback


def test_keyboard_interrupt_is_the_tasks_error():
    # Raised by the task itself (signals reach the main thread, not a worker):
    # recorded as its error, the same on every backend.
    outcome = run_task(envelope(tasks.raise_keyboard_interrupt))

    assert outcome.error.exception_class_path == "builtins.KeyboardInterrupt"
    assert isinstance(outcome.exception, KeyboardInterrupt)


def test_a_return_value_that_is_not_json_is_captured():
    outcome = run_task(envelope(tasks.return_unnormalizable))

    assert outcome.error.exception_class is TypeError
    assert outcome.return_value is None


def test_the_result_id_is_bound_only_while_the_task_runs():
    outcome = run_task(envelope(tasks.own_result_id))

    assert outcome.return_value == "result-id"
    with pytest.raises(LookupError):
        current_result_id.get()


def test_an_async_task_runs_with_its_result_id():
    outcome = run_task(envelope(tasks.async_own_result_id))

    assert outcome.error is None
    assert outcome.return_value == "result-id"


def test_a_task_taking_context_gets_a_running_result():
    outcome = run_task(envelope(tasks.context_of_task, "value"))

    assert outcome.return_value == {
        "id": "result-id",
        "attempt": 1,
        "status": "RUNNING",
        "worker_ids": [outcome.worker_id],
        "value": "value",
    }


def test_a_task_reference_is_resolved_in_the_worker():
    task = tasks.context_of_task.using(priority=3)
    reference = TaskReference.from_task(task)

    outcome = run_task(envelope(reference, "value"))

    assert outcome.return_value["value"] == "value"
    assert reference.resolve().func is task.func
    assert reference.resolve().priority == 3


def test_a_task_reference_resolves_without_this_processes_settings():
    # The parent may have enqueued it on an alias only it knows (override_settings).
    reference = TaskReference.from_task(tasks.noop)
    unknown_here = dataclasses.replace(reference, backend="parent-only")

    task = unknown_here.resolve()

    assert task.backend == "parent-only"
    assert task.func is tasks.noop.func
